"""Reading every input mode, refusing bad inputs with one clear line, saving atomically."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import imaging
from pipeline.errors import InputError, OutputError
from pipeline.imaging import read_image, read_metadata, save_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _rgb(t: torch.Tensor, y: int, x: int) -> list[float]:
    return [round(v, 3) for v in t[0, :, y, x].tolist()]


# --- Every input mode -----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_rgb_files(tmp_path, suffix):
    array = np.zeros((6, 10, 3), np.uint8)
    array[:, :5] = RED
    array[:, 5:] = BLUE
    path = tmp_path / f"rgb{suffix}"
    Image.fromarray(array).save(path, **({"quality": 100} if suffix == ".jpg" else {}))
    t = read_image(path)
    assert t.shape == (1, 3, 6, 10) and t.dtype == torch.float32
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    tol = 0.08 if suffix in (".jpg", ".webp") else 0.0
    assert np.allclose(_rgb(t, 3, 1), [1, 0, 0], atol=tol)
    assert np.allclose(_rgb(t, 3, 8), [0, 0, 1], atol=tol)


def test_png_values_are_exact(tmp_path):
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4
    Image.fromarray(array).save(tmp_path / "a.png")
    t = read_image(tmp_path / "a.png")
    assert torch.equal(t[0].permute(1, 2, 0), torch.from_numpy(array).float() / 255)


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (3, 1))
    img.putdata([(255, 0, 0, 255), (0, 0, 255, 0), (0, 0, 0, 128)])
    img.save(tmp_path / "a.png")
    t = read_image(tmp_path / "a.png")
    assert t.shape == (1, 3, 1, 3)
    assert _rgb(t, 0, 0) == [1.0, 0.0, 0.0]          # opaque: kept
    assert _rgb(t, 0, 1) == [1.0, 1.0, 1.0]          # fully transparent: white, not blue
    assert np.allclose(_rgb(t, 0, 2), [127 / 255] * 3, atol=0.01)   # half black over white


def test_la_is_composited_on_white(tmp_path):
    img = Image.new("LA", (2, 1))
    img.putdata([(40, 255), (40, 0)])
    img.save(tmp_path / "la.png")
    t = read_image(tmp_path / "la.png")
    assert _rgb(t, 0, 0) == [round(40 / 255, 3)] * 3
    assert _rgb(t, 0, 1) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparency(tmp_path, suffix):
    img = Image.new("P", (2, 1))
    img.putpalette([*RED, *BLUE] + [0] * 762)
    img.putdata([0, 1])
    img.save(tmp_path / f"p{suffix}", transparency=1)
    t = read_image(tmp_path / f"p{suffix}")
    assert _rgb(t, 0, 0) == [1.0, 0.0, 0.0]
    assert _rgb(t, 0, 1) == [1.0, 1.0, 1.0]          # the transparent index


def test_colour_key_transparency_of_l_and_rgb(tmp_path):
    grey = Image.new("L", (2, 1))
    grey.putdata([0, 50])
    grey.save(tmp_path / "l.png", transparency=50)
    assert read_image(tmp_path / "l.png")[0, :, 0].tolist() == [[0.0, 1.0]] * 3
    rgb = Image.new("RGB", (2, 1))
    rgb.putdata([RED, BLUE])
    rgb.save(tmp_path / "rgb.png", transparency=BLUE)
    t = read_image(tmp_path / "rgb.png")
    assert _rgb(t, 0, 0) == [1.0, 0.0, 0.0] and _rgb(t, 0, 1) == [1.0, 1.0, 1.0]


def test_grey_l(tmp_path):
    Image.new("L", (4, 3), 51).save(tmp_path / "l.png")
    t = read_image(tmp_path / "l.png")
    assert t.shape == (1, 3, 3, 4)
    assert torch.allclose(t, torch.full_like(t, 0.2))


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    t = read_image(tmp_path / "cmyk.jpg")
    assert t.shape == (1, 3, 8, 8)
    assert np.allclose(_rgb(t, 4, 4), [1, 0, 0], atol=0.03)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    array = np.array([[65535, 32768, 0, 255]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I;16")
    t = read_image(tmp_path / "i16.png")
    assert t.shape == (1, 3, 1, 4)
    assert t[0, 0, 0, 0] == 1.0
    assert abs(float(t[0, 0, 0, 1]) - 0.5) < 0.005
    assert t[0, 0, 0, 2] == 0.0
    assert float(t[0, 0, 0, 3]) < 0.01                # 255 of 65535 is nearly black, not white
    assert torch.equal(t[0, 0], t[0, 1]) and torch.equal(t[0, 1], t[0, 2])


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((16, 32, 3), np.uint8)          # stored 32 wide, 16 high
    array[:8, :8] = RED                               # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6                                  # Orientation: rotate 90° clockwise to display
    Image.fromarray(array).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    t = read_image(tmp_path / "rot.jpg")
    assert t.shape == (1, 3, 32, 16)                  # displayed 16 wide, 32 high
    assert np.allclose(_rgb(t, 2, 13), [1, 0, 0], atol=0.1)      # now top-right
    assert np.allclose(_rgb(t, 2, 2), [0, 0, 0], atol=0.1)


def test_one_pixel(tmp_path):
    Image.new("RGB", (1, 1), (0, 255, 0)).save(tmp_path / "px.png")
    t = read_image(tmp_path / "px.png")
    assert t.shape == (1, 3, 1, 1) and _rgb(t, 0, 0) == [0.0, 1.0, 0.0]


def test_long_side_hint_decodes_smaller_but_not_below_three_times_it(tmp_path):
    Image.new("RGB", (64, 48), (0, 128, 255)).save(tmp_path / "big.jpg")
    assert read_image(tmp_path / "big.jpg").shape == (1, 3, 48, 64)
    assert read_image(tmp_path / "big.jpg", long_side_hint=8).shape == (1, 3, 18, 24)
    assert read_image(tmp_path / "big.jpg", long_side_hint=16).shape == (1, 3, 36, 48)
    assert read_image(tmp_path / "big.jpg", long_side_hint=20).shape == (1, 3, 45, 60)
    assert read_image(tmp_path / "big.jpg", long_side_hint=100).shape == (1, 3, 48, 64)


def test_input_file_is_not_modified(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (4, 4), (1, 2, 3, 0)).save(path)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    read_image(path)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


# --- Clear errors -----------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A valid IHDR and an almost empty IDAT: Pillow learns the size, there is no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0"))
            + _chunk(b"IEND", b""))


def _error(path) -> str:
    with pytest.raises(InputError) as err:
        read_image(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert _error(tmp_path / "nope.png") == f"image not found: {tmp_path / 'nope.png'}"


def test_directory(tmp_path):
    assert _error(tmp_path) == f"expected an image file, got a directory: {tmp_path}"


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    assert _error(tmp_path / "e.png") == f"empty file: {tmp_path / 'e.png'}"


def test_text_named_jpg(tmp_path):
    (tmp_path / "t.jpg").write_text("hello, not a jpeg\n")
    assert _error(tmp_path / "t.jpg") == f"not an image Pillow can read: {tmp_path / 't.jpg'} (is the extension right?)"


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_files(tmp_path, fmt, suffix):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(buffer, fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    message = _error(path)
    assert message.startswith(f"truncated or corrupt image: {path} (")


def test_broken_symlink(tmp_path):
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "gone.png")
    assert _error(link) == f"broken symlink: {link} points to a missing file"


def test_extreme_aspect_ratio(tmp_path):
    (tmp_path / "strip.png").write_bytes(_png_header(10000, 10))
    assert _error(tmp_path / "strip.png") == (f"{tmp_path / 'strip.png'}: 10000 × 10 has an aspect ratio "
                                               "beyond 50:1; crop it first")


def test_decompression_bomb_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 30000))
    assert _error(tmp_path / "bomb.png") == (f"{tmp_path / 'bomb.png'}: image is too large to decode safely "
                                             "(over 120,000,000 pixels); downscale it first")


def test_over_max_pixels_but_under_pillows_limit(tmp_path):
    (tmp_path / "huge.png").write_bytes(_png_header(12000, 12000))     # 144 Mpx
    assert _error(tmp_path / "huge.png") == (f"{tmp_path / 'huge.png'}: 12000 × 12000 is over "
                                             "120,000,000 pixels; downscale it first")


def test_under_max_pixels_is_not_called_a_bomb(tmp_path):
    # 100 Mpx is over Pillow's warning threshold but within MAX_PIXELS: this header-only file is
    # refused for what it is (no pixel data), not as "too large".
    (tmp_path / "big.png").write_bytes(_png_header(10000, 10000))
    assert _error(tmp_path / "big.png").startswith(f"truncated or corrupt image: {tmp_path / 'big.png'} (")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_permissions(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    try:
        assert _error(path) == f"cannot read {path}: permission denied (check the file's permissions)"
    finally:
        path.chmod(0o644)


# --- Saving -------------------------------------------------------------------------------------------

def _image() -> torch.Tensor:
    return torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(0))


def test_png_round_trips_pixels_and_params(tmp_path):
    meta = {"job_id": "abc", "params": {"size": 32, "style_layers": ["conv1_1"]}}
    image = _image()
    path = save_image(image, tmp_path / "out" / "a.png", "png", metadata=meta)
    assert path == tmp_path / "out" / "a.png"
    assert read_metadata(path) == meta
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (20, 12)
        assert img.text["nst-batch"] == '{"job_id": "abc", "params": {"size": 32, "style_layers": ["conv1_1"]}}'
    # 8-bit rounding: within half a level of the tensor.
    assert float((read_image(path) - image).abs().max()) <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]    # no temp files left


def test_jpeg_quality_and_metadata(tmp_path):
    image = _image()
    low = save_image(image, tmp_path / "low.jpg", "jpeg", quality=10, metadata={"q": 10})
    high = save_image(image, tmp_path / "high.jpg", "jpeg", quality=95, metadata={"q": 95})
    with Image.open(low) as img:
        assert img.format == "JPEG" and img.size == (20, 12)
    assert low.stat().st_size < high.stat().st_size
    assert read_metadata(low) == {"q": 10} and read_metadata(high) == {"q": 95}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["high.jpg", "low.jpg"]


def test_to_pil_rounds(tmp_path):
    t = torch.tensor([127.6 / 255, 0.2 / 255, 2.0]).view(1, 3, 1, 1)
    assert imaging.to_pil(t).getpixel((0, 0)) == (128, 0, 255)


def test_unknown_format(tmp_path):
    with pytest.raises(OutputError, match=r"^unknown output format 'gif'; use png, jpeg or tiff$"):
        save_image(_image(), tmp_path / "a.gif", "gif")


def test_failing_write_leaves_no_partial_file(tmp_path, monkeypatch):
    final = tmp_path / "a.png"
    final.write_bytes(b"previous")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError) as err:
        save_image(_image(), final, "png")
    assert str(err.value) == f"cannot write {final}: No space left on device"
    assert final.read_bytes() == b"previous"                       # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]   # and no temp file is left
    missing = tmp_path / "new.png"
    with pytest.raises(OutputError):
        save_image(_image(), missing, "png")
    assert not missing.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_atomic_write_bytes_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    imaging.atomic_write_bytes(path, b"one")
    imaging.atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]
