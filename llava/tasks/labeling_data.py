"""Labels and a retrieval table scored against the truth: a table of (image, category[, description]).

    python -m llava.tasks.labeling_data score --labels labels.csv --truth test_truth.csv
    python -m llava.tasks.labeling_data retrieval-score --db catalogue.lancedb \\
        --queries query_images/ --truth queries_truth.csv --table-truth test_truth.csv [--model-path M]

`score` compares labels.csv (python -m llava.tasks.labeling) with the truth:
category accuracy, how many categories were mapped (flagged), per true
category.  `retrieval-score` queries the table (python -m llava.tasks.retrieval
build) with every query image and reports precision@k: the share of the top k
items whose true category is the query's.  The sample task writes such truth
files for its images (docs/labeling.md); a set of your own images labelled by
hand works the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from llava.data.images import normalize_relative
from llava.data.tables import TableError, is_missing, open_table
from llava.eval.json_lines import unpaired_surrogate
from llava.eval.output_paths import check_inputs
from llava.mm_utils import ImageError, load_image
from llava.model.args import add_model_args, load_model_or_exit
from llava.model.flags import model_flag_errors
from llava.model.text_embedder import load_text_embedder
from llava.tasks.retrieval import Index, describe


def read_rows(path: str | Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a labels or truth table that have `columns` as text; every other row is named on
    stderr, with its line, and left out (bytes that are not UTF-8, a broken CSV record, a missing value)."""
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
            "flagged": flagged,
            "per_category": {c: {"count": t, "accuracy": r / t} for c, (r, t) in sorted(per.items())}}


def retrieval_precision(index, queries_dir: str | Path, truth_path: str | Path, describe_fn, k: int = 5,
                        table_truth: dict[str, str] | None = None) -> dict:
    """Mean precision@k over the query images: the share of the top k whose true category is the query's.
    The items' true categories come from table_truth (the catalogue's truth), not from the labels."""
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
    """Every flag before any work: the files and folders named, the model flags, k."""
    if args.command == "score":
        check_inputs({"--labels": args.labels, "--truth": args.truth})
        return
    errors = model_flag_errors(args) + ([f"-k must be at least 1, got {args.k}"] if args.k < 1 else [])
    if errors:
        ap.error("; ".join(errors))
    check_inputs({"--truth": args.truth, "--table-truth": args.table_truth},
                 {"--queries": args.queries, "--db": args.db})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("score", help="labels.csv against the truth: category accuracy")
    c.add_argument("--labels", required=True)
    c.add_argument("--truth", required=True)
    r = sub.add_parser("retrieval-score", help="a retrieval table queried with images of known category: precision@k")
    add_model_args(r)
    r.add_argument("--db", required=True)
    r.add_argument("--queries", required=True, help="folder of query images")
    r.add_argument("--truth", required=True, help="the queries' true categories")
    r.add_argument("--table-truth", required=True, help="the table items' true categories")
    r.add_argument("-k", type=int, default=5)
    args = ap.parse_args(argv)
    check_args(ap, args)
    if args.command == "score":
        res = score_labels(args.labels, args.truth)
    else:
        loaded = load_model_or_exit(args)
        index = Index(args.db, load_text_embedder())
        res = retrieval_precision(index, args.queries, args.truth, lambda im: describe(loaded, im, args.conv_mode),
                                  args.k, read_truth(args.table_truth))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
