"""Hostile manifests through the CLI: `nst-batch validate` exits 2 with one line per problem,
never a traceback, and never an unbounded allocation (alias bombs, huge numbers, deep nests).

tests/test_manifest.py fuzzes `load_manifest`; these go through `pipeline.cli.main`, the
entry point of the `nst-batch` script, so the exit code and the printed lines are checked too.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_content, make_style
from faultkit import REPO, cli_env
from pipeline.cli import main
from pipeline.engine.features import LAYER_NAMES
from pipeline.manifest.schema import TOP_KEYS
from pipeline.params import PARAM_NAMES

HEAD = re.compile(r"error: (?P<source>.+): (?P<n>\d+) problem\(s\)")
VALID = {"version": 1, "output": "out", "content": ["photos"], "style": ["styles/a.png"],
         "params": {"size": 32, "steps": 4}}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifests")
    (root / "photos").mkdir()
    (root / "styles").mkdir()
    make_content(root / "photos" / "a.png")
    make_style(root / "styles" / "a.png")
    make_style(root / "styles" / "b.png", seed=2)
    return root


def validate(root: Path, data: bytes) -> tuple[int, str, str]:
    path = root / "m.yaml"
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["validate", str(path)])
            code = 0
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, stdout: str, stderr: str) -> list[str]:
    """Exit 2, nothing on stdout, `error: …` and then exactly one indented line per problem."""
    assert code == 2, (code, stdout, stderr)
    assert stdout == "" and "Traceback" not in stderr
    lines = stderr.splitlines()
    assert stderr.endswith("\n") and lines[0].startswith("error: ")
    head = HEAD.fullmatch(lines[0])
    if head is None:                       # an error that is not a list of problems: one line
        assert len(lines) == 1, stderr
        return lines
    problems = lines[1:]
    assert len(problems) == int(head["n"]) >= 1, stderr
    assert all(p.startswith("  ") and p.strip() for p in problems), stderr
    return problems


def dump(value) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False).encode()


# --- defects, each of which makes a valid manifest invalid ------------------------------------

_not_int = st.one_of(st.floats(allow_nan=True), st.text(max_size=6), st.booleans(), st.none(),
                     st.lists(st.integers(), max_size=2))
_bad_int_param = st.tuples(
    st.sampled_from(["size", "steps", "multiscale", "quality"]),
    st.one_of(st.integers(max_value=0), st.integers(min_value=2**24, max_value=2**200), _not_int))
_bad_weight_param = st.tuples(
    st.sampled_from(["content_weight", "style_weight", "tv_weight", "style_scale"]),
    st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf")]),
              st.floats(max_value=-1e-9, allow_nan=False), st.text(min_size=1, max_size=5),
              st.lists(st.floats(), max_size=2)))
_bad_layers = st.tuples(st.sampled_from(["style_layers", "content_layers"]),
                        st.one_of(st.just([]), st.lists(st.text(max_size=8), min_size=1, max_size=3)
                                  # Hypothesis also draws string constants from the code under test, real layer names included:
                                  # a list of only valid names is no defect.
                                  .filter(lambda v: not set(v) <= set(LAYER_NAMES))))
_unknown = st.text(min_size=1, max_size=12).filter(lambda k: k not in TOP_KEYS + PARAM_NAMES)


def _with(**changes) -> dict:
    return {**VALID, **changes}


_defects = st.one_of(
    st.one_of(_bad_int_param, _bad_weight_param, _bad_layers).map(
        lambda kv: dump(_with(params={"size": 32, "steps": 4, kv[0]: kv[1]}))),
    _bad_int_param.map(lambda kv: dump(_with(grid={kv[0]: [4, kv[1]]}))),
    st.sampled_from(["content", "style", "grid", "params"]).map(
        lambda key: dump(_with(**{key: [] if key in ("content", "style") else {"steps": []}}))),
    st.lists(st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e308 * 10]), min_size=2, max_size=2)
    .filter(lambda w: not all(x >= 0 and x < float("inf") for x in w) or sum(w) == 0)
    .map(lambda w: dump(_with(style=[{"images": ["styles/a.png", "styles/b.png"], "weights": w}]))),
    st.tuples(st.sampled_from([(), ("params",), ("sheet",)]), _unknown).map(
        lambda pk: dump(_with(**({pk[1]: 1} if not pk[0] else {pk[0][0]: {pk[1]: 1}})))),
    st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
    .filter(lambda v: v != 1).map(lambda v: dump(_with(version=v))),
    st.sampled_from(["version", "output", "content", "style"]).map(
        lambda key: dump({k: v for k, v in VALID.items() if k != key})),
    st.sampled_from(["../" * 40 + "x\x00y", "out\x00", ""]).map(lambda o: dump(_with(output=o))),
    st.sampled_from(list(VALID)).map(lambda key: dump(VALID) + f"{key}: again\n".encode()),   # duplicate key
    st.integers(0, 4).map(lambda i: dump(VALID).replace(b"\n  ", b"\n\t", 1) if i else b"version: 1\n\toutput: out\n"),
    st.binary(min_size=1, max_size=8).map(lambda b: dump(VALID) + b"# \xff\xfe" + b + b"\n"),   # not UTF-8
    st.tuples(st.integers(2, 12), st.integers(2, 12)).filter(lambda wd: wd[0] ** wd[1] > 100_000)
    .map(lambda wd: _alias_bomb(*wd)),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                 max_leaves=15).filter(lambda v: not isinstance(v, dict) or "version" not in v).map(dump),
)


def _alias_bomb(width: int, depth: int) -> bytes:
    """'Billion laughs': each level is a list of `width` aliases of the one before."""
    lines = ["version: 1", "output: out", "content: [photos]", "style: [styles/a.png]", "l0: &l0 [x]"]
    for d in range(1, depth + 1):
        lines.append(f"l{d}: &l{d} [" + ", ".join([f"*l{d - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_defects)
def test_every_defect_is_one_line_per_problem_and_exit_2(project, data):
    assert_refused(*validate(project, data))


# --- bounded work ----------------------------------------------------------------------------

BOMBS = {
    "billion laughs": _alias_bomb(10, 9),
    "wide alias fan": _alias_bomb(1000, 2),
    "deep nesting": b"version: 1\noutput: out\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep mapping": b"version: 1\noutput: out\nx: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n",
    "huge integer": b"version: 1\noutput: out\ncontent: photos\nstyle: styles/a.png\nparams: {size: "
                    + b"9" * 100_000 + b"}\n",
    "huge float": b"version: 1\noutput: out\ncontent: photos\nstyle: styles/a.png\nparams: {style_weight: 1e99999}\n",
    "long flow list": b"version: 1\noutput: out\ncontent: [" + b"photos, " * 120_000 + b"]\n",
    "megabyte string": b"version: 1\noutput: " + b"o" * (2 << 20) + b"\n",
    "grid explosion": dump(_with(grid={"seed": list(range(1000)), "steps": list(range(1, 1001))})),
}


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_with_bounded_memory_and_time(project, name):
    tracemalloc.start()
    start = time.thread_time()   # CPU time of this thread: what the parser spent, whatever else runs
    try:
        result = validate(project, BOMBS[name])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    problems = assert_refused(*result)
    assert peak < 64 * 2**20, f"{name}: peak {peak / 2**20:.0f} MiB"
    assert time.thread_time() - start < 20
    assert all(len(p) < 400 for p in problems), problems


def test_validate_in_a_real_process_prints_every_problem_and_no_traceback(project):
    path = project / "real.yaml"
    path.write_text("version: 1\noutput: out\ncontent: photos\nstyle: styles/a.png\n"
                    "params: {size: -5, steps: .nan, stlye_weight: 3}\n"
                    "grid: {seed: []}\n"
                    "output: again\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(path)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=180)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"error: {path}: 5 problem(s)\n"
        "  params.size: must be between 16 and 16384, got -5 (line 5)\n"
        "  params.steps: expected an integer, got NaN (line 5)\n"
        '  params.stlye_weight: unknown parameter, did you mean "style_weight"? (line 5)\n'
        "  grid.seed: expected a non-empty list of values, got an empty list (line 6)\n"
        "  output: duplicate key (line 7; first on line 2)\n")
