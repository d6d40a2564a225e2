"""The manifest of a batch: one YAML schema, read once, every problem reported with its line.

`load_manifest(path)` reads the file with a hardened safe loader, checks every key, resolves
every path relative to the manifest's folder and returns a frozen `Manifest`. A manifest that
does not validate raises one `ManifestError` listing every problem, one line each:
`grid.style_weight[2]: expected a number, got "1e3x" (line 14)`. `expand` and `resolved_yaml`
(pipeline/expand.py, re-exported here) turn a Manifest into jobs and a record of them.
"""
from __future__ import annotations

import difflib
import glob
import math
import os
import re
import stat
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from .errors import ManifestError, ParamError
from .expand import expand, grid_combinations, grid_size, resolved_yaml, zip_mismatch
from .imaging import IMAGE_EXTENSIONS
from .jobs import INIT_KEYWORDS
from .params import PARAM_NAMES, param_problems, params_from_mapping, show_value
from .sheets import DEFAULT_THUMB, IMAGE_KEYS, THUMB_RANGE

VERSION = 1
TOP_KEYS = ("version", "output", "content", "style", "pairing", "pairs", "params", "grid",
            "devices", "workers_per_device", "retries", "timeout", "sheet")
PAIRINGS = ("product", "zip", "explicit")
WEIGHTS_KEYWORDS = ("original", "torchvision")
MAX_BYTES = 1 << 20        # a manifest lists folders and globs; a megabyte is already absurd
MAX_NODES = 100_000        # YAML values after alias expansion ("billion laughs" guard)
MAX_DEPTH = 32             # nesting; the schema itself needs 5
MAX_JOBS = 100_000         # per manifest; also bounds the images one entry may match
MAX_INT = 2**63
PATH_HINT = "paths are relative to the manifest"
_DEVICE = re.compile(r"^(cpu|cuda(:[0-9]{1,3})?)$")
_MAGIC = re.compile(r"[*?[]")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


@dataclass(frozen=True)
class StyleEntry:
    """One style of the batch: a single image, or a blend of several with weights."""

    images: tuple[str, ...]      # absolute paths
    weights: tuple[float, ...]   # one per image; (1.0,) for a single image
    label: str                   # "styles/a.jpg" or "styles/a.jpg (0.7) + styles/b.jpg (0.3)"

    @property
    def refs(self) -> list[tuple[str, float]]:
        """(path, weight) pairs, as `make_job` takes them."""
        return list(zip(self.images, self.weights))


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
    sheet: Sheet | None
    data: Mapping[str, Any]                   # the YAML as read, once it validated


# ---------------------------------------------------------------------------------------------
# Reading YAML: bounded, with the line of every value.

class _Abort(Exception):
    """Reading cannot go on (unreadable file, syntax error, bomb): the one problem to report."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(_format((), message, line, None))


class _Invalid:
    """Stands for a value that was already reported, so it is not reported twice."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID = _Invalid()


try:  # libyaml scans and parses in C; PyYAML's Python composer and resolver stay in charge
    from yaml.cyaml import CParser

    class _Base(Composer, CParser, SafeConstructor, Resolver):
        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
except ImportError:  # pragma: no cover - PyYAML built without libyaml: same results, slower
    _Base = yaml.SafeLoader  # type: ignore[misc,assignment]


