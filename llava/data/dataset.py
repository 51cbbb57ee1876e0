"""The training dataset: LLaVA conversation records -> (input_ids, labels, pixel_values).

Loading the file checks every record (roles, image placeholder, image file
present) and tokenizes it once to learn its exact length and to prove its
label mask can be computed, so a bad record stops the run before the first
step, with every bad record named, instead of hours in.  Only the lengths are
kept; the token ids are recomputed in the DataLoader workers, together with
the image decoding and pad-to-square preprocessing, so the main process never
touches pixels.

Over-long records (longer than model_max_length) are truncated after the image
when an answer survives, else skipped; either way they are counted and named
in the log, never silently dropped.  A record whose image turns out to be
unreadable when a worker decodes it is skipped the same way (the next record
is used in its place) and logged, so one corrupt file does not end a run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from llava.conversation import get_template
from llava.data.label_mask import ExampleBuilder, OverlongError, RecordError, describe, image_of, parse_record
from llava.data.records import RecordStore, read_records
from llava.mm_utils import ImageError, load_image

log = logging.getLogger(__name__)

MAX_LISTED = 20  # bad records listed in one error message


class DatasetError(ValueError):
    """Records that cannot be trained on; the message lists them."""


class LazySupervisedDataset(Dataset):
    """LLaVA records, checked up front, turned into tensors lazily (in DataLoader workers).

    Attributes the sampler and the report use:
      lengths    token count of each kept record (after truncation)
      has_image  whether each kept record has an image
      skipped    {record name: reason} of records left out (over-long)
      truncated  names of records cut to model_max_length
    """

    def __init__(self, path: str | Path, *, image_folder: str | Path | None, tokenizer, image_processor,
                 template: str, image_token_id: int, num_image_tokens: int, model_max_length: int | None,
                 builder=None):
        """`builder`: another family's FamilyExampleBuilder (llava/data/family_examples.py) in place of our
        templates; its items then carry the rendered text and the decoded image, for its processor to turn
        into the batch (FamilyCollator), and image_processor is not used."""
        self.path = str(path)
        self.image_folder = Path(image_folder) if image_folder else None
        self.image_processor = image_processor
        self.family = builder is not None
        self.builder = builder or ExampleBuilder(get_template(template), tokenizer, image_token_id, num_image_tokens,
                                                 model_max_length)
        self.max_length = model_max_length
        records = read_records(path)
        if not records:
            raise DatasetError(f"{path}: no records")
        kept, lengths, has_image, source_index = [], [], [], []
        errors: list[str] = []
        self.skipped: dict[str, str] = {}
        self.truncated: list[str] = []
        for i, record in enumerate(records):
            name = describe(record, i, Path(self.path).name)
            try:
                conv = parse_record(record, name)
                if conv.has_image:
                    self._check_image_exists(record, name)
                n_full, example = self._measure(record, name, conv)
            except OverlongError as exc:
                self.skipped[name] = str(exc)
                continue
            except RecordError as exc:
                errors.append(str(exc))
                continue
            if n_full > len(example.input_ids):
                self.truncated.append(name)
            kept.append(record)
            source_index.append(i)
            lengths.append(len(example.input_ids))
            has_image.append(conv.has_image)
        if errors:
            listed = "\n  ".join(errors[:MAX_LISTED])
            more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
            raise DatasetError(f"{path}: {len(errors)} of {len(records)} records cannot be used:\n  {listed}{more}")
        if not kept:
            raise DatasetError(f"{path}: all {len(records)} records are longer than model_max_length "
                               f"{model_max_length}; e.g. {next(iter(self.skipped.values()))}")
        self._report_overlong(len(records))
        self.records = RecordStore(kept)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.has_image = np.asarray(has_image, dtype=bool)
        self.source_index = np.asarray(source_index, dtype=np.int64)  # position in the file, for messages
        self.bad_images: list[str] = []

    # ---- loading-time checks ------------------------------------------------------------------
    def _image_path(self, record: dict, name: str) -> Path:
        rel = image_of(record, name)
        return self.image_folder / rel if self.image_folder is not None else Path(rel)

    def _check_image_exists(self, record: dict, name: str) -> None:
        path = self._image_path(record, name)
        if not os.path.isfile(path):
            raise RecordError(f"{name}: image {path} not found")

    def _measure(self, record, name, conv):
        """(untruncated length, example): building the example proves the mask can be computed."""
        limit = self.builder.max_length
        self.builder.max_length = None
        try:
            example = self.builder(record, name, conv)
        finally:
            self.builder.max_length = limit
        n = len(example.input_ids)
        if limit is not None and n > limit:
            example = self.builder(record, name, conv)  # cut after the image, or OverlongError
        return n, example

    def _report_overlong(self, total: int) -> None:
        for what, names in (("skipped", list(self.skipped)), ("truncated after the image", self.truncated)):
            if names:
                shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
                log.warning("%s: %d of %d records longer than model_max_length %s were %s: %s",
                            self.path, len(names), total, self.max_length, what, shown)

    # ---- Dataset ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def modality_lengths(self) -> np.ndarray:
        """The original LLaVA's convention: positive for records with an image, negative without."""
        return np.where(self.has_image, self.lengths, -self.lengths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        for attempt in range(len(self)):
            j = (i + attempt) % len(self)
            try:
                return self._item(j)
            except ImageError as exc:
                # Checked to exist at load, unreadable now: skip it, say so, and train on the next one.
                # (Counted per process: with DataLoader workers the log is what reaches the user.)
                message = f"{self._name(j)}: skipped, {exc}"
                self.bad_images.append(message)
                log.warning(message)
        raise DatasetError(f"{self.path}: no record with a readable image")

    def _name(self, i: int, record=None) -> str:
        record = self.records[i] if record is None else record
        return describe(record, int(self.source_index[i]), Path(self.path).name)

    def _item(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        name = self._name(i, record)
        example = self.builder(record, name)
        item: dict[str, Any] = {
            "input_ids": torch.tensor(example.input_ids, dtype=torch.long),
            "labels": torch.tensor(example.labels, dtype=torch.long),
        }
        if self.family:
            item["text"], item["name"] = example.text, name
        if self.has_image[i]:
            image = load_image(self._image_path(record, name))
            if self.family:
                item["image"] = image
            else:
                item["pixel_values"] = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return item
