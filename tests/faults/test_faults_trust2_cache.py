"""Cache details: a lock that stays busy is reported as such (not as a read-only cache), and an
entry whose safetensors header has `"__metadata__": null` is recomputed, not a crash."""
from __future__ import annotations

import fcntl
import json
import logging
import struct

import pytest
import torch

from pipeline.run import cache as cache_module
from pipeline.run.cache import StyleTargetCache, TargetKey

KEY = TargetKey("ab" * 32, 64, ("conv1_1",), "max", "original-test")


def grams() -> dict[str, torch.Tensor]:
    return {"conv1_1": torch.arange(4, dtype=torch.float32).reshape(1, 2, 2)}


def test_a_lock_held_past_the_wait_is_reported_as_a_busy_lock(tmp_path, monkeypatch, caplog):
    cache = StyleTargetCache(tmp_path)
    path = cache.path_for(KEY)
    path.parent.mkdir(parents=True)
    monkeypatch.setattr(cache_module, "LOCK_TIMEOUT", 0.05)
    caplog.set_level(logging.WARNING, logger="pipeline.run.cache")
    with open(str(path) + ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)   # another process computing the same entry, for as long as it takes
        got, hit = cache.get_or_compute(KEY, grams)
    assert not hit and torch.equal(got["conv1_1"], grams()["conv1_1"])
    assert cache.stats["lock_timeouts"] == 1 and cache.stats["write_errors"] == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"style-target cache: waited 0.05s for {path}.lock, held by another process (still computing the "
        "same targets, or hung); computing them here without the cache"]
    assert "not writable" not in caplog.text


@pytest.mark.parametrize("header_extra", [{"__metadata__": None}, {}])
def test_an_entry_with_null_or_no_metadata_is_recomputed(tmp_path, caplog, header_extra):
    cache = StyleTargetCache(tmp_path)
    path = cache.path_for(KEY)
    path.parent.mkdir(parents=True)
    data = torch.full((1, 2, 2), 7.0).numpy().tobytes()
    header = json.dumps({**header_extra, "conv1_1": {"dtype": "F32", "shape": [1, 2, 2],
                                                     "data_offsets": [0, len(data)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    caplog.set_level(logging.WARNING, logger="pipeline.run.cache")
    got, hit = cache.get_or_compute(KEY, grams)
    assert not hit and torch.equal(got["conv1_1"], grams()["conv1_1"])
    assert cache.stats["corrupt"] == 1
    assert f"style-target cache entry {path} does not match its key or checksum; recomputing" in caplog.text
    # Rewritten whole: a fresh cache reads it back as a hit.
    again, hit = StyleTargetCache(tmp_path).get_or_compute(KEY, lambda: pytest.fail("recomputed a good entry"))
    assert hit and torch.equal(again["conv1_1"], grams()["conv1_1"])
