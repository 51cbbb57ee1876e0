"""Does a vision tower's patch feature say where the patch is?  A linear classifier shared by all
patches (scikit-learn's LogisticRegression) reads left/right, top/bottom and the column from
LLaVA's features (layer -2, no CLS), held out, on freshly drawn scenes.

    .venv/bin/python bench/tower_position_probe.py checkpoints/smol-clip

LLaVA's projector maps each patch on its own, so what the feature does not carry the language model
can only guess from the token order.  Chance is 0.5 for the halves, 1/grid for the column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from transformers import CLIPVisionModel  # noqa: E402

from llava.demo.tower_pretrain import make_batch, patch_features  # noqa: E402
from llava.model.processor import image_processor_from_dir  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tower", help="a CLIPVisionModel directory with its preprocessor")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args(argv)
    tower = CLIPVisionModel.from_pretrained(args.tower).eval()
    pixels, _, _ = make_batch(args.scenes, args.seed, image_processor_from_dir(args.tower, "pad"))
    with torch.no_grad():
        feats = patch_features(tower, pixels)  # (scenes, patches, hidden)
    n, patches, hidden = feats.shape
    grid = int(patches ** 0.5)
    col, row = torch.arange(patches) % grid, torch.arange(patches) // grid
    x = feats.reshape(-1, hidden).numpy()
    split = (n * 2 // 3) * patches  # whole scenes held out
    result = {}
    for name, y in (("left/right", col >= grid // 2), ("top/bottom", row >= grid // 2), ("column", col)):
        y = y.long().repeat(n).numpy()
        clf = LogisticRegression(max_iter=2000).fit(x[:split], y[:split])
        result[name] = round(float(clf.score(x[split:], y[split:])), 3)
        print(f"{name}: held-out accuracy {result[name]:.3f}")
    return result


if __name__ == "__main__":
    main()
