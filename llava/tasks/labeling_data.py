"""The labeling and retrieval sample task, and their scores against the truth.

    python -m llava.tasks.labeling_data sample --output-dir playground/data/labeling
    python -m llava.tasks.labeling_data score --labels labels.csv --truth playground/data/labeling/test_truth.csv
    python -m llava.tasks.labeling_data retrieval-score --db catalogue.lancedb \\
        --queries playground/data/labeling/queries --truth playground/data/labeling/queries_truth.csv [--model-path M]

`sample` draws synthetic scenes (seeds of their own) and writes:

    categories.txt        the allowed list: the number of shapes (one shape ... four shapes)
    train.json            conversations for the training scripts: labeling's two questions, answered
                          (the description in the captioning house style, and the category)
    test/  test_truth.csv       images to label, and their true category and description
    queries/  queries_truth.csv other images to query the retrieval table built from test/'s labels

`score` compares labels.csv with the truth: category accuracy, how many
categories were mapped (flagged), per true category.  `retrieval-score`
queries the table with every query image and reports precision@k: the share of
the top k items whose true category is the query's.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

from llava.data.outputs import json_list_text, write_atomically
from llava.data.sample_task import draw_scene, plan_task
from llava.tasks.caption_data import house_caption
from llava.staged_dir import staged_output

CATEGORIES = ["one shape", "two shapes", "three shapes", "four shapes"]


def true_category(objects) -> str:
    return CATEGORIES[len(objects) - 1]


def _write_truth(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["image", "category", "description"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


@staged_output("llava.tasks.labeling_data sample")
def make_labeling_task(output_dir: str | Path, num_train: int = 1200, num_test: int = 120, num_queries: int = 40,
                       seed: int = 23, image_size: tuple[int, int] = (96, 72)) -> dict:
    from llava.tasks.labeling import DESCRIBE, category_question

    out = Path(output_dir)
    for sub in ("train_images", "test", "queries"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plans = plan_task(num_train, num_test + num_queries, seed=seed, image_size=image_size, questions_per_image=0)
    ask = category_question(CATEGORIES)
    train, truth = [], {"test": [], "queries": []}
    for index, plan in enumerate(plans):
        if plan.split == "train":
            folder = "train_images"
        else:
            folder = "test" if index < num_train + num_test else "queries"
        draw_scene(plan, image_size).save(out / folder / plan.file_name, "JPEG", quality=95, subsampling=0)
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


def read_rows(path: str | Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a labels or truth table that have `columns` as text; every other row is named on
    stderr, with its line, and left out (bytes that are not UTF-8, a broken CSV record, a missing value)."""
    from llava.data.tables import TableError, is_missing, open_table
    from llava.eval.json_lines import unpaired_surrogate

    try:
        table = open_table(path)
    except TableError as exc:
        raise SystemExit(f"error: {exc}") from None
    missing = set(columns) - set(table.columns)
    if table.has_header and missing:
        raise SystemExit(f"error: {path}: no {', '.join(sorted(missing))} column")
    rows = []
    for rec in table.records:
        error = rec.error
        if error is None and any(is_missing(rec.values.get(c)) or not isinstance(rec.values.get(c), str)
                                 for c in columns):
            error = f"needs {', '.join(columns)} as text"
        if error is None and unpaired_surrogate(rec.values) is not None:
            error = "holds bytes that are not UTF-8 text"
        if error is not None:
            print(f"{rec.loc}: {error}; left out", file=sys.stderr)
            continue
        rows.append(rec.values)
    return rows


def read_truth(path: str | Path) -> dict[str, str]:
    return {r["image"]: r["category"] for r in read_rows(path, ("image", "category"))}


