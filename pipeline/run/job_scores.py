"""A finished job's scores (engine/scores.py), read from the files a user has: its saved
output (as written: 8-bit, JPEG artefacts and all), its content and its style images.

Reading the saved file rather than the optimizer's tensor makes the score a function of the
files alone: the same whatever batch the job ran in, and the same when measured again.
Scoring never fails a job: a problem becomes a note in the record and the scores stay empty.
A job with regions is scored against the blend of all its regions' styles (per-region
scores are not measured yet: docs/quality.md).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from .. import imaging
from ..engine import scores
from ..engine.features import VGGFeatures
from .jobs import Job
from .records import JobRecord, error_message

log = logging.getLogger(__name__)


def _read(path: str | Path, device: torch.device) -> torch.Tensor:
    return imaging.read_image(path, long_side_hint=scores.EVAL_SIZE).to(device)


def measure(net: VGGFeatures, outputs: Sequence[torch.Tensor], contents: Sequence[torch.Tensor],
            styles: Sequence[tuple[torch.Tensor, float]]) -> dict:
    """Scores of output images against their content images (pairs; a clip's frames) and one
    style (blend): the means over the pairs, and the record's `scores` mapping."""
    reference = scores.style_reference(net, styles)
    style, content, layers = [], [], []
    for output, photo in zip(outputs, contents):
        shape = scores.eval_shape(*photo.shape[-2:])
        total, per = scores.style_distance(net, output, reference, shape)
        style.append(total)
        layers.append(per)
        content.append(scores.content_distance(net, output, scores.content_features(net, photo, shape), shape))
    per_layer = {k: sum(p[k] for p in layers) / len(layers) for k in scores.STYLE_LAYERS}
    return {"style_distance": sum(style) / len(style), "content_distance": sum(content) / len(content),
            "scores": {**scores.spec(), "style_layers": per_layer, "frames": len(outputs)}}


def scored(record: JobRecord, job: Job, image_path: Path, net: VGGFeatures, device: torch.device,
           content: torch.Tensor | None = None) -> JobRecord:
    """`record` with the job's scores: a photo's saved image against its content; a clip's
    middle frame (`image_path`, its PNG) against that content frame (`content`): one frame
    costs what a photo's score does, and the middle is past the first frame's special start."""
    if not record.done or not job.styles:
        return record
    t0 = time.perf_counter()
    try:
        styles = [(_read(s.path, device), s.weight) for s in job.styles]
        photo = _read(job.content, device) if content is None else content.to(device)
        values = measure(net, [_read(image_path, device)], [photo], styles)
    except Exception as err:  # a score is extra: the job's image is saved and stays done
        log.warning("%s: scores not computed: %s", job.job_id, error_message(err))
        return replace(record, notes=(*record.notes, f"scores not computed: {error_message(err)}"))
    values["scores"]["seconds"] = round(time.perf_counter() - t0, 3)
    return replace(record, style_distance=values["style_distance"],
                   content_distance=values["content_distance"], scores=values["scores"])
