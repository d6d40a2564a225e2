"""Numbers too large to be meant (400 digits, 1e300, inf, nan) in options and manifest keys: one
line naming the option or key and its valid range, exit code 2, never an OverflowError."""
from __future__ import annotations

import pytest

from conftest import make_content, make_style
from faultkit import make_project
from pipeline import cli
from pipeline.run.memory import parse_size

HUGE = "9" * 400


def cli_error(capsys, *args: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return exit_info.value.code, captured.err.splitlines()


SHOWN = "'99999999999999999999'… (402 characters)"


def test_a_400_digit_memory_limit_is_one_line(tmp_path, capsys):
    manifest = make_project(tmp_path, contents=1)
    assert cli_error(capsys, "run", str(manifest), "--memory-limit", HUGE + "GB", "--dry-run") == (2, [
        f"error: Invalid value for '--memory-limit': a memory limit must be between 64MB and 1024TiB, got {SHOWN} "
        "(see: nst-batch run --help)"])
    content, style = make_content(tmp_path / "c.png"), make_style(tmp_path / "s.png")
    code, lines = cli_error(capsys, "stylize", str(content), str(style), "-o", str(tmp_path / "x.png"),
                            "--memory-limit", HUGE + "GB")
    assert (code, len(lines)) == (2, 1) and "must be between 64MB and 1024TiB" in lines[0] and "'--memory-limit'" in lines[0]


@pytest.mark.parametrize("value,shown", [(HUGE + "GB", SHOWN), (HUGE, "'99999999999999999999'… (400 characters)")])
def test_a_400_digit_manifest_memory_limit_names_the_key(tmp_path, capsys, value, shown):
    manifest = make_project(tmp_path, contents=1, extra=f'memory_limit: "{value}"\n')
    code, lines = cli_error(capsys, "validate", str(manifest))
    assert code == 2
    assert lines[1:] == [f"  memory_limit: a memory limit must be between 64MB and 1024TiB, got {shown}, "
                         "or null (the device's free memory) (line 8)"]


def test_parse_size_is_exact_and_bounded_at_both_ends():
    assert parse_size("1024TiB") == 2**50 and parse_size(2**50) == 2**50
    assert parse_size("1.5GiB") == 3 * 2**29 and parse_size("64MiB") == 2**26
    assert parse_size("1." + "0" * 5000 + "GB") == 10**9        # a long fraction: no int() of 5000 digits
    for too_big in (2**50 + 1, "1025TiB", 10**500, HUGE):
        with pytest.raises(ValueError, match="must be between 64MB and 1024TiB"):
            parse_size(too_big)
    with pytest.raises(ValueError, match="below 64MB"):
        parse_size("63MiB")


def test_style_scale_is_bounded(tmp_path, capsys):
    content, style = make_content(tmp_path / "c.png"), make_style(tmp_path / "s.png")
    assert cli_error(capsys, "stylize", str(content), str(style), "-o", str(tmp_path / "x.png"),
                     "--style-scale", "1e300", "--size", "32") == (2, ["error: style_scale: must be between 0 and 16, got 1e+300"])
    manifest = make_project(tmp_path, contents=1)
    manifest.write_text(manifest.read_text().replace("steps: 4}", "steps: 4, style_scale: 1e300}"))
    code, lines = cli_error(capsys, "validate", str(manifest))
    assert code == 2 and lines[1:] == ["  params.style_scale: must be between 0 and 16, got 1e+300 (line 5)"]


@pytest.mark.parametrize("option,value,text", [
    ("--workers", HUGE, "--workers must be between 1 and 1024"),
    ("--retries", HUGE, "--retries must be between 0 and 100"),
    ("--timeout", HUGE, "--timeout must be a number of seconds > 0, got inf"),
    ("--timeout", "nan", "--timeout must be a number of seconds > 0, got nan"),
    ("--timeout", "inf", "--timeout must be a number of seconds > 0, got inf"),
])
def test_other_run_options_refuse_huge_and_non_finite_values(tmp_path, capsys, option, value, text):
    manifest = make_project(tmp_path, contents=1)
    code, lines = cli_error(capsys, "run", str(manifest), option, value, "--dry-run")
    assert code == 2 and len(lines) == 1 and text in lines[0]
