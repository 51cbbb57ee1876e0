"""Teach the embedded default's random CLIP tower to see the synthetic scenes.

    python -m llava.demo.tower_pretrain --tower checkpoints/llava-smol-init-parts/vision_tower \\
        --output-dir checkpoints/smol-clip

No pretrained CLIP exists offline, and a random tower gives the language model
nothing to learn from: neither projector alignment nor LoRA recovers from it.
This stands in for CLIP's pretraining, scaled to our scenes: the tower learns,
from freshly drawn scenes (other seeds than the sample task, so no task image
is seen), to describe each patch in place.  One linear head, shared by all
patches of LLaVA's features (layer -2, no CLS), reads from each patch the
colour and shape of the object in the patch's quadrant *and* the patch's own
row and column.  Shared weights mean the feature itself must say what and
where: the projector maps patches one by one, so a feature that does not carry
its position leaves the language model only the token order to tell left from
right.  (An earlier probe, a separate read-out per patch, taught the tower
colour and shape while left/right stayed barely decodable from a patch by a
shared linear classifier, bench/tower_position_probe.py, figures in
docs/training.md, "Measurements"; the fine-tuned models then confused left
and right and miscounted.)  The head is thrown away afterwards.

Each scene goes through JPEG and the same pad-to-square preprocessing as at
training time, so the tower sees what the task's images will look like.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPVisionModel

from llava.demo.scenes import COLORS, SHAPES, plan_scenes, save_scene
from llava.model.processor import image_processor_from_dir
from llava.staged_dir import staged_dir

log = logging.getLogger(__name__)

COLOR_CLASSES = ["none", *COLORS]
SHAPE_CLASSES = ["none", *SHAPES]
QUADRANTS = [("top", "left"), ("top", "right"), ("bottom", "left"), ("bottom", "right")]


def scene_labels(objects) -> tuple[list[int], list[int]]:
    """(colour class, shape class) of each quadrant; 0 where it is empty."""
    colors, shapes = [0] * 4, [0] * 4
    for o in objects:
        q = QUADRANTS.index((o.vertical, o.horizontal))
        colors[q] = COLOR_CLASSES.index(o.color)
        shapes[q] = SHAPE_CLASSES.index(o.shape)
    return colors, shapes


def make_batch(num: int, seed: int, image_processor, image_size=(96, 72)):
    plans = plan_scenes(num_train_images=num, num_test_images=0, seed=seed, image_size=image_size)
    images, colors, shapes = [], [], []
    for plan in plans:
        buf = io.BytesIO()
        save_scene(plan, image_size, buf)
        images.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        c, s = scene_labels(plan.objects)
        colors.append(c)
        shapes.append(s)
    pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
    return pixels, torch.tensor(colors), torch.tensor(shapes)


class Probe(torch.nn.Module):
    """One linear head shared by every patch: the colour and shape of the object in the patch's
    quadrant, and the patch's own row and column on the grid."""

    def __init__(self, grid: int, hidden: int):
        super().__init__()
        self.sizes = [len(COLOR_CLASSES), len(SHAPE_CLASSES), grid, grid]
        self.out = torch.nn.Linear(hidden, sum(self.sizes))
        rows = torch.arange(grid * grid) // grid
        cols = torch.arange(grid * grid) % grid
        # The quadrant (index into QUADRANTS) each patch lies in; the image is square after padding.
        self.register_buffer("quadrant", (rows >= grid // 2).long() * 2 + (cols >= grid // 2).long(), persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """Logits (batch, patches, classes) for colour, shape, row and column."""
        return list(self.out(feats).split(self.sizes, dim=-1))

    def targets(self, colors: torch.Tensor, shapes: torch.Tensor) -> list[torch.Tensor]:
        """Per-patch targets (batch, patches) from per-quadrant labels (batch, 4)."""
        n = len(colors)
        return [colors[:, self.quadrant], shapes[:, self.quadrant], self.rows.expand(n, -1), self.cols.expand(n, -1)]


HEADS = ("color_acc", "shape_acc", "row_acc", "col_acc")


def patch_features(tower, pixels, layer: int = -2) -> torch.Tensor:
    out = tower(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]  # LLaVA's features: layer -2, CLS dropped


def evaluate(tower, probe, data, layer: int) -> dict:
    """Per-patch held-out accuracy of each head."""
    pixels, colors, shapes = data
    with torch.no_grad():
        logits = probe(patch_features(tower, pixels, layer))
    return {name: (lg.argmax(-1) == t).float().mean().item()
            for name, lg, t in zip(HEADS, logits, probe.targets(colors, shapes))}


def pretrain_tower(tower_dir: str | Path, output_dir: str | Path, steps: int = 600, batch_size: int = 64,
                   lr: float = 1e-3, seed: int = 0, layer: int = -2, pool: int = 4000) -> dict:
    """Train the tower in tower_dir, save it (with its preprocessor) to output_dir; return held-out accuracy."""
    torch.manual_seed(seed)
    random.seed(seed)
    tower = CLIPVisionModel.from_pretrained(tower_dir, dtype=torch.float32)
    image_processor = image_processor_from_dir(tower_dir, "pad")
    cfg = tower.config
    probe = Probe(cfg.image_size // cfg.patch_size, cfg.hidden_size)
    # A pool of scenes drawn once (drawing is the slow part), plus a held-out set from another seed.
    train = make_batch(pool, 5000 + seed, image_processor)
    held_out = make_batch(500, 9000 + seed, image_processor)
    params = list(tower.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    ce = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    tower.train()
    start = time.time()
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.choice(pool, batch_size, replace=False))
        pixels, colors, shapes = (t[idx] for t in train)
        logits = probe(patch_features(tower, pixels, layer))
        loss = sum(ce(lg.flatten(0, 1), t.flatten()) for lg, t in zip(logits, probe.targets(colors, shapes)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            tower.eval()
            acc = evaluate(tower, probe, held_out, layer)
            tower.train()
            log.info("step %d/%d loss %.4f held-out per patch: colour %.3f shape %.3f row %.3f column %.3f (%.0f s)",
                     step, steps, loss.item(), *(acc[h] for h in HEADS), time.time() - start)
    tower.eval()
    result = {**evaluate(tower, probe, held_out, layer), "steps": steps, "seconds": round(time.time() - start, 1)}
    with staged_dir(output_dir, f"llava.demo.tower_pretrain steps={steps} seed={seed} pool={pool}") as out:
        tower.save_pretrained(out)
        for name in ("preprocessor_config.json",):
            src = Path(tower_dir) / name
            if src.exists():
                (out / name).write_bytes(src.read_bytes())
        (out / "tower_pretrain.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tower", required=True, help="a CLIPVisionModel directory (the random tower)")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pool", type=int, default=4000, help="scenes drawn for training")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = pretrain_tower(args.tower, args.output_dir, args.steps, args.batch_size, args.lr, args.seed,
                            pool=args.pool)
    print(f"tower trained: held-out per-patch accuracy colour {result['color_acc']:.3f}, shape "
          f"{result['shape_acc']:.3f}, row {result['row_acc']:.3f}, column {result['col_acc']:.3f} "
          f"({result['seconds']} s) -> {args.output_dir}")


if __name__ == "__main__":
    main()
