"""Label a folder of images: a one-sentence description and a category from an allowed list.

    python -m llava.tasks.labeling --model-path checkpoints/llava-smol-task-merged \\
        --images photos/ --categories cats.txt --output labels.csv
    python -m llava.tasks.labeling --images photos/ --categories cats.txt --output labels.csv   # embedded default
    # four processes (or GPUs: CUDA_VISIBLE_DEVICES=$i), each a quarter, then one file:
    for i in 0 1 2 3; do
        python -m llava.tasks.labeling ... --num-shards 4 --shard-idx $i --output labels.$i.csv &
    done; wait

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

from llava.eval.answers_file import read_answer_texts
from llava.eval.model_vqa import run
from llava.eval.output_paths import refuse_outputs_over_images
from llava.eval.question_file import Question, get_chunk
from llava.eval.resumable import ResumableRun, Words, add_batch_args, batch_outputs, check_files
from llava.model.args import add_model_args
from llava.model.flags import check_flags
from llava.model.text_embedder import load_text_embedder
from llava.serve.search import DESCRIBE  # one question for the labels and for a search by image
from llava.tasks.categories import CategoryError, CategoryMatcher, read_categories

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
WORDS = Words(items="answers", already="already", results="answers", verb="label")
COLUMNS = ["image", "description", "category", "flagged", "model_category", "similarity"]


def category_question(categories: list[str]) -> str:
    return ("Which one of these categories fits the image best: " + ", ".join(categories)
            + "?\nAnswer with the category name only.")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    add_batch_args(ap, "--output", max_new_tokens=48)
    ap.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    ap.add_argument("--categories", required=True, help="allowed categories, one per line")
    ap.add_argument("--output", required=True, help="labels CSV")
    ap.add_argument("--embedder", default=None,
                    help="sentence-transformers model dir for mapping categories (default: the packaged "
                         "all-MiniLM-L6-v2; 'none' = string similarity)")
    ap.add_argument("--num-shards", type=int, default=1, help="split the images into this many shards ...")
    ap.add_argument("--shard-idx", type=int, default=0, help="... and label this one (0-based)")
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


def image_errors(errors: list[dict]) -> list[dict]:
    """One error per image, not one per question (its description's and its category's); the records
    that name no question (unusable file names, unreadable lines of the answers store) as they are."""
    skipped, rest = {}, []
    for e in errors:
        if e.get("question_id") is None:
            rest.append(e)
            continue
        image = e["question_id"].rsplit("#", 1)[0]
        skipped.setdefault(image, {"image": image, "error": e["error"]})
    return list(skipped.values()) + rest


def main(argv=None) -> dict:
    args = parse_args(argv)
    output = Path(args.output)
    store_path = output.with_suffix(".answers.jsonl")
    embedder_dir = None if args.embedder in (None, "none") else args.embedder
    outputs = check_files(args, {"--categories": args.categories},
                          {"--images": args.images, "--embedder": embedder_dir},
                          batch_outputs("--output", output, {"the answers store of --output": store_path}))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
    args.image_folder = args.images
    with ResumableRun(store_path, args, WORDS, flag="--output", errors_for=output, group_errors=image_errors) as batch:
        batch.errors += unnamed
        # Two passes: the descriptions, then each category after its description.
        for stage in ("description", "category"):
            if stage == "description":
                questions = description_questions(images)
            else:
                descriptions = {qid.rsplit("#", 1)[0]: text for qid, text in read_answer_texts(store_path).items()
                                if qid.endswith("#description")}
                questions = category_questions(images, descriptions, categories)
            todo = batch.todo(questions, f"{stage} answers")
            if todo:
                batch.add(run(batch.model(), todo, args, batch.store, batch.model_id))
    rows = label_rows(images, read_answer_texts(store_path), CategoryMatcher(categories, embedder))
    write_csv(output, rows)
    flagged = sum(r["flagged"] == "yes" for r in rows)
    skipped = [e for e in batch.written_errors() if "image" in e]  # not the store's unreadable lines
    s = batch.stats["seconds"]
    print(f"labelled {len(rows)} of {len(images)} images -> {output} ({flagged} categories mapped to the nearest "
          f"allowed one and flagged, by {'embedding' if embedder else 'string'} similarity); "
          f"{batch.stats['generated_tokens'] / s if s else 0:.1f} generated tokens/s"
          + (f"; {len(skipped)} images skipped, see {output.with_suffix('.errors.jsonl')}" if skipped else ""))
    for e in skipped[:10]:
        print(f"  skipped {e['error']}")
    return {"labelled": len(rows), "images": len(images), "flagged": flagged, "skipped": len(skipped)}


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