def score_labels(labels: str | Path, truth_path: str | Path) -> dict:
    truth = read_truth(truth_path)
    rows = {r["image"]: r for r in read_rows(labels, ("image", "category"))}
    per = defaultdict(lambda: [0, 0])
    right = flagged = 0
    for image, category in truth.items():
        row = rows.get(image)
        ok = row is not None and row["category"] == category
        right += ok
        flagged += row is not None and row.get("flagged") == "yes"
        per[category][0] += ok
        per[category][1] += 1
    n = len(truth)
    return {"images": n, "labelled": sum(i in rows for i in truth), "category_accuracy": right / n if n else None,
            "flagged": flagged, "per_category": {c: {"count": t, "accuracy": r / t} for c, (r, t) in sorted(per.items())}}


def retrieval_precision(index, queries_dir: str | Path, truth_path: str | Path, describe_fn, k: int = 5,
                        table_truth: dict[str, str] | None = None) -> dict:
    """Mean precision@k over the query images: the share of the top k whose true category is the query's.
    The items' true categories come from table_truth (the catalogue's truth), not from the labels."""
    from llava.data.images import normalize_relative
    from llava.mm_utils import ImageError, load_image

    truth = read_truth(truth_path)
    precisions = []
    for image, category in truth.items():
        try:
            if normalize_relative(image) is None:
                raise ImageError(f"{image!r}: not a path inside the queries folder")
            picture = load_image(Path(queries_dir) / image)
        except ImageError as exc:
            print(f"{truth_path}: query {exc}; left out", file=sys.stderr)
            continue
        result = index.search(describe_fn(picture), k)
        hits = [table_truth.get(r["image"]) if table_truth else r["category"] for r in result["results"]]
        precisions.append(sum(h == category for h in hits) / k)
    return {"queries": len(precisions), "k": k,
            f"precision_at_{k}": sum(precisions) / len(precisions) if precisions else None}


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every flag before any work: counts, the files and folders named, the output folder."""
    from llava.eval.output_paths import check_inputs

    if args.command == "sample":
        for name in ("num_train", "num_test", "num_queries"):
            if getattr(args, name) < 1:
                ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        out = Path(args.output_dir)
        if out.exists() and not out.is_dir():
            raise SystemExit(f"error: --output-dir {out}: is a file, not a folder")
    elif args.command == "score":
        check_inputs({"--labels": args.labels, "--truth": args.truth})
    else:
        from llava.model.flags import model_flag_errors

        errors = model_flag_errors(args) + ([f"-k must be at least 1, got {args.k}"] if args.k < 1 else [])
        if errors:
            ap.error("; ".join(errors))
        check_inputs({"--truth": args.truth, "--table-truth": args.table_truth},
                     {"--queries": args.queries, "--db": args.db})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--output-dir", default="playground/data/labeling")
    s.add_argument("--num-train", type=int, default=1200)
    s.add_argument("--num-test", type=int, default=120)
    s.add_argument("--num-queries", type=int, default=40)
    c = sub.add_parser("score")
    c.add_argument("--labels", required=True)
    c.add_argument("--truth", required=True)
    r = sub.add_parser("retrieval-score")
    from llava.model.args import add_model_args

    add_model_args(r)
    r.add_argument("--db", required=True)
    r.add_argument("--queries", required=True, help="folder of query images")
    r.add_argument("--truth", required=True, help="the queries' true categories")
    r.add_argument("--table-truth", required=True, help="the table items' true categories")
    r.add_argument("-k", type=int, default=5)
    args = ap.parse_args(argv)
    check_args(ap, args)
    if args.command == "sample":
        res = make_labeling_task(args.output_dir, args.num_train, args.num_test, args.num_queries)
        print(f"{res['train']} training conversations, {res['test']} images to label, {res['queries']} query images "
              f"-> {res['output_dir']}")
        return res
    if args.command == "score":
        res = score_labels(args.labels, args.truth)
    else:
        from llava.model.args import load_model_or_exit
        from llava.model.text_embedder import load_text_embedder
        from llava.tasks.retrieval import Index, describe

        loaded = load_model_or_exit(args)
        index = Index(args.db, load_text_embedder())
        res = retrieval_precision(index, args.queries, args.truth, lambda im: describe(loaded, im, args.conv_mode),
                                  args.k, read_truth(args.table_truth))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
