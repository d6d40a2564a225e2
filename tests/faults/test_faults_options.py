"""Every numeric option and manifest value is range-checked: one line, exit 2, nothing runs.

`--timeout -1` used to time every job out at once, `--timeout 0` silently meant no limit, and
a negative `--retries` was accepted.
"""
from __future__ import annotations


import pytest

from conftest import make_content, make_style
from faultkit import cli_inline as cli
from pipeline.run import orchestrate

HELP = " (see: nst-batch run --help)"


@pytest.fixture
def manifest(tmp_path):
    make_content(tmp_path / "a.png")
    make_style(tmp_path / "s.png")
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\noutput: out\ncontent: a.png\nstyle: s.png\ndevices: cpu\n")
    return path


@pytest.fixture
def no_run(manifest, monkeypatch):
    """The manifest, with any run failing the test: a bad option must stop before one starts."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("a run started despite a bad option")

    monkeypatch.setattr(orchestrate, "run_manifest", must_not_run)
    return manifest


@pytest.mark.parametrize("args, message", [
    (["--timeout", "-1"], "--timeout must be a number of seconds > 0, got -1; leave it out for no limit"),
    (["--timeout", "0"], "--timeout must be a number of seconds > 0, got 0; leave it out for no limit"),
    (["--timeout", "nan"], "--timeout must be a number of seconds > 0, got nan; leave it out for no limit"),
    (["--timeout", "inf"], "--timeout must be a number of seconds > 0, got inf; leave it out for no limit"),
    (["--retries", "-1"], "--retries must be between 0 and 100, got -1"),
    (["--retries", "101"], "--retries must be between 0 and 100, got 101"),
    (["--workers", "0"], "--workers must be between 1 and 1024, got 0"),
    (["--workers", "100000"], "--workers must be between 1 and 1024, got 100000"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bad_numeric_run_options_are_one_line_errors(no_run, args, message):
    assert cli("run", str(no_run), *args) == (2, "", f"error: Invalid value: {message}{HELP}\n")


@pytest.mark.parametrize("args, line", [
    (["--shard", "3/3"], "error: Invalid value: shard '3/3': need 0 <= I < N (see: nst-batch run --help)"),
    (["--shard", "0/0"], "error: Invalid value: shard '0/0': need 0 <= I < N (see: nst-batch run --help)"),
])
def test_bad_shards_are_one_line_errors(no_run, args, line):
    assert cli("run", str(no_run), *args) == (2, "", line + "\n")


@pytest.mark.parametrize("args, line", [
    (["--size", "8"], "error: size: must be between 16 and 16384, got 8"),
    (["--steps", "0"], "error: steps: must be between 1 and 1000000, got 0"),
    (["--multiscale", "0"], "error: multiscale: must be between 1 and 8, got 0"),
    (["--quality", "101"], "error: quality: must be between 1 and 100, got 101"),
    (["--seed", "-1"], "error: seed: must be between 0 and 9223372036854775807, got -1"),
    (["--style-weight", "-1"], "error: style_weight: must be a finite number ≥ 0, got -1.0"),
    (["--tol", "nan"], "error: tol: must be a finite number ≥ 0, got nan"),
    (["--lr", "0"], "error: lr: must be greater than 0"),
    (["--style-scale", "0"], "error: style_scale: must be greater than 0"),
])
def test_bad_numeric_stylize_options_are_one_line_errors(tmp_path, args, line):
    content, style = make_content(tmp_path / "a.png"), make_style(tmp_path / "s.png")
    code, stdout, stderr = cli("stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), *args)
    assert (code, stdout, stderr) == (2, "", line + "\n")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("args, line", [
    (["--thumb", "0"], "error: --thumb must be between 32 and 1024 pixels, got 0"),
    (["--max-cells", "0"], "error: --max-cells must be at least 1, got 0"),
])
def test_bad_numeric_sheet_options_are_one_line_errors(tmp_path, args, line):
    from pipeline.run.index import ResultsIndex

    ResultsIndex(tmp_path).close()
    assert cli("sheet", str(tmp_path), *args) == (2, "", line + "\n")


@pytest.mark.parametrize("yaml, problem", [
    ("retries: -1", "retries: must be between 0 and 100, got -1 (line 6)"),
    ("timeout: 0", "timeout: expected seconds > 0 or null (no limit), got 0 (line 6)"),
    ("timeout: -5", "timeout: expected seconds > 0 or null (no limit), got -5 (line 6)"),
    ("timeout: .nan", "timeout: expected seconds > 0 or null (no limit), got NaN (line 6)"),
    ("workers_per_device: 0", "workers_per_device: must be between 1 and 64, got 0 (line 6)"),
    ("sheet: {thumb: 8}", "sheet.thumb: must be between 32 and 1024, got 8 (line 6)"),
    ("params: {steps: 0}", "params.steps: must be between 1 and 1000000, got 0 (line 6)"),
    ("grid: {size: [32, 8]}", "grid.size[1]: must be between 16 and 16384, got 8 (line 6)"),
])
def test_bad_numeric_manifest_values_are_one_line_errors(manifest, yaml, problem):
    manifest.write_text(manifest.read_text() + yaml + "\n")
    for command in ("validate", "run"):
        assert cli(command, str(manifest)) == (2, "", f"error: {manifest}: 1 problem(s)\n  {problem}\n")
