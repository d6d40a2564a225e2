"""Ray executor: the local Scheduler's contract, with workers as Ray actors on any node.

`RayScheduler.run(jobs, listener)` behaves like `Scheduler.run`: one actor per slot (one GPU
each, CPU actors where there are none), each keeping its VGG across jobs; the parent hands
each ready actor one job at a time, writes every image and sidecar into the output folder
itself (so outputs land there whichever node made them), and applies the same rules: a job
that raises is recorded as failed, an actor that dies is replaced and its job retried up to
`retries` times, a job past `timeout` has its actor killed and is recorded as timed out,
and StopFlags (Ctrl-C) stop dispatching or abort. Ray is imported lazily: it is an extra.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..run.cache import default_cache_dir
from ..errors import DeviceError, InputError, NSTError, OutputError
from ..imaging import atomic_write_bytes
from ..run.jobs import Job, safe_join
from .ray_actor import RayWorker, job_inputs
from .local import Listener, Slot, StopFlags, plan_slots
from ..run.worker import write_sidecar
from .local_process import FAULT_KILL_ONCE

POLL_SECONDS = 0.2
PROGRESS_EVERY = 0.5   # seconds between progress questions to a busy actor
INSTALL_HINT = "--executor ray needs Ray: pip install 'nst-batch[ray]'"
_started_here = False   # whether this process initialised Ray (then it also shuts it down)


class ExecutorError(NSTError):
    """An executor that cannot run here: Ray missing, or its cluster unreachable."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(INSTALL_HINT) from None
    return ray


def _connect(address: str | None) -> Any:
    """The ray module, initialised: `auto` or host:port joins a cluster, None starts a local one.

    An already initialised Ray (a test's, a notebook's) is used as it is.
    """
    global _started_here
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"logging_level": "warning"}
    target = address
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": a private instance for this run, even where `ray start` left one running.
        target, kwargs["include_dashboard"] = "local", False
    try:
        ray.init(address=target, **kwargs)
        _started_here = True
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"at {address}" if address else "(local)"
        raise ExecutorError(f"cannot start or reach the Ray cluster {where}: {_first_line(err).rstrip('.')}; start "
                            "one with `ray start --head`, or leave out --address for a local one") from None
    return ray


def _disconnect(ray: Any) -> None:
    global _started_here
    ray.shutdown()
    _started_here = False


