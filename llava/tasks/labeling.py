"""Label a folder of images: a one-sentence description and a category from an allowed list.

    python -m llava.tasks.labeling --model-path checkpoints/llava-smol-task-merged \\
        --images photos/ --categories cats.txt --output labels.csv
    python -m llava.tasks.labeling --images photos/ --categories cats.txt --output labels.csv   # embedded default
    # four processes (or GPUs: CUDA_VISIBLE_DEVICES=$i), each a quarter, then one file:
    for i in 0 1 2 3; do python -m llava.tasks.labeling ... --num-shards 4 --shard-idx $i --output labels.$i.csv & done; wait

labels.csv columns: image, description, category, flagged, model_category,
similarity.  The category is always one of the allowed list: an answer that is
not one of them is mapped to the nearest (see categories.py), flagged, and the
model's own words are kept in model_category.

Each image is asked two questions, through batch inference (llava.eval.model_vqa:
batched, length-sorted, images decoded in DataLoader workers): first the
description, then the category in the same conversation, after the model's own
description, as the training conversations of labeling_data have them (asked
alone, a fine-tuned model described "3 shapes: ..." and then answered "two
shapes").  The answers go
to OUTPUT.answers.jsonl as they come, flushed per batch, so a killed run resumes
where it stopped; labels.csv is rewritten from them at the end of each run.
Images that cannot be read (corrupt, truncated, empty, not an image, a file
name that is not UTF-8) are skipped and listed, with the reason, in
OUTPUT.errors.jsonl, as are unreadable lines of the answers store being
resumed.  A categories file that is not text stops the run before any work
(labelling against part of the list would change every label), and so does an
output that is one of the inputs or a bad flag.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile
from pathlib import Path

from llava.eval.question_file import Question, get_chunk
from llava.model.flags import check_flags
from llava.serve.model_args import add_model_args

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DESCRIBE = "Describe the image in one sentence."
COLUMNS = ["image", "description", "category", "flagged", "model_category", "similarity"]


def category_question(categories: list[str]) -> str:
    return ("Which one of these categories fits the image best: " + ", ".join(categories)
            + "?\nAnswer with the category name only.")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    ap.add_argument("--model-id", default=None)
    ap.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    ap.add_argument("--categories", required=True, help="allowed categories, one per line")
    ap.add_argument("--output", required=True, help="labels CSV")
    ap.add_argument("--embedder", default=None,
                    help="sentence-transformers model dir for mapping categories (default: the packaged "
                         "all-MiniLM-L6-v2; 'none' = string similarity)")
    ap.add_argument("--num-shards", type=int, default=1, help="split the images into this many shards ...")
    ap.add_argument("--shard-idx", type=int, default=0, help="... and label this one (0-based)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--no-resume", dest="resume", action="store_false")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    check_flags(ap, args)  # model and count flags, before anything is read or loaded
    if args.num_shards < 1:
        ap.error(f"--num-shards must be at least 1, got {args.num_shards}")
    if not 0 <= args.shard_idx < args.num_shards:
        ap.error(f"--shard-idx must be in [0, {args.num_shards}), got {args.shard_idx}")
    args.temperature, args.top_p, args.num_beams = 0.0, None, 1
    return args


def list_images(folder: str | Path) -> tuple[list[str], list[dict]]:
    """Image files under folder (relative POSIX paths, sorted: the same order in every shard), and the
    ones left out: a file name that is not UTF-8 cannot be written into labels.csv or asked about."""
    root = Path(folder)
    if not root.is_dir():
        raise SystemExit(f"error: --images {root}: no such folder")
    images, skipped = [], []
    for p in root.rglob("*"):
        if not (p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            continue
        name = p.relative_to(root).as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # os.fsdecode turned its bytes into lone surrogates
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            skipped.append({"image": shown, "error": f"{root}/{shown}: the file name is not UTF-8; rename it"})
            continue
        images.append(name)
    return sorted(images), sorted(skipped, key=lambda e: e["image"])


def description_questions(images: list[str]) -> list[Question]:
    return [Question(f"{image}#description", DESCRIBE, image, "description", n) for n, image in enumerate(images, 1)]


def category_questions(images: list[str], descriptions: dict[str, str], categories: list[str]) -> list[Question]:
    """The category question for each described image, after its description in the same chat."""
    ask = category_question(categories)
    return [Question(f"{image}#category", ask, image, "category", n, history=((DESCRIBE, descriptions[image]),))
            for n, image in enumerate(images, 1) if image in descriptions]


def label_rows(images: list[str], answers: dict[str, str], matcher) -> list[dict]:
    rows = []
    for image in images:
        desc, cat = answers.get(f"{image}#description"), answers.get(f"{image}#category")
        if desc is None or cat is None:
            continue
        m = matcher.match(cat)
        rows.append({"image": image, "description": desc.strip(), "category": m.category,
                     "flagged": "" if m.exact else "yes", "model_category": cat.strip(),
                     "similarity": f"{m.similarity:.4f}"})
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def check_files(args: argparse.Namespace) -> dict[str, Path]:
    """The inputs exist, and no output (labels.csv, its answers store and errors file) is an input."""
    from llava.eval.answers_file import errors_path
    from llava.eval.output_paths import check_inputs, check_outputs, refuse_outputs_in_model_dirs

    check_inputs({"--categories": args.categories},
                 {"--images": args.images, "--embedder": None if args.embedder in (None, "none") else args.embedder})
    output = Path(args.output)
    outputs = {"--output": output, "the answers store of --output": output.with_suffix(".answers.jsonl"),
               "the errors file of --output": errors_path(output)}
    check_outputs(outputs, {"--categories": args.categories})
    refuse_outputs_in_model_dirs(outputs, {"--model-path": args.model_path, "--model-base": args.model_base})
    return outputs


def main(argv=None) -> dict:
    args = parse_args(argv)
    outputs = check_files(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from llava.eval.answers_file import open_for_model, read_answer_texts, write_errors
    from llava.eval.model_vqa import run
    from llava.eval.output_paths import refuse_outputs_over_images
    from llava.serve.chat import default_model_path
    from llava.serve.model_args import load_model_or_exit
    from llava.tasks.categories import CategoryError, CategoryMatcher, load_text_embedder, read_categories

    try:
        categories = read_categories(args.categories)
    except CategoryError as exc:
        raise SystemExit(f"error: {exc}") from None
    found, unnamed = list_images(args.images)
    refuse_outputs_over_images(outputs, args.images, [(image, n) for n, image in enumerate(found, 1)])
    images = get_chunk(found, args.num_shards, args.shard_idx)
    if not found:
        print(f"{args.images}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    # The embedder before any generation: one that cannot load must not waste the run.
    try:
        embedder = None if args.embedder == "none" else load_text_embedder(args.embedder)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: --embedder {args.embedder}: cannot load ({exc})") from None
    output = outputs["--output"]
    store_path = outputs["the answers store of --output"]
    args.model_path = args.model_path or default_model_path()
    model_id = args.model_id or Path(args.model_path.rstrip("/")).name
    store = open_for_model(store_path, model_id, args.resume, flag="--output")
    for e in store.bad[:10]:
        print(f"warning: {e['error']}")
    stats = {"answered": 0, "generated_tokens": 0, "seconds": 0.0, "errors": []}
    args.image_folder = args.images
    loaded = None
    try:
        # Two passes: the descriptions, then each category after its description.
        for stage in ("description", "category"):
            if stage == "description":
                questions = description_questions(images)
            else:
                descriptions = {qid.rsplit("#", 1)[0]: text for qid, text in read_answer_texts(store_path).items()
                                if qid.endswith("#description")}
                questions = category_questions(images, descriptions, categories)
            todo = [q for q in questions if q.question_id not in store.done]
            if len(todo) < len(questions):
                print(f"resuming: {len(questions) - len(todo)} of {len(questions)} {stage} answers already in "
                      f"{store_path}")
            if todo:
                loaded = loaded or load_model_or_exit(args)
                part = run(loaded, todo, args, store, model_id)
                for key in ("answered", "generated_tokens", "seconds"):
                    stats[key] += part[key]
                stats["errors"] += part["errors"]
    except KeyboardInterrupt:
        print(f"\ninterrupted: the answers so far are safe in {store_path}; run the same command again")
        raise SystemExit(130) from None
    finally:
        store.close()
    # One error per image, not one per question; then the store's unreadable lines and unusable file names.
    skipped = {}
    for e in stats["errors"]:
        image = e["question_id"].rsplit("#", 1)[0]
        skipped.setdefault(image, {"image": image, "error": e["error"]})
    skipped.update({e["image"]: e for e in unnamed})
    write_errors(output, list(skipped.values()) + store.bad)
    rows = label_rows(images, read_answer_texts(store_path), CategoryMatcher(categories, embedder))
    write_csv(output, rows)
    flagged = sum(r["flagged"] == "yes" for r in rows)
    s = stats["seconds"]
    print(f"labelled {len(rows)} of {len(images)} images -> {output} ({flagged} categories mapped to the nearest "
          f"allowed one and flagged, by {'embedding' if embedder else 'string'} similarity); "
          f"{stats['generated_tokens'] / s if s else 0:.1f} generated tokens/s"
          + (f"; {len(skipped)} images skipped, see {output.with_suffix('.errors.jsonl')}" if skipped else ""))
    for e in list(skipped.values())[:10]:
        print(f"  skipped {e['error']}")
    return {"labelled": len(rows), "images": len(images), "flagged": flagged, "skipped": len(skipped)}


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