class _Loader(_Base):
    """A safe loader that reads floats the YAML 1.2 way and refuses to compose too many nodes.

    YAML 1.1 (PyYAML's default) needs a dot and a signed exponent, so `style_weight: 1e3`
    would silently be the string "1e3"; here `1e3` and `1.0e3` are numbers, `1e3x` is text."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Abort(f"more than {MAX_NODES} values; a manifest lists folders and globs, not files",
                         self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


_T = "tag:yaml.org,2002:"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _T + "float"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_T + "float", re.compile(r"""^(?:
      [-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    | [-+]?\.(?:inf|Inf|INF)
    | \.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
_SCALAR_TAGS = {_T + name for name in ("str", "int", "float", "bool", "null")}


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _PLAIN_KEY.match(part) else show_value(part)
            out += f".{name}" if out else name
    return out


def _format(path: tuple, message: str, line: int | None, hint: str | None) -> str:
    notes = ([f"line {line}"] if line else []) + ([hint] if hint else [])
    where = _dotted(path)
    text = (f"{where}: " if where else "") + message + (f" ({'; '.join(notes)})" if notes else "")
    return text.replace("\r", "\\r").replace("\n", "\\n")   # one problem, one line


class _Report:
    """Problems, each tied to a key path, and the line of every key path."""

    def __init__(self) -> None:
        self.lines: dict[tuple, int] = {}       # key path -> line of its value
        self.key_lines: dict[tuple, int] = {}   # key path -> line of its key
        self._items: list[tuple[int, int, str]] = []

    def add(self, path: tuple, message: str, *, line: int | None = None, hint: str | None = None) -> None:
        if line is None:   # the key's line: `grid:` rather than its first value on the next line
            line = self.key_lines.get(path) or self.lines.get(path)
        if line is None:   # a missing key: point at the mapping that lacks it
            line = next((self.lines[path[:n]] for n in range(len(path) - 1, 0, -1) if path[:n] in self.lines), None)
        self._items.append((line or 0, len(self._items), _format(path, message, line, hint)))

    def __len__(self) -> int:
        return len(self._items)

    def problems(self) -> list[str]:
        return [text for _, _, text in sorted(self._items)]


def _read_text(path: Path) -> str:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise _Abort("not a regular file; give the manifest's .yaml file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise _Abort("manifest not found; check the path") from None
    except (OSError, ValueError) as err:
        raise _Abort(f"cannot read the manifest: {getattr(err, 'strerror', None) or err}") from None
    if len(raw) > MAX_BYTES:
        raise _Abort(f"larger than {MAX_BYTES >> 10} KiB; a manifest lists folders and globs, not files")
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Abort(f"not UTF-8 text (byte 0x{body[err.start]:02x}); save the manifest as UTF-8",
                     body[:err.start].count(b"\n") + 1) from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        raise _Abort(f"control character U+{ord(bad.group()):04X} is not allowed in YAML; remove it",
                     text.count("\n", 0, bad.start()) + 1)
    return text


def _parse(text: str, report: _Report) -> Any:
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise _Abort('the manifest is empty; start it with "version: 1"')
        return _Builder(loader, report).build(node, (), 0)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        where = f"line {line}, column {mark.column + 1}" if mark else None
        problem = str(err.problem or err.context or "invalid YAML")
        if err.context and problem.startswith("but "):   # "expected a single document..., but found another"
            problem = f"{err.context}, {problem}"
        problem = " ".join(problem.split())
        lines = text.splitlines()
        here = lines[line - 1] if line is not None and line <= len(lines) else ""
        if "\t" in here[:len(here) - len(here.lstrip())]:   # libyaml and PyYAML word this differently
            problem = "tab character in the indentation"
        hint = "; indent with spaces, not tabs" if "\t" in here else ""
        raise _Abort(f"YAML syntax error: {problem}" + (f" ({where}{hint})" if where else "")) from None
    except yaml.YAMLError as err:
        raise _Abort(f"YAML syntax error: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise _Abort(f"YAML nested too deeply (at most {MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    """Plain Python values from the node graph, counting nodes as aliases expand them."""

    def __init__(self, loader: _Loader, report: _Report):
        self.loader, self.report, self.left = loader, report, MAX_NODES

    def build(self, node: yaml.Node, path: tuple, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.left -= 1
        if self.left < 0:
            raise _Abort(f"more than {MAX_NODES} values once anchors and aliases are expanded; "
                         "a manifest lists folders and globs, not files", line)
        if depth > MAX_DEPTH:
            raise _Abort(f"nested more than {MAX_DEPTH} levels deep (is an alias inside itself?)", line)
        self.report.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth) if node.tag == _T + "map" else self._tag(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _T + "seq":
                return self._tag(node, path)
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: tuple, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            self.left -= 1
            line = key_node.start_mark.line + 1
            if key_node.tag == _T + "merge":
                self.report.add(path, 'merge keys ("<<") are not supported; write the keys out', line=line)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _T + "str":
                shown = str(key_node.value)[:40] if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
                self.report.add(path, f"keys must be names, got {shown}", line=line)
                continue
            key_path = path + (key_node.value,)
            if key_node.value in out:
                self.report.add(key_path, "duplicate key", line=line,
                                hint=f"first on line {self.report.key_lines[key_path]}")
                continue
            self.report.key_lines[key_path] = line
            out[key_node.value] = self.build(value_node, key_path, depth + 1)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        if node.tag == _T + "timestamp":
            return node.value            # `output: 2024-05-01` names a folder, not a date
        if node.tag not in _SCALAR_TAGS:
            return self._tag(node, path)
        if node.tag == _T + "int" and len(node.value) > 40:
            self.report.add(path, "number is too large")
            return INVALID
        try:
            value = self.loader.construct_object(node)
        except Exception:  # PyYAML's constructors raise assorted errors on tagged junk (!!int "x")
            self.report.add(path, f"cannot read {show_value(node.value)} as {node.tag.replace(_T, '!!')}")
            return INVALID
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
            self.report.add(path, "number is too large")
            return INVALID
        return value

    def _tag(self, node: yaml.Node, path: tuple) -> _Invalid:
        self.report.add(path, f"unsupported YAML tag {node.tag.replace(_T, '!!')}; write plain values")
        return INVALID


# ---------------------------------------------------------------------------------------------
# The schema.

def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return show_value(value)


def _has_invalid(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_invalid(v) for v in value)
    if isinstance(value, dict):
        return any(_has_invalid(v) for v in value.values())
    return value is INVALID


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) if len(key) <= 64 else []
    return f', did you mean "{close[0]}"?' if close else f"; expected one of {', '.join(known)}"


def _file_kind(path: Path) -> str | None:
    """"file", "dir", or None for anything missing, special or unreadable; never raises."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None


def _resolve(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):   # RuntimeError: a symlink loop (Python < 3.13)
        return None


def _is_image(name: str | Path) -> bool:
    return os.path.splitext(str(name))[1].lower() in IMAGE_EXTENSIONS


def _any_case_extension(pattern: str) -> str:
    """`photos/*.jpg` -> `photos/*.[jJ][pP][gG]`: cameras write IMG_0001.JPG."""
    stem, ext = os.path.splitext(pattern)
    if ext.lower() not in IMAGE_EXTENSIONS:
        return pattern
    return stem + "." + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext[1:])


class _Checker:
    """Checks the plain data of one manifest; every problem goes to the report."""

    def __init__(self, source: Path, report: _Report):
        self.source, self.report = source, report
        self.base = _resolve(source.parent) or source.parent
        self.output: Path | None = None

    def add(self, path: tuple, message: str, **kw: Any) -> None:
        self.report.add(path, message, **kw)

    def check(self, data: Any) -> Manifest | None:
        if data is INVALID:
            return None
        if not isinstance(data, dict):
            self.add((), "a manifest is a mapping of keys (version, output, content, style, ...), "
                         f"got {_kind(data)}")
            return None
        self._unknown((), data, TOP_KEYS)
        self._version(data)
        self.output = self._output(data)
        pairing = self._pairing(data)
        content: list[str] = []
        styles: list[StyleEntry] = []
        pairs: list[tuple[str, StyleEntry]] = []
        before = len(self.report)
        mode = pairing or ("explicit" if "pairs" in data else "product")   # check inputs anyway
        if mode == "explicit":
            pairs = self._pairs(data)
            content = list(dict.fromkeys(c for c, _ in pairs))
            styles = list(dict.fromkeys(s for _, s in pairs))
        else:
            content = self._content(data)
            styles = self._styles(data)
        inputs_ok = pairing is not None and len(self.report) == before
        if inputs_ok and pairing == "zip" and len(content) != len(styles):
            self.add(("pairing",), zip_mismatch(len(content), len(styles)))
            inputs_ok = False
        before = len(self.report)
        params = self._params(data.get("params"))
        grid = self._grid(data.get("grid"))
        combos = grid_size(grid) if grid is not None else 0
        if inputs_ok and grid is not None:
            n_pairs = {"product": len(content) * len(styles), "zip": len(content), "explicit": len(pairs)}[pairing]
            if n_pairs * combos > MAX_JOBS:
                self.add(("grid",) if grid else (),
                         f"the manifest expands to {n_pairs * combos} jobs ({n_pairs} content-style pair(s) "
                         f"× {combos} parameter combination(s)); at most {MAX_JOBS} per manifest: "
                         "split it into several manifests")
        if params is not None and grid is not None and len(self.report) == before and combos <= MAX_JOBS:
            self._combined(params, grid)
        devices = self._devices(data)
        workers = self._int(("workers_per_device",), data.get("workers_per_device", 1), 1, 64)
        retries = self._int(("retries",), data.get("retries", 2), 0, 100)
        timeout = self._timeout(data.get("timeout"))
        sheet = self._sheet(data.get("sheet"))
        if len(self.report):
            return None
        return Manifest(
            source=self.base / self.source.name, base_dir=self.base, output=self.output,
            content=tuple(content), styles=tuple(styles), pairing=pairing, pairs=tuple(pairs),
            params=MappingProxyType(params), grid=tuple(grid), devices=devices,
            workers_per_device=workers, retries=retries, timeout=timeout, sheet=sheet,
            data=MappingProxyType(data))

    # --- small typed values -----------------------------------------------------------------

    def _unknown(self, path: tuple, mapping: dict, known: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in known:
                self.add(path + (key,), "unknown key" + _suggest(key, known))

    def _int(self, path: tuple, value: Any, low: int, high: int) -> int | None:
        if value is INVALID:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, f"expected an integer, got {_kind(value)}")
        elif not low <= value <= high:
            self.add(path, f"must be between {low} and {high}, got {value}")
        else:
            return value
        return None

    def _version(self, data: dict) -> None:
        if "version" not in data:
            self.add(("version",), f'missing; add "version: {VERSION}" at the top')
        elif data["version"] is not INVALID and (type(data["version"]) is not int or data["version"] != VERSION):
            self.add(("version",), f"must be {VERSION}, got {_kind(data['version'])}")

    def _output(self, data: dict) -> Path | None:
        value, path = data.get("output"), ("output",)
        if "output" not in data:
            self.add(path, "missing; name the folder for the results, e.g. output: out/run1")
        elif value is INVALID:
            pass
        elif not isinstance(value, str) or not value.strip():
            self.add(path, f"expected a folder path, got {_kind(value)}")
        elif "\0" in value:
            self.add(path, "contains a NUL byte; write a plain folder path")
        elif value.startswith("~"):
            self.add(path, "~ is not expanded; write an absolute path or one relative to the manifest")
        else:
            out = _resolve(self.base / value)
            if out is None:
                self.add(path, f"cannot resolve the folder {value}")
            elif _file_kind(out) == "file":
                self.add(path, f"{value} is a file; output must be a folder")
            elif self.base.is_relative_to(out):
                self.add(path, "must not be the manifest's folder or one above it; use a subfolder such as out/")
            else:
                return out
        return None

    def _timeout(self, value: Any) -> float | None:
        if value is None or value is INVALID:
            return None
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            self.add(("timeout",), f"expected seconds > 0 or null (no limit), got {_kind(value)}")
            return None
        return float(value)

    def _devices(self, data: dict) -> str | tuple[str, ...]:
        value, path = data.get("devices", "auto"), ("devices",)
        if value in ("auto", "cpu"):
            return value
        if isinstance(value, str) and _DEVICE.match(value):
            return (value,)
        if value is INVALID:
            return "auto"
        if not isinstance(value, list) or not value:
            self.add(path, f"expected auto, cpu or a list such as [cuda:0, cuda:1], got {_kind(value)}")
            return "auto"
        seen: set[str] = set()
        for i, item in enumerate(value):
            if item is INVALID:
                continue
            if not isinstance(item, str) or not _DEVICE.match(item):
                self.add(path + (i,), f"expected cpu, cuda or cuda:N, got {_kind(item)}")
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
            self.add(path, f"expected a mapping such as {{rows: content, cols: style}}, got {_kind(value)}")
            return None
        self._unknown(path, value, ("rows", "cols", "thumb"))
        axes = (*IMAGE_KEYS, *PARAM_NAMES)
        for key in ("rows", "cols"):
            item = value.get(key)
            if item is not None and item is not INVALID and item not in axes:
                hint = _suggest(item, axes) if isinstance(item, str) else "; expected content, style or a parameter"
                self.add(path + (key,), f"unknown axis {_kind(item)}{hint}")
        if isinstance(value.get("rows"), str) and value.get("rows") == value.get("cols"):
            self.add(path + ("cols",), "rows and cols must be different keys")
        thumb = self._int(path + ("thumb",), value.get("thumb", DEFAULT_THUMB), *THUMB_RANGE)
        return Sheet(value.get("rows"), value.get("cols"), thumb or DEFAULT_THUMB)

    # --- pairing and images -----------------------------------------------------------------

    def _pairing(self, data: dict) -> str | None:
        value = data.get("pairing", "explicit" if "pairs" in data else "product")
        if value is INVALID:
            return None
        if value not in PAIRINGS:
            self.add(("pairing",), f"expected one of {', '.join(PAIRINGS)}, got {_kind(value)}")
            return None
        if value == "explicit":
            for key in ("content", "style"):
                if key in data:
                    self.add((key,), "not used with pairing: explicit; list each content image and "
                                     "its style under pairs")
        elif "pairs" in data:
            self.add(("pairs",), f"only used with pairing: explicit, not {value}; remove it or "
                                 "set pairing: explicit")
        return value

    def _entries(self, key: str, data: dict, what: str) -> list[tuple[tuple, Any]]:
        value, path = data.get(key), (key,)
        if key not in data:
            self.add(path, f"missing; list {what}")
        elif value is INVALID:
            pass
        elif isinstance(value, (str, dict)):
            return [(path, value)]
        elif not isinstance(value, list):
            self.add(path, f"expected a list of {what}, got {_kind(value)}")
        elif not value:
            self.add(path, f"is empty; list {what}")
        else:
            return [(path + (i,), item) for i, item in enumerate(value)]
        return []

    def _content(self, data: dict) -> list[str]:
        found: list[Path] = []
        for path, item in self._entries("content", data, "image files, folders or globs"):
            found += self._images(path, item, "content")
        return list(dict.fromkeys(str(p) for p in found))

    def _styles(self, data: dict) -> list[StyleEntry]:
        styles: list[StyleEntry] = []
        for path, item in self._entries("style", data, "image files, folders, globs or blends"):
            if isinstance(item, dict):
                entry = self._blend(path, item)
                styles += [entry] if entry else []
            else:
                styles += [StyleEntry((str(p),), (1.0,), self._label(p)) for p in self._images(path, item, "style")]
        return list(dict.fromkeys(styles))

    def _text_path(self, path: tuple, value: Any, what: str) -> bool:
        if value is INVALID:
            return False
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"expected {what}, got {_kind(value)}")
        elif "\0" in value:
            self.add(path, "contains a NUL byte")
        else:
            return True
        return False

    def _label(self, path: Path) -> str:
        """The path as the manifest would write it: relative when that stays short."""
        relative = Path(os.path.relpath(path, self.base))
        return relative.as_posix() if relative.parts[:3].count("..") < 3 else str(path)

    def _images(self, path: tuple, pattern: Any, role: str) -> list[Path]:
        """Every image a string names: a file, a folder (recursively) or a glob; sorted."""
        if not self._text_path(path, pattern, "a file, folder or glob" + (" or a blend" if role == "style" else "")):
            return []
        target = self.base / pattern
        kind = _file_kind(target)
        if kind == "file":
            return self._one_image(path, pattern, role)
        if kind == "dir":
            found = self._walk(target)
            if not found:
                self.add(path, f"folder {show_value(pattern)} contains no image files",
                         hint="extensions: " + " ".join(IMAGE_EXTENSIONS))
            return found
        if not _MAGIC.search(pattern):
            self.add(path, f"{role} image not found: {pattern}", hint=PATH_HINT)
            return []
        try:
            hits = list(islice(glob.iglob(_any_case_extension(pattern), root_dir=self.base,
                                          recursive=True), MAX_JOBS * 10))
        except (OSError, ValueError):
            hits = []
        root = _resolve(self.base / pattern[:_MAGIC.search(pattern).start()].rpartition("/")[0])
        found = sorted(p for p in {_resolve(self.base / hit) for hit in hits}
                       if p is not None and _is_image(p) and _file_kind(p) == "file"
                       and not self._skipped_output(root, p))
        if not found:
            self.add(path, f"{show_value(pattern)} matched no image files", hint=PATH_HINT)
        return found[:MAX_JOBS + 1]

    def _skipped_output(self, root: Path | None, path: Path) -> bool:
        """Results are not inputs: a folder or glob above the output folder skips what is in it."""
        out = self.output
        return (out is not None and root is not None and path.is_relative_to(out)
                and not root.is_relative_to(out))

    def _walk(self, folder: Path) -> list[Path]:
        root = _resolve(folder)
        found: list[Path] = []
        # Hidden files are skipped: macOS writes `._IMG.jpg` companions that are not images.
        for here, dirs, files in os.walk(folder):   # followlinks=False: no symlink cycles
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                p = _resolve(Path(here, name)) if _is_image(name) and not name.startswith(".") else None
                if p is not None and _file_kind(p) == "file" and not self._skipped_output(root, p):
                    found.append(p)
            if len(found) > MAX_JOBS:
                break
        return sorted(found)

    def _one_image(self, path: tuple, value: Any, role: str) -> list[Path]:
        """A single image file (blends and pairs name files, not folders or globs)."""
        if not self._text_path(path, value, "an image file"):
            return []
        target = self.base / value
        kind = _file_kind(target)
        if kind == "dir":
            self.add(path, f"{value} is a folder; name one image file here")
        elif kind is None:
            self.add(path, f"{role} image not found: {value}", hint=PATH_HINT)
        elif not _is_image(target):
            self.add(path, f"not an image file: {value}", hint="extensions: " + " ".join(IMAGE_EXTENSIONS))
        else:
            resolved = _resolve(target)
            return [resolved] if resolved else []
        return []

    def _blend(self, path: tuple, item: dict) -> StyleEntry | None:
        self._unknown(path, item, ("images", "weights"))
        images, ipath = item.get("images"), path + ("images",)
        if "images" not in item:
            self.add(path, "a blended style needs images: [a.jpg, b.jpg] (and optional weights)")
            return None
        if images is INVALID:
            return None
        if not isinstance(images, list) or not images:
            self.add(ipath, f"expected a non-empty list of image files, got {_kind(images)}")
            return None
        files = [self._one_image(ipath + (i,), p, "style") for i, p in enumerate(images)]
        weights = self._weights(path + ("weights",), item.get("weights"), len(images))
        if weights is None or not all(files):
            return None
        paths = [f[0] for f in files]
        label = " + ".join(f"{self._label(p)} ({w:g})" for p, w in zip(paths, weights))
        return StyleEntry(tuple(map(str, paths)), weights, label)

    def _weights(self, path: tuple, value: Any, n: int) -> tuple[float, ...] | None:
        if value is None:
            return tuple([1.0 / n] * n)
        if _has_invalid(value):
            return None
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            self.add(path, f"expected a list of numbers, got {_kind(value)}")
        elif len(value) != n:
            self.add(path, f"has {len(value)} weight(s) for {n} image(s); give one weight per image")
        elif not all(math.isfinite(v) and v >= 0 for v in value) or not 0 < sum(value) < math.inf:
            self.add(path, "weights must be finite numbers ≥ 0 with a positive sum")
        else:
            return tuple(float(v) for v in value)
        return None

    def _pairs(self, data: dict) -> list[tuple[str, StyleEntry]]:
        pairs: list[tuple[str, StyleEntry]] = []
        for path, item in self._entries("pairs", data, "{content: a.jpg, style: b.jpg} mappings"):
            if item is INVALID:
                continue
            if not isinstance(item, dict):
                self.add(path, f"expected a mapping {{content: a.jpg, style: b.jpg}}, got {_kind(item)}")
                continue
            self._unknown(path, item, ("content", "style"))
            if "content" not in item:
                self.add(path + ("content",), "missing; each pair names one content image")
            content = self._one_image(path + ("content",), item.get("content", INVALID), "content")
            if "style" not in item:
                self.add(path + ("style",), "missing; each pair names one style image or blend")
            style, spath = item.get("style", INVALID), path + ("style",)
            if isinstance(style, dict):
                entry = self._blend(spath, style)
            else:
                found = self._one_image(spath, style, "style")
                entry = StyleEntry((str(found[0]),), (1.0,), self._label(found[0])) if found else None
            if content and entry:
                pairs.append((str(content[0]), entry))
        return pairs

    # --- parameters -------------------------------------------------------------------------

    def _param(self, path: tuple, key: str, value: Any) -> Any:
        """One validated parameter value (paths made absolute), or INVALID."""
        if _has_invalid(value):
            return INVALID
        problems = param_problems({key: value})
        for _, message in problems:
            self.add(path, message)
        if problems:
            return INVALID
        if (key == "init" and value not in INIT_KEYWORDS) or (key == "weights" and value not in WEIGHTS_KEYWORDS):
            target = self.base / value
            if _file_kind(target) != "file":
                what = "init image" if key == "init" else "weights file"
                self.add(path, f"{what} not found: {value}", hint=PATH_HINT)
                return INVALID
            return str(_resolve(target) or target)
        return _frozen(value)

    def _params(self, value: Any) -> dict[str, Any] | None:
        path = ("params",)
        if value is None:
            return {}
        if value is INVALID:
            return None
        if not isinstance(value, dict):
            self.add(path, f"expected a mapping of stylize options, got {_kind(value)}")
            return None
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key not in PARAM_NAMES:
                self.add(path + (key,), "unknown parameter" + _suggest(key, PARAM_NAMES))
            else:
                out[key] = self._param(path + (key,), key, item)
        return None if INVALID in out.values() or len(out) < len(value) else out

    def _grid(self, value: Any) -> list[tuple[str, tuple[Any, ...]]] | None:
        path = ("grid",)
        if value is None:
            return []
        if value is INVALID:
            return None
        if not isinstance(value, dict) or not value:
            self.add(path, "expected a mapping of parameter: [values], e.g. style_weight: [1.0e2, 1.0e3], "
                           f"got {_kind(value)}")
            return None
        grid, ok = [], True
        for key, values in value.items():
            kpath = path + (key,)
            if key not in PARAM_NAMES:
                self.add(kpath, "unknown parameter" + _suggest(key, PARAM_NAMES))
                ok = False
            elif values is INVALID:
                ok = False
            elif not isinstance(values, list) or not values:
                self.add(kpath, f"expected a non-empty list of values, got {_kind(values)}")
                ok = False
            else:
                checked = tuple(self._param(kpath + (i,), key, v) for i, v in enumerate(values))
                ok = ok and INVALID not in checked
                grid.append((key, checked))
        return grid if ok else None

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
    report = _Report()
    try:
        data = _parse(_read_text(source), report)
    except _Abort as stop:
        raise ManifestError(str(path), [str(stop)]) from None
    manifest = _Checker(source, report).check(data)
    if manifest is None or len(report):
        raise ManifestError(str(path), report.problems())
    return manifest


__all__ = ["Manifest", "StyleEntry", "Sheet", "load_manifest", "expand", "resolved_yaml",
           "MAX_JOBS", "MAX_NODES", "TOP_KEYS"]
