"""Large inputs are decoded reduced: never held at full size as floats, same style targets.

A 3000 × 2000 image (generated here) read for a 128 px output must come back at three times
that, without the full-size pixels reaching the colour
conversion and the float tensor; and the style Grams computed from it must equal those of a
full decode within a stated tolerance (the reduction is a box average by a whole factor, the
rest the same antialiased bicubic resize).

Measured (the changes per style layer, conv1_1 … conv5_1, of the Grams at the output size):
here at most 0.7 % (JPEG) and 0.2 % (PNG); a 6000 × 4000 style at 512 px at most 0.2 %.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import imaging
from pipeline.engine import pixels
from pipeline.engine.objective import style_grams
from pipeline.params import Params
from pipeline.run.held import decoded_bytes, job_held_bytes
from pipeline.run.jobs import Job, StyleRef
from pipeline.run.targets import style_read_hint

SIZE = (3000, 2000)
SIDE = 128
GRAM_TOLERANCE = 0.02    # relative Frobenius difference per layer; measured at most 0.007


def _texture(path, fmt: str):
    """Smooth colour waves of 60-150 px periods: detail that survives the resize to 128 px."""
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([np.sin(xx / 23.0 + np.sin(yy / 31.0)), np.cos((xx + yy) / 17.0),
                    np.sin(yy / 11.0) * np.cos(xx / 41.0)], -1)
    Image.fromarray(((rgb * 0.5 + 0.5) * 255).astype(np.uint8), "RGB").save(path, **(
        {"quality": 95} if fmt == "JPEG" else {"compress_level": 1}))
    return path


@pytest.fixture(scope="module", params=["JPEG", "PNG"])
def big(request, tmp_path_factory):
    suffix = ".jpg" if request.param == "JPEG" else ".png"
    return _texture(tmp_path_factory.mktemp("big") / f"style{suffix}", request.param)


def test_a_large_image_is_decoded_reduced_before_it_becomes_floats(big, monkeypatch):
    seen = []
    convert = imaging._to_srgb
    monkeypatch.setattr(imaging, "_to_srgb", lambda img: seen.append(img.size) or convert(img))
    image = imaging.read_image(big, long_side_hint=SIDE)
    long_side = max(image.shape[-2:])
    assert long_side == imaging.REDUCE_MARGIN * SIDE
    assert max(seen[0]) == long_side                     # reduced before the colour conversion
    assert long_side <= imaging.decoded_long_side(max(SIZE), SIDE)
    assert decoded_bytes(str(big), SIDE) >= image.numel() * 4     # the bound the planner counts


def test_the_style_targets_barely_change(big, feats):
    layers = Params().style_layers
    reduced = style_grams(feats, pixels.resize_long_side(imaging.read_image(big, long_side_hint=SIDE), SIDE), layers)
    full = style_grams(feats, pixels.resize_long_side(imaging.read_image(big), SIDE), layers)
    for name in layers:
        change = (torch.linalg.norm(reduced[name] - full[name]) / torch.linalg.norm(full[name])).item()
        assert change < GRAM_TOLERANCE, (name, change)


def test_the_job_reads_its_style_reduced_and_counts_what_it_holds(big, tmp_path):
    params = Params(size=SIDE)
    assert style_read_hint(params, str(big)) == SIDE
    job = Job("j", str(big), (StyleRef(str(big)),), params, "out.png")
    style = decoded_bytes(str(big), SIDE)
    assert job_held_bytes(job, content_loaded=True) == style
    assert job_held_bytes(job) == 2 * style              # the content too, same file here
    assert style <= 12 * (3 * SIDE + 1) ** 2 < 12 * SIZE[0] * SIZE[1] // 20
