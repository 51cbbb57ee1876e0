"""LazySupervisedDataset (llava/data/dataset.py) and DataCollator (llava/data/collate.py)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image

from llava.constants import IGNORE_INDEX
from llava.conversation import get_template
from llava.data.collate import DataCollator
from llava.data.dataset import DatasetError, LazySupervisedDataset
from llava.data.label_mask import build_example


def H(v):
    return {"from": "human", "value": v}


def G(v):
    return {"from": "gpt", "value": v}


def image_record(rid, image, answer="Red"):
    return {"id": rid, "image": image, "conversations": [H("<image>\nWhat colour is it?"), G(answer)]}


def text_record(rid, answer="Paris"):
    return {"id": rid, "conversations": [H("What is the capital of France?"), G(answer)]}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    Image.new("RGB", (20, 20), (255, 0, 0)).save(d / "red.png")
    Image.new("RGB", (24, 12), (0, 0, 255)).save(d / "blue.png")
    Image.new("RGB", (12, 30), (0, 255, 0)).save(d / "green.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not really a png" * 20)
    return d


@pytest.fixture
def make(tmp_path, folder, tiny_loaded):
    def make(records, max_length=None, name="data.json", template="vicuna_v1"):
        path = tmp_path / name
        path.write_text(json.dumps(records))
        return LazySupervisedDataset(
            path, image_folder=folder, tokenizer=tiny_loaded.tokenizer,
            image_processor=tiny_loaded.image_processor, template=template,
            image_token_id=tiny_loaded.image_token_id, num_image_tokens=tiny_loaded.num_image_tokens,
            model_max_length=max_length,
        )
    return make


MIXED = [
    image_record("i0", "red.png"),
    text_record("t0"),
    image_record("i1", "blue.png", answer="Blue, quite dark blue"),
    text_record("t1", answer="It is Paris, of course"),
]


def test_lengths_has_image_and_items(make, tiny_loaded):
    ds = make(MIXED)
    assert len(ds) == 4
    assert ds.has_image.tolist() == [True, False, True, False]
    assert ds.skipped == {} and ds.truncated == [] and ds.bad_images == []
    n_img, image_id = tiny_loaded.num_image_tokens, tiny_loaded.image_token_id
    crop = tiny_loaded.image_processor.crop_size
    template = get_template("vicuna_v1")
    for i, rec in enumerate(MIXED):
        item = ds[i]
        ex = build_example(rec, template, tiny_loaded.tokenizer, image_id, n_img)
        assert item["input_ids"].tolist() == ex.input_ids
        assert item["labels"].tolist() == ex.labels
        assert item["input_ids"].dtype == torch.long and item["labels"].dtype == torch.long
        assert ds.lengths[i] == len(ex.input_ids)
        if "image" in rec:
            assert item["pixel_values"].shape == (3, crop["height"], crop["width"])
            assert (item["input_ids"] == image_id).sum() == n_img
        else:
            assert "pixel_values" not in item
            assert (item["input_ids"] == image_id).sum() == 0
    assert ds.modality_lengths.tolist() == [int(ds.lengths[0]), -int(ds.lengths[1]),
                                            int(ds.lengths[2]), -int(ds.lengths[3])]


def test_jsonl_file(tmp_path, folder, tiny_loaded):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in MIXED) + "\n")
    ds = LazySupervisedDataset(
        path, image_folder=folder, tokenizer=tiny_loaded.tokenizer, image_processor=tiny_loaded.image_processor,
        template="vicuna_v1", image_token_id=tiny_loaded.image_token_id,
        num_image_tokens=tiny_loaded.num_image_tokens, model_max_length=None)
    assert ds.has_image.tolist() == [True, False, True, False]


def test_collate_mixed_batch(make, tiny_loaded):
    ds = make(MIXED)
    pad = tiny_loaded.tokenizer.pad_token_id
    assert pad is not None and pad != tiny_loaded.tokenizer.eos_token_id
    items = [ds[i] for i in range(4)]
    batch = DataCollator(pad_token_id=pad)(items)
    lengths = [len(it["input_ids"]) for it in items]
    n = max(lengths)
    assert len(set(lengths)) > 1  # so that padding really happens
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, n)
    # Two image records -> two images, in record order.
    assert batch["pixel_values"].shape[0] == 2
    assert torch.equal(batch["pixel_values"][0], items[0]["pixel_values"])
    assert torch.equal(batch["pixel_values"][1], items[2]["pixel_values"])
    for row, (it, k) in enumerate(zip(items, lengths)):
        assert torch.equal(batch["input_ids"][row, :k], it["input_ids"])
        assert torch.equal(batch["labels"][row, :k], it["labels"])
        assert (batch["input_ids"][row, k:] == pad).all()
        assert (batch["labels"][row, k:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * k + [0] * (n - k)


def test_collate_text_only_batch_has_no_pixel_values_and_pads_to_multiple(make, tiny_loaded):
    ds = make(MIXED)
    items = [ds[1], ds[3]]
    batch = DataCollator(pad_token_id=tiny_loaded.tokenizer.pad_token_id, pad_to_multiple_of=8)(items)
    assert "pixel_values" not in batch
    longest = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape[1] == (longest + 7) // 8 * 8 >= longest
    assert batch["attention_mask"].sum().item() == sum(len(it["input_ids"]) for it in items)


def test_bad_records_all_listed(make):
    records = [
        image_record("ok0", "red.png"),
        {"id": "bad-role", "image": "red.png", "conversations": [G("Red"), H("<image>\nColour?")]},
        text_record("ok1"),
        {"id": "bad-empty", "conversations": [H("Hi"), G("")]},
        {"id": "bad-placeholder", "conversations": [H("<image>\nColour?"), G("Red")]},
        "not even an object",
    ]
    with pytest.raises(DatasetError) as info:
        make(records)
    msg = str(info.value)
    assert "4 of 6 records" in msg
    for name in ("data.json record 1 (id 'bad-role')", "data.json record 3 (id 'bad-empty')",
                 "data.json record 4 (id 'bad-placeholder')", "data.json record 5"):
        assert name in msg, name
    assert "ok0" not in msg and "ok1" not in msg


def test_missing_image_names_record_and_path(make, folder):
    with pytest.raises(DatasetError) as info:
        make([image_record("ok", "red.png"), image_record("lost", "sub/missing.png")])
    msg = str(info.value)
    assert "record 1 (id 'lost')" in msg
    assert str(folder / "sub" / "missing.png") in msg


def test_overlong_records_skipped_and_truncated_ones_kept(make, tiny_loaded, caplog):
    n_img = tiny_loaded.num_image_tokens
    records = [
        image_record("short", "red.png"),
        # The question alone is longer than the limit: no answer token would survive.
        {"id": "long-question", "conversations": [H("word " * 200), G("Yes")]},
        # A long answer: cut at the limit, the start of the answer kept.
        image_record("long-answer", "blue.png", answer="very " * 200),
    ]
    limit = 60 + n_img
    with caplog.at_level(logging.WARNING, logger="llava.data.dataset"):
        ds = make(records, max_length=limit)
    assert len(ds) == 2
    assert list(ds.skipped) == ["data.json record 1 (id 'long-question')"]
    assert "no answer" in ds.skipped["data.json record 1 (id 'long-question')"]
    assert ds.truncated == ["data.json record 2 (id 'long-answer')"]
    assert ds.lengths.tolist()[1] == limit
    item = ds[1]
    assert len(item["input_ids"]) == limit and (item["labels"] != IGNORE_INDEX).any()
    assert "pixel_values" in item
    assert "long-question" in caplog.text and "long-answer" in caplog.text


def test_all_records_overlong_is_an_error(make):
    with pytest.raises(DatasetError, match="all 1 records are longer"):
        make([{"id": "q", "conversations": [H("word " * 200), G("Yes")]}], max_length=30)


def test_corrupt_image_skipped_at_getitem(make, folder):
    ds = make([image_record("i0", "red.png"), image_record("broken", "corrupt.png"), text_record("t0")])
    assert len(ds) == 3  # exists, so it passes the load-time check
    nxt = ds[2]
    item = ds[1]  # the corrupt one: the next record is returned in its place
    assert torch.equal(item["input_ids"], nxt["input_ids"]) and "pixel_values" not in item
    assert len(ds.bad_images) == 1 and str(folder / "corrupt.png") in ds.bad_images[0]
    # Wrapping around at the end of the dataset.
    ds2 = make([image_record("i0", "red.png"), image_record("broken", "corrupt.png")], name="d2.json")
    assert torch.equal(ds2[1]["input_ids"], ds2[0]["input_ids"])


def test_only_corrupt_images_is_an_error(make):
    ds = make([image_record("broken", "corrupt.png")])
    with pytest.raises(DatasetError, match="no record with a readable image"):
        ds[0]


def test_corrupt_image_log_names_the_file_record(make, caplog):
    records = [
        {"id": "long-question", "conversations": [H("word " * 200), G("Yes")]},  # skipped at load
        text_record("t0"),
        image_record("broken", "corrupt.png"),
    ]
    ds = make(records, max_length=100)
    assert len(ds) == 2 and list(ds.skipped) == ["data.json record 0 (id 'long-question')"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llava.data.dataset"):
        ds[1]
    assert "corrupt.png" in caplog.text  # the skip is logged...
    assert "data.json record 2 (id 'broken')" in caplog.text
    assert ds.bad_images and "record 2 (id 'broken')" in ds.bad_images[0]


def test_pad_to_square_fills_with_mean_colour(make, folder, tiny_loaded):
    """A wide red image is pasted centred on a square of the processor's mean colour: after
    normalisation the top and bottom rows are ~0 (the mean), the middle rows red."""
    assert tiny_loaded.image_processor.do_pad
    Image.new("RGB", (64, 16), (255, 0, 0)).save(folder / "wide.png")
    ds = make([image_record("wide", "wide.png")])
    pv = ds[0]["pixel_values"]
    size = pv.shape[-1]
    top, mid, bottom = pv[:, 0, :], pv[:, size // 2, :], pv[:, -1, :]
    assert top.abs().max() < 0.05 and bottom.abs().max() < 0.05
    mean, std = tiny_loaded.image_processor.image_mean, tiny_loaded.image_processor.image_std
    red = torch.tensor([(1 - mean[0]) / std[0], (0 - mean[1]) / std[1], (0 - mean[2]) / std[2]])
    assert torch.allclose(mid, red[:, None].expand_as(mid), atol=0.05)
    assert (mid - top).abs().min() > 1.0
    # A square image has no padding: its top row is red too.
    Image.new("RGB", (16, 16), (255, 0, 0)).save(folder / "square.png")
    sq = make([image_record("sq", "square.png")], name="sq.json")[0]["pixel_values"]
    assert torch.allclose(sq[:, 0, :], red[:, None].expand_as(sq[:, 0, :]), atol=0.05)
