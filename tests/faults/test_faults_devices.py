"""Devices that do not exist: one line naming what was asked and what exists, exit code 2, in the
parent, before any worker starts (`run`, `run --dry-run`, `plan`, `stylize`).

This machine's CUDA devices are simulated by replacing the counting function, so the tests say
the same on a laptop and on a GPU node."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import make_content, make_style
from faultkit import cli_env, make_project
from pipeline import cli
from pipeline.executors.local import LocalExecutor
from pipeline.run import devices


@pytest.fixture
def no_workers(monkeypatch):
    """Any worker start (local process, or the in-process runner of `stylize`) fails the test."""
    started: list[str] = []

    def start_slot(self, slot):
        started.append(slot.device)
        raise AssertionError(f"a worker was started on {slot.device}")

    def runner(*args, **kwargs):
        started.append("stylize")
        raise AssertionError("stylize built a JobRunner")

    monkeypatch.setattr(LocalExecutor, "start_slot", start_slot)
    monkeypatch.setattr("pipeline.run.worker.JobRunner", runner)   # stylize imports it late
    return started


def gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(devices, "cuda_device_count", lambda: count)


def cli_error(capsys, *args: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return exit_info.value.code, captured.err.splitlines()


CASES = [  # (device asked, CUDA devices here, the one line)
    ("cuda:0", 0, "error: --device cuda:0: this machine has no CUDA device; use cpu or auto"),
    ("cuda", 0, "error: --device cuda: this machine has no CUDA device; use cpu or auto"),
    ("cuda:3", 1, "error: --device cuda:3: this machine has 1 CUDA device (cuda:0); use cuda:0, cpu or auto"),
    ("cuda:1,cuda:2", 2, "error: --device cuda:2: this machine has 2 CUDA devices (cuda:0 to cuda:1); "
                         "use cuda:0 to cuda:1, cpu or auto"),
    ("gpu", 1, "error: --device gpu: unknown device; use auto, cpu, cuda or cuda:N (CUDA GPUs); "
               "this machine has 1 CUDA device (cuda:0)"),
    ("cuda:x", 0, "error: --device cuda:x: unknown device; use auto, cpu, cuda or cuda:N (CUDA GPUs); "
                  "this machine has no CUDA device"),
    ("mps", 0, "error: --device mps: unknown device; use auto, cpu, cuda or cuda:N (CUDA GPUs); "
               "this machine has no CUDA device"),
]


@pytest.fixture(autouse=True)
def _no_visible_list(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("asked,count,line", CASES, ids=[c[0] for c in CASES])
def test_run_refuses_a_missing_device_in_one_line(tmp_path, monkeypatch, capsys, no_workers,
                                                  asked, count, line, dry_run):
    manifest = make_project(tmp_path, contents=1)
    gpus(monkeypatch, count)
    code, lines = cli_error(capsys, "run", str(manifest), "--device", asked, *(["--dry-run"] if dry_run else []))
    assert (code, lines, no_workers) == (2, [line], [])
    assert not (tmp_path / "out").exists()      # refused before the output folder is made


@pytest.mark.parametrize("asked,count,line", [c for c in CASES if "," not in c[0]], ids=[c[0] for c in CASES if "," not in c[0]])
def test_stylize_refuses_a_missing_device_in_one_line(tmp_path, monkeypatch, capsys, no_workers, asked, count, line):
    content, style = make_content(tmp_path / "c.png"), make_style(tmp_path / "s.png")
    gpus(monkeypatch, count)
    code, lines = cli_error(capsys, "stylize", str(content), str(style), "-o", str(tmp_path / "x.png"),
                            "--device", asked, "--size", "32", "--steps", "1", "-q")
    assert (code, lines, no_workers) == (2, [line], [])


@pytest.mark.parametrize("command", ["plan", "run", "dry-run"])
def test_the_manifest_devices_key_is_checked_and_named(tmp_path, monkeypatch, capsys, no_workers, command):
    manifest = make_project(tmp_path, contents=1)
    manifest.write_text(manifest.read_text().replace("devices: cpu", "devices: [cuda:0, cuda:1]"))
    gpus(monkeypatch, 1)
    args = ["plan", str(manifest)] if command == "plan" else ["run", str(manifest)] + (
        ["--dry-run"] if command == "dry-run" else [])
    code, lines = cli_error(capsys, *args)
    source = manifest.resolve()
    assert (code, lines, no_workers) == (2, [f"error: {source}: devices cuda:1: this machine has 1 CUDA device "
                                             "(cuda:0); use cuda:0, cpu or auto"], [])


def test_devices_that_exist_pass_and_cpu_or_auto_never_count(monkeypatch):
    def count() -> int:
        raise AssertionError("counted CUDA devices for cpu/auto")

    for asked in ("auto", "cpu", ["cpu"], None):
        devices.check_devices(asked, "--device", count=count)
    devices.check_devices(["cuda:0", "cuda:1", "cuda"], "--device", count=lambda: 2)


def test_a_visible_devices_list_is_named(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(devices.DeviceError) as err:
        devices.check_devices(["cuda:1"], "--device", count=lambda: 1)
    assert str(err.value) == ("--device cuda:1: this machine has 1 CUDA device visible (CUDA_VISIBLE_DEVICES=5) "
                              "(cuda:0); use cuda:0, cpu or auto")


def test_ray_checks_names_only(monkeypatch):
    """A Ray run's GPUs are the cluster's (plan_ray_slots counts them): this machine's are not asked."""
    def count() -> int:
        raise AssertionError("counted this machine's GPUs for a Ray run")

    devices.check_devices(["cuda:3"], "--device", local=False, count=count)
    with pytest.raises(devices.DeviceError, match=r"^--device gpu: unknown device; use auto, cpu, cuda or cuda:N"):
        devices.check_devices(["gpu"], "--device", local=False, count=count)


@pytest.mark.skipif(any(os.path.exists(p) for p in devices._DRIVER_FILES), reason="a GPU driver is present")
def test_without_a_gpu_driver_the_check_loads_no_torch(tmp_path):
    """`plan` and `--dry-run` stay fast commands: on a machine without a GPU driver, asking for
    cuda:0 is refused without loading torch to count."""
    manifest = make_project(tmp_path, contents=1)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.cli", "run", str(manifest),
                           "--device", "cuda:0", "--dry-run"], cwd=tmp_path, env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2 and errors == ["error: --device cuda:0: this machine has no CUDA device; use cpu or auto"]
    assert "pipeline.run.devices" in imported and not any(m.split(".")[0] == "torch" for m in imported)
