"""Work done once per run, not once per job: hashing a custom weights file, expanding the manifest.

Every job id includes the weights file's sha256; with a 550 MB `.pth` and 2,000 jobs, hashing
it per job read about a terabyte before anything ran, and `run` expanded the manifest twice.
"""
from __future__ import annotations

from pathlib import Path

import torch

from conftest import make_content, make_style
from pipeline.engine import weights
from pipeline.manifest import expand as expand_module
from pipeline.run.orchestrate import RunOptions, run_manifest


def test_a_run_hashes_a_custom_weights_file_once_and_expands_the_manifest_once(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    for i in range(3):
        make_content(tmp_path / "photos" / f"p{i}.png", seed=i)
    make_style(tmp_path / "s.png")
    torch.save({"features.0.weight": torch.zeros(2)}, tmp_path / "vgg.pth")   # never loaded: a dry run
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: photos/\nstyle: s.png\n"
                        "params: {size: 32, steps: 1, weights: vgg.pth}\ngrid: {seed: [0, 1]}\ndevices: cpu\n")
    hashed: list[Path] = []
    sha256 = weights.file_sha256
    monkeypatch.setattr(weights, "file_sha256", lambda path: hashed.append(Path(path)) or sha256(path))
    made: list[str] = []
    make_job = expand_module.make_job
    monkeypatch.setattr(expand_module, "make_job", lambda *a, **kw: made.append(a[0]) or make_job(*a, **kw))

    summary = run_manifest(manifest, RunOptions(dry_run=True, live=False))
    assert summary["jobs"] == summary["to_run"] == 6
    assert (tmp_path / "out" / "manifest.resolved.yaml").read_text().count("job_id:") == 6
    assert hashed == [tmp_path / "vgg.pth"]
    assert len(made) == 6, "the manifest was expanded more than once"
    # A changed file is hashed again: the cache is keyed by size, mtime and inode too.
    torch.save({"features.0.weight": torch.ones(3)}, tmp_path / "vgg.pth")
    run_manifest(manifest, RunOptions(dry_run=True, live=False))
    assert hashed == [tmp_path / "vgg.pth"] * 2
