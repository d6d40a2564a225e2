"""The results index: round trips, reindex from sidecars, export, and the errors users see."""
from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import OutputError
from pipeline.run.index import COLUMN_NAMES, INDEX_NAME, JSON_COLUMNS, ResultsIndex, reindex, summary
from pipeline.views.export import export

ROOT = Path(__file__).resolve().parents[1]


def record(job_id: str, status: str = "done", content: str = "lake", style: str = "wave",
           **changes) -> dict:
    """A record shaped like the worker's sidecar (no VGG needed)."""
    base = {
        "job_id": job_id,
        "content": f"/data/{content}.jpg",
        "styles": [{"path": f"/data/{style}.jpg", "weight": 1.0}],
        "params": {"size": 64, "steps": 10, "style_weight": 1000.0, "content_layers": ["conv4_2"],
                   "style_layer_weights": None},
        "output": f"{content}/{style}/{job_id}.png",
        "status": status,
        "loss_total": 12.5 if status == "done" else None,
        "loss_content": 2.25 if status == "done" else None,
        "loss_style": 10.0 if status == "done" else None,
        "loss_tv": 0.25 if status == "done" else None,
        "steps": 10 if status == "done" else 0,
        "seconds": 1.5,
        "device": "cpu",
        "cache_hit": status == "done",
        "weights_id": "vgg19-original" if status == "done" else None,
        "error": None if status == "done" else "InputError: image not found: /data/lake.jpg",
        "started_at": "2026-01-02T03:04:05.000+00:00",
        "finished_at": "2026-01-02T03:04:06.500+00:00",
        "width": 64 if status == "done" else None,
        "height": 48 if status == "done" else None,
    }
    return {**base, **changes}


def expected_row(rec: dict) -> dict:
    """What the index gives back for `rec`: every column, attempts defaulting to 1."""
    return {name: rec.get(name) for name in COLUMN_NAMES} | {"attempts": rec.get("attempts", 1)}


def write_sidecar(root: Path, rec: dict, image: bool = True) -> Path:
    path = root / Path(rec["output"]).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=2, sort_keys=True))
    if image:
        (root / rec["output"]).write_bytes(b"\x89PNG not decoded by the index")
    return path


A, B, C, D = "0123456789abcdef", "fedcba9876543210", "00000000000000aa", "1111111111111111"


def test_upsert_get_rows_round_trip_with_json_columns(tmp_path):
    done, failed = record(A), record(B, "failed", content="city", attempts=3)
    with ResultsIndex(tmp_path) as index:
        index.upsert(done)
        index.upsert({**failed, "not_a_column": "ignored"})
        assert index.get(A) == expected_row(done)
        assert index.get(A)["styles"] == [{"path": "/data/wave.jpg", "weight": 1.0}]
        assert index.get(A)["params"]["content_layers"] == ["conv4_2"]
        assert index.get(A)["cache_hit"] is True and index.get(B)["cache_hit"] is False
        assert index.get(B)["attempts"] == 3
        assert index.get("ffffffffffffffff") is None
        assert index.rows() == [expected_row(failed), expected_row(done)]   # by output: city < lake
        assert index.rows("failed") == [expected_row(failed)]
        assert index.rows("timeout") == []
        assert index.counts() == {"done": 1, "failed": 1, "timeout": 0}
    raw = sqlite3.connect(tmp_path / INDEX_NAME).execute(
        "SELECT styles, params, cache_hit FROM jobs WHERE job_id = ?", (A,)).fetchone()
    assert json.loads(raw[0]) == done["styles"] and json.loads(raw[1]) == done["params"] and raw[2] == 1


def test_upsert_replaces_the_row(tmp_path):
    with ResultsIndex(tmp_path) as index:
        index.upsert(record(A, "failed"))
        index.upsert(record(A, "done", attempts=2))
        assert index.rows() == [expected_row(record(A, "done", attempts=2))]
        assert index.get(A)["error"] is None
        assert index.counts() == {"done": 1, "failed": 0, "timeout": 0}


