"""Photos with regions in a manifest's `content` (Gatys et al. 2017; docs/manifest.md, "Regions").

Two forms, one photo (or one clip) each (masks are drawn on one photo, so a folder or glob is refused):

    - image: photos/street.jpg
      regions:
        sky:    {mask: masks/street_sky.png, style: styles/starry_night.jpg}
        person: {mask: masks/street_person.png, style: none, content_weight: 2}
    - image: photos/street.jpg
      labels: masks/street_labels.png          # one painted map; each region names its colour
      regions:
        sky:  {colour: "#0000ff", style: [styles/a.jpg, styles/b.jpg], blend: [0.7, 0.3]}

A region's `style` is an image, a list of them (a blend, weighted by `blend`), `{image, mask}`
(only the masked part of the painting), the `name:` of a style entry, or `none` (keep the photo
there). An entry with regions carries its own styles: it is not paired with the `style:` list;
the grid applies to it, including the region keys `regions.NAME.FIELD` (`apply`). Structural
problems are manifest errors here; what needs the masks' pixels (aspect ratio, empty masks,
stray label colours) is checked by run/region_checks.py.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from ..masks import parse_colour
from ..run.jobs import RegionSpec, StyleRef
from .inputs import _MAGIC, InputChecker, _is_image, file_kind
from .yaml_reader import INVALID, describe, has_invalid, is_number

ENTRY_KEYS = ("image", "labels", "regions")
REGION_KEYS = ("mask", "colour", "style", "blend", "style_weight", "content_weight")
GRID_FIELDS = ("style", "blend", "style_weight", "content_weight")
STYLE_HINT = "a style image, a list of images (a blend), {image: ..., mask: ...}, a named style, or none"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True)
class RegionEntry:
    """One photo with regions, as the manifest gave it."""

    content: str                                     # absolute path of the photo
    regions: tuple[RegionSpec, ...]                  # in manifest order, styles weighted by `blend`
    blends: Mapping[str, tuple[float, ...]]          # region name -> its `blend:` as written (if given)
    lines: Mapping[str, tuple[tuple, int]]           # region name -> (key path of its mask or colour, line)
    label: str                                       # the photo as the manifest names it
    clip: Any = None                                 # a clip with regions: its Clip (video or frames)


def is_region_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("regions.")


# ---------------------------------------------------------------------------------------------
# Styles of a region.

def style_value(inputs: InputChecker, path: tuple, value: Any) -> tuple[StyleRef, ...] | None:
    """A region's style: its StyleRefs, () for none, or None with the problem reported."""
    if value is INVALID or has_invalid(value):
        return None
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    if isinstance(value, list):
        if not value:
            inputs.add(path, f"expected {STYLE_HINT}, got an empty list")
            return None
        parts = [_one_style(inputs, path + (i,), item, True) for i, item in enumerate(value)]
        return None if any(p is None for p in parts) else tuple(r for p in parts for r in p)
    return _one_style(inputs, path, value, False)


def _one_style(inputs: InputChecker, path: tuple, value: Any, in_blend: bool) -> tuple[StyleRef, ...] | None:
    if isinstance(value, dict):   # {image: styles/a.jpg, mask: masks/a_sky.png}
        inputs.report.unknown_keys(path, value, ("image", "mask"))
        if "image" not in value:
            inputs.add(path, "a style with a mask is {image: styles/a.jpg, mask: masks/a_sky.png}; image is missing")
            return None
        image = inputs._one_image(path + ("image",), value["image"], "style")
        mask = inputs._one_image(path + ("mask",), value["mask"], "mask") if "mask" in value else [None]
        return (StyleRef(str(image[0]), 1.0, None if mask[0] is None else str(mask[0])),) if image and mask else None
    if not isinstance(value, str) or not value.strip():
        shown = "null; write none to keep the photo here" if value is None else describe(value)
        inputs.add(path, f"expected {STYLE_HINT}, got {shown}")
        return None
    named = inputs.named_styles.get(value)
    if named is not None:
        if in_blend and len(named.images) > 1:
            inputs.add(path, f"the named style {value} is itself a blend; a blend lists single images or single-image names")
            return None
        return tuple(StyleRef(p, w) for p, w in named.refs)
    if not _is_image(value) and "/" not in value and not _MAGIC.search(value):
        names = ", ".join(inputs.named_styles) or "none have a name"
        inputs.add(path, f"unknown style {value}: not an image file and no style entry is named so (named styles: "
                         f"{names}); give the file, or name a style entry {{name: {value}, images: [...]}}")
        return None
    found = inputs._one_image(path, value, "style")
    return (StyleRef(str(found[0]), 1.0),) if found else None


