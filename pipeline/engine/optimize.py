"""The optimization loop: several jobs in one batch, L-BFGS or Adam, coarse-to-fine stages.

Pure core: nothing here reads files, prints or resizes with PIL. Style targets arrive through
a function of the stage size (the caller decides whether they come from a cache), progress
leaves through a callback receiving a small `Progress` value.

A batch holds jobs whose images have the same shape at every stage. Each job keeps its own
targets, weights, step budget and optimizer history; a job that reaches its budget (or
converges) leaves the batch and is finalized at once. The loop never waits for the device:
losses are read back only when a progress report is due (`progress_every` seconds), when a
convergence check is due, and when a job finishes.

Every iterate stays in [0, 1]: the optimizers project after each step (optimizers.py), so the
image evaluated is the image saved. With `average` > 0 a job saves the debiased exponential
moving average of its iterates (`IterateAverage`) instead of its last iterate, and each
coarse-to-fine stage starts from the previous stage's average, upsampled.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from . import pixels
from ..errors import NSTError
from .features import VGGFeatures
from .optimizers import BatchAdam, BatchLBFGS, IterateAverage
from .objective import JobStyle, Objective, StyleTargets, style_grams
from .starts import initial_image, stage_temporal
from .tiled import make_objective
from ..params import LBFGS_HISTORY, Params

StyleTargetsFn = Callable[[int], JobStyle]     # stage long side -> targets, or regions (StyleRegion)
CONVERGENCE_WINDOW = 25    # evaluations between convergence checks (when tol > 0)
PIXEL_RANGE = (0.0, 1.0)   # the box every iterate is projected into

__all__ = ["Progress", "Result", "JobInput", "Precision", "DivergedError", "Objective", "stylize",
           "stylize_batch", "style_grams", "plan_stages", "initial_image"]


@dataclass(frozen=True)
class Progress:
    step: int                 # objective evaluations so far, all stages
    total: int                # evaluation budget, all stages
    stage: int                # 0-based coarse-to-fine stage
    stages: int
    losses: dict[str, float]  # total, content, style (, tv) of the last evaluation
    elapsed: float            # seconds since the start


@dataclass
class Result:
    image: torch.Tensor                      # (1, 3, H, W) RGB in [0, 1]
    losses: dict[str, float]                 # of the returned image (the average, if any), final stage
    steps: int                               # objective evaluations performed
    history: list[float] = field(default_factory=list)   # total loss per evaluation
    # Every evaluation's losses: {"step": [1, 2, ...], "stage": [0, 0, ..., 1], "total": [...],
    # "content": [...], "style": [...] (, "tv", "temporal")}: the curves the gallery draws.
    loss_history: dict[str, list] = field(default_factory=dict)
    # The last iterate's losses (its last evaluation): equal to `losses` without averaging.
    iterate_losses: dict[str, float] = field(default_factory=dict)


# snapshot(step, stage, stage_end, image): called after every evaluation; `image()` gives the
# current iterate (1, 3, H, W) in [0, 1] as a new tensor, colour restored; the caller decides
# whether it wants one (intermediate images, the live gallery's thumbnail).
Snapshot = Callable[[int, int, bool, Callable[[], torch.Tensor]], None]


@dataclass
class JobInput:
    content: torch.Tensor                    # (1, 3, H, W) RGB in [0, 1], any size
    targets: StyleTargetsFn
    params: Params
    init: str | torch.Tensor | None = None   # None: params.init ("content" or "noise")
    progress: Callable[[Progress], None] | None = None
    finished: Callable[[Result | NSTError], None] | None = None   # called as soon as the job is done
    # Clips: (previous result warped onto this frame (1, 3, H, W), reliability mask (1, 1, H, W))
    # at the content's size; adds temporal_weight × the masked squared difference (engine/flow.py).
    temporal: tuple[torch.Tensor, torch.Tensor] | None = None
    tiles: tuple[int | None, ...] = ()        # per stage: tile core size (px), None or () whole image
    lbfgs_history: int = LBFGS_HISTORY        # curvature pairs L-BFGS keeps (the memory planner may shorten it)
    snapshot: Snapshot | None = None
    # Regions kept as photo: a weight map (1, 1, h, w) ≥ 0 on the content term, any size
    # (resized per stage); None: uniform. Style regions come with the targets (StyleRegion).
    content_weight_map: torch.Tensor | None = None
    # Regions kept as photo: a (1, 1, h, w) map in [0, 1] (any size) where the result is pulled
    # towards the content's pixels (Objective's photo term); None: nowhere.
    photo_map: torch.Tensor | None = None


@dataclass(frozen=True)
class Precision:
    """How the network runs: bf16 autocast and channels_last pay off on CUDA only."""
    bf16: bool = False
    channels_last: bool = False

    @staticmethod
    def for_device(device: torch.device, mode: str = "auto") -> "Precision":
        cuda = device.type == "cuda"
        if mode == "fp32" or (mode == "auto" and not cuda):
            return Precision(False, cuda)
        return Precision(True, cuda)


class DivergedError(NSTError):
    """The loss became NaN or infinite."""


def plan_stages(params: Params, shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(long side, evaluation budget) of each coarse-to-fine stage for a content of `shape`."""
    return list(zip(params.stage_sizes(shape), params.stage_steps()))


