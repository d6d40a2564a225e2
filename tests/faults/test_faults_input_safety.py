"""Inputs a run must never damage or choke on: an output folder that is (or holds) an input
folder, `stylize -o` onto its own input under another name, and one unreadable entry in a
folder of thousands (docs/reliability.md)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_content, make_style
from faultkit import cli_inline as cli, REPO, assert_consistent, cli_env, pinned
from pipeline.run.orchestrate import RunOptions, run_manifest


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


# --- 3. one unreadable entry in a folder fails its own jobs, not the whole manifest ---------

def _folder_with_a_broken_symlink(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    (tmp_path / "styles").mkdir()
    make_content(tmp_path / "photos" / "good.png")
    (tmp_path / "photos" / "gone.png").symlink_to(tmp_path / "deleted.png")
    make_style(tmp_path / "styles" / "s.png")
    (tmp_path / "styles" / "lost.png").symlink_to(tmp_path / "deleted-style.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: photos\nstyle: [styles/*.png]\n"
                        "params: {size: 32, steps: 2}\ndevices: cpu\nworkers_per_device: 1\n")
    return manifest


@pytest.mark.slow
def test_a_broken_symlink_in_a_folder_is_a_warning_and_its_jobs_fail_alone(tmp_path):
    manifest = _folder_with_a_broken_symlink(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(manifest)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=180)
    assert (proc.returncode, proc.stdout) == (0, f"{manifest}: valid, 4 job(s) → {tmp_path / 'out'}\n")
    assert proc.stderr == (
        f"warning: {manifest}: content: broken symlink photos/gone.png (to {tmp_path / 'deleted.png'}); "
        "its jobs will fail until its target is restored or it is removed (line 3)\n"
        f"warning: {manifest}: style[0]: broken symlink styles/lost.png (to {tmp_path / 'deleted-style.png'}); "
        "its jobs will fail until its target is restored or it is removed (line 4)\n")

    with pinned():
        summary = run_manifest(manifest, RunOptions(live=False))
    assert (summary["done"], summary["failed"]) == (1, 3)
    records = assert_consistent(tmp_path / "out", expect_done=1)
    errors = sorted(r["error"] for r in records.values() if r["status"] == "failed")
    gone, lost = tmp_path / "photos" / "gone.png", tmp_path / "styles" / "lost.png"
    assert errors == sorted([f"broken symlink: {gone} points to a missing file"] * 2
                            + [f"broken symlink: {lost} points to a missing file"])
    (done,) = [r for r in records.values() if r["status"] == "done"]
    assert (Path(done["content"]).name, Path(done["styles"][0]["path"]).name) == ("good.png", "s.png")


def test_a_broken_symlink_the_manifest_names_itself_is_still_an_error(tmp_path):
    _folder_with_a_broken_symlink(tmp_path)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: photos/gone.png\nstyle: styles/s.png\n")
    code, stdout, stderr = cli("validate", str(manifest))
    assert (code, stdout) == (2, "")
    assert stderr == (f"error: {manifest}: 1 problem(s)\n  content: content image not found: photos/gone.png "
                      "(line 3; paths are relative to the manifest)\n")


@pytest.mark.slow
def test_an_unreadable_file_in_a_folder_is_a_warning_in_a_real_process(tmp_path):
    """chmod 000 binds only without CAP_DAC_OVERRIDE: as root, validate runs with it dropped."""
    (tmp_path / "photos").mkdir()
    make_content(tmp_path / "photos" / "ok.png")
    make_content(tmp_path / "photos" / "locked.png", seed=1)
    (tmp_path / "photos" / "locked.png").chmod(0)
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: photos\nstyle: s.png\n")
    command = [sys.executable, "-m", "pipeline.cli", "validate", str(manifest)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a mode-000 file stays readable")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", "--", *command]
    proc = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert (proc.returncode, proc.stdout) == (0, f"{manifest}: valid, 2 job(s) → {tmp_path / 'out'}\n"), proc.stderr
    assert proc.stderr == (f"warning: {manifest}: content: cannot read photos/locked.png: permission denied; "
                           "its jobs will fail until its permissions are fixed or it is moved out of the "
                           "folder (line 3)\n")
