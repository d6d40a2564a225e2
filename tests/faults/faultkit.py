"""Helpers of the fault suite: tiny projects, real `nst-batch run` processes, and the checks
every fault test ends with (the files are whole, the index agrees with them, nothing is left
running).

Imported by the tests of this folder (not a conftest.py: tests/conftest.py already is the
module `conftest`, and a second one would shadow its helpers).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from conftest import make_content, make_style

REPO = Path(__file__).resolve().parents[2]
# A job's final image or sidecar (names carry the varying parameters, run/naming.py); not the
# views' files nor a clip's frames.json, which are no job's completion marker.
JOB_FILE = re.compile(r"(?!contact_sheet|frames\.json$|index\.)[^.][^/]*\.(png|jpg|json)")


# --- projects --------------------------------------------------------------------------------

def make_project(root: Path, contents: int = 2, styles: int = 1, steps: int = 4, size: int = 32,
                 extra: str = "") -> Path:
    """photos/p0.png … and styles/s0.png …, and m.yaml running every pair on one CPU worker."""
    (root / "photos").mkdir(exist_ok=True)
    (root / "styles").mkdir(exist_ok=True)
    for i in range(contents):
        make_content(root / "photos" / f"p{i}.png", seed=i)
    for i in range(styles):
        make_style(root / "styles" / f"s{i}.png", seed=i + 1)
    manifest = root / "m.yaml"
    manifest.write_text(f"version: 1\noutput: out\ncontent: [photos/]\nstyle: [styles/]\n"
                        f"params: {{size: {size}, steps: {steps}}}\ndevices: cpu\n"
                        f"workers_per_device: 1\n{extra}")
    return manifest


# --- real processes --------------------------------------------------------------------------

def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment (its private style cache included) for a child `nst-batch`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def one_cpu(i: int = 0) -> set[int]:
    """One of the CPUs this process may use. A run pinned to it plans one torch thread per CPU
    worker (scheduler.usable_cpus): on a shared, busy machine two threads per job are several
    times slower than one, and the suite would spend its time waiting."""
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[i % len(cpus)]}


@contextlib.contextmanager
def pinned(cpus: set[int] | None = None) -> Iterator[None]:
    """Run this process (and the workers it spawns) on `cpus` for a while."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus or one_cpu())
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


class Run:
    """`python -m pipeline.cli ARGS` in its own session, output in files (pipes could fill up)."""

    def __init__(self, logs: Path, *args: str, env: dict[str, str] | None = None, name: str = "run",
                 cpus: set[int] | None = None):
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
        cpus = cpus or one_cpu()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO,
                                         env=env or cli_env(), stdout=out, stderr=err,
                                         start_new_session=True,
                                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        self.pid = self.proc.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"nst-batch did not finish in {timeout}s\n{self.describe()}") from None

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)   # the parent only: workers ignore SIGINT, and must notice a dead parent

    def kill_all(self) -> None:
        for pid in session_processes(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def describe(self) -> str:
        return f"exit {self.proc.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(logs: Path, *args: str, env: dict[str, str] | None = None, name: str = "run",
            timeout: float = 240) -> Run:
    run = Run(logs, *args, env=env, name=name)
    run.wait(timeout)
    return run


