"""Ray executor: the executor contract (base.py) with workers as Ray actors on any node.

One actor per slot (one GPU each, CPU actors where there are none), each running the same
`JobRunner.run_group` as a local worker and keeping its VGG across groups, so a cluster runs
the same groups, batch sizes and precision as one machine. The parent writes every image
(from the bytes an actor returns) and every sidecar into the output folder itself, so outputs
land there whichever node made them. Any Ray error of an actor's call (its death, Ray's
OutOfMemoryError, a lost object) replaces the actor and hands its jobs back to the base's
retry rules. Ray is imported lazily: it is an extra.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import fault_hooks
from ..errors import DeviceError, InputError, NSTError, OutputError
from ..imaging import atomic_write_bytes
from ..run.cache import default_cache_dir
from ..run.jobs import Job, safe_join
from ..run.records import JobRecord, failed_record, now_iso
from .base import Event, Executor, Slot
from .local import plan_slots
from .ray_actor import RayWorker, job_inputs, sweep_scratch

PROGRESS_EVERY = 0.2   # seconds between questions to a busy actor for its events
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
    auth_error = getattr(getattr(ray, "exceptions", None), "AuthenticationError", ConnectionError)
    try:
        ray.init(address=target, **kwargs)
        _started_here = True
    except (ConnectionError, RuntimeError, ValueError, auth_error) as err:
        raise ExecutorError(connect_error(err, address)) from None
    return ray


def connect_error(err: BaseException, address: str | None) -> str:
    """The one line for a failed `ray.init`, naming the cause where Ray buries it.

    Ray ≥ 2.5x clusters started with `ray start --head` require a token. A driver that joins
    by HOST:PORT without RAY_AUTH_MODE=token sends none, and ray.init raises a bare
    `ConnectionError: Failed to connect to Ray cluster at …` whose cause's text holds the real
    error (`ray.exceptions.AuthenticationError: … InvalidAuthToken …`); `--address auto` works
    only because it reads the local session's settings. docs/cluster.md: passing the token.
    """
    where = f"at {address or os.environ.get('RAY_ADDRESS')}" if address or os.environ.get("RAY_ADDRESS") else "(local)"
    if not _is_auth_failure(err):
        return (f"cannot start or reach the Ray cluster {where}: {_first_line(err).rstrip('.')}; start one with "
                "`ray start --head`, or leave out --address for a local one")
    token = "the cluster's token: RAY_AUTH_TOKEN, or the file ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (f"the Ray cluster {where} requires an auth token and none was sent (AuthenticationError: InvalidAuthToken); "
                f"set RAY_AUTH_MODE=token and give {token}; see docs/cluster.md")
    return (f"the Ray cluster {where} refused this process's auth token (AuthenticationError: InvalidAuthToken); "
            f"give {token}; see docs/cluster.md")


def _is_auth_failure(err: BaseException | None) -> bool:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:   # the cause chain: Ray wraps the real error twice
        seen.add(id(err))
        if type(err).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


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
            self.users[path] = self.users.get(path, 1) - 1
            if self.users[path] <= 0:
                self.refs.pop(path, None)


@dataclass
class _Actor:
    handle: Any
    ready_ref: Any = None
    run_ref: Any = None
    events_ref: Any = None
    asked: float = 0.0
    group: list[str] = field(default_factory=list)    # the job ids of the group it was sent


class RayExecutor(Executor):
    events_lost_on_death = True     # the driver fetches each actor's events in batches (poll)
    slot_device_is_physical = False  # Ray picks each actor's GPU: records keep the actor's own name

    def __init__(self, *args: Any, address: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.address = address

    def open(self, jobs: list[Job]) -> None:
        self.ray = _connect(self.address)
        # Every actor uses the same cache folder: the one the user named (or this machine's
        # default), which is what makes a shared cache folder shared.
        self.cache = str(self.options.cache_dir or default_cache_dir())
        self.inputs = _Inputs(self.ray, jobs)
        self.actor_class = self.ray.remote(RayWorker)
        self.actors: dict[int, _Actor] = {}
        self.local_events: list[Event] = []       # records made here (an input that cannot be read)
        self.run_id = uuid.uuid4().hex[:12]

    def start_slot(self, slot: Slot) -> None:
        options: dict[str, Any] = {"max_concurrency": 2, "num_cpus": 1}
        device = slot.device
        gpus = int(self.ray.cluster_resources().get("GPU", 1))
        sharing = actors_sharing(self.slots, slot, self.ray.nodes(), gpus)
        if device.startswith("cuda"):
            # Ray picks the GPU and sets CUDA_VISIBLE_DEVICES: inside, it is always cuda:0.
            options["num_gpus"] = 1 / sharing
            device = "cuda:0"
        else:
            options["num_cpus"] = max(1, slot.threads)
        # Test-only fault hooks reach actors as they reach local workers: from our environment.
        if fault_hooks.forwarded_env():
            options["runtime_env"] = {"env_vars": fault_hooks.forwarded_env()}
        handle = self.actor_class.options(**options).remote(device, self.cache, slot.threads,
                                                            self.options.worker_options(sharing), self.run_id)
        self.actors[slot.index] = _Actor(handle, ready_ref=handle.node.remote())

    def send(self, slot: Slot, jobs: list[Job]) -> None:
        a = self.actors[slot.index]
        runnable, inputs = [], {}
        for job in jobs:
            try:
                inputs.update(self.inputs.for_job(job))
                runnable.append(job)
            except NSTError as err:
                self.local_events += [("started", slot.index, job.job_id, None), ("record", slot.index, job.job_id,
                                      failed_record(job, err, slot.device, now_iso(), 0.0))]
        a.run_ref = a.handle.run_group.remote(runnable, inputs) if runnable else None
        a.group = [job.job_id for job in jobs]
        if not runnable:
            self.local_events.append(("group_done", slot.index, None, [job.job_id for job in jobs]))
        a.asked = time.monotonic()

    def poll(self, timeout: float) -> list[Event]:
        events, self.local_events = self.local_events, []
        now = time.monotonic()
        for a in self.actors.values():
            if a.run_ref is not None and a.events_ref is None and now - a.asked >= PROGRESS_EVERY:
                a.events_ref, a.asked = a.handle.events.remote(), now
        refs = [r for a in self.actors.values() for r in (a.ready_ref, a.events_ref, a.run_ref) if r is not None]
        if not refs:
            time.sleep(timeout)
            return events
        done = set(self.ray.wait(refs, num_returns=len(refs), timeout=timeout)[0])
        for index, a in list(self.actors.items()):
            try:
                if a.ready_ref in done:
                    ref, a.ready_ref = a.ready_ref, None
                    self.ray.get(ref)
                    events.append(("ready", index, None, None))
                if a.events_ref in done:
                    ref, a.events_ref = a.events_ref, None
                    events += self._translate(index, self.ray.get(ref))
                if a.run_ref in done:
                    ref, a.run_ref = a.run_ref, None
                    self.ray.get(ref)
                    # The group is over: collect what it said since the last question (first
                    # the answer to a question still in flight), then tell the base, which fails
                    # any job of the group still without a record.
                    if a.events_ref is not None:
                        ref, a.events_ref = a.events_ref, None
                        events += self._translate(index, self.ray.get(ref))
                    events += self._translate(index, self.ray.get(a.handle.events.remote()))
                    events.append(("group_done", index, None, a.group))
            except self.ray.exceptions.RayError as err:
                # The actor died, or Ray killed its task (OutOfMemoryError) and it may be dead:
                # replace it either way; the base retries its jobs.
                self._kill(index)
                events.append(("exited", index, None, f"ray actor lost ({type(err).__name__}: {_first_line(err)})"))
        return events

    def _translate(self, index: int, raw: list[tuple[str, str, Any]]) -> list[Event]:
        events: list[Event] = []
        for kind, job_id, payload in raw:
            if kind == "record":
                payload = self._write_image(*payload)
            events.append((kind, index, job_id, payload))
        return events

    def _write_image(self, record: JobRecord, image: bytes | None) -> JobRecord:
        """The image first, then (in the listener) its sidecar, each atomic."""
        job = self._job(record.job_id)
        if job is None:
            return record       # a job already given up on (timed out): the base ignores it
        self.inputs.release(job)
        if image is None:
            return record
        try:
            target = safe_join(self.output_dir, job.output)
            try:
                atomic_write_bytes(target, image)
            except OSError as err:
                raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
        except NSTError as err:
            return failed_record(job, err, record.device, record.started_at, record.seconds)
        return record

    def _job(self, job_id: str) -> Job | None:
        return next((w.held[job_id] for w in self.workers if job_id in w.held), None)

    def stop_slot(self, slot: Slot, kill: bool) -> None:
        a = self.actors.get(slot.index)
        if a is None:
            return
        if not kill and a.ready_ref is None and a.run_ref is None:
            try:   # its scratch folder: best effort, the sweep at the end removes it too
                self.ray.wait([a.handle.close.remote()], timeout=10)
            except self.ray.exceptions.RayError:
                pass
        self._kill(slot.index)

    def _kill(self, index: int) -> None:
        a = self.actors.pop(index, None)
        if a is not None:
            try:
                self.ray.kill(a.handle, no_restart=True)
            except Exception:  # already gone
                pass

    def close(self) -> None:
        for index in list(self.actors):
            self._kill(index)
        self.inputs.refs.clear()
        sweep_scratch(self.run_id, all_of_run=True)    # this node's leftovers of killed actors
        if _started_here:
            # Inside the caller's Ctrl-C handling, not in Ray's atexit hook, where a second
            # Ctrl-C would print a traceback.
            _disconnect(self.ray)


def actors_sharing(slots: list[Slot], slot: Slot, nodes: list[dict[str, Any]], gpus: int) -> int:
    """How many actors share the memory `slot`'s actor plans with (its budget is the free memory
    it sees divided by this). A GPU actor: the actors one GPU holds (each asks for 1/share of
    one). A CPU actor: the most CPU actors one alive node can hold (each reserves `threads`
    CPUs; ray.nodes() says how many each node has), at most all of them: Ray places actors
    itself, so an actor plans for the fullest node."""
    if slot.device.startswith("cuda"):
        return max(1, math.ceil(sum(s.device.startswith("cuda") for s in slots) / max(1, gpus)))
    cpu_actors = sum(s.device == "cpu" for s in slots)
    per_node = [int(n.get("Resources", {}).get("CPU", 1)) // max(1, slot.threads) for n in nodes if n.get("Alive")]
    return max(1, min(cpu_actors, max(per_node, default=cpu_actors)))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]
