"""A full disk, at the job files and beyond them.

While a job writes its output: a clear error, nothing half-written. NST_BATCH_FAULT_ENOSPC
makes atomic writes to matching paths fail part-way with ENOSPC, as a full disk does. In a
batch the job fails alone and the batch goes on (test_faults_bad_inputs.py: full.png); here
the worker's side, file by file.

Beyond the job files: the index, thumbnails, the gallery, the contact sheet and
manifest.resolved.yaml. The run ends with its summary and one line per thing it could not
write, never a traceback; the sidecars stay the truth and `reindex` recovers the index. On a
real 4 MiB tmpfs where the machine allows mounting one (root), and always by injecting ENOSPC
at each write site (NST_BATCH_FAULT_ENOSPC for files, a failing connection for SQLite).
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import sqlite3
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from faultkit import assert_consistent, cli_env, index_rows, make_project, pinned, run_cli, sidecars
from pipeline.cli import main
from pipeline.errors import OutputError
from pipeline.fault_hooks import ENOSPC as FAULT_ENOSPC
from pipeline.params import params_from_mapping
from pipeline.run import index as index_module
from pipeline.run.cache import StyleTargetCache
from pipeline.run.index import reindex
from pipeline.run.jobs import make_job
from pipeline.run.orchestrate import RunOptions, classify, run_manifest
from pipeline.run.worker import JobRunner
from pipeline.views.report import finish_run


@pytest.mark.parametrize("full_at", ["image", "sidecar"])
def test_disk_full_fails_the_job_with_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch,
                                                                               content_path, style_path, full_at):
    job = make_job(content_path, [(style_path, 1.0)], params_from_mapping({"size": 32, "steps": 2}))
    out = tmp_path / "out"
    failing = out / (job.output if full_at == "image" else job.sidecar)
    monkeypatch.setenv(FAULT_ENOSPC, str(failing))
    with pytest.raises(OutputError) as err:
        JobRunner(torch.device("cpu"), StyleTargetCache(enabled=False)).run(job, out / job.output, out / job.sidecar)
    assert str(err.value) == f"cannot write {failing}: No space left on device"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # The image is complete when only the sidecar failed: without its sidecar it is unfinished,
    # so the next run does the job again.
    assert files == ([] if full_at == "image" else [job.output])
    assert [j.job_id for j in classify([job], out).pending] == [job.job_id]


def _full(message: str = "database or disk is full") -> sqlite3.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorcode = 13   # SQLITE_FULL, as sqlite3 sets it on a real full disk
    return err


class _FullOnWrite:
    """A connection whose INSERTs fail like a full disk; everything else passes through."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, *args):
        if sql.startswith("INSERT"):
            raise _full()
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args):
        raise _full()

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def _run(manifest: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "400")   # one summary line, however long the temp path
    with pinned():
        code = finish_run(run_manifest(manifest, RunOptions(live=False)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_enospc_at_every_write_site_ends_with_the_summary_and_one_line_each(tmp_path, monkeypatch, capsys):
    manifest = make_project(tmp_path, contents=2, steps=2, extra="sheet: {rows: content, cols: style}\n")
    out = tmp_path / "out"
    # Every file at the top of the output folder or under .thumbs/ (not the jobs' p0/, p1/).
    monkeypatch.setenv(FAULT_ENOSPC, f"{out}/[!p]*")
    connect = index_module._connect
    monkeypatch.setattr(index_module, "_connect", lambda *a, **kw: _FullOnWrite(connect(*a, **kw)))
    code, stdout, stderr = _run(manifest, capsys, monkeypatch)
    assert code == 0, stdout + stderr   # the jobs themselves were written
    assert f"{out}: 2 job(s): 0 already done; this run: 2 done, 0 failed" in stdout
    assert "Traceback" not in stdout + stderr
    assert [line for line in (stdout + stderr).splitlines() if line.startswith("warning: ")] == [
        # The gallery reads the index, which has no rows: it has no thumbnails to make.
        f"warning: cannot write {out / 'index.html'}: No space left on device",
        f"warning: could not write {out / 'manifest.resolved.yaml'} (No space left on device); it is a record "
        "of the run, which goes on without it",
        f"warning: could not update {out / 'index.sqlite'} (the disk is full); the job sidecars hold every "
        f"result: run nst-batch reindex {out} once the disk has room",
    ]
    assert not (out / "manifest.resolved.yaml").exists() and not (out / "index.html").exists()
    assert index_rows(out) == {} and len(sidecars(out)) == 2   # the sidecars are the truth
    monkeypatch.setattr(index_module, "_connect", connect)   # room again
    assert reindex(out) == 2
    assert_consistent(out, expect_done=2)

    # Thumbnails, the gallery page, the contact sheet: a rerun with nothing to do writes them.
    first = min(sidecars(out).values(), key=lambda r: r["output"])   # the gallery's order
    thumb = out / ".thumbs" / f"{first['job_id']}.jpg"
    for pattern, expected in (
            ("*/.thumbs/*", f"warning: cannot write {thumb}: No space left on device"),
            ("*/index.html", f"warning: cannot write {out / 'index.html'}: No space left on device"),
            ("*/contact_sheet*", f"warning: cannot write {out / 'contact_sheet.png'}: No space left on device")):
        monkeypatch.setenv(FAULT_ENOSPC, pattern)
        code, stdout, stderr = _run(manifest, capsys, monkeypatch)
        assert code == 0 and f"{out}: 2 job(s): 2 already done; this run: 0 done, 0 failed" in stdout
        assert [line for line in (stdout + stderr).splitlines() if line.startswith("warning: ")] == [expected]
    monkeypatch.delenv(FAULT_ENOSPC)
    assert _run(manifest, capsys, monkeypatch)[0] == 0
    assert (out / "index.html").is_file() and (out / "contact_sheet.png").is_file()


def test_reindex_on_a_full_disk_is_one_line_and_keeps_the_old_index(tmp_path, monkeypatch):
    manifest = make_project(tmp_path, contents=1, steps=1)
    out = tmp_path / "out"
    (out / "p0" / "s0").mkdir(parents=True)
    (out / "p0" / "s0" / "0123456789abcdef.json").write_text(
        '{"job_id": "0123456789abcdef", "status": "failed", "output": "p0/s0/0123456789abcdef.png", "error": "x"}')
    assert reindex(out) == 1 and manifest.exists()
    before = (out / "index.sqlite").read_bytes()
    connect = index_module._connect
    monkeypatch.setattr(index_module, "_connect", lambda *a, **kw: _FullOnWrite(connect(*a, **kw)))
    with pytest.raises(index_module.OutputError) as err:
        reindex(out)
    assert str(err.value) == (f"cannot write a new index.sqlite in {out} (the disk is full); the old one is "
                              "unchanged: free some space and run nst-batch reindex again")
    assert (out / "index.sqlite").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["index.sqlite", "p0"]   # no temp file left


def test_an_index_the_full_disk_cannot_open_is_worked_around_not_fatal(tmp_path, monkeypatch):
    def cannot_open(*args, **kwargs):
        raise _full()

    monkeypatch.setattr(index_module.sqlite3, "connect", cannot_open)
    index = index_module.open_for_run(tmp_path)
    index.upsert({"job_id": "0123456789abcdef", "status": "done", "output": "a/b/0123456789abcdef.png"})
    assert index.get("0123456789abcdef") is None
    assert index.write_error == (f"could not open {tmp_path / 'index.sqlite'} (the disk is full); the job "
                                 f"sidecars hold every result: run nst-batch reindex {tmp_path} once the disk has room")


# --- a real full file system -----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, or a skip that says why this machine cannot mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the ENOSPC injection test covers "
                    "every write site")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the ENOSPC injection test covers "
                    "every write site")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Write a ballast file until the file system refuses another byte."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 14, 1 << 10, 1):
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC
    return ballast


