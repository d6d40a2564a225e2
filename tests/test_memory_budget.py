"""A worker's memory budget: fixed once, shared among the workers of a device or a Ray node,
a cap on CUDA, batches planned as a whole, and `plan` choosing what `run` records."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import make_content, make_style
from pipeline.executors.base import ExecutorOptions, Slot
from pipeline.params import Params, params_from_mapping
from pipeline.run import budget as budgets, memory
from pipeline.run import worker as worker_module
from pipeline.run.cache import StyleTargetCache
from pipeline.run.jobs import make_job
from pipeline.run.held import job_held_bytes
from pipeline.run.orchestrate import RunOptions, plan_manifest, prepare, run_manifest
from pipeline.run.worker import JobRunner, _Item

GB = 10**9
CPU = torch.device("cpu")


def test_the_budget_is_fixed_once_whatever_the_worker_holds_later(tmp_path, monkeypatch):
    """The same job gets the same plan first or last in the queue: the budget is not re-read."""
    rss = iter([700 * 2**20, 1100 * 2**20, 1500 * 2**20])
    monkeypatch.setattr(memory, "process_rss", lambda: next(rss))
    runner = JobRunner(CPU, StyleTargetCache(tmp_path / "c"), memory_limit=2 * GB)
    first = runner.budget
    assert first == budgets.WorkerBudget(2 * GB - memory.CPU_WORKER_BASE, memory.CPU_WORKER_BASE)
    assert runner.budget is first and runner.budget.bytes == 2 * GB - memory.CPU_WORKER_BASE
    p, shape = Params(size=1536), (1152, 1536)
    plans = {memory.plan_job(p, shape, runner.budget.bytes, held=runner.budget.held) for _ in range(3)}
    assert len(plans) == 1
    # `plan` computes the same budget, for any number of jobs before it.
    assert budgets.plan_rows([(p, shape, 0)], "cpu", 1, 2 * GB)[0] == first.bytes


def test_a_worker_that_holds_more_than_assumed_counts_what_it_holds(monkeypatch):
    assert budgets.worker_budget(2 * GB, "cpu", held=1200 * 10**6) == budgets.WorkerBudget(800 * 10**6, 1200 * 10**6)
    assert budgets.worker_budget(2 * GB, "cuda:0") == budgets.WorkerBudget(2 * GB - memory.CUDA_WORKER_BASE,
                                                                           memory.CUDA_WORKER_BASE)
    monkeypatch.setattr(memory, "free_bytes", lambda device: 9 * GB)
    assert budgets.worker_budget(None, "cpu", sharing=3) == budgets.WorkerBudget(3 * GB, 0)


def test_plan_shows_the_plan_each_worker_records_in_the_sidecar(tmp_path):
    make_content(tmp_path / "wide.png", (96, 48))
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    # 1065 MB per worker: a 128 px job runs with a shorter L-BFGS history, a 32 px one as asked.
    manifest.write_text("version: 1\noutput: out\ncontent: [wide.png]\nstyle: [s.png]\n"
                        "grid: {size: [32, 128]}\nparams: {steps: 1, multiscale: 1}\ndevices: cpu\n"
                        "memory_limit: 1065MB\n")
    plan = plan_manifest(manifest)
    planned = {(r["size"], r["mode"], r["optimizer"], r["peak"]) for r in plan["memory"]}
    assert any(opt != "lbfgs (history 100)" for _, _, opt, _ in planned), planned     # not only defaults
    summary = run_manifest(manifest, RunOptions(live=False))
    assert summary["done"] == 2, summary
    jobs = {j.job_id: j for j in prepare(manifest)[1]}
    recorded = set()
    for sidecar in (tmp_path / "out").rglob("*.json"):
        record = json.loads(sidecar.read_text())
        if "memory_plan" not in record:
            continue
        m = record["memory_plan"]
        optimizer = m["optimizer"] + (f" (history {m['lbfgs_history']})" if m["optimizer"] == "lbfgs" else "")
        recorded.add((f"{record['width']}×{record['height']}", m["mode"], optimizer, m["estimated_peak_bytes"]))
        # the worker's budget, less what the job's decoded inputs hold (run/held.py), as in plan
        assert m["budget_bytes"] == plan["memory_budget"] - job_held_bytes(jobs[record["job_id"]])
    assert recorded == planned


def _jobs(tmp_path: Path, n: int, size: int = 32):
    content = make_content(tmp_path / "c.png", (size, size))
    styles = [make_style(tmp_path / f"s{i}.png", seed=i) for i in range(n)]
    params = params_from_mapping({"size": size, "steps": 2, "multiscale": 1})
    return [make_job(content, [(s, 1.0)], params) for s in styles]


def test_a_batch_is_planned_as_a_whole_and_its_size_chosen_from_the_budget(tmp_path, monkeypatch):
    """--batch-size 4 with a budget that holds two such jobs together: batches of two, each job
    recording the batch's plan, whose peak fits."""
    # In-process: this test process holds whatever earlier tests loaded, not a fresh worker's
    # baseline; the budget is the fixed one a worker starts with.
    monkeypatch.setattr(budgets, "measured_held", lambda device: 0)
    jobs = _jobs(tmp_path, 4)
    p, shape = jobs[0].params, (32, 32)
    two = memory.estimate_bytes(p, shape, 2)
    inputs = job_held_bytes(jobs[0])           # each job's decoded inputs come off the budget too
    limit = memory.CPU_WORKER_BASE + int((two + 2 * inputs) / memory.PLAN_FRACTION) + 1024
    assert memory.estimate_bytes(p, shape, 3) + 3 * inputs > (limit - memory.CPU_WORKER_BASE) * memory.PLAN_FRACTION
    runner = JobRunner(CPU, StyleTargetCache(tmp_path / "cache"), batch_size=4, memory_limit=limit)
    records = []
    runner.run_group(jobs, tmp_path / "out", lambda e: records.append(e[2]) if e[0] == "record" else None)
    assert [r.status for r in records] == ["done"] * 4
    assert [r.batch_size for r in records] == [2, 2, 2, 2]
    for r in records:
        assert r.memory_plan["batch"] == 2 and r.memory_plan["estimated_peak_bytes"] == two
        assert two <= r.memory_plan["budget_bytes"] * memory.PLAN_FRACTION


