"""`plan`'s print sizes: each output's pixels at the resolution written in its file, in cm and inches."""
from __future__ import annotations

from ..engine.layers import scaled_size
from ..imaging import effective_dpi
from .grouping import content_shape
from .jobs import Job


def print_sizes(jobs: list[Job]) -> list[str]:
    """One line per distinct (output size, dpi) among jobs whose files carry a resolution."""
    sizes: dict[tuple[int, int, int], int] = {}
    for job in jobs:
        dpi = effective_dpi(job.params.format, job.params.dpi)
        shape = content_shape(job)
        if dpi is None or shape is None:
            continue
        h, w = scaled_size(*shape, job.params.size) if job.params.size != "native" else shape
        sizes[(w, h, dpi)] = sizes.get((w, h, dpi), 0) + 1
    return [f"{count} job(s) {w}×{h} px at {dpi} dpi: {w / dpi * 2.54:.1f} × {h / dpi * 2.54:.1f} cm "
            f"({w / dpi:.2f} × {h / dpi:.2f} in)" for (w, h, dpi), count in sorted(sizes.items())]