def stylize(feats: VGGFeatures, content: torch.Tensor, style_targets: StyleTargetsFn, params: Params,
            init: str | torch.Tensor | None = None,
            progress: Callable[[Progress], None] | None = None) -> Result:
    """Stylize one content image (1, 3, H, W) RGB [0, 1]; the output long side is `params.size`.

    `style_targets(long_side)` returns the (blended) Gram targets for a stage whose output has
    that long side; under `preserve_color="luminance"` they must be built from grey style images
    (see `pixels.style_variant`).
    """
    out = stylize_batch(feats, [JobInput(content, style_targets, params, init, progress)])[0]
    if isinstance(out, NSTError):
        raise out
    return out


class _Job:
    """Book-keeping of one job inside a batch (host-side ints and lists only)."""

    def __init__(self, spec: JobInput, stages: list[tuple[int, int]]):
        self.spec, self.stages = spec, stages
        self.total = sum(b for _, b in stages)
        self.done = 0
        self.left = 0                  # evaluations left in the current stage
        self.image: torch.Tensor | None = None
        self.history: list[torch.Tensor] = []   # 0-d loss tensors, read back once at the end
        self.parts: list[torch.Tensor] = []     # (K,) every loss of each evaluation, ditto
        self.part_names: tuple[str, ...] = ()
        self.stage_of: list[int] = []
        self.last_report = float("-inf")
        self.window_loss: float | None = None
        self.result: Result | NSTError | None = None

    @property
    def grey(self) -> bool:
        return self.spec.params.preserve_color == "luminance"


def stylize_batch(feats: VGGFeatures, specs: Sequence[JobInput], precision: Precision = Precision(),
                  progress_every: float = 0.0) -> list[Result | NSTError]:
    """Stylize several jobs in one batch; returns, per job, its Result or the error that ended it.

    The jobs must agree on everything that shapes the batch: image shape at every stage,
    optimizer and lr, layers. Weights, targets, seeds, colour mode and budgets may differ.
    """
    start = time.perf_counter()
    jobs = [_Job(s, plan_stages(s.params, tuple(s.content.shape[-2:]))) for s in specs]
    shapes = [[pixels.scaled_size(*j.spec.content.shape[-2:], side) for side, _ in j.stages] for j in jobs]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError("jobs of one batch must have the same image shape at every stage")
    first = jobs[0]
    for k, (long_side, _) in enumerate(first.stages):
        active = [j for j in jobs if j.result is None]
        if not active:
            break
        for j in active:
            j.left = j.stages[k][1]
            j.window_loss = None   # a new stage's losses are not comparable with the last one's
        _run_stage(feats, active, k, long_side, precision, progress_every, start)
    return [j.result for j in jobs]  # type: ignore[misc]


def _stage_targets(jobs: list[_Job], long_side: int) -> tuple[list[_Job], list[JobStyle]]:
    """Each job's targets for this stage; a job whose targets fail (say, a truncated style
    image) fails alone and leaves the batch. Out of memory is the batch's problem, not the
    job's: it propagates, and the caller retries with fewer jobs."""
    kept, targets = [], []
    for j in jobs:
        try:
            t = j.spec.targets(long_side)
        except torch.cuda.OutOfMemoryError:
            raise
        except NSTError as err:
            _fail(j, err)
            continue
        except Exception as err:  # a library error in one job's targets is still that job's
            _fail(j, NSTError(f"style targets failed: {type(err).__name__}: {err}"))
            continue
        kept.append(j)
        targets.append(t)
    return kept, targets


