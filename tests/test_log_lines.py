"""In log mode (stdout not a terminal) a line is one line, whatever its length: grep must find it.

rich wraps at 80 columns off a terminal; these run the CLI in a fresh interpreter with pipes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_content, make_style

ROOT = Path(__file__).resolve().parents[1]


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_plan_in_a_log_keeps_long_paths_and_table_rows_on_one_line(tmp_path):
    folder = tmp_path / ("a_rather_long_folder_name_for_a_photo_library_" * 3)
    folder.mkdir()
    make_content(folder / "photo.png")
    make_style(folder / "wave.png")
    manifest = folder / "m.yaml"
    # A size the 1 GB limit refuses: the notes cell holds a sentence well over 80 characters.
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        "params: {size: 16000, steps: 2}\ndevices: cpu\nmemory_limit: 1GB\n")
    proc = _python("-m", "pipeline.cli", "plan", str(manifest), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(f"{manifest} → {folder / 'out'}" in line for line in lines), proc.stdout
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == 1, proc.stdout
    # The whole refusal sentence sits in that one row, not wrapped into a tall cell.
    assert refused[0].rstrip(" │").endswith("raise --memory-limit"), proc.stdout
    assert max(len(line) for line in lines) > 120


def test_run_messages_in_a_log_are_one_line(tmp_path):
    long_error = "empty file: " + str(tmp_path / ("deep_folder_" * 12) / "photo.jpg")
    script = ("from pipeline.views.progress import RunDisplay; "
              f"d = RunDisplay(1, [], live=False); d.message({long_error!r})")
    proc = _python("-c", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [long_error]
