"""Style-target cache: hits, atomic entries, corruption and unwritable folders."""
from __future__ import annotations

import os

import pytest
import torch

from pipeline.run.cache import StyleTargetCache, TargetKey

KEY = TargetKey("ab" * 32, 64, ("conv1_1", "conv2_1"), "max", "original-x", "float32", "rgb")


def grams() -> dict[str, torch.Tensor]:
    g = torch.arange(16.0).reshape(1, 4, 4)
    return {"conv1_1": g @ g.transpose(1, 2), "conv2_1": torch.eye(3).unsqueeze(0)}


def test_miss_then_hit_across_instances(tmp_path):
    first = StyleTargetCache(tmp_path)
    value, hit = first.get_or_compute(KEY, grams)
    assert not hit and first.stats["forward_passes"] == 1
    second = StyleTargetCache(tmp_path)                       # a new process, the same folder
    again, hit = second.get_or_compute(KEY, lambda: pytest.fail("must not recompute"))
    assert hit and second.stats["forward_passes"] == 0
    assert all(torch.equal(value[k], again[k]) for k in value)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_key_digest_depends_on_every_field():
    fields = dict(KEY.__dict__)
    digests = {KEY.digest()}
    for name, other in [("style_sha256", "cd" * 32), ("long_side", 65), ("layers", ("conv1_1",)),
                        ("pooling", "avg"), ("weights_id", "torchvision"), ("dtype", "bfloat16"),
                        ("variant", "luminance:00")]:
        digests.add(TargetKey(**{**fields, name: other}).digest())
    assert len(digests) == 8


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-key"])
def test_corrupt_entry_is_recomputed(tmp_path, damage, caplog):
    cache = StyleTargetCache(tmp_path)
    cache.get_or_compute(KEY, grams)
    path = cache.path_for(KEY)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:  # a valid file written for another key
        other = TargetKey(**{**KEY.__dict__, "long_side": 99})
        StyleTargetCache(tmp_path).get_or_compute(other, grams)
        path.write_bytes(cache.path_for(other).read_bytes())
    fresh = StyleTargetCache(tmp_path)
    value, hit = fresh.get_or_compute(KEY, grams)
    assert not hit and fresh.stats["corrupt"] == 1 and fresh.stats["forward_passes"] == 1
    assert torch.equal(value["conv1_1"], grams()["conv1_1"])
    assert "recomputing" in caplog.text
    # The entry was rewritten and is trusted again.
    assert StyleTargetCache(tmp_path).get_or_compute(KEY, grams)[1]


def test_unwritable_cache_computes_and_warns(tmp_path, caplog):
    root = tmp_path / "ro"
    root.mkdir()
    os.chmod(root, 0o500)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): chmod does not bind")
        cache = StyleTargetCache(root)
        value, hit = cache.get_or_compute(KEY, grams)
        assert not hit and torch.equal(value["conv2_1"], torch.eye(3).unsqueeze(0))
        assert "not writable" in caplog.text
    finally:
        os.chmod(root, 0o700)


def test_cache_path_that_is_a_file_is_worked_around(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = StyleTargetCache(blocker)
    value, hit = cache.get_or_compute(KEY, grams)
    assert not hit and cache.stats["write_errors"] == 1
    assert "not writable" in caplog.text
    assert blocker.read_text() == "not a folder"


def test_wide_style_image_is_sized_for_the_deepest_layer(tmp_path):
    from PIL import Image

    from pipeline.run.cache import style_side
    from pipeline.params import params_from_mapping
    from pipeline.engine.pixels import scaled_size

    wide = tmp_path / "wide.png"
    Image.new("RGB", (48, 40)).save(wide)
    params = params_from_mapping({"size": 32, "multiscale": 2})
    assert style_side(params, 16) == 16                       # no shape known: as asked
    side = style_side(params, 16, (40, 48))                   # (h, w): 16 px long side → 13 px short
    assert side == 19 and scaled_size(40, 48, side) == (16, 19)   # the smallest that reaches conv5_1
