"""LengthGroupedSampler (llava/data/sampler.py)."""

from __future__ import annotations

import numpy as np
import pytest

from llava.data.sampler import LengthGroupedSampler


def random_lengths(n, seed=0, low=20, high=200):
    return np.random.default_rng(seed).integers(low, high + 1, n)


def steps_of(idx, step):
    """The full optimizer steps (step consecutive indices) of an epoch's order."""
    full = len(idx) // step
    return [idx[k * step:(k + 1) * step] for k in range(full)]


def padded_tokens(order, lengths, batch_size):
    """Tokens a batch_size-batched epoch feeds the model, padding included."""
    total = 0
    for start in range(0, len(order), batch_size):
        batch = lengths[np.asarray(order[start:start + batch_size])]
        total += batch.max() * len(batch)
    return total


@pytest.mark.parametrize("n,bs,ws,has_image_frac", [(1000, 4, 2, None), (997, 3, 1, 0.7), (13, 4, 4, 0.5),
                                                    (5, 8, 1, None), (250, 2, 3, 0.0), (250, 2, 3, 1.0)])
def test_every_index_once_per_epoch(n, bs, ws, has_image_frac):
    lengths = random_lengths(n)
    has_image = None if has_image_frac is None else np.random.default_rng(1).random(n) < has_image_frac
    s = LengthGroupedSampler(bs, ws, lengths, seed=3, has_image=has_image, megabatch_steps=5)
    assert len(s) == n
    for epoch in range(3):
        s.set_epoch(epoch)
        order = list(s)
        assert len(order) == n
        assert sorted(order) == list(range(n))
        assert all(isinstance(i, int) for i in order)


def test_deterministic_for_seed_and_epoch():
    lengths = random_lengths(500)
    has_image = np.arange(500) % 3 != 0
    a = LengthGroupedSampler(4, 2, lengths, seed=7, has_image=has_image)
    b = LengthGroupedSampler(4, 2, lengths, seed=7, has_image=has_image)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating twice in one epoch gives the same order
    c = LengthGroupedSampler(4, 2, lengths, seed=8, has_image=has_image)
    assert list(c) != list(a)


def test_set_epoch_reshuffles():
    lengths = random_lengths(500)
    s = LengthGroupedSampler(4, 2, lengths, seed=7)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) == sorted(e0)
    s.set_epoch(0)
    assert list(s) == e0
    # Another epoch's order is not just a reshuffle of the same batches.
    batches0 = {frozenset(e0[i:i + 4]) for i in range(0, 500, 4)}
    batches1 = {frozenset(e1[i:i + 4]) for i in range(0, 500, 4)}
    assert len(batches0 & batches1) < len(batches0) // 2


def test_modality_pure_steps_when_groups_fill_whole_steps():
    """Image and text-only counts both multiples of a step: every step is one modality."""
    bs, ws = 4, 2
    step = bs * ws
    n_img, n_txt = 40 * step, 13 * step
    rng = np.random.default_rng(0)
    has_image = np.array([True] * n_img + [False] * n_txt)[rng.permutation(n_img + n_txt)]
    lengths = random_lengths(n_img + n_txt)
    for seed in range(3):
        s = LengthGroupedSampler(bs, ws, lengths, seed=seed, has_image=has_image, megabatch_steps=5)
        idx = s.indices()
        steps = steps_of(idx, step)
        assert len(steps) == (n_img + n_txt) // step
        kinds = [has_image[st].all() or (~has_image[st]).all() for st in steps]
        assert all(kinds), [k for k, ok in enumerate(kinds) if not ok]
        # ...and the image steps are really spread among the text steps (steps are shuffled).
        first_modality = [bool(has_image[st[0]]) for st in steps]
        assert first_modality != sorted(first_modality) and first_modality != sorted(first_modality, reverse=True)


def test_modality_at_most_the_last_full_step_mixed():
    """Leftovers of both modalities (fewer than a step each) go at the end; when together they fill
    a step, that one step mixes modalities, and no other does."""
    bs, ws = 2, 2
    step = bs * ws
    for n_img, n_txt, mb in [(10, 10, 50), (38, 38, 2), (101, 57, 3), (22, 22, 1)]:
        has_image = np.array([True] * n_img + [False] * n_txt)
        lengths = random_lengths(n_img + n_txt, seed=n_img)
        idx = LengthGroupedSampler(bs, ws, lengths, seed=0, has_image=has_image, megabatch_steps=mb).indices()
        steps = steps_of(idx, step)
        mixed = [k for k, st in enumerate(steps) if not (has_image[st].all() or (~has_image[st]).all())]
        assert mixed in ([], [len(steps) - 1]), (n_img, n_txt, mb, mixed)


@pytest.mark.parametrize("bs,ws", [(4, 1), (8, 2), (16, 1)])
def test_grouping_reduces_padding(bs, ws):
    n = 4000
    lengths = random_lengths(n, seed=bs)
    s = LengthGroupedSampler(bs, ws, lengths, seed=0, megabatch_steps=50)
    grouped = padded_tokens(list(s), lengths, bs)
    rng = np.random.default_rng(123)
    random_perm = np.mean([padded_tokens(rng.permutation(n), lengths, bs) for _ in range(3)])
    assert random_perm / grouped >= 1.2, (random_perm, grouped)
    # Close to the padding-free lower bound.
    assert grouped <= 1.05 * lengths.sum()


def test_grouping_with_modalities_reduces_padding():
    n = 4000
    lengths = random_lengths(n, seed=5)
    has_image = np.random.default_rng(6).random(n) < 0.6
    s = LengthGroupedSampler(4, 2, lengths, seed=0, has_image=has_image)
    grouped = padded_tokens(list(s), lengths, 4)
    rand = padded_tokens(np.random.default_rng(7).permutation(n), lengths, 4)
    assert rand / grouped >= 1.2


def test_batches_are_not_sorted_long_to_short_over_the_epoch():
    """Steps are shuffled after grouping: the loss must not see a long-to-short sweep."""
    lengths = random_lengths(2000, seed=9)
    s = LengthGroupedSampler(4, 1, lengths, seed=0, megabatch_steps=50)
    order = np.asarray(list(s))
    batch_max = [lengths[order[i:i + 4]].max() for i in range(0, 2000, 4)]
    first, last = np.mean(batch_max[:100]), np.mean(batch_max[-150:-50])
    assert abs(first - last) < 30
    assert np.corrcoef(np.arange(len(batch_max)), batch_max)[0, 1] > -0.3
