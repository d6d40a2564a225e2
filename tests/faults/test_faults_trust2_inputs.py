"""Inputs a run must never damage or choke on: an output folder that is (or holds) an input
folder, `stylize -o` onto its own input under another name, and one unreadable entry in a
folder of thousands (docs/reliability.md)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from conftest import make_content, make_style
from pipeline.cli import main


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


# --- 1. the output folder is an input folder, or above one ----------------------------------

@pytest.mark.parametrize("output, content, relation, folder, photo", [
    ("photos", "photos/", "is", "photos", "a.png"),          # equal: outputs become next run's content
    ("photos", "photos/*.png", "is", "photos", "a.png"),     # a glob rooted there
    ("photos", "photos/a.png", "is", "photos", "a.png"),     # a file in it: index.html etc. land beside it
    ("data", "data/photos", "holds", "data/photos", "photos.png"),   # above: data/photos/s/<id>.png
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_output_folder_that_is_or_holds_an_input_folder_is_refused(tmp_path, command, output, content,
                                                                       relation, folder, photo):
    photos = tmp_path / Path(content.rstrip("/")).parts[0]
    if folder == "data/photos":
        photos = photos / "photos"
    photos.mkdir(parents=True)
    make_content(photos / photo)
    (photos / "index.html").write_text("the user's own page")
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\noutput: {output}\ncontent: {content}\nstyle: s.png\n"
                        "params: {size: 32, steps: 1}\ndevices: cpu\n")
    code, stdout, stderr = cli(command, str(manifest))
    assert (code, stdout) == (2, "")
    assert stderr == (f"error: {manifest}: 1 problem(s)\n  output: {output} {relation} the input folder "
                      f"{folder}; results would mix with the inputs: choose an output folder outside them "
                      "(line 2)\n")
    assert (photos / "index.html").read_text() == "the user's own page"
    assert sorted(p.name for p in photos.iterdir()) == sorted(["index.html", photo])


def test_an_output_folder_inside_an_input_folder_stays_allowed(tmp_path):
    """The other way round is fine: a folder or glob above the output skips what is in it."""
    (tmp_path / "photos").mkdir()
    make_content(tmp_path / "photos" / "a.png")
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: photos/out\ncontent: photos/\nstyle: s.png\n")
    code, stdout, stderr = cli("validate", str(manifest))
    assert (code, stderr) == (0, "") and "1 job(s)" in stdout


def test_an_output_folder_above_an_input_folder_is_refused_when_results_would_land_in_it(tmp_path):
    """out/a/s/<job_id>.png is where photo a.png × style s.png goes: an input folder out/a/s
    would take results as content; out/inputs/content (the demo's layout) never can."""
    for folder in ("out/a/s", "out/a", "out/inputs/content"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    make_content(tmp_path / "out/a/s/a.png")
    make_content(tmp_path / "out/inputs/content/b.png", seed=1)
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    for content, bad in (("out/a/s", "out/a/s"), ("out/a", "out/a"), ("out/inputs/content", None)):
        manifest.write_text(f"version: 1\noutput: out\ncontent: {content}\nstyle: s.png\n")
        code, stdout, stderr = cli("validate", str(manifest))
        if bad is None:
            assert (code, stderr) == (0, ""), stderr
        else:
            assert (code, stdout) == (2, "")
            assert stderr.splitlines()[1:] == [f"  output: out holds the input folder {bad}; results would mix "
                                               "with the inputs: choose an output folder outside them (line 2)"]


# --- 2. `stylize -o` onto its own input under another name ----------------------------------

def _stylize(content: Path, style: Path, output: Path) -> tuple[int, str, str]:
    return cli("stylize", str(content), str(style), "-o", str(output), "--size", "32", "--steps", "1",
               "--device", "cpu", "--quiet", "--no-cache")


def test_stylize_refuses_an_output_that_is_its_input_through_a_hard_link(tmp_path):
    content, style = make_content(tmp_path / "photo.png"), make_style(tmp_path / "s.png")
    before = content.read_bytes()
    os.link(content, tmp_path / "other-name.png")
    code, stdout, stderr = _stylize(content, style, tmp_path / "other-name.png")
    assert (code, stdout) == (2, "")
    assert stderr == (f"error: output {tmp_path / 'other-name.png'} is one of the inputs; inputs are never "
                      "overwritten — choose another name\n")
    assert content.read_bytes() == before and os.stat(content).st_nlink == 2


def test_stylize_refuses_an_output_that_is_its_input_through_a_bind_mount(tmp_path):
    """The path strings differ and neither is a symlink: only the files are the same."""
    photos, view = tmp_path / "photos", tmp_path / "view"
    photos.mkdir(), view.mkdir()
    content, style = make_content(photos / "photo.png"), make_style(tmp_path / "s.png")
    before = content.read_bytes()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a bind mount needs root and mount(8); the hard-link test covers the same check")
    bound = subprocess.run(["mount", "--bind", str(photos), str(view)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"mount --bind is not permitted here ({bound.stderr.strip()})")
    try:
        assert (view / "photo.png").resolve() != content.resolve()
        code, stdout, stderr = _stylize(content, style, view / "photo.png")
        assert (code, stdout) == (2, "")
        assert stderr == (f"error: output {view / 'photo.png'} is one of the inputs; inputs are never "
                          "overwritten — choose another name\n")
    finally:
        subprocess.run(["umount", str(view)], check=True)
    assert content.read_bytes() == before
