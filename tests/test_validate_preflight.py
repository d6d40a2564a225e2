"""`validate` finds before the night what would fail during it: bad image files (from their
headers), sizes the memory planner refuses, and every schema problem at once. No torch."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_content, make_style
from pipeline.errors import InputError, ManifestError
from pipeline.imaging import check_image_header
from pipeline.manifest.schema import load_manifest
from test_fast_commands import heavy, run_cli


def _jpeg(path: Path, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_check_image_header_reasons(tmp_path):
    data = _jpeg(tmp_path / "good.jpg")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "padded.jpg").write_bytes(data + b"\0" * 10)       # zeros after EOI: whole
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture\n")
    make_content(tmp_path / "good.png")
    png = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[:-20])
    for name in ("good.jpg", "padded.jpg", "good.png"):
        check_image_header(tmp_path / name)
    expected = {"cut.jpg": "truncated or corrupt image", "empty.jpg": "empty file",
                "text.jpg": "not an image Pillow can read", "cut.png": "truncated or corrupt image",
                "missing.jpg": "image not found"}
    for name, reason in expected.items():
        with pytest.raises(InputError) as err:
            check_image_header(tmp_path / name)
        assert str(err.value).startswith(reason) and name in str(err.value)


def test_validate_lists_bad_images_and_refused_sizes_without_torch(tmp_path):
    data = _jpeg(tmp_path / "good.jpg")
    (tmp_path / "cut.jpg").write_bytes(data[:-200])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("meeting notes\n")
    make_style(tmp_path / "wave.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [good.jpg, cut.jpg, empty.jpg, notes.jpg]\n"
                        "style: [wave.png]\nparams: {size: 16000, steps: 2}\ndevices: cpu\nmemory_limit: 1GB\n")
    proc, imported = run_cli("validate", str(manifest), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert heavy(imported) == []
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any(w.startswith(f"warning: truncated or corrupt image: {tmp_path / 'cut.jpg'}") for w in warnings)
    assert f"warning: empty file: {tmp_path / 'empty.jpg'}" in warnings
    assert any(w.startswith(f"warning: not an image Pillow can read: {tmp_path / 'notes.jpg'}") for w in warnings)
    assert not any("good.jpg" in w or "wave.png" in w for w in warnings)
    refused = [w for w in warnings if "would be refused by the memory planner" in w]
    assert refused and all("16000" in w for w in refused)
    assert f"{manifest}: valid, 4 job(s)" in proc.stdout and f"{len(warnings)} warning(s)" in proc.stdout


def test_layer_weight_count_is_checked_alongside_other_errors(tmp_path):
    make_content(tmp_path / "photo.png")
    make_style(tmp_path / "wave.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        "params: {steps: -1, style_layers: [relu1_1, relu2_1], style_layer_weights: [1, 2, 3]}\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(manifest)
    problems = " | ".join(err.value.problems)
    assert "steps" in problems
    assert "style_layer_weights: has 3 values but style_layers has 2 layers" in problems
    # ... and in a grid, next to an unknown key.
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        "params: {style_layer_weights: [1, 2]}\ngrid: {stepz: [1], style_weight: [1, 2]}\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(manifest)
    problems = " | ".join(err.value.problems)
    assert "stepz" in problems and "has 2 values but style_layers has 5 layers" in problems
