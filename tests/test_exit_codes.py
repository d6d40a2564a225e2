"""Exit codes of `run` and `status` (docs/cli.md, "Exit codes"): 0 all done, 1 some job failed
(in this run or kept from an earlier one), 130 interrupted, 2 refused; `status` 3 when jobs are
pending and none failed. And the summary after Ctrl-C says how many jobs are left."""
from __future__ import annotations

import json

import pytest

from conftest import make_content, make_style
from pipeline.cli import main
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.views.report import finish_run


@pytest.fixture
def grid(tmp_path):
    make_content(tmp_path / "photo.png")
    make_style(tmp_path / "wave.png")
    manifest = tmp_path / "grid.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        "params: {size: 32, steps: 2}\ngrid: {seed: [0, 1]}\ndevices: cpu\n")
    return manifest


def _write(manifest, statuses):
    """Sidecars (and images for done jobs) as a run writes them; no VGG runs."""
    m, jobs = prepare(manifest)
    for job, status in zip(jobs, statuses):
        image = m.output / job.output
        image.parent.mkdir(parents=True, exist_ok=True)
        if status == "done":
            image.write_bytes(b"not decoded")
        record = {**job.describe(), "status": status, "error": None if status == "done" else "boom"}
        image.with_suffix(".json").write_text(json.dumps(record))


def _exit(args) -> int:
    try:
        main(args)
    except SystemExit as stop:
        return stop.code
    return 0   # main returns normally on success


@pytest.mark.parametrize("statuses, code", [(("done", "done"), 0), (("done", "failed"), 1),
                                            (("done",), 3), (("failed",), 1)])
def test_status_exit_code(grid, statuses, code, capsys):
    _write(grid, statuses)
    assert _exit(["status", str(grid)]) == code


def test_status_of_a_bad_manifest_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\noutput: out\ncontent: [nothere.png]\nstyle: [nothere.png]\n")
    assert _exit(["status", str(bad)]) == 2


def test_a_run_that_keeps_earlier_failures_exits_1(grid, capsys):
    _write(grid, ("done", "failed"))
    assert _exit(["run", str(grid)]) == 1     # nothing to run: the failure kept is still a failure
    assert "1 failed earlier" in capsys.readouterr().out


def test_the_summary_after_ctrl_c_names_the_pending_jobs(capsys):
    summary = {"output": "out", "jobs": 5, "skipped_done": 1, "kept_failed": 0, "to_run": 4,
               "done": 1, "failed": 1, "interrupted": True}
    assert finish_run(summary) == 130
    text = " ".join(capsys.readouterr().out.split())
    assert "this run: 1 done, 1 failed, 2 pending" in text
    assert "interrupted: rerun the same command to finish the rest (2 job(s) pending)" in text


def test_dry_run_reports_what_the_planner_would_refuse(grid, capsys):
    grid.write_text(grid.read_text().replace("size: 32", "size: 16000") + "memory_limit: 1GB\n")
    summary = run_manifest(grid, RunOptions(dry_run=True, live=False))
    assert len(summary["refused"]) == 1 and summary["refused"][0].startswith("2 job(s) at 16000×13333: size 16000")
    assert finish_run(summary) == 1
    out = capsys.readouterr()
    assert "0 would run, 2 would be refused by the memory planner" in " ".join(out.out.split())
    assert "refused: 2 job(s) at 16000×13333" in out.err
