"""OUTPUT/run.log: one line per event, appended across runs; a log that cannot be written
never fails the run; plain log lines carry the ETA."""
from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from conftest import make_content, make_style
from pipeline.executors.base import Slot
from pipeline.run.grouping import job_stages
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.run.runlog import RunLog
from pipeline.views.progress import RunDisplay

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def _manifest(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    for i in range(2):
        make_content(tmp_path / "photos" / f"p{i}.png", seed=i)
    make_style(tmp_path / "s.png")
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\noutput: out\ncontent: [photos/]\nstyle: [s.png]\n"
                    "params: {size: 32, steps: 3}\ndevices: cpu\nworkers_per_device: 1\n")
    return path


def test_a_run_logs_its_start_each_job_and_its_summary_and_a_rerun_appends(tmp_path):
    manifest = _manifest(tmp_path)
    summary = run_manifest(manifest, RunOptions(live=False))
    assert summary["done"] == 2
    lines = (tmp_path / "out" / "run.log").read_text().splitlines()
    events = [line.split()[1] for line in lines]
    assert events == ["run", "start", "done", "start", "done", "summary"]
    assert all(re.match(STAMP + " ", line) for line in lines)
    _, jobs = prepare(manifest)
    for job in jobs:
        mine = [line for line in lines if job.job_id in line]
        assert len(mine) == 2 and "worker 0 cpu" in mine[0] and "p" in mine[0] and "× s.png" in mine[0]
        assert re.search(r"done .* \d+\.\ds loss \d", mine[1])
    assert "2 job(s) to run of 2" in lines[0] and lines[-1].endswith("done 2 · failed 0")

    run_manifest(manifest, RunOptions(live=False, force=True))
    again = (tmp_path / "out" / "run.log").read_text().splitlines()
    assert again[:len(lines)] == lines and len(again) == 2 * len(lines)


def test_one_line_per_event_whatever_the_text(tmp_path):
    clock = lambda: datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)   # noqa: E731
    log = RunLog(tmp_path, clock=clock)
    log.write("note", "a reason\nthat spans\tlines " + "x" * 500)
    (line,) = (tmp_path / "run.log").read_text().splitlines()
    assert line.endswith("note     a reason that spans lines " + "x" * 500)


def test_an_unwritable_log_warns_once_and_never_raises(tmp_path):
    (tmp_path / "run.log").mkdir()             # a folder where the file should be
    warnings: list[str] = []
    log = RunLog(tmp_path, warn=warnings.append)
    log.write("run", "one")
    log.write("done", "two")
    assert len(warnings) == 1 and "cannot write" in warnings[0] and "run.log" in warnings[0]


def test_plain_lines_show_the_eta_from_the_first_progress_report(tmp_path):
    manifest = _manifest(tmp_path)
    _, jobs = prepare(manifest)
    t = [0.0]
    out = io.StringIO()
    display = RunDisplay(len(jobs), [Slot(0, "cpu")], Console(file=out, width=200), live=False,
                         work={j.job_id: job_stages(j) for j in jobs}, clock=lambda: t[0])
    slot = display.slots[0]
    display.job_started(slot, jobs[0])
    t[0] = 1.0
    display.job_progress(slot, jobs[0], 1, 3, 0.5)       # a third of the first job in 1 s
    text = out.getvalue()
    assert "ETA --" in text.splitlines()[0]             # the line at the start: nothing measured
    t[0] = 2.0
    display._last_plain = -1e9
    display.job_progress(slot, jobs[0], 2, 3, 0.4)
    t[0] = 3.0
    display._last_plain = -1e9
    display.job_progress(slot, jobs[0], 3, 3, 0.3)
    display.job_finished(0, jobs[0], {"seconds": 3.0, "loss_total": 0.3})
    last = out.getvalue().splitlines()[-1]
    assert re.search(r"done .* ETA 3s \(~\d\d:\d\d\)", last), last   # 3 evaluations left at 1 per s
