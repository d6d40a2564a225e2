"""`weights: torchvision` never runs pickled code and never loads a file but torchvision's.

torch hub's loader unpickles without restriction and checks no hash by default: a file dropped
into ~/.cache/torch/hub/checkpoints/ would run code. The file is now checked against the sha256
prefix in torchvision's published name, then read with weights_only=True. Nothing here touches
the network: TORCH_HOME points at a temp folder and the download function is replaced.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub

from pipeline.engine import weights
from pipeline.engine.features import VGGFeatures
from pipeline.errors import WeightsError


class RunsCode:
    """Unpickling this calls os.system: what a booby-trapped .pth would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Hub:
    def __init__(self, folder: Path):
        self.folder, self.calls = folder, []


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Hub:
    """An empty torch hub cache; any download attempt is recorded and fails like no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)   # torch.hub.set_dir would win
    found = Hub(tmp_path / "torch" / "hub" / "checkpoints")
    found.folder.mkdir(parents=True)

    def offline(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        found.calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return found


def test_a_file_in_the_hub_cache_with_the_wrong_hash_is_refused_unread(hub, tmp_path):
    marker = tmp_path / "pwned"
    planted = hub.folder / "vgg19-dcbb9e9d.pth"
    torch.save({"features.0.weight": RunsCode(marker)}, planted)
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights="torchvision")
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    assert str(err.value) == (f"{planted} has sha256 {digest[:12]}…, not the dcbb9e9d… torchvision publishes; "
                              "refusing to load it: delete it to download the real file again")
    assert not marker.exists(), "the planted pickle's code ran"
    assert hub.calls == []


def test_a_file_with_the_published_hash_is_still_read_as_plain_tensors_only(hub, tmp_path, monkeypatch):
    """Even the published file is never unpickled freely: weights_only=True refuses code."""
    marker = tmp_path / "pwned"
    staged = tmp_path / "staged.pth"
    torch.save({"features.0.weight": RunsCode(marker)}, staged)
    prefix = hashlib.sha256(staged.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(weights, "TORCHVISION_URL", f"https://download.pytorch.org/models/vgg19-{prefix}.pth")
    staged.rename(hub.folder / f"vgg19-{prefix}.pth")
    with pytest.raises(WeightsError, match=r"^refusing to load .*: not a plain tensor state dict \("):
        VGGFeatures(weights="torchvision")
    assert not marker.exists(), "the pickle's code ran"
    # A plain tensor file with the published hash is read (and checked key by key).
    (hub.folder / f"vgg19-{prefix}.pth").unlink()
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, staged)
    prefix = hashlib.sha256(staged.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(weights, "TORCHVISION_URL", f"https://download.pytorch.org/models/vgg19-{prefix}.pth")
    staged.rename(hub.folder / f"vgg19-{prefix}.pth")
    with pytest.raises(WeightsError, match=r": missing key 'features\.0\.bias'; expected a state dict of"):
        VGGFeatures(weights="torchvision")
    assert hub.calls == []


def test_without_the_file_it_is_downloaded_with_its_hash_checked_and_offline_says_what_to_do(hub, monkeypatch):
    got: list[tuple[str, str, str | None]] = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        got.append((url, dst, hash_prefix))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights="torchvision")
    assert got == [(weights.TORCHVISION_URL, str(hub.folder / "vgg19-dcbb9e9d.pth"), "dcbb9e9d")]
    assert str(err.value) == (
        f"could not download torchvision's VGG-19 weights from {weights.TORCHVISION_URL} (URLError); on a "
        "machine with network download that file and pass its path as weights (a .pth is read as plain "
        "tensors only), or use weights: original")
    assert "hub" not in str(err.value) and "copy" not in str(err.value)
