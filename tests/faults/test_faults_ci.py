"""CI cannot go green without running the gallery's browser test.

`.ci/run` installs Debian's chromium with apt-get and fails the build when it cannot; with
`CI` set a missing browser fails tests/test_gallery.py instead of skipping it; and
`.ci/install-browser` exits 1 under CI when it cannot install chromium. The scripts run here
against stub `apt-get`, `make` and `id` commands that only record their calls.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from faultkit import REPO

BASH = "/bin/bash"


def stubs(folder: Path, apt_works: bool, uid: int = 0) -> Path:
    """A PATH folder with recording stubs; `apt-get install` puts a chromium stub in it."""
    folder.mkdir()
    log = folder / "calls.log"
    scripts = {
        "id": f'echo {uid}',
        "make": f'echo "make $* CI=$CI" >> {log}',
        "sudo": f'echo "sudo $*" >> {log}; "${{@:2}}"',
        "apt-get": (f'echo "apt-get $*" >> {log}\n'
                    + (f'case "$1" in install) printf "#!{BASH}\\necho Chromium 1.0\\n" > {folder}/chromium; '
                       f'chmod +x {folder}/chromium;; esac; exit 0' if apt_works else 'exit 100')),
    }
    for name, body in scripts.items():
        (folder / name).write_text(f"#!{BASH}\n{body}\n")
        (folder / name).chmod(0o755)
    return log


def run_script(script: str, path: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": str(path), "HOME": str(path)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([BASH, str(REPO / ".ci" / script)], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("uid, prefix", [(0, ""), (1000, "sudo -n ")])
def test_ci_run_installs_chromium_then_runs_the_tests_with_ci_set(tmp_path, uid, prefix):
    log = stubs(tmp_path / "bin", apt_works=True, uid=uid)
    done = run_script("run", tmp_path / "bin", ci=None)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    apt = [f"{prefix}apt-get update", f"{prefix}apt-get install -y chromium"]
    expected = [x for pair in zip(apt, ["apt-get update", "apt-get install -y chromium"]) for x in pair] \
        if prefix else apt
    assert calls == expected + ["make test CI=true"]


def test_ci_run_fails_the_build_when_chromium_cannot_be_installed(tmp_path):
    log = stubs(tmp_path / "bin", apt_works=False)
    done = run_script("run", tmp_path / "bin", ci="true")
    assert done.returncode != 0
    assert log.read_text().splitlines() == ["apt-get update"]   # no `make test` without a browser


@pytest.mark.parametrize("ci, code, last", [
    ("true", 1, "install-browser: error: CI is set and the gallery's browser test needs chromium"),
    (None, 0, "install-browser: the browser test will be skipped"),
])
def test_install_browser_fails_loudly_under_ci_only(tmp_path, ci, code, last):
    stubs(tmp_path / "bin", apt_works=False)
    done = run_script("install-browser", tmp_path / "bin", ci=ci)
    assert done.returncode == code
    assert done.stderr.splitlines()[0] == ("install-browser: apt-get could not install chromium (offline, "
                                           "or no such package?); chromium not installed")
    assert done.stderr.splitlines()[-1] == last


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_a_missing_browser_fails_the_gallery_test_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    import test_gallery

    monkeypatch.setattr(test_gallery, "find_browser", lambda: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        test_gallery.browser_or_skip()