def wait_for(condition: Callable[[], Any], timeout: float, run: Run | None = None, what: str = "") -> Any:
    """Poll `condition` until it is truthy; fail early (with its output) if `run` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if run is not None and run.proc.poll() is not None:
            raise AssertionError(f"nst-batch exited before {what}\n{run.describe()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f"\n{run.describe()}" if run else ""))


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`: a run's parent, workers and helpers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()   # after "pid (comm)": state ppid pgrp session …
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry))
    return found


def assert_no_orphans(run: Run, timeout: float = 20) -> None:
    """Every process the run started is gone (workers watch their parent's pid and exit)."""
    deadline = time.monotonic() + timeout
    while session_processes(run.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_processes(run.pid)
    if left:
        names = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for p in left]
        run.kill_all()
        raise AssertionError(f"processes left running after the run ended: {names}")


class Hold:
    """The worker's test-only hold hook (NST_BATCH_FAULT_HOLD): each job waits at its first step
    until the test releases it, so a test signals a run knowing exactly which job is running."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return cli_env(NST_BATCH_FAULT_HOLD=str(self.folder))

    def held(self) -> set[str]:
        """job_ids that have reached their first step (released or not)."""
        return {p.stem for p in self.folder.glob("*.held")}

    def release(self, *job_ids: str) -> None:
        for job_id in job_ids:
            (self.folder / f"{job_id}.release").touch()

    def release_all(self) -> None:
        (self.folder / "release").touch()

    def next_running(self, run: Run, before: set[str] = frozenset(), timeout: float = 180) -> str:
        """Wait until one job not in `before` is held; returns its job_id."""
        (job_id,) = wait_for(lambda: self.held() - before, timeout, run, "the next job to start")
        return job_id


# --- what the files say ----------------------------------------------------------------------

def sidecars(out: Path) -> dict[str, dict[str, Any]]:
    """job_id -> sidecar record, for every sidecar under `out` (any `<name>.json` that records a
    job id and sits beside its output: names carry the varying parameters, run/naming.py)."""
    found = {}
    for path in out.rglob("*.json"):
        if any(p.startswith(".") for p in path.relative_to(out).parts):
            continue
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "job_id" in record and \
                Path(record.get("output", "")).with_suffix(".json") == path.relative_to(out):
            found[record["job_id"]] = record
    return found


def done(out: Path) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in sidecars(out).items() if v["status"] == "done"}


def temp_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.tmp"))


def index_rows(out: Path) -> dict[str, dict[str, Any]]:
    from pipeline.run.index import ResultsIndex

    with ResultsIndex(out, create=False) as index:
        assert index.integrity_ok(), "SQLite integrity check failed"
        return {row["job_id"]: row for row in index.rows()}


def check_image(path: Path) -> tuple[int, int]:
    """Open and fully decode `path`; a partial or corrupt file raises."""
    with Image.open(path) as img:
        img.load()
        return img.size


def assert_consistent(out: Path, expect_done: int | None = None) -> dict[str, dict[str, Any]]:
    """Whole files only, no temp files, and an index that agrees with the sidecars, row by row."""
    records = sidecars(out)
    for job_id, record in records.items():
        image = out / record["output"]
        if record["status"] == "done":
            assert check_image(image) == (record["width"], record["height"]), image
        else:
            assert not image.exists(), f"a {record['status']} job left an image: {image}"
            assert record["error"] and "\n" not in record["error"] and "Traceback" not in record["error"]
    assert temp_files(out) == []
    rows = index_rows(out)
    assert {k: v["status"] for k, v in rows.items()} == {k: v["status"] for k, v in records.items()}
    for job_id, row in rows.items():
        assert row["output"] == records[job_id]["output"] and row["error"] == records[job_id]["error"]
    if expect_done is not None:
        assert sum(r["status"] == "done" for r in records.values()) == expect_done, records
    return records


class Watcher:
    """Checks, while a run writes, every file that appears under a final name in `out`.

    An image must decode completely and a sidecar must be a whole JSON record: atomic writes
    (temp file + os.replace) mean a reader never sees anything else, whatever is killed when.
    """

    def __init__(self, out: Path):
        self.out, self.seen, self.problems = out, {}, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._scan()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._scan()
            time.sleep(0.03)

    def _scan(self) -> None:
        if not self.out.is_dir():
            return
        for folder, dirs, files in os.walk(self.out):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not JOB_FILE.fullmatch(name):
                    continue
                path = Path(folder, name)
                try:
                    st = path.stat()
                    if self.seen.get(path) == (st.st_ino, st.st_size):
                        continue
                    if name.endswith(".json"):
                        record = json.loads(path.read_bytes())
                        assert record["status"] in ("done", "failed", "timeout")
                    else:
                        check_image(path)
                    self.seen[path] = (st.st_ino, st.st_size)
                except FileNotFoundError:
                    continue
                except Exception as err:  # noqa: BLE001 - any failure to read is the finding
                    self.problems.append(f"{path.relative_to(self.out)}: {type(err).__name__}: {err}")

    def files_checked(self) -> int:
        return len(self.seen)


def sqlite_integrity(out: Path) -> str:
    with sqlite3.connect(out / "index.sqlite") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def cli_inline(*args: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr), for checks that need no real run."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()
