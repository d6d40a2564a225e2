"""`nst-batch best`: a grid's winners by its scores (docs/quality.md), and its Pareto front.

Lower is better for both scores. The Pareto front is the results no other result beats on
both: none has a style_distance and a content_distance each at most its own, one of them lower.
"""
from __future__ import annotations

from typing import Sequence

from .results import IMAGE_KEYS, ResultRow, axis_value, value_label, varying_keys

BY = ("style", "content", "pareto")


def scores_of(r: ResultRow) -> tuple[float, float] | None:
    s, c = r.row.get("style_distance"), r.row.get("content_distance")
    return (float(s), float(c)) if r.status == "done" and s is not None and c is not None else None


def pareto_front(results: Sequence[ResultRow]) -> list[ResultRow]:
    """The scored results that no other scored result dominates, by style_distance."""
    scored = [(scores_of(r), r) for r in results if scores_of(r) is not None]
    front = [r for (s, c), r in scored
             if not any(s2 <= s and c2 <= c and (s2 < s or c2 < c) for (s2, c2), _ in scored)]
    return sorted(front, key=lambda r: (scores_of(r), r.job_id))


def winners(results: Sequence[ResultRow], by: str = "pareto", count: int | None = None) -> list[ResultRow]:
    """The best `count` (None: all) by one score, or the whole Pareto front (then `count` trims it)."""
    if by == "pareto":
        ranked = pareto_front(results)
    else:
        k = 0 if by == "style" else 1
        ranked = sorted((r for r in results if scores_of(r) is not None), key=lambda r: (scores_of(r)[k], r.job_id))
    return ranked if count is None else ranked[:count]


def lines(results: Sequence[ResultRow], by: str = "pareto", count: int | None = None) -> list[str]:
    """One line per winner: rank, output path, both scores, the parameters that vary."""
    keys = varying_keys(results)
    out = []
    for rank, r in enumerate(winners(results, by, count), 1):
        s, c = scores_of(r)
        varying = " ".join(f"{k}={value_label(k, axis_value(r, k))}" for k in keys)
        out.append(f"{rank:>3}  {r.output}  style_distance={s:.4g} content_distance={c:.4g}"
                   + (f"  {varying}" if varying else ""))
    return out


def unscored_line(results: Sequence[ResultRow]) -> str | None:
    """What was skipped: finished results without scores (from before scores existed)."""
    missing = sum(r.status == "done" and scores_of(r) is None for r in results)
    if not missing:
        return None
    return (f"{missing} finished result(s) have no scores and were skipped: they predate scores "
            "(nst-batch run --force reruns them with scores)")


__all__ = ["BY", "IMAGE_KEYS", "lines", "pareto_front", "scores_of", "unscored_line", "winners"]
