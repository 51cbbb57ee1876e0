"""Unusual and hostile image files: every entry decodes them the same way (llava.image_decode), with
one set of caps, a message naming the file, and the original LLaVA's RGB pixels where Pillow's are right."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.data.images import check_image
from llava.image_decode import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageError, load_image, to_rgb
from llava.mm_utils import load_image as batch_load_image  # model_vqa, tag_rating, labeling, training
from llava.printable import printable
from llava.serve.images import decode_image_bytes, open_image

GRADIENT = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)  # full 16-bit range, dark first


def _save_high_depth(path: Path, mode: str) -> Path:
    if mode == "I;16":  # what a 16-bit greyscale PNG opens as
        Image.fromarray(GRADIENT).save(path.with_suffix(".png"))
        return path.with_suffix(".png")
    if mode == "I;16B":
        img = Image.frombytes("I;16B", (256, 64), GRADIENT.astype(">u2").tobytes())
    elif mode == "I":
        img = Image.fromarray(GRADIENT.astype(np.int32), "I")
    else:  # F, as fractions of full scale (scientific TIFFs)
        img = Image.fromarray(GRADIENT.astype(np.float32) / 65535, "F")
    img.save(path.with_suffix(".tif"))
    return path.with_suffix(".tif")


@pytest.mark.bad_input
@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_high_depth_grey_is_scaled_to_8_bits_not_saturated(tmp_path, mode):
    path = _save_high_depth(tmp_path / "gradient", mode)
    with Image.open(path) as img:
        assert img.mode == mode  # the file really is what the case says
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (64, 256, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert abs(rgb.mean() - 127.5) < 1.0  # Pillow's own convert("RGB") gives ~251 for I;16
    assert rgb[0, :64].max() <= 1  # the darkest quarter of the first row stays black
    assert rgb[-1, -1, 0] == 255
    expected = np.rint(GRADIENT / 257.0)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1


def _alpha_and_odd_modes(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.RandomState(0)
    rgba = Image.fromarray(rng.randint(0, 256, (20, 30, 4)).astype(np.uint8), "RGBA")
    files = {}
    files["LA"] = tmp_path / "la.png"
    rgba.convert("LA").save(files["LA"])
    files["RGBA"] = tmp_path / "rgba.png"
    rgba.save(files["RGBA"])
    files["P-transparency"] = tmp_path / "p.png"  # a palette PNG with a tRNS chunk: alpha per palette entry
    pal = rgba.convert("RGB").quantize(16)
    pal.info["transparency"] = bytes(range(0, 256, 16))
    pal.save(files["P-transparency"], transparency=bytes(range(0, 256, 16)))
    files["CMYK"] = tmp_path / "cmyk.jpg"
    rgba.convert("RGB").convert("CMYK").save(files["CMYK"])
    files["1-bit"] = tmp_path / "bits.png"
    rgba.convert("1").save(files["1-bit"])
    return files


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["LA", "RGBA", "P-transparency", "CMYK", "1-bit"])
def test_alpha_palette_cmyk_and_1bit_give_the_original_llavas_pixels(tmp_path, case):
    path = _alpha_and_odd_modes(tmp_path)[case]
    with Image.open(path) as img, warnings.catch_warnings():
        assert img.mode == {"LA": "LA", "RGBA": "RGBA", "P-transparency": "P", "CMYK": "CMYK", "1-bit": "1"}[case]
        warnings.simplefilter("ignore")
        original = img.convert("RGB")  # what the original LLaVA feeds its image processor
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Palette images with Transparency" warning included
        got = load_image(path)
    assert got.mode == "RGB" and got.tobytes() == original.tobytes()


@pytest.mark.bad_input
def test_premultiplied_alpha_converts(tmp_path):
    """Pillow has no La -> RGB conversion (ValueError); the grey levels come through."""
    la = Image.fromarray(np.full((4, 6, 2), 200, np.uint8), "LA").convert("La")
    assert np.asarray(to_rgb(la)).min() > 150


@pytest.mark.bad_input
def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(tmp_path / "anim.gif") as img:
        assert img.n_frames == 2
    assert load_image(tmp_path / "anim.gif").getpixel((3, 3)) == (255, 0, 0)


@pytest.mark.bad_input
def test_exif_rotation_is_kept_as_the_original_llava_reads_it(tmp_path, photo):
    """The original does not apply EXIF orientation; models were trained on the stored pixels."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    photo.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    with Image.open(tmp_path / "rot.jpg") as img:
        stored = img.convert("RGB")
        assert img.getexif()[0x0112] == 6
    got = load_image(tmp_path / "rot.jpg")
    assert got.size == photo.size and got.tobytes() == stored.tobytes()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """case -> (path, reason, words the message has)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "notes.png").write_text("not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)).save(buf, "PNG")
    damaged = bytearray(buf.getvalue())
    start = damaged.index(b"IDAT") + 20
    damaged[start : start + 40] = bytes(40)  # the header is fine, the compressed pixels are not
    (tmp_path / "bad-png.png").write_bytes(bytes(damaged))
    with open(tmp_path / "huge-file.jpg", "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: costs no disk, refused from its size before any read
    return {
        "truncated-jpeg": (tmp_path / "truncated.jpg", "image_truncated", "truncated file"),
        "not-an-image": (tmp_path / "notes.png", "image_not_an_image", "cannot read image"),
        "zero-bytes": (tmp_path / "empty.jpg", "image_empty_file", "empty file"),
        "directory": (tmp_path / "folder.png", "image_not_a_file", "a directory"),
        "missing": (tmp_path / "gone.png", "image_missing", "no such file"),
        "damaged-png": (tmp_path / "bad-png.png", "image_corrupt", "cannot read image"),
        "over-byte-cap": (tmp_path / "huge-file.jpg", "image_too_large", f"more than the {MAX_IMAGE_BYTES:,}"),
        "nul-in-name": (tmp_path / "a\0b.png", "image_missing", "cannot look up"),
        "fifo": (tmp_path / "pipe.png", "image_not_a_file", "not a regular file"),
    }


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["truncated-jpeg", "not-an-image", "zero-bytes", "directory", "missing",
                                  "damaged-png", "over-byte-cap", "nul-in-name", "fifo"])
def test_unusable_files_are_refused_naming_file_and_reason(tmp_path, case):
    path, reason, words = _bad_files(tmp_path)[case]
    if case == "fifo":
        os.mkfifo(path)  # opening it would block forever
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.reason == reason
    assert str(info.value).startswith(printable(path))  # a NUL shows as \x00
    assert words in str(info.value)


@pytest.mark.bad_input
def test_a_file_name_that_is_not_utf8_loads_and_is_named_printably(tmp_path, noise_image):
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png"))
    noise_image.save(path)
    assert load_image(path).tobytes() == noise_image.tobytes()
    path.write_bytes(b"garbage")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value).startswith(f"{tmp_path}/caf\\xe9.png: cannot read image")
    str(info.value).encode("utf-8")  # printable and writable: no lone surrogates


@pytest.fixture(scope="module")
def over_pixel_cap(tmp_path_factory) -> Path:
    """81 megapixels in a 1-bit PNG of a few KiB: small on disk, 243 MB as RGB."""
    path = tmp_path_factory.mktemp("big") / "81mp.png"
    Image.new("1", (9000, 9000)).save(path)
    assert path.stat().st_size < MAX_IMAGE_BYTES and 9000 * 9000 > MAX_IMAGE_PIXELS
    return path


def _entries():
    def preprocessing(path):
        check = check_image(path)
        if not check.ok:
            raise ImageError(f"{path}: {check.detail}", check.reason, check.detail)

    return {
        "batch-and-tasks": batch_load_image,
        "cli": lambda p: open_image(str(p)),
        "api-and-uploads": lambda p: decode_image_bytes(p.read_bytes(), p.name),
        "preprocessing": preprocessing,
    }


@pytest.mark.bad_input
@pytest.mark.parametrize("entry", ["batch-and-tasks", "cli", "api-and-uploads", "preprocessing"])
def test_every_entry_refuses_more_than_40_megapixels(over_pixel_cap, entry):
    with pytest.raises(ImageError) as info:
        _entries()[entry](over_pixel_cap)
    assert info.value.reason == "image_too_large"
    assert "9000x9000 pixels, more than the 40,000,000 allowed" in str(info.value)