def _run_stage(feats: VGGFeatures, jobs: list[_Job], stage: int, long_side: int, precision: Precision,
               progress_every: float, start: float) -> None:
    jobs, targets = _stage_targets(jobs, long_side)
    if not jobs:
        return
    p0 = jobs[0].spec.params
    device_type = jobs[0].spec.content.device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision.bf16)
    content = []
    for j in jobs:
        c = pixels.resize_long_side(j.spec.content, long_side)
        content.append(pixels.grey(c) if j.grey else c)
    content_batch = torch.cat(content)
    n, _, h, w = content_batch.shape
    # A stage too large for memory runs in tiles, with the same loss and gradient (tiled.py).
    tile = jobs[0].spec.tiles[stage] if jobs[0].spec.tiles else None
    maps = [j.spec.content_weight_map for j in jobs]
    photo = [j.spec.photo_map for j in jobs]
    objective = make_objective(feats, _layout(content_batch, precision), targets,
                               [j.spec.params for j in jobs], tile, autocast,
                               stage_temporal([j.spec for j in jobs], (h, w)),
                               maps if any(m is not None for m in maps) else None,
                               photo if any(m is not None for m in photo) else None)
    starts = []
    for j, c in zip(jobs, content):
        if stage == 0:
            init = j.spec.init if j.spec.init is not None else j.spec.params.init
            if j.grey and isinstance(init, torch.Tensor):
                init = pixels.grey(init)
            starts.append(initial_image(c, init, j.spec.params.seed))
        else:
            # Coarse-to-fine: the next stage starts from the upsampled previous result (the
            # average of its iterates when the job averages).
            starts.append(pixels.resize(j.image.clamp(0, 1), (h, w)))
            j.image = None   # the last stage's result: not needed once upsampled
    x = torch.cat(starts).reshape(n, -1).float().contiguous().clamp_(*PIXEL_RANGE)
    # Only x and the objective's targets are needed from here: at print sizes each of these
    # lists holds image-sized copies (run/memory.py counts what stays alive).
    del starts, content, content_batch
    kind = BatchLBFGS if p0.optimizer == "lbfgs" else BatchAdam
    opt = kind(n, x.shape[1], lr=p0.learning_rate, device=x.device, bounds=PIXEL_RANGE,
               **({"history": jobs[0].spec.lbfgs_history} if kind is BatchLBFGS else {}))
    decays = [j.spec.params.average for j in jobs]
    average = IterateAverage(x, decays) if any(decays) else None   # off: no vector, no op
    last_stage = stage == len(jobs[0].stages) - 1
    while jobs:
        _, losses, grad = objective.value_and_grad(_layout(x.view(n, 3, h, w), precision), autocast)
        names = tuple(losses)
        every = torch.stack([losses[k].detach().float() for k in names], 1)   # (n, K): one op, no sync
        rejected = opt.judge(losses["total"])   # an iterate far uphill is undone by the next step
        if average is not None:
            average.update(x, rejected)
        for i, j in enumerate(jobs):
            j.done += 1
            j.left -= 1
            j.history.append(losses["total"][i])
            j.parts.append(every[i])
            j.part_names = names
            j.stage_of.append(stage)
            if j.spec.snapshot is not None:
                j.spec.snapshot(j.done, stage, j.left <= 0, lambda j=j, i=i: _current(j, x[i], h, w))
        now = time.perf_counter()
        report = [i for i, j in enumerate(jobs) if j.spec.progress is not None
                  and (j.left == 0 or now - j.last_report >= progress_every)]
        _check_convergence(jobs, losses["total"])
        leaving = {i for i, j in enumerate(jobs) if j.left <= 0}
        if report:
            host = {k: v.float().cpu().tolist() for k, v in losses.items()}   # the one sync
            for i in report:
                j = jobs[i]
                j.last_report = now
                if not _finite(host["total"][i]):
                    _fail(j, DivergedError(f"the loss diverged at step {j.done} (got {host['total'][i]}); "
                                           "lower lr or the loss weights"))
                    leaving.add(i)
                    continue
                j.spec.progress(Progress(j.done, j.total, stage, len(j.stages),
                                         {k: v[i] for k, v in host.items()}, now - start))
        if leaving and rejected is not None:
            # A job whose last evaluation was rejected keeps its last accepted iterate.
            rows = torch.zeros(len(jobs), dtype=torch.bool, device=x.device)
            rows[sorted(leaving)] = True
            opt.restore(x, rows & rejected)
        if len(leaving) == len(jobs):
            # The whole batch is done with this stage: its images are views of x (no copy),
            # and the optimizer state and gradient go before the final pass and the save (at
            # print sizes they are most of the memory: run/memory.py).
            for i in leaving:
                jobs[i].image = _kept(jobs[i], x, i, average, h, w, copy=False)
            del grad, opt, average
            if last_stage:
                _finalize(feats, [jobs[i] for i in sorted(leaving)], objective, precision)
            return
        for i in leaving:
            jobs[i].image = _kept(jobs[i], x, i, average, h, w, copy=True)
        opt.step(x, grad.reshape(n, -1))
        if leaving:
            keep = [i for i in range(len(jobs)) if i not in leaving]
            gone = [jobs[i] for i in sorted(leaving)]
            if last_stage:
                _finalize(feats, gone, objective.keep(torch.tensor(sorted(leaving), device=x.device)),
                          precision)
            index = torch.tensor(keep, device=x.device, dtype=torch.long)
            x = x[index].contiguous()
            opt.keep(index)
            if average is not None:
                average.keep(index)
            objective = objective.keep(index)
            jobs = [jobs[i] for i in keep]
            n = len(jobs)


