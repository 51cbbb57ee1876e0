"""Hugging Face datasets as task tables: a dataset on the hub, or a folder written by save_to_disk.

    open_dataset("hf:HuggingFaceM4/VQAv2", split="validation")   # datasets.load_dataset
    open_dataset("data/vqa_saved", split="train")                 # datasets.load_from_disk

"hf:" takes whatever `datasets.load_dataset` takes: a hub id (downloaded into, or read from, the
datasets cache; HF_HUB_OFFLINE=1 reads the cache only), or a local folder of data files.  The
`datasets` library is imported only here, when such an input is given.  Rows are read as Arrow
batches (`with_format("arrow")`), so an Image column arrives as its stored bytes, never decoded to
PIL here: llava.data.embedded_images writes those bytes to the image folder as they are, and the
usual checks (llava.data.images) decode them there.
"""

from __future__ import annotations

import os
from pathlib import Path

from llava.data.tables import Table, TableError, batch_records, image_columns_of
from llava.printable import printable

HF_PREFIX = "hf:"
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # a DatasetDict folder; a Dataset folder


def is_saved_dataset(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / marker).is_file() for marker in _SAVED_MARKERS)


def is_dataset_source(source: str) -> bool:
    """Whether --input names a Hugging Face dataset (hf:...) or a save_to_disk folder, not a table file."""
    return source.startswith(HF_PREFIX) or is_saved_dataset(source)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _pick_split(label: str, splits: list[str], split: str | None) -> str:
    if split is None:
        if len(splits) == 1:
            return splits[0]
        raise TableError(f"{label} has the splits {', '.join(splits)}: choose one with --split")
    if split not in splits:
        raise TableError(f"{label}: no split {split!r}; it has {', '.join(splits) or '(none)'}")
    return split


def _load_hub(name: str, split: str | None, config: str | None):
    import datasets  # noqa: PLC0415 - 2 s to import; only a dataset input pays it

    shown = HF_PREFIX + name + (f" (config {config})" if config else "")
    if not name:
        raise TableError("--input hf: needs a dataset after it, e.g. hf:ORG/NAME")
    try:
        if split is None:
            split = _pick_split(shown, list(datasets.get_dataset_split_names(name, config)), None)
        return datasets.load_dataset(name, config, split=split), split
    except TableError:
        raise
    except Exception as exc:  # not found, offline and not cached, no such split or config: its own words
        why = printable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        hint = ""
        if _offline():
            hint = ("; offline (HF_HUB_OFFLINE=1) and not in the datasets cache: run once with network access, or "
                    "point HF_DATASETS_CACHE / HF_HOME at a cache that holds it")
        raise TableError(f"--input {shown}: cannot load it ({type(exc).__name__}: {why}){hint}") from None


def _load_saved(path: str, split: str | None):
    import datasets  # noqa: PLC0415 - 2 s to import; only a dataset input pays it

    shown = printable(path)
    try:
        loaded = datasets.load_from_disk(path)
    except Exception as exc:
        raise TableError(f"--input {shown}: cannot load the saved dataset ({type(exc).__name__}: "
                         f"{printable(str(exc).strip())})") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = _pick_split(shown, list(loaded), split)
        return loaded[split], split
    if split is not None:
        raise TableError(f"--input {shown} is one dataset with no splits (save_to_disk of a Dataset); "
                         f"drop --split {split}")
    return loaded, None


def open_dataset(source: str, split: str | None = None, config: str | None = None) -> Table:
    """A Table over a Hugging Face dataset; raises TableError naming the dataset when it cannot be loaded."""
    if source.startswith(HF_PREFIX):
        ds, split = _load_hub(source[len(HF_PREFIX):], split, config)
        fmt = "huggingface dataset"
    else:
        if config is not None:
            raise TableError(f"--hf-config {config}: applies to hf: datasets, not the saved folder {printable(source)}")
        ds, split = _load_saved(source, split)
        fmt = "huggingface dataset (save_to_disk)"
    label = printable(source) + (f"[{split}]" if split else "")
    arrow = ds.with_format("arrow")
    schema = arrow.data.schema
    return Table(Path(label), fmt, list(ds.column_names), True,
                 batch_records(label, arrow.iter(batch_size=4096)), image_columns_of(schema), len(ds))
