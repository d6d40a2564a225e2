"""Colour-managed inputs and outputs: ICC profiles converted to sRGB, outputs tagged sRGB, TIFF.

The non-sRGB profile is built here, byte by byte (an ICC v2 matrix/TRC display profile with
Display P3's primaries and a 2.2 gamma), so the test needs no profile file from anywhere.
"""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from pipeline import imaging

# Display P3 colorants adapted to the D50 profile connection space, and D50 white.
_P3 = {"rXYZ": (0.5151, 0.2412, -0.0011), "gXYZ": (0.2919, 0.6922, 0.0419), "bXYZ": (0.1572, 0.0666, 0.7841)}
_D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(v) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(c) for c in v)


def p3_profile() -> bytes:
    desc_text = b"P3-like test profile\0"
    tags = {
        b"desc": b"desc" + b"\0" * 4 + struct.pack(">I", len(desc_text)) + desc_text
                 + b"\0" * 4 + b"\0" * 4 + b"\0" * 3 + b"\0" * 67,
        b"wtpt": _xyz(_D50),
        b"rXYZ": _xyz(_P3["rXYZ"]), b"gXYZ": _xyz(_P3["gXYZ"]), b"bXYZ": _xyz(_P3["bXYZ"]),
    }
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags.update({b"rTRC": curve, b"gTRC": curve, b"bTRC": curve})
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags.items():
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntr" + b"RGB " + b"XYZ "
              + b"\0" * 12 + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 4
              + b"".join(_s15(c) for c in _D50) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _save(path, rgb, **kw):
    Image.fromarray(np.array(rgb, dtype=np.uint8), "RGB").save(path, **kw)
    return path


def test_p3_tagged_pixels_become_more_saturated_srgb_and_grey_stays_grey(tmp_path):
    icc = p3_profile()
    assert ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip() == "RGB"
    pixels = [[[200, 100, 50], [128, 128, 128], [40, 160, 90]]]
    tagged = imaging.read_image(_save(tmp_path / "p3.png", pixels, icc_profile=icc))[0, :, 0] * 255
    plain = imaging.read_image(_save(tmp_path / "plain.png", pixels))[0, :, 0] * 255
    assert torch.equal(plain.round(), torch.tensor(pixels[0], dtype=torch.float32).T)
    orange, grey, green = tagged.T
    # P3's gamut is wider: in sRGB numbers the same colour is further from grey.
    assert orange[0] > 205 and orange[1] < 98 and orange[2] < 48
    assert green[1] > 162 and green[0] < 38
    # A neutral stays neutral (the 2.2 and sRGB curves differ a little in lightness only).
    assert float(grey.max() - grey.min()) <= 1 and abs(float(grey[0]) - 128) < 8


def test_srgb_tagged_and_jpeg_inputs_are_unchanged(tmp_path):
    pixels = [[[200, 100, 50], [10, 20, 30]]]
    srgb = imaging.read_image(_save(tmp_path / "s.png", pixels, icc_profile=imaging.SRGB_ICC))
    assert torch.allclose(srgb[0, :, 0].T * 255, torch.tensor(pixels[0], dtype=torch.float32), atol=1.01)
    broken = imaging.read_image(_save(tmp_path / "b.png", pixels, icc_profile=b"not a profile"))
    assert torch.equal((broken[0, :, 0].T * 255).round(), torch.tensor(pixels[0], dtype=torch.float32))


@pytest.mark.parametrize("fmt, name", [("png", "o.png"), ("jpeg", "o.jpg"), ("tiff", "o.tif")])
def test_outputs_are_tagged_srgb_and_carry_their_parameters(tmp_path, fmt, name):
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    path = imaging.save_image(image, tmp_path / name, fmt, metadata={"job_id": "abc"})
    with Image.open(path) as img:
        assert img.info.get("icc_profile") == imaging.SRGB_ICC
        assert img.size == (16, 12)
    assert imaging.read_metadata(path) == {"job_id": "abc"}
    if fmt == "tiff":       # lossless: the pixels come back exactly
        assert torch.equal(imaging.read_image(path), imaging.read_image(imaging.save_image(image, tmp_path / "r.png")))


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6          # rotate 90° clockwise to display
    path = tmp_path / "rot.jpg"
    Image.new("RGB", (30, 20), (255, 0, 0)).save(path, exif=exif)
    assert tuple(imaging.read_image(path).shape[-2:]) == (30, 20)
    assert imaging.image_shape(path) == (30, 20)
