"""Outputs for print: the resolution written in the file (dpi, 300 by default for TIFF), 16-bit
PNG and TIFF straight from the float result, and what they do to job ids and `plan`."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from conftest import make_content, make_style
from pipeline.errors import OutputError, ParamError
from pipeline.imaging import save_image
from pipeline.params import params_from_mapping
from pipeline.run.jobs import make_job
from pipeline.run.orchestrate import plan_manifest


@pytest.fixture
def image() -> torch.Tensor:
    """A smooth ramp with more than 256 levels: an 8-bit step would show as repeated values."""
    ramp = torch.linspace(0, 1, 1000).reshape(1, 1, 1, 1000)
    return torch.cat([ramp, ramp.flip(-1), ramp * 0.5], 1).expand(1, 3, 3, 1000).contiguous()


@pytest.mark.parametrize("fmt, dpi, expect", [("tiff", None, 300), ("tiff", 150, 150), ("png", 600, 600),
                                              ("jpeg", 72, 72), ("png", None, None)])
def test_dpi_is_written_in_the_file(tmp_path, image, fmt, dpi, expect):
    path = save_image(image, tmp_path / f"x.{fmt}", fmt, dpi=dpi)
    with Image.open(path) as img:
        written = img.info.get("dpi")
    if expect is None:
        assert written is None
    else:
        assert written is not None and all(abs(v - expect) < 0.01 for v in written)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_outputs_keep_every_level(tmp_path, image, fmt):
    path = save_image(image, tmp_path / f"x.{fmt}", fmt, metadata={"job_id": "abc"}, dpi=300, bit_depth=16)
    pixels = tifffile.imread(path) if fmt == "tiff" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    expected = (image[0].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    assert pixels.dtype == np.uint16 and pixels.shape == (3, 1000, 3)
    assert np.array_equal(pixels, expected)
    assert len(np.unique(pixels[0, :, 0])) == 1000          # an 8-bit step would leave 256
    with Image.open(path) as img:                             # what other readers see: tags intact
        assert abs(img.info["dpi"][0] - 300) < 0.01 and img.info.get("icc_profile")
        text = img.info.get("nst-batch") or img.tag_v2[270]
    assert json.loads(text) == {"job_id": "abc"}


def test_16_bit_jpeg_is_refused_in_one_line(tmp_path, image):
    with pytest.raises(ParamError) as err:
        params_from_mapping({"format": "jpeg", "bit_depth": 16})
    assert "bit_depth: 16 needs a PNG or TIFF output" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OutputError):
        save_image(image, tmp_path / "x.jpg", "jpeg", bit_depth=16)
    with pytest.raises(ParamError, match="expected 8 or 16"):
        params_from_mapping({"bit_depth": 12})


def test_dpi_and_bit_depth_change_the_job_id_only_when_set(tmp_path):
    content, style = make_content(tmp_path / "c.png"), make_style(tmp_path / "s.png")

    def job_id(**values):
        return make_job(str(content), [(str(style), 1.0)], params_from_mapping({"format": "tiff", **values})).job_id

    base = job_id()
    assert job_id(dpi=300) != base and job_id(dpi=150) != job_id(dpi=300)   # another file: never reused
    assert job_id(bit_depth=16) != base
    assert job_id(bit_depth=8) == base and job_id(dpi=None) == base        # defaults: ids as before


def test_plan_shows_the_print_size(tmp_path, capsys):
    make_content(tmp_path / "c.png", size=(48, 40))
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [c.png]\nstyle: [s.png]\n"
                        "params: {size: 3000, steps: 1, format: tiff}\ngrid: {dpi: [300, 150]}\ndevices: cpu\n")
    plan = plan_manifest(manifest)
    assert plan["print_sizes"] == ["1 job(s) 3000×2500 px at 150 dpi: 50.8 × 42.3 cm (20.00 × 16.67 in)",
                                   "1 job(s) 3000×2500 px at 300 dpi: 25.4 × 21.2 cm (10.00 × 8.33 in)"]


@pytest.fixture
def rgba_photo(tmp_path):
    pixels = np.zeros((30, 40, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = np.linspace(0, 255, 40).astype(np.uint8)[None, :]   # a left-to-right fade
    path = tmp_path / "cutout.png"
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def test_alpha_is_read_back_resized_exactly_to_the_output(rgba_photo, tmp_path):
    from pipeline.imaging import read_alpha

    alpha = read_alpha(rgba_photo, 15, 20)
    assert alpha.shape == (15, 20) and alpha[:, 0].max() < 0.05 and alpha[:, -1].min() > 0.95
    assert np.all(np.diff(alpha[7]) > 0)                       # the fade, in order
    opaque = tmp_path / "opaque.png"
    Image.new("RGBA", (8, 8), (1, 2, 3, 255)).save(opaque)
    assert read_alpha(opaque, 8, 8) is None                   # nothing hidden: the output stays RGB
    assert read_alpha(make_content(tmp_path / "rgb.png"), 8, 8) is None


@pytest.mark.parametrize("fmt, bits", [("png", 8), ("tiff", 8), ("png", 16), ("tiff", 16)])
def test_png_and_tiff_keep_the_alpha(rgba_photo, tmp_path, fmt, bits):
    from pipeline.imaging import read_alpha

    rgb = torch.full((1, 3, 15, 20), 0.5)
    alpha = read_alpha(rgba_photo, 15, 20)
    path = save_image(rgb, tmp_path / f"x.{fmt}", fmt, bit_depth=bits, alpha=alpha)
    if bits == 16:
        pixels = tifffile.imread(path) if fmt == "tiff" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == np.uint16 and pixels.shape == (15, 20, 4)
        assert np.array_equal(pixels[..., 3], np.round(alpha * 65535).astype(np.uint16))
    else:
        with Image.open(path) as img:
            assert img.mode == "RGBA"
            assert np.array_equal(np.asarray(img)[..., 3], np.round(alpha * 255).astype(np.uint8))


def test_jpeg_drops_the_alpha(rgba_photo, tmp_path):
    from pipeline.imaging import read_alpha

    path = save_image(torch.full((1, 3, 15, 20), 0.5), tmp_path / "x.jpg", "jpeg",
                      alpha=read_alpha(rgba_photo, 15, 20))
    with Image.open(path) as img:
        assert img.mode == "RGB"
