"""Shared fixtures: tiny generated images, one VGG per session, a private style-target cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

# Property tests draw the same examples on every run and machine: a failure reproduces, and a
# green suite does not depend on which random examples one run happened to draw.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache: every test gets its own cache folder."""
    monkeypatch.setenv("NST_BATCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def feats():
    from pipeline.engine.features import VGGFeatures

    return VGGFeatures()


def make_content(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A smooth photo-like image: gradients and a disc, so content features are meaningful."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    rng = np.random.default_rng(seed)
    disc = ((xx - 0.5) ** 2 + (yy - 0.45) ** 2 < 0.06).astype(float)
    rgb = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 + 0.4 * disc], -1)
    rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)
    Image.fromarray((rgb * 255).astype(np.uint8), "RGB").save(path)
    return path


def make_style(path: Path, size: tuple[int, int] = (40, 40), seed: int = 1) -> Path:
    """A colourful striped texture with a strong, distinctive Gram signature."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    stripes = (np.sin((xx + yy) / 2.0) > 0).astype(float)
    rgb = np.stack([stripes, 0.2 + 0.0 * stripes, 1 - stripes], -1)
    rgb = np.clip(rgb * 0.9 + rng.uniform(0, 0.1, rgb.shape), 0, 1)
    Image.fromarray((rgb * 255).astype(np.uint8), "RGB").save(path)
    return path


def tiled_scene(h: int = 240, w: int = 320):
    """A content image, a noisy image near it and two random styles (96², 80 × 112), seeded:
    the inputs of the tiled = untiled tests (test_tiled.py, test_guided_objective.py)."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=gen)
    content = torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear")
    images = (content + 0.1 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
    styles = [torch.rand(1, 3, 96, 96, generator=gen), torch.rand(1, 3, 80, 112, generator=gen)]
    return content, images, styles


@pytest.fixture
def content_path(tmp_path) -> Path:
    return make_content(tmp_path / "content.png")


@pytest.fixture
def style_path(tmp_path) -> Path:
    return make_style(tmp_path / "style.png")


@pytest.fixture(autouse=True)
def _threads():
    # One thread: the fastest on a shared 2-core machine, and results independent of the runner.
    torch.set_num_threads(1)