def test_wal_mode_and_schema_version(tmp_path):
    ResultsIndex(tmp_path).close()
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()


def test_version_1_index_gains_temporal_error_in_place(tmp_path):
    """An index written before clips (schema 1) opens as schema 4 with its rows kept."""
    v1 = [(n, t) for n, t in __import__("pipeline.run.index", fromlist=["COLUMNS"]).COLUMNS
          if n not in ("temporal_error", "worker", "style_distance", "content_distance", "regions")]
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    conn.executescript(f"CREATE TABLE jobs ({', '.join(f'{n} {t}' for n, t in v1)}); PRAGMA user_version = 1;")
    conn.execute("INSERT INTO jobs (job_id, status, output) VALUES ('0123456789abcdef', 'done', 'a/b.png')")
    conn.commit()
    conn.close()
    with ResultsIndex(tmp_path) as index:
        row = index.get("0123456789abcdef")
        assert row["status"] == "done" and row["temporal_error"] is None
        index.upsert({**row, "job_id": "fedcba9876543210", "temporal_error": 0.25})
        assert index.get("fedcba9876543210")["temporal_error"] == 0.25
        index.upsert({**row, "job_id": "fedcba9876543211", "style_distance": 0.5,
                      "regions": [{"name": "sky", "styles": []}]})
        assert index.get("fedcba9876543211")["style_distance"] == 0.5
        assert index.get("fedcba9876543211")["regions"] == [{"name": "sky", "styles": []}]
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()


def test_upsert_rejects_records_that_cannot_be_rows(tmp_path):
    with ResultsIndex(tmp_path) as index:
        with pytest.raises(ValueError, match="^cannot index record: no job_id$"):
            index.upsert({k: v for k, v in record(A).items() if k != "job_id"})
        with pytest.raises(ValueError, match=r"unknown status 'running' \(expected done, failed, timeout\)"):
            index.upsert(record(A, status="running"))
        with pytest.raises(ValueError, match=r"output '\.\./x\.png' is not a path inside the output folder"):
            index.upsert(record(A, output="../x.png"))
        assert index.rows() == []


def test_non_finite_losses_are_stored_as_null(tmp_path):
    with ResultsIndex(tmp_path) as index:
        index.upsert(record(A, loss_total=float("inf"), loss_style=float("nan")))
        row = index.get(A)
    assert row["loss_total"] is None and row["loss_style"] is None and row["loss_content"] == 2.25


def test_reindex_equals_upserted_rows_and_skips_what_is_not_a_sidecar(tmp_path, caplog):
    out, ref = tmp_path / "out", tmp_path / "ref"
    good = [record(A), record(B, "failed", content="city"), record(C, "timeout", style="ink", attempts=2)]
    for rec in good:
        write_sidecar(out, rec, image=rec["status"] == "done")
    lost = record(D, style="ink")
    write_sidecar(out, lost, image=False)                     # done, but its image is gone
    corrupt = out / "lake" / "wave" / "abcdefabcdefabcd.json"
    corrupt.write_text('{"job_id": "abcdefabcdefabcd", "status": "do')
    (out / "lake" / "wave" / "aaaaaaaaaaaaaaaa.json").write_text(json.dumps({"status": "done"}))
    (out / "lake" / "wave" / f".{A}.json.k2j3h4.tmp").write_text("{")            # atomic-write temp
    (out / "manifest.resolved.yaml").write_text("jobs: []\n")
    (out / "lake" / "wave" / "thumb.json").write_text("{")
    (out / ".cache" / "x" / "y").mkdir(parents=True)
    (out / ".cache" / "x" / "y" / f"{A}.json").write_text("{")                  # hidden folder

    with caplog.at_level(logging.WARNING, logger="pipeline.run.index"):
        assert reindex(out) == 4
    assert sorted(caplog.messages) == [
        "skipping sidecar lake/wave/aaaaaaaaaaaaaaaa.json: no job_id",
        "skipping sidecar lake/wave/abcdefabcdefabcd.json: not valid JSON "
        "(Unterminated string starting at: line 1 column 42 (char 41))",
    ]
    with ResultsIndex(ref) as index:
        for rec in good + [{**lost, "status": "failed", "error": "output image missing"}]:
            index.upsert(rec)
        wanted = index.rows()
    with ResultsIndex(out) as index:
        assert index.rows() == wanted
        assert index.get(D)["status"] == "failed" and index.get(D)["error"] == "output image missing"
        assert index.get(D)["loss_total"] == 12.5                   # the rest of the record is kept
        assert index.integrity_ok()
    # Only the new index is added: no temp database, no -wal/-shm left by the rebuild.
    assert sorted(p.name for p in out.iterdir()) == [".cache", "city", INDEX_NAME, "lake", "manifest.resolved.yaml"]


