"""What people type from habit: -h, --version, -style_weight (jcjohnson/neural-style), run -q;
and help that reads PATH, not `<list[Path]>`."""
from __future__ import annotations

from importlib.metadata import version

import pytest

from pipeline import __version__
from pipeline.cli import main
from pipeline.engine.weights import weights_id
from test_fast_commands import heavy, run_cli


def _main(args, capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_single_dash_long_option_names_the_real_one(capsys):
    code, out, err = _main(["stylize", "a.png", "b.png", "-o", "x.png", "-style_weight", "100"], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: unknown option -style_weight: did you mean --style-weight? "
                                "(long options take two dashes and hyphens: --style-weight 100)"]
    code, _, err = _main(["run", "m.yaml", "-retry_failed", "-dry-run"], capsys)
    assert code == 2 and "-retry_failed: did you mean --retry-failed?; -dry-run: did you mean --dry-run?" in err


def test_short_options_and_values_after_double_dash_are_left_alone(capsys):
    code, _, err = _main(["stylize", "a.png", "b.png", "-o", "x.png", "-q", "--", "-style_weight"], capsys)
    assert "did you mean" not in err


@pytest.mark.parametrize("command", [[], ["stylize"], ["run"], ["validate"], ["sheet"]])
def test_dash_h_is_help(command, capsys):
    code, out, _ = _main([*command, "-h"], capsys)
    assert code == 0 and out.startswith("Usage: nst-batch") and "-h, --help" in out


def test_help_metavars_are_readable(capsys):
    _, out, _ = _main(["stylize", "-h"], capsys)
    assert "Usage: nst-batch stylize [OPTIONS] CONTENT [STYLES...]" in out   # none with --region
    assert "styles... PATH" in out and "-o, --output PATH" in out and "--steps INTEGER" in out
    assert "<" not in out and "{" not in out


def test_run_accepts_dash_q(capsys, tmp_path, monkeypatch):
    import pipeline.run.orchestrate as orchestrate

    seen = {}
    monkeypatch.setattr(orchestrate, "run_manifest",
                        lambda path, options, shard=None: seen.setdefault("quiet", options.quiet) and {
                            "output": "out", "jobs": 0, "skipped_done": 0, "kept_failed": 0, "to_run": 0})
    _main(["run", str(tmp_path / "m.yaml"), "-q"], capsys)
    assert seen == {"quiet": True}


def test_version_names_ours_torchs_and_the_weights_without_loading_torch(tmp_path):
    proc, imported = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"nst-batch {__version__} (torch {version('torch')}; "
                                   f"weights {weights_id('original')})")
    assert heavy(imported) == []
