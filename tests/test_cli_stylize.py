"""`nst-batch stylize`: the happy path leaves inputs untouched; every user mistake is one line, exit 2."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.imaging import read_metadata

from conftest import make_content, make_style

ROOT = Path(__file__).resolve().parents[1]


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _fail(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and return its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def inputs(tmp_path):
    return make_content(tmp_path / "content.png"), make_style(tmp_path / "style.png"), tmp_path


@pytest.mark.slow
def test_stylize_writes_the_output_and_leaves_inputs_byte_identical(inputs, capsys):
    content, style, root = inputs
    # A JPEG style too: reading must not rewrite EXIF or anything else.
    style_jpg = root / "style2.jpg"
    Image.open(style).save(style_jpg, quality=90)
    before = {p: _digest(p) for p in (content, style, style_jpg)}
    out = root / "out [draft]" / "result.png"        # brackets: a path, not rich markup
    main(["stylize", str(content), str(style), str(style_jpg), "-o", str(out),
          "--size", "32", "--steps", "5", "--quiet", "--style-blend", "3,1"])
    assert {p: _digest(p) for p in before} == before
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (32, 27)      # content is 48 × 40
    meta = read_metadata(out)
    assert meta["params"]["size"] == 32 and meta["params"]["steps"] == 5
    assert len(meta["job_id"]) == 16
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.png"]   # no sidecar, no temp files
    err = capsys.readouterr().err
    assert err.startswith(f"wrote {out} (32×27, 5 steps, loss ")
    assert err.endswith("on cpu)\n") and err.count("\n") == 1      # one line, not wrapped


def test_jpeg_output(inputs):
    content, style, root = inputs
    out = root / "result.jpeg"
    main(["stylize", str(content), str(style), "-o", str(out), "--size", "32", "--steps", "1",
          "--quality", "80", "--style-layers", "conv1_1,conv2_1", "--content-layers", "conv2_2"])
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (32, 27)
    assert read_metadata(out)["params"]["quality"] == 80


def test_missing_content(inputs, capsys):
    _, style, root = inputs
    missing = root / "nope.png"
    assert _fail(capsys, ["stylize", str(missing), str(style), "-o", str(root / "o.png")]) == \
        f"error: image not found: {missing}"


def test_unreadable_image(inputs, capsys):
    content, _, root = inputs
    bad = root / "bad.png"
    bad.write_text("not a png")
    assert _fail(capsys, ["stylize", str(content), str(bad), "-o", str(root / "o.png")]) == \
        f"error: not an image Pillow can read: {bad} (is the extension right?)"


@pytest.mark.parametrize("option, value, message", [
    ("--size", "0", "size: must be between 16 and 16384, got 0"),
    ("--steps", "-1", "steps: must be between 1 and 1000000, got -1"),
    ("--optimizer", "sgd", 'optimizer: expected one of lbfgs, adam, got "sgd"'),
    ("--preserve-color", "x", 'preserve_color: expected one of none, luminance, histogram, got "x"'),
    ("--pooling", "min", 'pooling: expected one of max, avg, got "min"'),
    ("--style-layers", "conv9_9", 'style_layers: unknown VGG-19 layer "conv9_9"; names look like conv4_2, relu3_1, pool5'),
    ("--content-layers", "conv4_2,relu9", 'content_layers: unknown VGG-19 layer "relu9"; names look like conv4_2, relu3_1, pool5'),
    ("--style-layer-weights", "1,2", "style_layer_weights: has 2 values but style_layers has 5 layers"),
    ("--lr", "0", "lr: must be greater than 0"),
])
def test_bad_values(inputs, capsys, option, value, message):
    content, style, root = inputs
    assert _fail(capsys, ["stylize", str(content), str(style), "-o", str(root / "o.png"), option, value]) == \
        f"error: {message}"


def test_unparsable_value_names_the_option(inputs, capsys):
    content, style, root = inputs
    line = _fail(capsys, ["stylize", str(content), str(style), "-o", str(root / "o.png"), "--size", "big"])
    assert line.startswith("error: Invalid value for '--size': ")
    assert line.endswith("(see: nst-batch stylize --help)")
    line = _fail(capsys, ["stylize", str(content), str(style), "-o", str(root / "o.png"), "--style-blend", "1,x"])
    assert line == ("error: Invalid value: expected a comma-separated list of numbers, got '1,x' "
                    "(see: nst-batch stylize --help)")


def test_cuda_on_a_cpu_only_machine(inputs, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    content, style, root = inputs
    assert _fail(capsys, ["stylize", str(content), str(style), "-o", str(root / "o.png"), "--device", "cuda"]) == \
        "error: --device cuda: this machine has no CUDA device; use cpu or auto"
    assert not (root / "o.png").exists()


def test_unsupported_output_suffix(inputs, capsys):
    content, style, root = inputs
    out = root / "o.gif"
    assert _fail(capsys, ["stylize", str(content), str(style), "-o", str(out)]) == \
        f"error: output {out} must end in .png, .jpg, .jpeg, .tif or .tiff"


@pytest.mark.parametrize("blend, message", [
    ("1,2", "--style-blend has 2 weights for 1 style images; give one each"),
    ("0", "--style-blend weights must be finite, ≥ 0 and have a positive sum"),
    ("nan", "--style-blend weights must be finite, ≥ 0 and have a positive sum"),
])
def test_style_blend_problems(inputs, capsys, blend, message):
    content, style, root = inputs
    assert _fail(capsys, ["stylize", str(content), str(style), "-o", str(root / "o.png"), "--style-blend", blend]) == \
        f"error: {message}"


@pytest.mark.parametrize("which", ["content", "style", "init"])
def test_output_equal_to_an_input_is_refused(inputs, capsys, which):
    content, style, root = inputs
    init = make_content(root / "init.png", seed=5)
    target = {"content": content, "style": style, "init": init}[which]
    before = _digest(target)
    assert _fail(capsys, ["stylize", str(content), str(style), "-o", str(target), "--init", str(init)]) == \
        f"error: output {target} is one of the inputs; inputs are never overwritten — choose another name"
    assert _digest(target) == before


def test_output_reached_through_another_spelling_is_refused(inputs, capsys, monkeypatch):
    content, style, root = inputs
    monkeypatch.chdir(root)
    assert _fail(capsys, ["stylize", "content.png", str(style), "-o", "./sub/../content.png"]) == \
        "error: output sub/../content.png is one of the inputs; inputs are never overwritten — choose another name"


def test_missing_weights_file(inputs, capsys):
    content, style, root = inputs
    weights = root / "w.pth"
    assert _fail(capsys, ["stylize", str(content), str(style), "-o", str(root / "o.png"), "--weights", str(weights)]) == \
        (f"error: weights file not found: {weights}; use 'original', 'torchvision' or a path to a "
         ".pth/.safetensors state dict")


def test_no_arguments_prints_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Usage: nst-batch" in out and "stylize" in out


@pytest.mark.slow
def test_python_dash_m_reports_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(tmp_path / "a.png"),
                           str(tmp_path / "b.png"), "-o", str(tmp_path / "o.png")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == f"error: image not found: {tmp_path / 'a.png'}\n"
    assert proc.stdout == ""
