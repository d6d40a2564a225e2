"""A damaged page in index.sqlite ("database disk image is malformed").

The sidecars are the truth: `run` keeps the damaged file aside, rebuilds the index from them
and goes on; `export`, `sheet` and `gallery` say in one line to run `nst-batch reindex OUTPUT`.
The damage is real: the root page of the `jobs` table is overwritten in place, and each test
first checks that SQLite itself calls the file malformed.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from faultkit import assert_consistent, cli_inline, index_rows, make_project, run_cli
from pipeline.run.index import INDEX_NAME, reindex
from pipeline.run.index_repair import open_for_run_repaired

IDS = ("0123456789abcdef", "fedcba9876543210", "00000000000000aa")


def damage_jobs_page(out: Path) -> bytes:
    """Overwrite the page that holds the jobs table's rows (its root page) with garbage;
    returns the damaged file's bytes. Raises unless SQLite then finds the file malformed."""
    path = out / INDEX_NAME
    db = sqlite3.connect(path)
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
    # Every committed page into the file itself, so no WAL frame hides the damage.
    assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    db.close()
    wal = path.with_name(INDEX_NAME + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert root >= 2 and len(data) >= root * page_size     # inside the file, not its header page
    data[(root - 1) * page_size:root * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))
    with pytest.raises(sqlite3.DatabaseError, match="database disk image is malformed"):
        with sqlite3.connect(path) as db:
            db.execute("SELECT * FROM jobs").fetchall()
    return bytes(data)


def _sidecar_folder(root: Path) -> Path:
    """An output folder of three failed jobs' sidecars, indexed."""
    out = root / "out"
    (out / "a").mkdir(parents=True)
    for job_id in IDS:
        record = {"job_id": job_id, "status": "failed", "content": "p.png", "styles": [], "params": {},
                  "output": f"a/{job_id}.png", "error": "boom", "attempts": 1, "device": "cpu", "worker": 0}
        (out / "a" / f"{job_id}.json").write_text(json.dumps(record))
    assert reindex(out) == 3
    return out


def test_export_sheet_and_gallery_say_to_reindex_in_one_line(tmp_path):
    out = _sidecar_folder(tmp_path)
    damage_jobs_page(out)
    code, stdout, stderr = cli_inline("export", str(out))
    assert (code, stdout) == (2, "")
    assert stderr == (f"error: {out / INDEX_NAME} is damaged (database disk image is malformed); run "
                      f"nst-batch reindex {out} to rebuild it from the job sidecars (a plain nst-batch "
                      "run rebuilds it too)\n")
    for command in ("gallery", "sheet"):
        code, stdout, stderr = cli_inline(command, str(out))
        assert code == 2 and stdout == "" and stderr.count("\n") == 1, (command, stderr)
        assert "malformed" in stderr and f"nst-batch reindex {out}`" in stderr and "Traceback" not in stderr
    code, stdout, _ = cli_inline("reindex", str(out))          # the fix they name works
    assert code == 0 and stdout.endswith(": 3 job(s) indexed\n")
    code, stdout, _ = cli_inline("export", str(out), "--format", "jsonl")
    assert code == 0 and sorted(json.loads(line)["job_id"] for line in stdout.splitlines()) == sorted(IDS)


def test_a_run_keeps_the_damaged_index_aside_and_rebuilds_it(tmp_path):
    out = _sidecar_folder(tmp_path)
    damaged = damage_jobs_page(out)
    index, note = open_for_run_repaired(out)
    with index:
        assert sorted(row["job_id"] for row in index.rows()) == sorted(IDS)
        assert index.integrity_ok()
    (aside,) = out.glob(f"{INDEX_NAME}.damaged-*")
    assert aside.read_bytes() == damaged                       # kept as it was, for a post-mortem
    assert note == (f"{out / INDEX_NAME} was damaged (database disk image is malformed); kept as "
                    f"{aside.name}, rebuilt from the job sidecars (3 job(s))")
    index, note = open_for_run_repaired(out)                  # a sound index is left alone
    index.close()
    assert note is None and list(out.glob(f"{INDEX_NAME}.damaged-*")) == [aside]


@pytest.mark.slow
def test_run_and_export_after_a_damaged_page_in_a_real_index(tmp_path):
    manifest = make_project(tmp_path, contents=2, styles=1, steps=2)
    out, logs = tmp_path / "out", tmp_path / "logs"
    first = run_cli(logs, "run", str(manifest), name="first")
    assert first.proc.returncode == 0, first.describe()
    damage_jobs_page(out)

    export = run_cli(logs, "export", str(out), name="export")
    assert export.proc.returncode == 2 and export.stdout == "", export.describe()
    assert export.stderr.startswith(f"error: {out / INDEX_NAME} is damaged (database disk image is malformed)")
    assert export.stderr.count("\n") == 1 and f"run nst-batch reindex {out}" in export.stderr

    rerun = run_cli(logs, "run", str(manifest), name="rerun")
    assert rerun.proc.returncode == 0, rerun.describe()
    assert "Traceback" not in rerun.stdout + rerun.stderr
    assert "2 job(s): 2 already done;" in rerun.stdout          # nothing redone: the sidecars say done
    (aside,) = out.glob(f"{INDEX_NAME}.damaged-*")
    assert f"kept as {aside.name}, rebuilt from the job sidecars (2 job(s))" in rerun.stderr
    assert {k: v["status"] for k, v in index_rows(out).items()} == {k: "done" for k in assert_consistent(out, 2)}
    export = run_cli(logs, "export", str(out), "--format", "jsonl", name="export2")
    assert export.proc.returncode == 0 and len(export.stdout.splitlines()) == 2, export.describe()
