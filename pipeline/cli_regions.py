"""`stylize --region [NAME:]MASK=STYLE`: regions of one photo from the command line (torch-free).

STYLE is an image, `none` (keep the photo there) or an equal blend `a.jpg+b.jpg`. NAME defaults
to the mask's file stem (`masks/sky.png` -> sky; a repeated stem gets -2, -3). Per-region
weights, blend weights, style masks and label maps need a manifest (docs/manifest.md, Regions).
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ParamError
from .run.jobs import RegionSpec, StyleRef

_NAME = re.compile(r"^([A-Za-z0-9_-]{1,40}):(?!/|\\)")
FORMAT = "[NAME:]MASK=STYLE (STYLE an image, none, or a.jpg+b.jpg)"


def parse_region(text: str) -> tuple[str | None, str, list[str]]:
    """(name or None, mask path, style paths; [] for none) of one --region value."""
    named = _NAME.match(text)
    name, rest = (named.group(1), text[named.end():]) if named and "=" in text[named.end():] else (None, text)
    mask, eq, style = rest.partition("=")
    if not eq or not mask.strip() or not style.strip():
        raise ParamError(f"--region {text!r}: expected {FORMAT}, e.g. --region masks/sky.png=styles/starry.jpg")
    styles = [] if style.strip().lower() == "none" else [s for s in style.split("+")]
    if any(not s.strip() for s in styles):
        raise ParamError(f"--region {text!r}: an empty style in {style!r}; a blend is a.jpg+b.jpg")
    return name, mask, styles


def region_specs(values: list[str]) -> list[RegionSpec]:
    """The RegionSpecs of the --region values, names made unique; paths as given."""
    specs: list[RegionSpec] = []
    names: set[str] = set()
    for text in values:
        name, mask, styles = parse_region(text)
        if name is not None and name in names:
            raise ParamError(f"--region {text!r}: the region name {name} is used twice; give each region its own")
        if name is None:
            stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(mask).stem)[:36] or "region"
            name = next(n for n in (stem if i == 1 else f"{stem}-{i}" for i in range(1, 1000)) if n not in names)
        names.add(name)
        specs.append(RegionSpec(name, tuple(StyleRef(s, 1.0) for s in styles), mask=mask))
    return specs