def test_reindex_replaces_an_index_left_by_a_killed_writer(tmp_path):
    write_sidecar(tmp_path, record(A))
    # A writer killed mid-run: its WAL still holds committed frames for a row no sidecar has.
    script = ("import os, sys; from pipeline.run.index import ResultsIndex; "
              "ix = ResultsIndex(sys.argv[1]); "
              "[ix.upsert({'job_id': f'{i:016x}', 'status': 'failed', 'output': 'a/b/x.png'}) for i in range(5)]; "
              "os._exit(0)")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, check=True, timeout=60)
    wal = tmp_path / (INDEX_NAME + "-wal")
    assert wal.stat().st_size > 0
    assert reindex(tmp_path) == 1
    assert not wal.exists() and not (tmp_path / (INDEX_NAME + "-shm")).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp left
    with ResultsIndex(tmp_path) as index:
        assert [r["job_id"] for r in index.rows()] == [A]
        assert index.integrity_ok()
        index.upsert(record(B))                                    # and it is writable again
        assert index.counts()["done"] == 2


def test_reindex_prefers_a_done_duplicate(tmp_path):
    write_sidecar(tmp_path, record(A, content="copy", finished_at="2026-01-03T00:00:00.000+00:00",
                                   status="failed"), image=False)
    write_sidecar(tmp_path, record(A, content="lake"))
    assert reindex(tmp_path) == 1
    with ResultsIndex(tmp_path) as index:
        assert index.get(A)["status"] == "done" and index.get(A)["output"] == f"lake/wave/{A}.png"


def _index_with_rows(root: Path) -> list[dict]:
    with ResultsIndex(root) as index:
        index.upsert(record(A))
        index.upsert(record(B, "failed", content="city", error='quote " and, comma\nsecond line'))
        index.upsert(record(C, "timeout", style="ink", attempts=2))
        return index.rows()


def _parse_cell(name: str, cell: str):
    if cell == "":
        return None
    if name in JSON_COLUMNS:
        return json.loads(cell)
    if name == "cache_hit":
        return bool(int(cell))
    if name in ("steps", "width", "height", "attempts"):
        return int(cell)
    if name.startswith("loss_") or name == "seconds":
        return float(cell)
    return cell


def test_export_csv_parses_back_to_the_same_values(tmp_path):
    rows = _index_with_rows(tmp_path)
    text = export(tmp_path, "csv")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    # params is spread into one column per parameter (views/export.py), in its place.
    assert header[:4] == ["job_id", "status", "content", "styles"] and "params" not in header
    assert header[4:7] == ["size", "param_steps", "content_weight"] and "style_weight" in header
    lines = [dict(zip(header, line)) for line in reader]
    others = [n for n in COLUMN_NAMES if n != "params"]
    assert [{n: _parse_cell(n, line[n]) for n in others} for line in lines] == \
        [{n: row[n] for n in others} for row in rows]
    assert [(line["size"], line["param_steps"], line["style_weight"], line["content_layers"],
             line["style_layer_weights"], line["tv_weight"]) for line in lines] == \
        [("64", "10", "1000.0", '["conv4_2"]', "", "")] * 3


