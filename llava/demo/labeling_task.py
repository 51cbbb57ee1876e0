"""The labeling and retrieval sample task: synthetic scenes to label with the number of their shapes.

    python -m llava.demo.labeling_task --output-dir playground/data/labeling

draws synthetic scenes (seeds of their own) and writes:

    categories.txt        the allowed list: the number of shapes (one shape ... four shapes)
    train.json            conversations for the training scripts: labeling's two questions, answered
                          (the description in the captioning house style, and the category)
    test/  test_truth.csv       images to label, and their true category and description
    queries/  queries_truth.csv other images to query the retrieval table built from test/'s labels

`python -m llava.tasks.labeling_data score` and `retrieval-score` score labels
and a retrieval table against the truth files.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from llava.data.outputs import json_list_text, write_atomically
from llava.demo.caption_task import house_caption
from llava.demo.scenes import plan_scenes, save_scene
from llava.staged_dir import staged_output
from llava.tasks.labeling import DESCRIBE, category_question

CATEGORIES = ["one shape", "two shapes", "three shapes", "four shapes"]


def true_category(objects) -> str:
    return CATEGORIES[len(objects) - 1]


def _write_truth(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["image", "category", "description"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


@staged_output("llava.demo.labeling_task")
def make_labeling_task(output_dir: str | Path, num_train: int = 1200, num_test: int = 120, num_queries: int = 40,
                       seed: int = 23, image_size: tuple[int, int] = (96, 72)) -> dict:
    out = Path(output_dir)
    for sub in ("train_images", "test", "queries"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plans = plan_scenes(num_train, num_test + num_queries, seed=seed, image_size=image_size)
    ask = category_question(CATEGORIES)
    train, truth = [], {"test": [], "queries": []}
    for index, plan in enumerate(plans):
        if plan.split == "train":
            folder = "train_images"
        else:
            folder = "test" if index < num_train + num_test else "queries"
        save_scene(plan, image_size, out / folder / plan.file_name)
        caption, category = house_caption(plan.objects), true_category(plan.objects)
        if folder == "train_images":
            train.append({"id": f"l{plan.image_id:07d}", "image": plan.file_name, "conversations": [
                {"from": "human", "value": "<image>\n" + DESCRIBE}, {"from": "gpt", "value": caption},
                {"from": "human", "value": ask}, {"from": "gpt", "value": category}]})
        else:
            truth[folder].append({"image": plan.file_name, "category": category, "description": caption})
    write_atomically({out / "train.json": json_list_text(train),
                      out / "categories.txt": "".join(c + "\n" for c in CATEGORIES)})
    _write_truth(out / "test_truth.csv", truth["test"])
    _write_truth(out / "queries_truth.csv", truth["queries"])
    return {"output_dir": out, "train": len(train), "test": len(truth["test"]), "queries": len(truth["queries"])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", default="playground/data/labeling")
    ap.add_argument("--num-train", type=int, default=1200)
    ap.add_argument("--num-test", type=int, default=120)
    ap.add_argument("--num-queries", type=int, default=40)
    args = ap.parse_args(argv)
    # Every flag before any work: the counts, and the output folder.
    for name in ("num_train", "num_test", "num_queries"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --output-dir {out}: is a file, not a folder")
    res = make_labeling_task(args.output_dir, args.num_train, args.num_test, args.num_queries)
    print(f"{res['train']} training conversations, {res['test']} images to label, {res['queries']} query images "
          f"-> {res['output_dir']}")
    return res


if __name__ == "__main__":
    main()
