"""The shell snippets of docs/cluster.md parse under the shell that runs them, and the Slurm
merge step really runs `reindex` under `/bin/sh`.

Slurm turns `sbatch --wrap CMD` into a `#!/bin/sh` script; on Debian and Ubuntu nodes that is
dash, where `source` does not exist, so a `--wrap "source …/activate && nst-batch reindex …"`
never reindexed. Here a stand-in `sbatch` records its calls, each `--wrap` command is run as
Slurm would run it (under dash where installed), and a stand-in `nst-batch` in a stand-in venv
records what it was asked to do."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"
VENV = "/shared/venvs/nst"                       # the documented venv, moved into tmp_path here
SH = shutil.which("dash") or shutil.which("sh")  # what Slurm's #!/bin/sh is on Debian/Ubuntu
FENCE = re.compile(r"^( *)```(bash|sh)\n(.*?)^\1```", re.M | re.S)


def snippets() -> list[str]:
    """Every ```bash / ```sh block of the page, its list indentation removed."""
    blocks = []
    for indent, _, body in FENCE.findall(DOC.read_text()):
        blocks.append("".join(line[len(indent):] if line.startswith(indent) else line
                              for line in body.splitlines(keepends=True)))
    return blocks


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_page_has_the_snippets_this_test_reads():
    blocks = snippets()
    assert len(blocks) >= 4
    assert any("--wrap" in b for b in blocks) and any(b.startswith("#!/bin/bash") for b in blocks)


@pytest.mark.parametrize("index", range(len(snippets())))
def test_each_snippet_parses_under_its_shell(index):
    """A script with a shebang (shard.sbatch: bash) under that shell; the rest, typed at a
    prompt or pasted into a job script, under plain sh."""
    block = snippets()[index]
    shell = block.split()[0][2:] if block.startswith("#!") else SH
    proc = subprocess.run([shell, "-n"], input=block, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (shell, proc.stderr, block)


def test_the_slurm_merge_step_runs_reindex_under_sh(tmp_path):
    merge = next(b for b in snippets() if "--wrap" in b)
    venv, calls = tmp_path / "venvs" / "nst", tmp_path / "calls.jsonl"
    # A stand-in venv: `activate` puts its bin first on PATH, `nst-batch` records its arguments.
    executable(venv / "bin" / "activate", f'PATH="{venv}/bin:$PATH"; export PATH\n')
    executable(venv / "bin" / "nst-batch", f"#!{sys.executable}\nimport json, sys\n"
               f"open({str(calls)!r}, 'a').write(json.dumps(['nst-batch', *sys.argv[1:]]) + '\\n')\n")
    # A stand-in sbatch: records its arguments; --parsable prints a job id.
    executable(tmp_path / "fake-bin" / "sbatch", f"#!{sys.executable}\nimport json, sys\n"
               f"open({str(calls)!r}, 'a').write(json.dumps(['sbatch', *sys.argv[1:]]) + '\\n')\n"
               "print('4242' if '--parsable' in sys.argv else 'Submitted batch job 4243')\n")
    env = {"PATH": f"{tmp_path / 'fake-bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}   # no nst-batch on PATH
    script = merge.replace(VENV, str(venv))
    proc = subprocess.run([SH, "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    submitted = [json.loads(line) for line in calls.read_text().splitlines()]
    assert submitted[0] == ["sbatch", "--parsable", "shard.sbatch"]
    wrap = submitted[1]
    assert "--dependency=afterany:4242" in wrap      # the array's job id reached the merge job
    command = wrap[wrap.index("--wrap") + 1]
    # What Slurm makes of --wrap, run as Slurm runs it: a #!/bin/sh script, in the submit folder.
    job = executable(tmp_path / "slurm_script", f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{command}\n")
    calls.unlink()
    proc = subprocess.run([SH, str(job)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ran = [json.loads(line) for line in calls.read_text().splitlines()]
    assert ran == [["nst-batch", "reindex", "out/grid"], ["nst-batch", "gallery", "out/grid"]]


@pytest.mark.skipif(SH is None or os.path.basename(os.path.realpath(SH)) != "dash", reason="dash is not installed")
def test_source_is_not_a_dash_builtin():
    """Why the page avoids `source` in --wrap: the check above would catch it on dash."""
    proc = subprocess.run([SH, "-c", "source /dev/null && echo reached"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "reached" not in proc.stdout