def test_export_jsonl_parses_back_and_writes_files_atomically(tmp_path):
    rows = _index_with_rows(tmp_path)
    text = export(tmp_path, "jsonl")
    flat = [json.loads(line) for line in text.splitlines()]
    assert [{k: v for k, v in f.items() if k in COLUMN_NAMES} for f in flat] == \
        [{k: v for k, v in r.items() if k != "params"} for r in rows]
    assert [(f["size"], f["param_steps"], f["style_weight"], f["content_layers"]) for f in flat] == \
        [(64, 10, 1000.0, ["conv4_2"])] * 3
    dest = tmp_path / "exports" / "jobs.jsonl"
    assert export(tmp_path, "jsonl", dest) == dest
    assert dest.read_text() == text
    assert [p.name for p in dest.parent.iterdir()] == ["jobs.jsonl"]
    with pytest.raises(OutputError, match=r"^unknown export format 'xml'; use csv or jsonl$"):
        export(tmp_path, "xml")


def test_missing_index_errors_name_the_folder_and_the_fix(tmp_path):
    write_sidecar(tmp_path / "out", record(A))
    with pytest.raises(OutputError) as err:
        export(tmp_path / "out", "csv")
    assert str(err.value) == (f"no results index in {tmp_path / 'out'}: run nst-batch reindex "
                              f"{tmp_path / 'out'} to rebuild it from the job sidecars")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OutputError) as err:
        summary(tmp_path / "empty")
    assert str(err.value) == (f"not an nst-batch output folder: {tmp_path / 'empty'} "
                              "(no index.sqlite and no job sidecars)")
    with pytest.raises(OutputError) as err:
        export(tmp_path / "nowhere", "jsonl")
    assert str(err.value) == f"not an nst-batch output folder: {tmp_path / 'nowhere'} (no such folder)"
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "empty" / INDEX_NAME).exists()


def test_unreadable_or_foreign_index_says_reindex(tmp_path):
    (tmp_path / INDEX_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutputError) as err:
        summary(tmp_path)
    assert str(err.value) == (f"{tmp_path / INDEX_NAME} is not a readable results index (file is not a "
                              f"database); run nst-batch reindex {tmp_path} to rebuild it from the job sidecars")
    (tmp_path / INDEX_NAME).unlink()
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(OutputError) as err:
        ResultsIndex(tmp_path)
    assert str(err.value) == (f"{tmp_path / INDEX_NAME} has index schema version 7, this nst-batch uses 4; "
                              f"run nst-batch reindex {tmp_path} to rebuild it from the job sidecars")


def test_integrity_and_summary_after_many_upserts(tmp_path):
    with ResultsIndex(tmp_path) as index:
        for i in range(300):
            status = ("done", "failed", "timeout")[i % 3]
            index.upsert(record(f"{i % 200:016x}", status, seconds=2.0, cache_hit=i % 2 == 0))
        assert index.integrity_ok()
        assert len(index.rows()) == 200
    # ids 0..99 were written twice: the second write (i = 200..299) decides their row.
    statuses = {f"{i % 200:016x}": ("done", "failed", "timeout")[i % 3] for i in range(300)}
    result = summary(tmp_path)
    assert result["jobs"] == 200
    assert result["by_status"] == {s: sum(v == s for v in statuses.values()) for s in ("done", "failed", "timeout")}
    assert result["seconds_total"] == 400.0
    assert result["seconds_mean_done"] == 2.0
    last_write = {f"{i % 200:016x}": i for i in range(300)}
    assert result["cache_hits"] == sum(1 for i in last_write.values() if i % 2 == 0)


def test_integrity_ok_is_false_for_a_damaged_file(tmp_path):
    with ResultsIndex(tmp_path) as index:
        for i in range(200):
            index.upsert(record(f"{i:016x}", error="x" * 200))
    data = bytearray((tmp_path / INDEX_NAME).read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[3 * page:4 * page] = b"\xff" * page                 # a table page, not the header
    (tmp_path / INDEX_NAME).write_bytes(bytes(data))
    with ResultsIndex(tmp_path) as index:
        assert not index.integrity_ok()
