"""The manifest of a batch: one YAML schema, read once, every problem reported with its line.

`load_manifest(path)` reads the file with a hardened safe loader (yaml_reader.py),
checks every key, resolves every path relative to the manifest's folder (the images:
inputs.py) and returns a frozen `Manifest`. A manifest that
does not validate raises one `ManifestError` listing every problem, one line each:
`grid.style_weight[2]: expected a number, got "1e3x" (line 14)`. `expand` and `resolved_yaml`
(expand.py, re-exported here) turn a Manifest into jobs and a record of them.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import ManifestError, ParamError
from .expand import expand, grid_combinations, grid_size, resolved_yaml, zip_mismatch
from .clips import check_clip
from .inputs import MAX_JOBS, PATH_HINT, InputChecker, StyleEntry, file_kind, resolve
from .regions import RegionEntry, check_entries, combination_problems, grid_values, is_region_key
from ..run.jobs import INIT_KEYWORDS
from ..run.naming import template_problem
from .yaml_reader import (INVALID, MAX_NODES, Abort, Report, describe, has_invalid, is_number,
                            read_yaml, suggest)
from ..video import Clip
from ..params import PARAM_NAMES, param_problems, params_from_mapping, show_value
from ..views.sheets import DEFAULT_THUMB, IMAGE_KEYS, THUMB_RANGE

VERSION = 1
TOP_KEYS = ("version", "output", "content", "style", "pairing", "pairs", "params", "grid",
            "devices", "workers_per_device", "retries", "timeout", "sheet", "memory_limit",
            "save_every", "output_name")
WEIGHTS_KEYWORDS = ("original", "torchvision")
_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]{1,3})?)$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sheet:
    rows: str | None = None      # content, style or a parameter; None: chosen from what varies
    cols: str | None = None
    thumb: int = DEFAULT_THUMB   # cell size in pixels


@dataclass(frozen=True)
class Manifest:
    source: Path                              # the manifest file, absolute
    base_dir: Path                            # its folder: relative paths start here
    output: Path                              # absolute output folder
    content: tuple[str, ...]                  # absolute image paths, in manifest order, unique
    styles: tuple[StyleEntry, ...]
    pairing: str                              # product | zip | explicit
    pairs: tuple[tuple[str, StyleEntry], ...]  # explicit pairing only
    params: Mapping[str, Any]                 # defaults of every job; paths made absolute
    grid: tuple[tuple[str, tuple[Any, ...]], ...]  # (parameter, values) in manifest order
    devices: str | tuple[str, ...]            # "auto", "cpu" or ("cuda:0", "cuda:1", ...)
    workers_per_device: int
    retries: int
    timeout: float | None                     # seconds per job; None: no limit
    memory_limit: int | None                  # bytes a worker may plan for; None: device free / workers
    sheet: Sheet | None
    data: Mapping[str, Any]                   # the YAML as read, once it validated
    clips: Mapping[str, Clip] = field(default_factory=lambda: MappingProxyType({}))   # content path -> its clip
    warnings: tuple[str, ...] = ()            # entries whose jobs will fail alone (a broken symlink)
    save_every: int = 0                       # intermediate images every N evaluations (0: none)
    output_name: str | None = None            # a file-name template (run/naming.py); None: the default
    region_entries: tuple[RegionEntry, ...] = ()   # photos with regions: not paired with `styles`


# ---------------------------------------------------------------------------------------------
# The schema.

def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


class _Checker:
    """Checks the plain data of one manifest; every problem goes to the report."""

    def __init__(self, source: Path, report: Report):
        self.valid_params: dict[str, Any] = {}                   # for checks past other errors
        self.valid_grid: list[tuple[str, tuple[Any, ...]]] = []
        self.source, self.report = source, report
        self.base = resolve(source.parent) or source.parent
        self.output: Path | None = None
        self.inputs: InputChecker | None = None
        self.entries: list[RegionEntry] = []

    def add(self, path: tuple, message: str, **kw: Any) -> None:
        self.report.add(path, message, **kw)

    def check(self, data: Any) -> Manifest | None:
        if data is INVALID:
            return None
        if not isinstance(data, dict):
            self.add((), "a manifest is a mapping of keys (version, output, content, style, ...), "
                         f"got {describe(data)}")
            return None
        self.report.unknown_keys((), data, TOP_KEYS)
        self._version(data)
        self.output = self._output(data)
        inputs = self.inputs = InputChecker(self.base, self.output, self.report, check_clip)
        pairing = inputs.pairing(data)
        content: list[str] = []
        styles: list[StyleEntry] = []
        pairs: list[tuple[str, StyleEntry]] = []
        before = len(self.report)
        mode = pairing or ("explicit" if "pairs" in data else "product")   # check inputs anyway
        if mode == "explicit":
            pairs = inputs.pairs(data)
            content = list(dict.fromkeys(c for c, _ in pairs))
            styles = list(dict.fromkeys(s for _, s in pairs))
        else:
            content = inputs.content(data)
            # Photos with regions carry their own styles: with only those, `style:` is optional.
            styles = inputs.styles(data) if content or "style" in data or not inputs.region_items else []
        entries = self.entries = check_entries(inputs)   # after the styles: a region may name one
        if inputs.region_items and pairing == "zip":
            self.add(("pairing",), "photos with regions carry their own styles and are not paired; use "
                                   "pairing: product (the default), or list them in another manifest")
        inputs.check_inside_output(content + [e.content for e in entries], styles)
        inputs_ok = pairing is not None and len(self.report) == before
        if inputs_ok and pairing == "zip" and len(content) != len(styles):
            self.add(("pairing",), zip_mismatch(len(content), len(styles)))
            inputs_ok = False
        before = len(self.report)
        params = self._params(data.get("params"))
        grid = self._grid(data.get("grid"))
        combos = grid_size(grid) if grid is not None else 0
        if inputs_ok and grid is not None:
            n_pairs = {"product": len(content) * len(styles) + len(entries), "zip": len(content), "explicit": len(pairs)}[pairing]
            if n_pairs * combos > MAX_JOBS:
                self.add(("grid",) if grid else (),
                         f"the manifest expands to {n_pairs * combos} jobs ({n_pairs} content-style pair(s) "
                         f"× {combos} parameter combination(s)); at most {MAX_JOBS} per manifest: "
                         "split it into several manifests")
        if params is not None and grid is not None and len(self.report) == before and combos <= MAX_JOBS:
            self._combined(params, [(k, v) for k, v in grid if not is_region_key(k)])
            for problem in combination_problems(entries, [(k, v) for k, v in grid if is_region_key(k)]):
                self.add(("grid",), problem)
        else:   # every problem at once: the layer-count check still runs on the keys that are valid
            self._layer_weight_counts()
        devices = self._devices(data)
        workers = self._int(("workers_per_device",), data.get("workers_per_device", 1), 1, 64)
        retries = self._int(("retries",), data.get("retries", 2), 0, 100)
        timeout = self._timeout(data.get("timeout"))
        memory_limit = self._memory_limit(data.get("memory_limit"))
        save_every = self._int(("save_every",), data.get("save_every", 0), 0, 1_000_000)
        sheet = self._sheet(data.get("sheet"))
        output_name = data.get("output_name")
        if output_name is not None and template_problem(output_name):
            self.add(("output_name",), template_problem(output_name))
        if len(self.report):
            return None
        return Manifest(
            source=self.base / self.source.name, base_dir=self.base, output=self.output,
            content=tuple(content), styles=tuple(styles), pairing=pairing, pairs=tuple(pairs),
            params=MappingProxyType(params), grid=tuple(grid), devices=devices,
            workers_per_device=workers, retries=retries, timeout=timeout, sheet=sheet, memory_limit=memory_limit,
            data=MappingProxyType(data), clips=MappingProxyType(dict(inputs.clips)),
            warnings=tuple(self.report.warnings()), save_every=save_every, output_name=output_name,
            region_entries=tuple(entries))

    # --- small typed values -----------------------------------------------------------------

    def _int(self, path: tuple, value: Any, low: int, high: int) -> int | None:
        if value is INVALID:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, f"expected an integer, got {describe(value)}")
        elif not low <= value <= high:
            self.add(path, f"must be between {low} and {high}, got {value}")
        else:
            return value
        return None

    def _version(self, data: dict) -> None:
        if "version" not in data:
            self.add(("version",), f'missing; add "version: {VERSION}" at the top')
        elif data["version"] is not INVALID and (type(data["version"]) is not int or data["version"] != VERSION):
            self.add(("version",), f"must be {VERSION}, got {describe(data['version'])}")

    def _output(self, data: dict) -> Path | None:
        value, path = data.get("output"), ("output",)
        if "output" not in data:
            self.add(path, "missing; name the folder for the results, e.g. output: out/run1")
        elif value is INVALID:
            pass
        elif not isinstance(value, str) or not value.strip():
            self.add(path, f"expected a folder path, got {describe(value)}")
        elif "\0" in value:
            self.add(path, "contains a NUL byte; write a plain folder path")
        elif value.startswith("~"):
            self.add(path, "~ is not expanded; write an absolute path or one relative to the manifest")
        else:
            out = resolve(self.base / value)
            if out is None:
                self.add(path, f"cannot resolve the folder {value}")
            elif file_kind(out) == "file":
                self.add(path, f"{value} is a file; output must be a folder")
            elif self.base.is_relative_to(out):
                self.add(path, "must not be the manifest's folder or one above it; use a subfolder such as out/")
            else:
                return out
        return None

    def _timeout(self, value: Any) -> float | None:
        if value is None or value is INVALID:
            return None
        if not is_number(value) or not math.isfinite(value) or value <= 0:
            self.add(("timeout",), f"expected seconds > 0 or null (no limit), got {describe(value)}")
            return None
        return float(value)

    def _memory_limit(self, value: Any) -> int | None:
        from ..run.memory import parse_size

        if value is None or value is INVALID:
            return None
        try:
            return parse_size(value)
        except ValueError as err:
            self.add(("memory_limit",), f"{err}, or null (the device's free memory)")
            return None

    def _devices(self, data: dict) -> str | tuple[str, ...]:
        value, path = data.get("devices", "auto"), ("devices",)
        if value in ("auto", "cpu"):
            return value
        if isinstance(value, str) and _DEVICE.match(value):
            return (value,)
        if value is INVALID:
            return "auto"
        if not isinstance(value, list) or not value:
            self.add(path, f"expected auto, cpu or a list such as [cuda:0, cuda:1], got {describe(value)}")
            return "auto"
        seen: set[str] = set()
        for i, item in enumerate(value):
            if item is INVALID:
                continue
            if not isinstance(item, str) or not _DEVICE.match(item):
                self.add(path + (i,), f"expected cpu, cuda or cuda:N, got {describe(item)}")
            elif (item if item != "cuda" else "cuda:0") in seen:
                self.add(path + (i,), f"{item} is listed twice; use workers_per_device for more workers")
            else:
                seen.add(item if item != "cuda" else "cuda:0")
        return tuple(value)

    def _sheet(self, value: Any) -> Sheet | None:
        path = ("sheet",)
        if value is None or value is INVALID:
            return None
        if not isinstance(value, dict):
            self.add(path, f"expected a mapping such as {{rows: content, cols: style}}, got {describe(value)}")
            return None
        self.report.unknown_keys(path, value, ("rows", "cols", "thumb"))
        axes = (*IMAGE_KEYS, *PARAM_NAMES)
        for key in ("rows", "cols"):
            item = value.get(key)
            if item is not None and item is not INVALID and item not in axes:
                hint = suggest(item, axes) if isinstance(item, str) else "; expected content, style or a parameter"
                self.add(path + (key,), f"unknown axis {describe(item)}{hint}")
        if isinstance(value.get("rows"), str) and value.get("rows") == value.get("cols"):
            self.add(path + ("cols",), "rows and cols must be different keys")
        thumb = self._int(path + ("thumb",), value.get("thumb", DEFAULT_THUMB), *THUMB_RANGE)
        return Sheet(value.get("rows"), value.get("cols"), thumb or DEFAULT_THUMB)

    # --- parameters -------------------------------------------------------------------------

    def _param(self, path: tuple, key: str, value: Any) -> Any:
        """One validated parameter value (paths made absolute), or INVALID."""
        if has_invalid(value):
            return INVALID
        problems = param_problems({key: value})
        for _, message in problems:
            self.add(path, message)
        if problems:
            return INVALID
        if (key == "init" and value not in INIT_KEYWORDS) or (key == "weights" and value not in WEIGHTS_KEYWORDS):
            target = self.base / value
            if file_kind(target) != "file":
                what = "init image" if key == "init" else "weights file"
                self.add(path, f"{what} not found: {value}", hint=PATH_HINT)
                return INVALID
            return str(resolve(target) or target)
        return _frozen(value)

    def _params(self, value: Any) -> dict[str, Any] | None:
        path = ("params",)
        if value is None:
            return {}
        if value is INVALID:
            return None
        if not isinstance(value, dict):
            self.add(path, f"expected a mapping of stylize options, got {describe(value)}")
            return None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key not in PARAM_NAMES:
                self.add(path + (key,), "unknown parameter" + suggest(key, PARAM_NAMES))
            else:
                out[key] = self._param(path + (key,), key, item)
        self.valid_params = {k: v for k, v in out.items() if v is not INVALID}
        return None if INVALID in out.values() or len(out) < len(value) else out

    def _grid(self, value: Any) -> list[tuple[str, tuple[Any, ...]]] | None:
        path = ("grid",)
        if value is None:
            return []
        if value is INVALID:
            return None
        if not isinstance(value, dict) or not value:
            self.add(path, "expected a mapping of parameter: [values], e.g. style_weight: [1.0e2, 1.0e3], "
                           f"got {describe(value)}")
            return None
        grid, ok = [], True
        for key, values in value.items():
            kpath = path + (key,)
            if is_region_key(key) and self.inputs is not None:   # regions.NAME.FIELD: manifest/regions.py
                checked = grid_values(self.inputs, kpath, key, values, self.entries)
                ok = ok and checked is not None
                grid += [(key, checked)] if checked is not None else []
            elif key not in PARAM_NAMES:
                self.add(kpath, "unknown parameter" + suggest(key, PARAM_NAMES))
                ok = False
            elif values is INVALID:
                ok = False
            elif not isinstance(values, list) or not values:
                self.add(kpath, f"expected a non-empty list of values, got {describe(values)}")
                ok = False
            else:
                checked = tuple(self._param(kpath + (i,), key, v) for i, v in enumerate(values))
                ok = ok and INVALID not in checked
                grid.append((key, checked))
                if INVALID not in checked:
                    self.valid_grid.append((key, checked))
        return grid if ok else None

    def _layer_weight_counts(self) -> None:
        """style_layer_weights against style_layers, from their valid values alone: reported even
        when another key of the manifest has an error."""
        keys = ("style_layers", "style_layer_weights")
        params = {k: v for k, v in self.valid_params.items() if k in keys}
        grid = [(k, values) for k, values in self.valid_grid if k in keys]
        if "style_layer_weights" in params or any(k == "style_layer_weights" for k, _ in grid):
            self._combined(params, grid)

    def _combined(self, params: dict[str, Any], grid: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Checks between parameters (style_layer_weights vs style_layers) for every combination."""
        seen: set[str] = set()
        for combo in grid_combinations(grid):
            try:
                params_from_mapping({**params, **combo})
            except ParamError as err:
                if str(err) not in seen:
                    seen.add(str(err))
                    where = ", ".join(f"{k}={show_value(v)}" for k, v in combo.items())
                    self.add(("grid",) if grid else ("params",), f"with {where}: {err}" if grid else str(err))


def load_manifest(path: str | Path) -> Manifest:
    """Read, validate and resolve a manifest; ManifestError lists every problem at once."""
    source = Path(os.path.abspath(path))
    report = Report()
    try:
        data = read_yaml(source, report)
    except Abort as stop:
        raise ManifestError(str(path), [str(stop)]) from None
    manifest = _Checker(source, report).check(data)
    if manifest is None or len(report):
        raise ManifestError(str(path), report.problems())
    for warning in manifest.warnings:
        log.warning("%s: %s", path, warning)
    return manifest


__all__ = ["Manifest", "StyleEntry", "Sheet", "load_manifest", "expand", "resolved_yaml",
           "MAX_JOBS", "MAX_NODES", "TOP_KEYS"]
