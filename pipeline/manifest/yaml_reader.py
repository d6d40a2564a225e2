"""Reading a manifest's YAML: bounded, with the line of every value, problems tied to key paths.

`read_yaml(path, report)` returns plain Python values (dict, list, str, int, float, bool, None)
and records in `report` the line of every key path. A value that cannot be used (a tag, a huge
number) is reported and read as `INVALID`, so the schema check can go on without reporting it
twice. What stops reading altogether (unreadable file, syntax error, a "billion laughs" bomb)
raises `Abort` with the one problem to report.
"""
from __future__ import annotations

import difflib
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from ..params import show_value

MAX_BYTES = 1 << 20        # a manifest lists folders and globs; a megabyte is already absurd
MAX_NODES = 100_000        # YAML values after alias expansion ("billion laughs" guard)
MAX_DEPTH = 32             # nesting; the schema itself needs 5
MAX_INT = 2**63
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


class Abort(Exception):
    """Reading cannot go on (unreadable file, syntax error, bomb): the one problem to report."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(_format((), message, line, None))


class Invalid:
    """Stands for a value that was already reported, so it is not reported twice."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID = Invalid()


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


class Loader(_Base):
    """A safe loader that reads floats the YAML 1.2 way and refuses to compose too many nodes.

    YAML 1.1 (PyYAML's default) needs a dot and a signed exponent, so `style_weight: 1e3`
    would silently be the string "1e3"; here `1e3` and `1.0e3` are numbers, `1e3x` is text."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Abort(f"more than {MAX_NODES} values; a manifest lists folders and globs, not files",
                         self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


_T = "tag:yaml.org,2002:"
Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _T + "float"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver(_T + "float", re.compile(r"""^(?:
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


_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _format(path: tuple, message: str, line: int | None, hint: str | None) -> str:
    notes = ([f"line {line}"] if line else []) + ([hint] if hint else [])
    where = _dotted(path)
    text = (f"{where}: " if where else "") + message + (f" ({'; '.join(notes)})" if notes else "")
    # One problem, one line: escape every character str.splitlines() (and a terminal) breaks on.
    return _LINE_BREAKS.sub(lambda m: repr(m.group())[1:-1], text)


class Report:
    """Problems, each tied to a key path, and the line of every key path."""

    def __init__(self) -> None:
        self.lines: dict[tuple, int] = {}       # key path -> line of its value
        self.key_lines: dict[tuple, int] = {}   # key path -> line of its key
        self._items: list[tuple[int, int, str]] = []
        self._warnings: list[tuple[int, int, str]] = []

    def add(self, path: tuple, message: str, *, line: int | None = None, hint: str | None = None) -> None:
        self._items.append(self._entry(path, message, line, hint, len(self._items)))

    def warn(self, path: tuple, message: str, *, line: int | None = None, hint: str | None = None) -> None:
        """Something the run survives (one bad entry in a folder): shown, but the manifest is valid."""
        self._warnings.append(self._entry(path, message, line, hint, len(self._warnings)))

    def _entry(self, path: tuple, message: str, line: int | None, hint: str | None,
               order: int) -> tuple[int, int, str]:
        if line is None:   # the key's line: `grid:` rather than its first value on the next line
            line = self.key_lines.get(path) or self.lines.get(path)
        if line is None:   # a missing key: point at the mapping that lacks it
            line = next((self.lines[path[:n]] for n in range(len(path) - 1, 0, -1) if path[:n] in self.lines), None)
        return line or 0, order, _format(path, message, line, hint)

    def unknown_keys(self, path: tuple, mapping: dict, known: tuple[str, ...]) -> None:
        for key in mapping:
            if key not in known:
                self.add(path + (key,), "unknown key" + suggest(key, known))

    def __len__(self) -> int:
        return len(self._items)

    def problems(self) -> list[str]:
        return [text for _, _, text in sorted(self._items)]

    def warnings(self) -> list[str]:
        return list(dict.fromkeys(text for _, _, text in sorted(self._warnings)))


def _read_text(path: Path) -> str:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise Abort("not a regular file; give the manifest's .yaml file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise Abort("manifest not found; check the path") from None
    except (OSError, ValueError) as err:
        raise Abort(f"cannot read the manifest: {getattr(err, 'strerror', None) or err}") from None
    if len(raw) > MAX_BYTES:
        raise Abort(f"larger than {MAX_BYTES >> 10} KiB; a manifest lists folders and globs, not files")
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Abort(f"not UTF-8 text (byte 0x{body[err.start]:02x}); save the manifest as UTF-8",
                     body[:err.start].count(b"\n") + 1) from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        raise Abort(f"control character U+{ord(bad.group()):04X} is not allowed in YAML; remove it",
                     text.count("\n", 0, bad.start()) + 1)
    return text


def _parse(text: str, report: Report) -> Any:
    loader = None
    try:
        loader = Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise Abort('the manifest is empty; start it with "version: 1"')
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
        raise Abort(f"YAML syntax error: {problem}" + (f" ({where}{hint})" if where else "")) from None
    except yaml.YAMLError as err:
        raise Abort(f"YAML syntax error: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise Abort(f"YAML nested too deeply (at most {MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    """Plain Python values from the node graph, counting nodes as aliases expand them."""

    def __init__(self, loader: Loader, report: Report):
        self.loader, self.report, self.left = loader, report, MAX_NODES

    def build(self, node: yaml.Node, path: tuple, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.left -= 1
        if self.left < 0:
            raise Abort(f"more than {MAX_NODES} values once anchors and aliases are expanded; "
                         "a manifest lists folders and globs, not files", line)
        if depth > MAX_DEPTH:
            raise Abort(f"nested more than {MAX_DEPTH} levels deep (is an alias inside itself?)", line)
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

    def _tag(self, node: yaml.Node, path: tuple) -> Invalid:
        self.report.add(path, f"unsupported YAML tag {node.tag.replace(_T, '!!')}; write plain values")
        return INVALID


def read_yaml(path: Path, report: Report) -> Any:
    """The manifest's plain values; Abort when reading cannot go on."""
    return _parse(_read_text(path), report)


# ---------------------------------------------------------------------------------------------
# Wording problems about values read from YAML.

def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return show_value(value)


def has_invalid(value: Any) -> bool:
    if isinstance(value, list):
        return any(has_invalid(v) for v in value)
    if isinstance(value, dict):
        return any(has_invalid(v) for v in value.values())
    return value is INVALID


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) if len(key) <= 64 else []
    return f', did you mean "{close[0]}"?' if close else f"; expected one of {', '.join(known)}"
