"""A job's loss history in its sidecar, and its intermediate images (`save_every`): bounded,
atomic, in the job's own folder."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import make_content, make_style
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.run.snapshots import KEEP_STEPS, Snapshots


def _manifest(tmp_path: Path, extra: str = "") -> Path:
    make_content(tmp_path / "p.png", size=(64, 48))
    make_style(tmp_path / "s.png")
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\noutput: out\ncontent: [p.png]\nstyle: [s.png]\n"
                    "params: {size: 64, steps: 12, multiscale: 2}\ndevices: cpu\n" + extra)
    return path


def test_the_sidecar_holds_every_loss_per_evaluation_and_stage(tmp_path):
    manifest = _manifest(tmp_path)
    assert run_manifest(manifest, RunOptions(live=False))["done"] == 1
    (job,) = prepare(manifest)[1]
    record = json.loads((tmp_path / "out" / job.sidecar).read_text())
    h = record["loss_history"]
    assert h["step"] == list(range(1, 13))
    assert h["stage"] == [0] * 6 + [1] * 6                 # two stages of 6 evaluations
    assert {"total", "content", "style"} <= set(h)
    assert all(len(h[k]) == 12 for k in h)
    assert all(v > 0 for k in ("total", "content", "style") for v in h[k][1:])
    assert h["content"][0] == 0.0                            # it starts from the content image
    assert h["total"][-1] < h["total"][6]                    # the fine stage made progress
    assert not (tmp_path / "out" / Path(job.output).with_suffix(".steps")).exists()   # off by default


def test_save_every_keeps_the_last_few_and_every_stage_end(tmp_path):
    manifest = _manifest(tmp_path, "save_every: 2\n")
    assert run_manifest(manifest, RunOptions(live=False))["done"] == 1
    (job,) = prepare(manifest)[1]
    folder = tmp_path / "out" / (str(Path(job.output).with_suffix("")) + ".steps")
    names = sorted(p.name for p in folder.iterdir())
    # steps 2, 4, ..., 12 were written; the last KEEP_STEPS remain, plus each stage's end
    assert names == ["stage-1.jpg", "stage-2.jpg",
                     *(f"step-{s:06d}.jpg" for s in range(12 - 2 * (KEEP_STEPS - 1), 13, 2))]
    assert not list(folder.glob(".*"))                      # no temp file left behind
    assert not list((tmp_path / "out" / ".thumbs" / "live").glob("*"))   # the parent removed it


def test_snapshot_images_are_taken_only_when_due(tmp_path):
    t = [0.0]
    calls = []

    def image():
        calls.append(1)
        return torch.rand(1, 3, 20, 30)

    shots = Snapshots(tmp_path, "a/b.png", "job1", stages=2, save_every=0, clock=lambda: t[0])
    for step in range(1, 30):
        t[0] = step * 0.5
        shots(step, 0, False, image)
    assert len(calls) == 3                                  # the live thumbnail at most every 5 s
    shots(30, 0, True, image)                               # and at a stage's end
    assert len(calls) == 4 and (tmp_path / ".thumbs/live/job1.jpg").is_file()
    assert not (tmp_path / "a/b.steps").exists()


def test_a_failing_intermediate_write_never_fails_the_job(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.steps").write_text("a file where the folder should be")
    shots = Snapshots(tmp_path, "a/b.png", "job1", stages=1, save_every=1, thumbnail=False)
    shots(1, 0, False, lambda: torch.rand(1, 3, 8, 8))      # logs, does not raise
    assert shots.broken


def test_a_bad_save_every_is_one_line_naming_the_key(tmp_path):
    import pytest

    from pipeline.errors import NSTError
    from pipeline.manifest.schema import load_manifest

    manifest = _manifest(tmp_path, "save_every: -3\n")
    with pytest.raises(NSTError) as err:
        load_manifest(manifest)
    assert "save_every" in str(err.value) and "-3" in str(err.value)


def test_an_unexpected_error_in_a_preview_never_fails_the_job(tmp_path, monkeypatch):
    from pipeline import imaging

    def broken(*args, **kwargs):
        raise ValueError("encoder exploded")

    monkeypatch.setattr(imaging, "save_image", broken)
    shots = Snapshots(tmp_path, "a/b.png", "job1", stages=1, save_every=1)
    shots(1, 0, False, lambda: torch.rand(1, 3, 8, 8))      # logs, does not raise
    assert shots.broken