def _kept(j: _Job, x: torch.Tensor, i: int, average: IterateAverage | None, h: int, w: int,
          copy: bool) -> torch.Tensor:
    """What a job keeps of a stage (its result, or the next stage's start): its average of the
    iterates when it averages, else its last iterate (a view of x when the batch is done)."""
    if average is not None and j.spec.params.average > 0:
        return average.image(i).view(1, 3, h, w)
    row = x[i:i + 1].detach().view(1, 3, h, w)
    return row.clone() if copy else row


def _current(j: _Job, row: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A copy of a job's iterate as an image, clamped, colour restored as in the final result."""
    image = row.detach().view(1, 3, h, w).clamp(0.0, 1.0)
    if j.grey:
        image = pixels.combine_luminance(image, pixels.resize(j.spec.content, (h, w)))
    return image


def _loss_history(j: _Job) -> dict[str, list]:
    if not j.parts:
        return {}
    values = torch.stack(j.parts).cpu().tolist()   # (steps, K): one read-back per job
    out: dict[str, list] = {"step": list(range(1, len(values) + 1)), "stage": list(j.stage_of)}
    for k, name in enumerate(j.part_names):
        out[name] = [row[k] for row in values]
    return out


def _check_convergence(jobs: list[_Job], totals: torch.Tensor) -> None:
    """End a job's stage when its loss improved by less than `tol` over the last window."""
    due = [i for i, j in enumerate(jobs) if j.spec.params.tol > 0 and j.done % CONVERGENCE_WINDOW == 0]
    if not due:
        return
    now = totals.float().cpu().tolist()
    for i in due:
        j = jobs[i]
        before = j.window_loss
        j.window_loss = now[i]
        if before is not None and before - now[i] < j.spec.params.tol * abs(before):
            j.left = 0


def _finalize(feats: VGGFeatures, jobs: list[_Job], objective: Objective, precision: Precision) -> None:
    """Measure the final losses of the returned images, restore colour, hand back."""
    if all(j.result is not None for j in jobs):
        return
    # In range already (projected iterates, or an average of them); the clamp only guards the
    # rounding of an average. A lone job's image is its own: clamped in place, not copied again.
    images = (jobs[0].image if len(jobs) == 1 else torch.cat([j.image for j in jobs])).clamp_(*PIXEL_RANGE)
    # Report the losses of the image we return (an average was never evaluated; a last
    # iterate was, maybe under bf16): one extra forward pass, not counted as a step, in fp32
    # so results compare across precisions.
    with torch.no_grad():
        _, parts = objective(_layout(images, precision))
    host = {k: v.float().cpu().tolist() for k, v in parts.items()}
    for i, j in enumerate(jobs):
        if j.result is not None:
            continue
        history = torch.stack(j.history).float().cpu().tolist()
        bad = next((k for k, v in enumerate(history) if not _finite(v)), None)
        if bad is not None or not _finite(host["total"][i]):
            step, value = (bad + 1, history[bad]) if bad is not None else (j.done, host["total"][i])
            _fail(j, DivergedError(f"the loss diverged at step {step} (got {value}); lower lr or the loss weights"))
            continue
        image = images[i:i + 1]
        if j.grey:
            image = pixels.combine_luminance(image, pixels.resize(j.spec.content, tuple(image.shape[-2:])))
        curves = _loss_history(j)
        last = {k: v[-1] for k, v in curves.items() if k not in ("step", "stage")}
        j.result = Result(image=image, losses={k: v[i] for k, v in host.items()}, steps=j.done, history=history,
                          loss_history=curves, iterate_losses=last)
        if j.spec.finished is not None:
            j.spec.finished(j.result)


def _fail(job: _Job, error: NSTError) -> None:
    job.result = error
    if job.spec.finished is not None:
        job.spec.finished(error)


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _layout(images: torch.Tensor, precision: Precision) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if precision.channels_last else images
