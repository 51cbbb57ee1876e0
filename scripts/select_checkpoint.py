"""Keep the best checkpoint of a training run by a validation metric.

    python scripts/select_checkpoint.py --run-dir checkpoints/my-caption-lora \\
        --model-base checkpoints/llava-smol-base --question-file data/val_questions.jsonl \\
        --image-folder data/images --annotation-file data/val_answers.jsonl \\
        --metric caption --key cider_d --num-beams 3 --min-new-tokens 8 --max-new-tokens 48

Every `checkpoint-N/` of the run (train with `--save_steps` and a
`--save_total_limit` large enough to keep them) and the run's final weights
are answered with batch inference (llava.eval.model_vqa) and scored
(llava.eval.evaluate); the scores go to RUN_DIR/checkpoint_scores.json and the
model files of the best (adapter, projector, config, tokenizer, processor: no
optimizer state) are copied to RUN_DIR/best, which merge_lora_weights.py and
load_pretrained_model take like any run directory.  `--key` picks the score:
higher is better, except for mae.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from llava.eval.evaluate import evaluate, read_annotations, read_answers
from llava.eval.model_vqa import main as model_vqa
from llava.staged_dir import staged_dir

LOWER_IS_BETTER = {"mae"}
DEFAULT_KEY = {"caption": "cider_d", "vqa": "vqa_accuracy", "rating": "mae"}
MODEL_FILES = re.compile(r".*\.(safetensors|json|jinja|model|txt)$|^README\.md$")


def candidates(run_dir: Path) -> list[Path]:
    """checkpoint-N directories by step, then the run's final weights when present."""
    steps = sorted((p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    final = [run_dir] if (run_dir / "adapter_config.json").exists() or (run_dir / "model.safetensors").exists() \
        or any(run_dir.glob("model-*.safetensors")) else []
    return steps + final


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--model-base", default=None, help="the base, for LoRA runs")
    ap.add_argument("--question-file", required=True)
    ap.add_argument("--image-folder", default="")
    ap.add_argument("--annotation-file", required=True)
    ap.add_argument("--metric", choices=sorted(DEFAULT_KEY), default="caption")
    ap.add_argument("--key", default=None, help="the score to select by (default: cider_d / vqa_accuracy / mae)")
    ap.add_argument("--output-dir", default=None, help="where the best goes (default: RUN_DIR/best)")
    args, generation = ap.parse_known_args(argv)  # the rest goes to model_vqa: --num-beams, --max-new-tokens, ...

    run_dir = Path(args.run_dir)
    key = args.key or DEFAULT_KEY[args.metric]
    found = candidates(run_dir)
    if not found:
        raise SystemExit(f"error: {run_dir}: no checkpoint-N directories and no final weights")
    annotations = read_annotations(args.annotation_file)
    results = []
    for ckpt in found:
        name = "final" if ckpt == run_dir else ckpt.name
        answers = run_dir / "checkpoint_eval" / f"{name}.jsonl"
        model_vqa(["--model-path", str(ckpt), *(["--model-base", args.model_base] if args.model_base else []),
                   "--model-id", f"{run_dir.name}/{name}", "--question-file", args.question_file,
                   "--image-folder", args.image_folder, "--answers-file", str(answers), "--no-progress", *generation])
        scores = evaluate(read_answers(answers), annotations, metric=args.metric)["scores"]
        if key not in scores:
            raise SystemExit(f"error: no score {key!r} for --metric {args.metric}; one of {', '.join(scores)}")
        results.append({"checkpoint": name, "path": str(ckpt), key: scores[key], "scores": scores})
        print(f"{name}: {key} {scores[key]}")
    valid = [r for r in results if r[key] is not None]
    if not valid:
        raise SystemExit(f"error: no checkpoint has a {key} score")
    pick = min if key in LOWER_IS_BETTER else max
    best = pick(valid, key=lambda r: r[key])
    out = Path(args.output_dir) if args.output_dir else run_dir / "best"
    if out.exists():
        shutil.rmtree(out)
    with staged_dir(out, f"scripts/select_checkpoint.py best={best['checkpoint']}") as tmp:  # whole or absent
        for f in Path(best["path"]).iterdir():
            if f.is_file() and MODEL_FILES.match(f.name) and f.name not in ("trainer_state.json", "latest"):
                shutil.copy2(f, tmp / f.name)
    summary = {"key": key, "best": best["checkpoint"], "best_dir": str(out), "checkpoints": results}
    (run_dir / "checkpoint_scores.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"best by {key}: {best['checkpoint']} ({best[key]}) -> {out}")
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