def plan_ray_slots(devices: str | list[str], workers_per_device: int, workers: int | None,
                   address: str | None, connect: bool = True) -> list[Slot]:
    """plan_slots over the cluster's GPUs instead of this machine's; CPU threads from its CPUs.

    With `connect=False` (nothing to run) no cluster is started or joined; Ray must still be
    installed, so a missing extra is reported whatever the state of the output folder.
    """
    if not connect:
        import_ray()
        return plan_slots(devices, workers_per_device, workers, lambda: 0)
    ray = _connect(address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    slots = plan_slots(devices, workers_per_device, workers, lambda: gpus)
    cuda = [s for s in slots if s.device.startswith("cuda")]
    if cuda and gpus == 0:
        raise DeviceError(f"{len(cuda)} GPU worker(s) asked for but the Ray cluster has no GPUs; "
                          "use --device cpu or add GPU nodes")
    cpu = [s for s in slots if s.device == "cpu"]
    if not cpu:
        return slots
    # A CPU actor reserves as many CPUs as it runs torch threads, never more than one node has.
    node_cpus = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1)
    threads = max(1, min(int(node_cpus), int(resources.get("CPU", 1)) // len(cpu)))
    return [replace(s, threads=threads) if s.device == "cpu" else s for s in slots]


@dataclass
class _Actor:
    slot: Slot
    handle: Any = None
    ready_ref: Any = None
    ready: bool = False
    job: Job | None = None
    run_ref: Any = None
    progress_ref: Any = None
    asked: float = 0.0
    started: float = 0.0
    startup_failures: int = 0
    dead: bool = False


class _Inputs:
    """Each input file goes into the object store once, and leaves it when no job needs it."""

    def __init__(self, ray: Any, jobs: list[Job]):
        self.ray, self.refs, self.users = ray, {}, {}
        for job in jobs:
            for path in job_inputs(job):
                self.users[path] = self.users.get(path, 0) + 1

    def for_job(self, job: Job) -> dict[str, tuple[str, Any]]:
        out = {}
        for path in job_inputs(job):
            if path not in self.refs:
                try:
                    data = Path(path).read_bytes()
                except OSError as err:
                    raise InputError(f"cannot read {path}: {err.strerror or err}") from None
                self.refs[path] = (hashlib.sha256(data).hexdigest(), self.ray.put(data))
            out[path] = self.refs[path]
        return out

    def release(self, job: Job) -> None:
        for path in job_inputs(job):
            self.users[path] -= 1
            if self.users[path] <= 0:
                self.refs.pop(path, None)


@dataclass
class RayScheduler:
    slots: list[Slot]
    output_dir: Path
    cache_dir: Path | None
    retries: int = 2
    timeout: float | None = None
    flags: StopFlags = field(default_factory=StopFlags)
    address: str | None = None

    def run(self, jobs: list[Job], listener: Listener) -> dict[str, int]:
        """Run `jobs` to completion (or until stopped); returns counts of what happened."""
        self.ray = _connect(self.address)
        self.listener = listener
        self.attempts: dict[str, int] = {}
        self.counts = {"done": 0, "failed": 0, "retried": 0, "respawned": 0}
        # Resolved here, not on the nodes: every actor uses the folder the user named (or this
        # machine's default), which is what makes a shared cache folder shared.
        self.cache = str(self.cache_dir or default_cache_dir())
        self.inputs = _Inputs(self.ray, jobs)
        self.actor_class = self.ray.remote(RayWorker)
        self.pending: deque[Job] = deque(jobs)
        actors = [_Actor(slot) for slot in self.slots]
        for a in actors:
            self._start(a)
        try:
            while self.pending or any(a.job for a in actors):
                if self.flags.abort:
                    for a in actors:
                        if a.job is not None:
                            # Back to pending: the parent writes outputs, so nothing partial exists.
                            self._kill(a)
                            a.job = None
                    break
                if not self.flags.stop:
                    for a in actors:
                        if a.ready and a.job is None and self.pending:
                            self._dispatch(a, self.pending.popleft())
                elif not any(a.job for a in actors):
                    break
                self._poll(actors)
                self._check_timeouts(actors)
        finally:
            self._shutdown(actors)
            if _started_here:
                # Inside the caller's Ctrl-C handling, not in Ray's atexit hook, where a second
                # Ctrl-C would print a traceback.
                _disconnect(self.ray)
        return self.counts

    # --- actors -------------------------------------------------------------------------

    def _start(self, a: _Actor) -> None:
        options: dict[str, Any] = {"max_concurrency": 2, "num_cpus": 1}
        device = a.slot.device
        if device.startswith("cuda"):
            # Ray picks the GPU and sets CUDA_VISIBLE_DEVICES: inside, it is always cuda:0.
            share = math.ceil(sum(s.device.startswith("cuda") for s in self.slots)
                              / max(1, int(self.ray.cluster_resources().get("GPU", 1))))
            options["num_gpus"] = 1 / max(1, share)
            device = "cuda:0"
        else:
            options["num_cpus"] = max(1, a.slot.threads)
        # The test-only fault hook reaches actors as it reaches local workers: from our environment.
        forwarded = {k: os.environ[k] for k in (FAULT_KILL_ONCE,) if k in os.environ}
        if forwarded:
            options["runtime_env"] = {"env_vars": forwarded}
        a.handle = self.actor_class.options(**options).remote(device, self.cache, a.slot.threads)
        a.ready_ref, a.ready, a.job, a.run_ref, a.progress_ref = a.handle.node.remote(), False, None, None, None

    def _kill(self, a: _Actor) -> None:
        if a.handle is not None:
            self.ray.kill(a.handle, no_restart=True)
        a.handle = a.ready_ref = a.run_ref = a.progress_ref = None
        a.ready = False

    def _shutdown(self, actors: list[_Actor]) -> None:
        live = [a for a in actors if a.handle is not None and a.ready and a.job is None]
        try:
            if live:
                self.ray.wait([a.handle.close.remote() for a in live], num_returns=len(live), timeout=10)
        except Exception:  # cleanup of scratch folders is best effort; new actors sweep them too
            pass
        for a in actors:
            self._kill(a)

    # --- jobs ---------------------------------------------------------------------------

    def _dispatch(self, a: _Actor, job: Job) -> None:
        self.attempts[job.job_id] = self.attempts.get(job.job_id, 0) + 1
        a.job, a.started, a.asked = job, time.time(), time.time()
        self.listener.job_started(a.slot, job)
        try:
            inputs = self.inputs.for_job(job)
        except NSTError as err:
            a.job = None
            self._failed(job, str(err), "failed", a, None)
            return
        a.run_ref = a.handle.run.remote(job, inputs, self.attempts[job.job_id])

    def _poll(self, actors: list[_Actor]) -> None:
        refs = [r for a in actors for r in (a.ready_ref, a.run_ref, a.progress_ref) if r is not None]
        if not refs:
            time.sleep(POLL_SECONDS)
            return
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
        done = set(done)
        for a in actors:
            if a.ready_ref is not None and a.ready_ref in done:
                self._on_ready(a, actors)
            if a.progress_ref is not None and a.progress_ref in done:
                ref, a.progress_ref = a.progress_ref, None
                try:
                    state = self.ray.get(ref)
                except self.ray.exceptions.RayError:
                    state = None   # a dead actor: its run reference says so
                if state is not None and a.job is not None and state[0] == a.job.job_id:
                    self.listener.job_progress(a.slot, a.job, *state[1:])
            if a.run_ref is not None and a.run_ref in done:
                self._on_result(a)
            elif a.job is not None and a.progress_ref is None and time.time() - a.asked >= PROGRESS_EVERY:
                a.asked, a.progress_ref = time.time(), a.handle.progress.remote()

    def _on_ready(self, a: _Actor, actors: list[_Actor]) -> None:
        ref, a.ready_ref = a.ready_ref, None
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            self._kill(a)
            a.startup_failures += 1
            self._message(f"ray actor {a.slot.index} ({a.slot.device}) failed to start: {_first_line(err)}")
            if a.startup_failures >= 3:
                a.dead = True
                if all(x.dead for x in actors):
                    raise DeviceError("every Ray actor failed to start (see the messages above); "
                                      "check that nst-batch is installed on every node, or use --device cpu")
                return
            self.counts["respawned"] += 1
            self._start(a)
            return
        a.ready, a.startup_failures = True, 0

    def _on_result(self, a: _Actor) -> None:
        ref, job, a.run_ref, a.job = a.run_ref, a.job, None, None
        try:
            kind, record, image = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            self._died(a, job, err)
            return
        except self.ray.exceptions.RayError as err:   # e.g. a result that could not be sent back
            self._failed(job, f"ray task failed: {_first_line(err)}", "failed", a, None)
            return
        if kind == "failed":
            self._failed(job, record["error"], "failed", a, record)
            return
        try:
            # Image first, then its sidecar, each atomic: a sidecar always means a whole image.
            try:
                atomic_write_bytes(safe_join(self.output_dir, job.output), image)
            except OSError as err:
                raise OutputError(f"cannot write {self.output_dir / job.output}: {err.strerror or err}") from None
            write_sidecar(safe_join(self.output_dir, job.sidecar), record)
        except NSTError as err:
            self._failed(job, str(err), "failed", a, None)
            return
        self.counts["done"] += 1
        self.inputs.release(job)
        self.listener.job_finished(job, record, self.attempts[job.job_id])

    def _died(self, a: _Actor, job: Job, err: Exception) -> None:
        self._kill(a)
        self.counts["respawned"] += 1
        reason = f"ray actor died ({type(err).__name__})"
        attempt = self.attempts[job.job_id]
        if attempt <= self.retries:
            self.counts["retried"] += 1
            self.listener.job_retry(job, reason, attempt)
            self.pending.appendleft(job)
        else:
            self._failed(job, f"{reason}, {attempt} attempts", "failed", a, None)
        self._start(a)

    def _failed(self, job: Job, error: str, status: str, a: _Actor, record: dict[str, Any] | None) -> None:
        self.counts["failed"] += 1
        self.inputs.release(job)
        self.listener.job_failed(job, error, status, self.attempts[job.job_id], a.slot.device,
                                 a.started, record)

    def _check_timeouts(self, actors: list[_Actor]) -> None:
        for a in actors:
            if a.job is not None and self.timeout and time.time() - a.started > self.timeout:
                job, a.job = a.job, None
                self._kill(a)
                self._failed(job, f"timed out after {self.timeout:g}s (killed)", "timeout", a, None)
                self.counts["respawned"] += 1
                self._start(a)

    def _message(self, text: str) -> None:
        # The Listener protocol has no message channel; batch's listener carries the display.
        display = getattr(getattr(self.listener, "display", None), "message", None)
        (display or print)(text)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]
