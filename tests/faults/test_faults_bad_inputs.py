"""Bad images in a batch, and the inputs a manifest must refuse before anything runs.

Decided per case (docs/reliability.md): every image a folder or glob finds becomes a job, and
a bad one fails alone with a one-line error in its row (a broken symlink or a file without
read permission too, with a warning from `validate`: test_faults_input_safety.py); a file
the manifest names itself must exist and be a file.
"""
from __future__ import annotations

import io
import struct
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_content, make_style
from faultkit import index_rows, pinned
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.cli import main
from pipeline.fault_hooks import ENOSPC as FAULT_ENOSPC


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width × height but holds almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def truncated(path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def sixteen_bit(path: Path) -> Path:
    ramp = (np.arange(48 * 40).reshape(40, 48) * 27).astype(np.uint16)
    Image.fromarray(ramp).save(path)          # mode I;16
    assert Image.open(path).mode == "I;16"
    return path


def palette_with_transparency(path: Path) -> Path:
    img = Image.new("P", (40, 30))
    img.putpalette([(i * 37) % 256 for i in range(768)])
    img.putdata([i % 7 for i in range(40 * 30)])
    img.save(path, transparency=0)
    return path


GOOD = {  # name -> (width, height) of the 32 px output
    "good.png": (32, 27), "grey16.png": (32, 27), "palette.png": (32, 24), "cmyk.jpg": (32, 24),
    "pixel.png": (32, 32), "folder.jpg/inner.png": (32, 27),
}


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    make_content(photos / "good.png")
    sixteen_bit(photos / "grey16.png")
    palette_with_transparency(photos / "palette.png")
    Image.new("CMYK", (40, 30), (10, 200, 30, 5)).save(photos / "cmyk.jpg")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(photos / "pixel.png")
    (photos / "folder.jpg").mkdir()           # a folder named like an image is a folder
    make_content(photos / "folder.jpg" / "inner.png", seed=3)
    (photos / "empty.jpg").write_bytes(b"")
    truncated(photos / "cut.jpg", "JPEG")
    truncated(photos / "cut.png", "PNG")
    (photos / "text.jpg").write_text("this is not a JPEG\n")
    png_header_only(photos / "bomb.png", 30000, 30000)
    Image.new("RGB", (10000, 10), (9, 9, 9)).save(photos / "strip.png")
    make_content(photos / "full.png", seed=4)           # the disk is full when its image is written
    make_content(photos / "escape.png", seed=5)         # its output folder is a symlink out
    (tmp_path / "styles").mkdir()
    make_style(tmp_path / "styles" / "s.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "m.yaml").write_text("version: 1\noutput: out\ncontent: photos\nstyle: styles/s.png\n"
                                     "params: {size: 32, steps: 4}\ndevices: cpu\n")
    return tmp_path


@pytest.mark.slow
def test_bad_images_fail_alone_with_one_line_and_odd_good_ones_succeed(hostile, monkeypatch):
    photos, out = hostile / "photos", hostile / "out"
    monkeypatch.setenv(FAULT_ENOSPC, "*/full/*.png")
    with pinned():
        summary = run_manifest(hostile / "m.yaml", RunOptions(live=False))
    _, jobs = prepare(hostile / "m.yaml")
    job_of = {Path(j.content).relative_to(photos).as_posix(): j for j in jobs}
    rows = {name: index_rows(out)[job.job_id] for name, job in job_of.items()}
    expected_errors = {
        "empty.jpg": f"empty file: {photos / 'empty.jpg'}",
        "text.jpg": f"not an image Pillow can read: {photos / 'text.jpg'} (is the extension right?)",
        "bomb.png": f"{photos / 'bomb.png'}: image is too large to decode safely (over 120,000,000 "
                    "pixels); downscale it first",
        "strip.png": f"{photos / 'strip.png'}: 10000 × 10 has an aspect ratio beyond 50:1; crop it first",
        "full.png": f"cannot write {out / job_of['full.png'].output}: No space left on device",
        "escape.png": f"output path {job_of['escape.png'].output!r} escapes the output folder {out}",
    }
    assert sorted(rows) == sorted([*GOOD, *expected_errors, "cut.jpg", "cut.png"])
    for name, size in GOOD.items():
        assert rows[name]["status"] == "done", (name, rows[name]["error"])
        assert (rows[name]["width"], rows[name]["height"]) == size, name
    for name, error in expected_errors.items():
        assert (rows[name]["status"], rows[name]["error"]) == ("failed", error)
    for name in ("cut.jpg", "cut.png"):
        assert rows[name]["status"] == "failed"
        assert rows[name]["error"].startswith(f"truncated or corrupt image: {photos / name} (")
    assert (summary["done"], summary["failed"]) == (len(GOOD), len(rows) - len(GOOD))
    assert list((hostile / "elsewhere").iterdir()) == [], "an output landed outside the output folder"
    # The files agree with the index, and nothing half-written remains (the full disk's job
    # included). The escaping job's sidecar cannot be written either: its row alone records it.
    rows_by_id = index_rows(out)
    escape = rows_by_id.pop(job_of["escape.png"].job_id)
    assert escape["status"] == "failed" and not (out / job_of["escape.png"].sidecar).exists()
    assert list(out.rglob("*.tmp")) == []
    for job in jobs:
        if job is not job_of["escape.png"]:
            assert (out / job.sidecar).is_file()
    assert not (out / job_of["full.png"].output).exists()


# --- refused before anything runs ------------------------------------------------------------

def validate(manifest: Path) -> tuple[int, str, str]:
    """`nst-batch validate MANIFEST` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["validate", str(manifest)])
            code = 0
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def test_folders_named_as_images_are_refused_at_validation_where_one_file_is_expected(tmp_path):
    """A broken symlink or an unreadable file inside a content folder is a warning and its jobs
    fail alone (test_faults_input_safety.py); a folder where the manifest names one file is
    an error."""
    (tmp_path / "photos" / "dir.jpg").mkdir(parents=True)
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\npairs:\n  - {content: photos/dir.jpg, style: s.png}\n")
    code, stdout, stderr = validate(manifest)
    assert code == 2 and stderr == (
        f"error: {manifest}: 1 problem(s)\n"
        "  pairs[0].content: photos/dir.jpg is a folder; name one image file here (line 4)\n")


@pytest.mark.parametrize("name", ["empty.jpg", "bomb.png", "dir.jpg", "gone.png", "text.jpg"])
def test_stylize_says_what_is_wrong_with_a_bad_image_in_one_line(tmp_path, capsys, name):
    (tmp_path / "empty.jpg").write_bytes(b"")
    png_header_only(tmp_path / "bomb.png", 30000, 30000)
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")
    (tmp_path / "text.jpg").write_text("hello")
    make_style(tmp_path / "s.png")
    path = tmp_path / name
    with pytest.raises(SystemExit) as stop:
        main(["stylize", str(path), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"), "--device", "cpu"])
    expected = {
        "empty.jpg": f"empty file: {path}",
        "bomb.png": f"{path}: image is too large to decode safely (over 120,000,000 pixels); downscale it first",
        "dir.jpg": f"expected an image file, got a directory: {path}",
        "gone.png": f"broken symlink: {path} points to a missing file",
        "text.jpg": f"not an image Pillow can read: {path} (is the extension right?)",
    }[name]
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    assert not (tmp_path / "o.png").exists()