def _weighted(styles: tuple[StyleRef, ...], blend: tuple[float, ...] | None) -> tuple[StyleRef, ...]:
    if not styles or blend is None:
        return styles
    return tuple(replace(s, weight=float(w)) for s, w in zip(styles, blend))


def _number(inputs: InputChecker, path: tuple, value: Any) -> float | None:
    if value is INVALID:
        return None
    if not is_number(value) or not math.isfinite(value) or value < 0:
        inputs.add(path, f"expected a number ≥ 0, got {describe(value)}")
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------
# Entries.

def check_entries(inputs: InputChecker) -> list[RegionEntry]:
    """Every `{image, regions}` entry of `content`, checked once the named styles are known."""
    entries = [check_entry(inputs, path, item) for path, item in inputs.region_items]
    return [e for e in entries if e is not None]


def check_entry(inputs: InputChecker, path: tuple, item: dict) -> RegionEntry | None:
    before = len(inputs.report)
    clip = None
    if "video" in item or "frames" in item:
        # A clip with regions: its masks are one mask for every frame or a folder of one per
        # frame (sorted names; the worker checks the count against the clip's frames).
        if inputs.check_clip is None or "image" in item:
            inputs.add(path, "a clip with regions names video: or frames: (not image:), with its regions")
            return None
        clip = inputs.check_clip(inputs, path, {k: v for k, v in item.items() if k not in ("regions", "labels")})
        if clip is None:
            return None
    else:
        inputs.report.unknown_keys(path, item, ENTRY_KEYS)
    image, content = item.get("image", INVALID), ([Path(clip.path)] if clip is not None else [])
    if clip is not None:   # the clip's frames are the content, checked by the clip parser
        pass
    elif "image" not in item:
        inputs.add(path, "a photo with regions names it: {image: photos/a.jpg, regions: {sky: {mask: ..., style: ...}}}")
    elif isinstance(image, str) and (_MAGIC.search(image) or file_kind(inputs.base / image) == "dir"):
        inputs.add(path + ("image",), f"{image} is a folder or glob; regions belong to one photo (their masks are drawn "
                                      "on it): list each photo with its own regions")
    else:
        content = inputs._one_image(path + ("image",), image, "content")
    labels = inputs._one_image(path + ("labels",), item["labels"], "label map") if "labels" in item else []
    regions = item.get("regions")
    if "regions" not in item:
        inputs.add(path, "missing regions: name each region and what to do there, e.g. regions: "
                         "{sky: {mask: masks/sky.png, style: styles/a.jpg}}")
        return None
    if regions is INVALID:
        return None
    if not isinstance(regions, dict) or not regions:
        inputs.add(path + ("regions",), f"expected a mapping of region name: {{mask: ..., style: ...}}, got {describe(regions)}")
        return None
    specs, blends, lines, colours = [], {}, {}, {}
    for name, region in regions.items():
        rpath = path + ("regions", name)
        if not _NAME.match(name):
            inputs.add(rpath, "a region's name is a plain word (letters, digits, _ or -): grid keys name it, "
                              "regions.NAME.style")
            continue
        checked = _region(inputs, rpath, name, region, "labels" in item, str(labels[0]) if labels else None,
                          clip is not None)
        if checked is None:
            continue
        spec, blend = checked
        if spec.colour is not None and spec.colour in colours:
            inputs.add(rpath + ("colour",), f"#{'%02x%02x%02x' % spec.colour} is also region {colours[spec.colour]}'s "
                                            "colour; give each region its own colour")
            continue
        if spec.colour is not None:
            colours[spec.colour] = name
        key = rpath + ("colour" if "labels" in item else "mask",)
        lines[name] = (key, inputs.report.key_lines.get(key) or inputs.report.key_lines.get(rpath) or 0)
        specs.append(spec)
        if blend is not None:
            blends[name] = blend
    if len(inputs.report) > before or not content or ("labels" in item and not labels):
        return None
    return RegionEntry(str(content[0]), tuple(specs), MappingProxyType(blends), MappingProxyType(lines),
                       inputs._label(content[0]), clip)


