"""Which physical device (and which worker) ran a job: in the sidecar, the index and `export`.

A local worker sees its GPU as cuda:0 (the parent sets CUDA_VISIBLE_DEVICES), so its own
record cannot tell cuda:0 from cuda:1; the executor stamps the slot's device, as it stamps
`attempts`.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3

from conftest import make_content, make_style
from pipeline.executors.base import Slot
from pipeline.run.index import COLUMNS, INDEX_NAME, ResultsIndex
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.views.export import export
from test_executor_base import Scripted, run, started_then


def test_records_name_the_slots_physical_device_not_the_workers_cuda0():
    def script(slot, jobs, n):
        return started_then(jobs)   # every worker's own record says "cpu", as a worker's says cuda:0

    ex = Scripted(script, workers=2, batch_size=1)
    ex.slots = [Slot(0, "cuda:0"), Slot(1, "cuda:1")]
    _, seen = run(ex, ["a", "b", "c", "d"])
    assert len(seen.records) == 4
    assert {(r.worker, r.device) for r in seen.records.values()} == {(0, "cuda:0"), (1, "cuda:1")}


def test_an_executors_own_failure_record_names_the_slots_device_too():
    def script(slot, jobs, n):
        return started_then(jobs, die=True)   # the worker dies: the base writes the record

    ex = Scripted(script, workers=1, retries=0)
    ex.slots = [Slot(0, "cuda:1")]
    _, seen = run(ex, ["a"])
    assert (seen.records["a"].status, seen.records["a"].device, seen.records["a"].worker) == ("failed", "cuda:1", 0)


def test_an_index_without_the_worker_column_opens_and_gains_it(tmp_path):
    v2 = [(n, t) for n, t in COLUMNS if n not in ("worker", "style_distance", "content_distance", "regions")]
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    conn.executescript(f"CREATE TABLE jobs ({', '.join(f'{n} {t}' for n, t in v2)}); PRAGMA user_version = 2;")
    conn.execute("INSERT INTO jobs (job_id, status, output, device) VALUES ('0123456789abcdef', 'done', 'a.png', 'cuda:1')")
    conn.commit()
    conn.close()
    with ResultsIndex(tmp_path) as index:
        row = index.get("0123456789abcdef")
        assert (row["device"], row["worker"]) == ("cuda:1", None)
        index.upsert({**row, "job_id": "fedcba9876543210", "worker": 1})
        assert index.get("fedcba9876543210")["worker"] == 1
    conn = sqlite3.connect(tmp_path / INDEX_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()


def test_a_cpu_run_writes_device_and_worker_to_the_sidecar_the_index_and_export(tmp_path):
    make_content(tmp_path / "p.png")
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: p.png\nstyle: s.png\n"
                        "params: {size: 32, steps: 2}\ndevices: cpu\nworkers_per_device: 1\n")
    summary = run_manifest(manifest, RunOptions(live=False))
    assert summary["done"] == 1
    out = tmp_path / "out"
    (job,) = prepare(manifest)[1]
    job_id, record = job.job_id, json.loads((out / job.sidecar).read_text())
    assert (record["device"], record["worker"]) == ("cpu", 0)
    with ResultsIndex(out, create=False) as index:
        assert (index.get(job_id)["device"], index.get(job_id)["worker"]) == ("cpu", 0)
    (row,) = csv.DictReader(io.StringIO(export(out, "csv")))
    assert (row["device"], row["worker"]) == ("cpu", "0")
    (line,) = export(out, "jsonl").splitlines()
    assert (json.loads(line)["device"], json.loads(line)["worker"]) == ("cpu", 0)
