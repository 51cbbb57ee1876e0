"""Search a table of described images: the retrieval table's format and its query, shared by the
retrieval command (llava.tasks.retrieval, which builds the table from labeling's labels.csv) and the
web UI's Search tab (llava.serve.web --retrieval-db).

    index = Index("catalogue.lancedb", load_text_embedder())           # llava.model.text_embedder
    index.search(describe(loaded, image), k=5, mode="complementary")

The table is LanceDB's embedded format (a folder, no server): a row per item
with its image path, description, category and a unit-length text embedding of
"category: description"; optionally an open_clip image embedding
(llava.model.clip_model).  The items' descriptions answer DESCRIBE, the
question labeling asks; a query image is described with the same question, so
query and items are embedded alike.  Search is exact, by cosine similarity.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from llava.extras import missing_extra
from llava.model.inputs import generate

TABLE = "items"
META = "llava_retrieval.json"  # beside the table: which embedders built it, so a query uses the same
DESCRIBE = "Describe the image in one sentence."


def describe(loaded, image, conv_mode=None, max_new_tokens: int = 48) -> str:
    """The model's answer to DESCRIBE about `image`: how an item's description was made."""
    return generate(loaded, [DESCRIBE], [image], max_new_tokens=max_new_tokens, conv_mode=conv_mode)[0]


def item_text(category: str, description: str) -> str:
    return f"{category}: {description}".strip(": ")


def _lancedb():
    try:  # optional and heavy (the `tasks` extra): imported when a retrieval table is used
        import lancedb  # noqa: PLC0415
    except ImportError as exc:  # the `tasks` extra
        raise missing_extra("tasks", exc, "the retrieval table") from exc
    return lancedb


def _vector_column(vectors):
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])


def write_table(rows: list[dict], db_path: str | Path, embedder, image_root: str = "", clip=None, images=None,
                source: str = "") -> None:
    """(Re)write the table at db_path from rows of image, description, category; with `clip`, the images'
    embeddings too (`images`, one per row).  `source` is recorded in the metadata (the labels file)."""
    lancedb = _lancedb()  # before the work of embedding, when it is missing
    vectors = embedder.encode([item_text(r["category"], r["description"]) for r in rows])
    columns = {}
    if clip is not None:
        columns["image_vector"] = _vector_column(clip.encode_images(images))
    table = pa.table({
        "image": [r["image"] for r in rows],
        "image_root": [image_root] * len(rows),
        "description": [r["description"] for r in rows],
        "category": [r["category"] for r in rows],
        "vector": _vector_column(vectors),
        **columns,
    })
    db = lancedb.connect(str(db_path))
    db.create_table(TABLE, data=table, mode="overwrite")
    meta = {"embedder": embedder.name, "dim": int(vectors.shape[1]), "rows": len(rows), "labels": source,
            "image_root": image_root, **({"clip_model": clip.name, "clip_dim": clip.dim} if clip is not None else {})}
    (Path(db_path) / META).write_text(json.dumps(meta, indent=1) + "\n")


class Index:
    def __init__(self, db_path: str | Path, embedder, clip=None):
        meta_path = Path(db_path) / META
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
        self.table = _lancedb().connect(str(db_path)).open_table(TABLE)
        self.embedder, self.clip = embedder, clip

    def search(self, text: str | None, k: int = 5, mode: str = "similar", neighbours: int = 5,
               image=None) -> dict:
        """Nearest items to `text` by description, or, with an open_clip model (Index(clip=...)), to
        `image` (or `text`) by the items' image embeddings.  mode "complementary": the nearest items of
        other categories than the query's (the majority among its `neighbours` nearest)."""
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
