"""A model for timing the prompt path at LLaVA-1.5's image size: 336 px images in 14 px patches, so
576 image tokens per image (the embedded default has 16), a random 4-layer CLIP tower and projector,
and SmolLM2-135M as the LLM.  Its answers are meaningless; its speed is what a prompt dominated by
image tokens costs.

    .venv/bin/python bench/llava15_tokens_model.py --output-dir /tmp/llava15-tokens
    .venv/bin/python bench/inference_throughput.py --model-path /tmp/llava15-tokens --max-new-tokens 2 --limit 48
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.demo.models import build  # noqa: E402

PRESET = {
    "vision": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                   image_size=336, patch_size=14),
    "llm": "smollm2",
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="/tmp/llava15-tokens")
    args = ap.parse_args(argv)
    out = build(args.output_dir, PRESET)
    print(f"wrote {out} ({(PRESET['vision']['image_size'] // PRESET['vision']['patch_size']) ** 2} image tokens)")


if __name__ == "__main__":
    main()
