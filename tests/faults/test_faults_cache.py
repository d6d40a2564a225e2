"""The style-target cache under damage: a bad entry is recomputed, a read-only cache is worked
around, and either way the job's result is exactly the result without any cache. Details: a
lock that stays busy is reported as such (not as a read-only cache), and an entry whose
safetensors header has `"__metadata__": null` is recomputed, not a crash."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

from pipeline.run import cache as cache_module
from pipeline.run.cache import StyleTargetCache, TargetKey
from pipeline.run.jobs import make_job
from pipeline.params import params_from_mapping
from pipeline.run.worker import JobRunner

CPU = torch.device("cpu")


@pytest.fixture
def job(content_path, style_path):
    return make_job(content_path, [(style_path, 1.0)], params_from_mapping({"size": 32, "steps": 3}))


def stylize(job, tmp_path: Path, cache: StyleTargetCache, name: str) -> dict:
    """One job on a fresh runner (so nothing comes from a previous run's memory)."""
    out = tmp_path / name
    record = JobRunner(CPU, cache).run(job, out / job.output, None)
    record["pixels"] = (out / job.output).read_bytes()
    return record


def same_result(a: dict, b: dict) -> bool:
    return a["loss_total"] == b["loss_total"] and a["pixels"] == b["pixels"]


def entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


def flip_a_byte_of_the_data(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    raw[header + (len(raw) - header) // 2] ^= 0x10   # one bit of one float: still finite, still wrong
    path.write_bytes(bytes(raw))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"\x00\x01 not safetensors" * 50),
    "bit flip in the data": flip_a_byte_of_the_data,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_recomputed_never_trusted(tmp_path, job, damage, caplog):
    reference = stylize(job, tmp_path, StyleTargetCache(enabled=False), "reference")
    root = tmp_path / "cache"
    first = stylize(job, tmp_path, StyleTargetCache(root), "first")
    assert not first["cache_hit"] and same_result(first, reference)
    (entry,) = entries(root)
    DAMAGE[damage](entry)
    caplog.set_level(logging.WARNING, logger="pipeline.run.cache")
    cache = StyleTargetCache(root)
    second = stylize(job, tmp_path, cache, "second")
    assert not second["cache_hit"] and same_result(second, reference)
    assert cache.stats["corrupt"] == 1 and cache.stats["forward_passes"] == 1
    assert f"style-target cache entry {entry}" in caplog.text and "recomputing" in caplog.text
    # The entry was rewritten whole: the next run is a hit with the same result.
    third = stylize(job, tmp_path, StyleTargetCache(root), "third")
    assert third["cache_hit"] and same_result(third, reference)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` and everything in it unwritable, for root too (chattr +i) where possible."""
    paths = [folder, *folder.rglob("*")]
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    immutable = False
    try:
        if os.access(folder, os.W_OK):   # root: mode bits do not bind
            if shutil.which("chattr") is None or subprocess.run(
                    ["chattr", "-R", "+i", str(folder)], capture_output=True).returncode != 0:
                pytest.skip("running as root where chattr +i is not available: cannot make a folder read-only")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
        for p in paths:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_a_read_only_cache_is_read_and_worked_around_with_one_warning(tmp_path, job, style_path, caplog):
    reference = stylize(job, tmp_path, StyleTargetCache(enabled=False), "reference")
    other = make_job(job.content, [(style_path, 1.0)], job.params.replace(style_scale=0.5))
    other_reference = stylize(other, tmp_path, StyleTargetCache(enabled=False), "other-reference")
    root = tmp_path / "cache"
    stylize(job, tmp_path, StyleTargetCache(root), "fill")
    caplog.set_level(logging.WARNING, logger="pipeline.run.cache")
    with read_only(root):
        cache = StyleTargetCache(root)
        runner = JobRunner(CPU, cache)
        hit = runner.run(job, tmp_path / "ro" / job.output, None)           # its entry is there: read
        miss = runner.run(other, tmp_path / "ro" / other.output, None)      # a new entry: cannot be stored
        again = runner.run(other, tmp_path / "ro2" / other.output, None)    # memory holds it now
        assert entries(root) == entries(root)[:1]
    assert hit["cache_hit"] and hit["loss_total"] == reference["loss_total"]
    assert not miss["cache_hit"] and miss["loss_total"] == other_reference["loss_total"]
    assert again["cache_hit"] and again["loss_total"] == other_reference["loss_total"]
    assert cache.stats["write_errors"] == 1 and cache.stats["forward_passes"] == 1
    warnings = [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"style-target cache {root} is not writable (")
    assert warnings[0].endswith("targets are computed but not cached (set --cache-dir or "
                                "NST_BATCH_CACHE_DIR to a writable folder)")


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