def _region(inputs: InputChecker, rpath: tuple, name: str, region: Any, label_form: bool,
            labels: str | None, clip: bool = False) -> tuple[RegionSpec, tuple[float, ...] | None] | None:
    if region is INVALID:
        return None
    if not isinstance(region, dict):
        inputs.add(rpath, f"expected a mapping such as {{mask: masks/{name}.png, style: styles/a.jpg}}, got {describe(region)}")
        return None
    before = len(inputs.report)
    inputs.report.unknown_keys(rpath, region, REGION_KEYS)
    mask = colour = None
    if label_form:
        if "mask" in region:
            inputs.add(rpath + ("mask",), "not used with labels: (one label map for every region); give this region's "
                                          'colour: "#rrggbb" instead, or drop labels: and give every region a mask')
        if "colour" not in region:
            inputs.add(rpath, 'missing colour: with labels: each region names its colour in the label map, e.g. colour: "#0000ff"')
        else:
            colour = parse_colour(region["colour"])
            if colour is None and region["colour"] is not INVALID:
                inputs.add(rpath + ("colour",), f'expected "#rrggbb" or [r, g, b] (each 0–255), got {describe(region["colour"])}')
    else:
        if "colour" in region:
            inputs.add(rpath + ("colour",), "only used with labels: (a label map); add labels: masks/map.png to this photo, "
                                            "or give this region a mask:")
        if "mask" not in region:
            inputs.add(rpath, f"missing mask: name the region's mask image (grey levels are weights), e.g. mask: masks/{name}.png")
        elif clip and isinstance(region["mask"], str) and file_kind(inputs.base / region["mask"]) == "dir":
            mask = str((inputs.base / region["mask"]).resolve())   # one mask per frame
        else:
            found = inputs._one_image(rpath + ("mask",), region["mask"], "mask")
            mask = str(found[0]) if found else None
    styles = None
    if "style" not in region:
        inputs.add(rpath, f"missing style: name {STYLE_HINT} (keep the photo here)")
    else:
        styles = style_value(inputs, rpath + ("style",), region["style"])
    blend = None
    if "blend" in region and styles is not None:
        if not styles:
            inputs.add(rpath + ("blend",), "not used with style: none (no style to blend)")
        else:
            blend = inputs._weights(rpath + ("blend",), region["blend"], len(styles))
    style_weight = _number(inputs, rpath + ("style_weight",), region.get("style_weight", 1.0))
    content_weight = region.get("content_weight")
    if content_weight is not None:
        content_weight = _number(inputs, rpath + ("content_weight",), content_weight)
    if len(inputs.report) > before or styles is None:
        return None
    spec = RegionSpec(name, _weighted(styles, blend), mask=mask, labels=labels if label_form else None,
                      colour=colour, style_weight=style_weight, content_weight=content_weight)
    return spec, blend


# ---------------------------------------------------------------------------------------------
# Grids over regions: `regions.NAME.style`, `.blend`, `.style_weight`, `.content_weight`.