@pytest.mark.slow
def test_a_real_full_disk_ends_the_run_with_its_summary_and_reindex_recovers(tmp_path, small_disk):
    out = small_disk / "out"
    manifest = make_project(tmp_path, contents=2, steps=2)
    manifest.write_text(manifest.read_text().replace("output: out", f"output: {out}"))
    # A first run on a disk that is already full: not even the index can be created.
    ballast = _fill(small_disk)
    empty = run_cli(tmp_path / "logs", "run", str(manifest), name="empty")
    assert empty.proc.returncode == 1 and "Traceback" not in empty.stdout + empty.stderr, empty.describe()
    assert f"{out}: 2 job(s): 0 already done; this run: 0 done, 2 failed" in empty.stdout, empty.describe()
    assert f"warning: could not open {out / 'index.sqlite'} (the disk is full); the job sidecars hold every " \
           f"result: run nst-batch reindex {out} once the disk has room" in empty.stderr, empty.describe()
    ballast.unlink()

    first = run_cli(tmp_path / "logs", "run", str(manifest), name="first")
    assert first.proc.returncode == 0, first.describe()
    before = {job_id: (out / r["output"]).read_bytes() for job_id, r in sidecars(out).items()}

    ballast = _fill(small_disk)
    full = run_cli(tmp_path / "logs", "run", str(manifest), "--force", name="full", env=cli_env())
    text = full.stdout + full.stderr
    assert full.proc.returncode == 1, full.describe()   # both jobs failed: their images had no room
    assert "Traceback" not in text, full.describe()
    assert f"{out}: 2 job(s): 0 already done; this run: 0 done, 2 failed" in full.stdout, full.describe()
    warnings = [line for line in text.splitlines() if line.startswith("warning: ")]
    assert f"warning: could not write {out / 'manifest.resolved.yaml'} (No space left on device); it is a " \
           "record of the run, which goes on without it" in warnings, full.describe()
    assert any(line.startswith(f"warning: could not ") and "index.sqlite" in line and
               line.endswith(f"run nst-batch reindex {out} once the disk has room") for line in warnings), full.describe()
    assert any("index.html" in line for line in warnings), full.describe()
    # The failed attempts wrote nothing: the earlier images and their done sidecars are intact.
    assert {job_id: (out / r["output"]).read_bytes() for job_id, r in sidecars(out).items()} == before
    assert all(r["status"] == "done" for r in sidecars(out).values())

    # reindex while the disk is still full: one line, and the old index is left as it was.
    stuck = run_cli(tmp_path / "logs", "reindex", str(out), name="stuck")
    assert (stuck.proc.returncode, stuck.stdout) == (2, ""), stuck.describe()
    assert stuck.stderr.startswith(f"error: cannot write a new index.sqlite in {out}") and \
        stuck.stderr.count("\n") == 1, stuck.describe()
    ballast.unlink()
    again = run_cli(tmp_path / "logs", "reindex", str(out), name="reindex")
    assert again.proc.returncode == 0 and again.stdout == f"{out / 'index.sqlite'}: 2 job(s) indexed\n"
    assert_consistent(out, expect_done=2)


@pytest.mark.parametrize("fails", ["folder", "lock"])
def test_no_room_for_the_output_folder_or_its_lock_is_one_line(tmp_path, monkeypatch, fails):
    """Nothing can run: an error naming what could not be created, exit 2, not a traceback."""
    manifest = make_project(tmp_path, contents=1, steps=1)
    out = tmp_path / "out"
    no_room = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if fails == "folder":
        mkdir = Path.mkdir

        def full_mkdir(self, *args, **kwargs):
            if self == out:
                raise no_room
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", full_mkdir)
        expected = f"error: cannot create the output folder {out}: No space left on device\n"
    else:
        def full_acquire(self, *args, **kwargs):
            raise no_room

        monkeypatch.setattr("pipeline.run.output_lock._open_lock_file", full_acquire)
        expected = f"error: cannot create the lock file {out / '.nst-batch.lock'}: No space left on device\n"
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr), pytest.raises(SystemExit) as stop:
        main(["run", str(manifest)])
    assert (stop.value.code, stdout.getvalue(), stderr.getvalue()) == (2, "", expected)
