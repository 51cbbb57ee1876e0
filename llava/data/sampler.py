"""Length-grouped sampling: batches of similar length, so little of each batch is padding.

Like the original's `group_by_modality_length`, with two differences that
matter for speed and correctness:
  * records are sorted by length within a "megabatch" of many optimizer steps
    (not within one step), so neighbours in a batch really are of similar
    length; the order of the steps is then shuffled, so the loss does not
    follow a long-to-short pattern;
  * with has_image given, every optimizer step (world_size x batch_size
    records, world_size counting gradient-accumulation micro-steps too) is
    made of records of one modality, except at most the last one, where the
    leftovers of both kinds meet (mixing them there beats dropping or
    repeating records; LLaVATrainer keeps ZeRO-3 ranks in step on a mixed or
    text-only batch by running the tower on a blank image).
Every index appears exactly once per epoch; set_epoch reshuffles.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    def __init__(self, batch_size: int, world_size: int, lengths: Sequence[int], seed: int = 0,
                 has_image: Sequence[bool] | None = None, megabatch_steps: int = 50):
        self.batch_size = batch_size
        self.world_size = world_size
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.has_image = None if has_image is None else np.asarray(has_image, dtype=bool)
        self.seed = seed
        self.megabatch_steps = megabatch_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        step = self.batch_size * self.world_size
        all_idx = np.arange(len(self.lengths))
        groups = [all_idx] if self.has_image is None else [all_idx[self.has_image], all_idx[~self.has_image]]
        steps: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        for group in groups:
            perm = group[rng.permutation(len(group))]
            mega = step * self.megabatch_steps
            for start in range(0, len(perm), mega):
                chunk = perm[start:start + mega]
                # Stable sort, longest first, so ties keep the random order.
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                full = len(chunk) // step * step
                steps.extend(np.split(chunk[:full], full // step) if full else [])
                rest.append(chunk[full:])
        order = rng.permutation(len(steps))
        out = [steps[k] for k in order]
        # Leftovers (fewer than one step per megabatch) go last, sorted, so they too are grouped.
        tail = np.concatenate(rest) if rest else np.empty(0, dtype=np.int64)
        out.append(tail[np.argsort(-self.lengths[tail], kind="stable")])
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)