def test_batch_capacity_is_the_most_jobs_whose_footprint_fits():
    p, shape = Params(size=256, multiscale=1), (256, 256)
    one = memory.estimate_bytes(p, shape, 1)
    for n in (1, 2, 5, 13):
        budget = int(memory.estimate_bytes(p, shape, n) / memory.PLAN_FRACTION) + 1
        assert budgets.batch_capacity(p, shape, budget, False, 32) == n
        assert budgets.batch_capacity(p, shape, budget, False, 3) == min(n, 3)
    assert budgets.batch_capacity(p, shape, one // 2, False, 8) == 1     # not even one: alone (the planner tiles it)
    assert budgets.batch_capacity(p, shape, None, False, 8) == 8         # unknown: as asked


def _cuda_runner(tmp_path, monkeypatch, **options):
    calls = []
    props = type("Props", (), {"total_memory": 80 * GB})()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.append((fraction, str(device))))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 100 * 2**20)
    return JobRunner(torch.device("cuda:0"), StyleTargetCache(tmp_path / "c"), **options), calls


def test_a_limit_on_cuda_caps_the_process_with_its_fraction_of_the_device(tmp_path, monkeypatch):
    runner, calls = _cuda_runner(tmp_path, monkeypatch, memory_limit=8 * GB)
    assert calls == [(0.1, "cuda:0")]
    assert runner.budget == budgets.WorkerBudget(8 * GB - memory.CUDA_WORKER_BASE, memory.CUDA_WORKER_BASE)
    _, calls = _cuda_runner(tmp_path, monkeypatch, memory_limit=200 * GB)
    assert calls == [(1.0, "cuda:0")]
    _, calls = _cuda_runner(tmp_path, monkeypatch)          # no limit: no cap
    assert calls == []


def test_two_workers_on_one_gpu_size_their_batches_from_their_share(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 40 * GB + memory.CUDA_MARGIN)
    monkeypatch.setattr(worker_module, "measure_footprint", lambda *args: 1 * GB)
    content = make_content(tmp_path / "c.png", (32, 32))
    job = make_job(content, [(make_style(tmp_path / "s.png"), 1.0)], params_from_mapping({"size": 32}))
    sizes = {}
    for sharing in (1, 2):
        runner, _ = _cuda_runner(tmp_path, monkeypatch, sharing=sharing)
        sizes[sharing] = runner._capacity(_Item(job, None), None)
    # 0.85 × 20 GB ÷ 1 GB per job for each of two workers; alone the cap of 32.
    assert sizes == {1: 32, 2: 17}


def test_ray_actors_share_a_nodes_memory_and_a_gpus():
    from pipeline.executors.ray import actors_sharing

    one_node = [{"Alive": True, "Resources": {"CPU": 16.0}}]
    cpu = [Slot(0, "cpu", 8), Slot(1, "cpu", 8)]
    assert [actors_sharing(cpu, s, one_node, 0) for s in cpu] == [2, 2]          # 2 actors, one node
    two_nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 8.0}}]
    assert actors_sharing(cpu, cpu[0], two_nodes, 0) == 1                           # one per node
    three = [Slot(i, "cpu", 4) for i in range(3)]
    assert actors_sharing(three, three[0], one_node + [{"Alive": False, "Resources": {"CPU": 64.0}}], 0) == 3
    gpus = [Slot(i, "cuda:0") for i in range(4)]
    assert actors_sharing(gpus, gpus[0], one_node, 2) == 2                          # two actors per GPU


def test_each_ray_actor_is_started_with_its_share(monkeypatch):
    from pipeline.executors.ray import RayExecutor

    started = []

    class FakeRay:
        def cluster_resources(self):
            return {"CPU": 16.0}

        def nodes(self):
            return [{"Alive": True, "Resources": {"CPU": 16.0}}]

    class FakeActorClass:
        def options(self, **options):
            return self

        def remote(self, device, cache, threads, worker_options, run_id):
            started.append(worker_options)
            return type("Handle", (), {"node": type("N", (), {"remote": staticmethod(lambda: None)})()})()

    slots = [Slot(0, "cpu", 8), Slot(1, "cpu", 8)]
    ex = RayExecutor(slots, Path("/tmp"), ExecutorOptions())
    ex.ray, ex.actor_class, ex.actors, ex.cache, ex.run_id = FakeRay(), FakeActorClass(), {}, "c", "r"
    for slot in slots:
        ex.start_slot(slot)
    assert [o["sharing"] for o in started] == [2, 2]
