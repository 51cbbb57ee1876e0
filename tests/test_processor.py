"""Image preprocessing is LLaVA's `pad` mode, pixel for pixel."""

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.processor import CLIP_MEAN, CLIP_STD, image_processor_from_dir, make_image_processor, num_image_tokens


def llava_pad_reference(img: Image.Image, size: int) -> torch.Tensor:
    """The original's steps written out: expand2square with the mean colour, then the
    CLIP processor of its day (PIL bicubic resize of the short side, centre crop, rescale, normalize)."""
    bg = tuple(int(x * 255) for x in CLIP_MEAN)
    assert bg == (122, 116, 104)
    w, h = img.size
    if w != h:
        side = max(w, h)
        canvas = Image.new(img.mode, (side, side), bg)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    img = img.resize((size, size), Image.BICUBIC)
    a = np.asarray(img).astype(np.float32) / 255.0
    a = (a - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1))


@pytest.mark.parametrize("shape", [(260, 512), (512, 260), (37, 101), (64, 64)])
@pytest.mark.parametrize("size", [336, 64])
def test_pad_mode_matches_llava_exactly(shape, size, photo):
    img = photo.resize((shape[1], shape[0]))
    got = make_image_processor(size, "pad")(img, return_tensors="pt")["pixel_values"][0]
    assert got.shape == (3, size, size)
    assert torch.equal(got, llava_pad_reference(img, size))


def test_padding_is_the_mean_colour(photo):
    wide = photo.resize((300, 100))
    px = make_image_processor(64, "pad")(wide, return_tensors="pt")["pixel_values"][0]
    # The top rows are canvas: the mean colour normalises to ~0 in every channel.
    assert px[:, 0, :].abs().max() < 0.02
    assert px[:, 32, :].abs().max() > 0.5  # the photo itself


def test_square_mode_crops_instead_of_padding(photo):
    wide = photo.resize((300, 100))
    pad = make_image_processor(64, "pad")(wide, return_tensors="pt")["pixel_values"][0]
    square = make_image_processor(64, "square")(wide, return_tensors="pt")["pixel_values"][0]
    assert not torch.allclose(pad, square)
    assert square[:, 0, :].abs().max() > 0.1  # no canvas rows


def test_unknown_aspect_mode():
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        make_image_processor(64, "anyres")


def test_saved_processor_keeps_the_mode(tiny_hf, tmp_path):
    assert image_processor_from_dir(tiny_hf).do_pad is True
    assert image_processor_from_dir(tiny_hf, "square").do_pad is False


def test_missing_processor_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        image_processor_from_dir(tmp_path)


def test_image_token_count(tiny_loaded):
    cfg = tiny_loaded.config
    assert num_image_tokens(cfg) == (16 // 4) ** 2
    cfg_full = cfg.__class__.from_dict(cfg.to_dict())
    cfg_full.vision_feature_select_strategy = "full"
    assert num_image_tokens(cfg_full) == 17