def grid_values(inputs: InputChecker, kpath: tuple, key: str, values: Any,
                entries: Iterable[RegionEntry]) -> tuple[Any, ...] | None:
    """The checked values of one region grid key, or None with the problems reported."""
    parts = key.split(".")
    if len(parts) != 3 or parts[2] not in GRID_FIELDS:
        inputs.add(kpath, f"a region grid key is regions.NAME.FIELD, FIELD one of {', '.join(GRID_FIELDS)}; got {key}")
        return None
    name, field = parts[1], parts[2]
    names = list(dict.fromkeys(r.name for e in entries for r in e.regions))
    if name not in names:
        inputs.add(kpath, f"no photo has a region named {name}" + (f" (regions: {', '.join(names)})" if names else
                          "; regions are given under content: {image: ..., regions: {NAME: ...}}"))
        return None
    if values is INVALID:
        return None
    if not isinstance(values, list) or not values:
        inputs.add(kpath, f"expected a non-empty list of values, got {describe(values)}")
        return None
    checked: list[Any] = []
    for i, value in enumerate(values):
        vpath = kpath + (i,)
        if field == "style":
            checked.append(style_value(inputs, vpath, value))
        elif field == "blend":
            n = len(value) if isinstance(value, list) and value else 1
            checked.append(inputs._weights(vpath, value, n) if value is not None else None)
            if value is None:
                inputs.add(vpath, "expected a list of weights, got null")
        else:
            checked.append(_number(inputs, vpath, value))
    return None if any(v is None for v in checked) else tuple(checked)


def apply(entry: RegionEntry, combo: Mapping[str, Any]) -> tuple[RegionSpec, ...]:
    """The entry's regions with one grid combination's region values; ValueError names a blend
    whose weights do not match its styles."""
    out = []
    for region in entry.regions:
        key = f"regions.{region.name}."
        styles = combo.get(key + "style", region.styles)
        blend = combo.get(key + "blend", entry.blends.get(region.name))
        if styles and blend is not None and (key + "style" in combo or key + "blend" in combo):
            if len(blend) != len(styles):
                raise ValueError(f"region {region.name}'s blend has {len(blend)} weight(s) for {len(styles)} style "
                                 "image(s); give one weight per image")
            styles = _weighted(styles, blend)
        changes: dict[str, Any] = {"styles": styles}
        for field in ("style_weight", "content_weight"):
            if key + field in combo:
                changes[field] = combo[key + field]
        out.append(replace(region, **changes))
    return tuple(out)


def combination_problems(entries: Iterable[RegionEntry], grid: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """Each photo's regions under every combination of the region grid keys: blend lengths."""
    problems: dict[str, None] = {}
    keys = [key for key, _ in grid]
    for entry in entries:
        for values in itertools.product(*(values for _, values in grid)):   # as expand.grid_combinations
            combo = dict(zip(keys, values))
            try:
                apply(entry, combo)
            except ValueError as err:
                where = ", ".join(f"{k}={show(v)}" for k, v in combo.items())
                problems.setdefault(f"with {where}: {err}")
    return list(problems)


def show(value: Any) -> str:
    """A region grid value in one short piece of text (messages, file names)."""
    if isinstance(value, tuple) and all(isinstance(v, StyleRef) for v in value):
        from ..run.jobs import safe_stem

        return ",".join(safe_stem(s.path) for s in value) or "none"
    if isinstance(value, tuple):
        return "+".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def plain_value(value: Any) -> Any:
    """A region grid value as YAML writes it back (manifest.resolved.yaml)."""
    if isinstance(value, tuple) and all(isinstance(v, StyleRef) for v in value):
        return [{"image": s.path, "weight": s.weight, **({"mask": s.mask} if s.mask else {})} for s in value] or "none"
    return list(value) if isinstance(value, tuple) else value


def entry_doc(entry: RegionEntry) -> dict[str, Any]:
    """One photo with regions, as manifest.resolved.yaml records it."""
    return {"image": entry.content, "regions": {
        r.name: {"mask": r.mask, "labels": r.labels, "colour": list(r.colour) if r.colour else None,
                 "style": plain_value(r.styles), "style_weight": r.style_weight, "content_weight": r.content_weight}
        for r in entry.regions}}
