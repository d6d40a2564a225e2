"""Commands that only read stay fast: `--help`, `validate`, `plan`, `status` and `export` never import
torch (it takes seconds to load), and the packages import each other only as their `__init__` says."""
from __future__ import annotations

import ast
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_content, make_style
from pipeline.run.index import ResultsIndex
from pipeline.run.orchestrate import prepare

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"


def run_cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -m pipeline.cli ARGS` in a fresh interpreter; returns it and the modules it imported.

    `-X importtime` writes one stderr line per module the process imports, whoever imports it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    return proc, imported


def heavy(imported: set[str]) -> list[str]:
    return sorted(m for m in imported if m.split(".")[0] in ("torch", "torchvision", "safetensors"))


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A manifest of two jobs, one done and one failed, with their sidecars and index rows.

    Written here the way the worker and the parent write them, so no VGG has to run."""
    make_content(tmp_path / "photo.png")
    make_style(tmp_path / "wave.png")
    manifest = tmp_path / "grid.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        "params: {size: 32, steps: 2}\ngrid: {seed: [0, 1]}\ndevices: cpu\n")
    m, jobs = prepare(manifest)
    records = []
    for job, status in zip(jobs, ("done", "failed")):
        record = {**job.describe(), "status": status, "steps": 2 if status == "done" else 0, "seconds": 0.5,
                  "device": "cpu", "error": None if status == "done" else "truncated or corrupt image: x"}
        image = m.output / job.output
        image.parent.mkdir(parents=True, exist_ok=True)
        if status == "done":
            image.write_bytes(b"\x89PNG not decoded by these commands")
        image.with_suffix(".json").write_text(json.dumps(record))
        records.append(record)
    with ResultsIndex(m.output) as index:
        for record in records:
            index.upsert(record)
    return manifest


def test_help_does_not_import_torch(tmp_path):
    proc, imported = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout and "export" in proc.stdout
    assert "pipeline.params" in imported       # the probe sees our own imports...
    assert heavy(imported) == []               # ...and none of torch's


def test_validate_plan_status_export_do_not_import_torch(finished_run):
    cwd, out = finished_run.parent, finished_run.parent / "out"
    _, jobs = prepare(finished_run)
    done, failed = jobs[0].job_id, jobs[1].job_id
    expect = {
        ("validate", str(finished_run)): [f"{finished_run.name}: valid, 2 job(s)"],
        ("plan", str(finished_run)): ["2 job(s): 1 done, 1 failed", "0 would run", "style targets: 0 of 1 cached"],
        ("status", str(finished_run)): ["2 job(s): 1 done, 1 failed, 0 pending",
                                        f"failed {failed} photo.png: truncated or corrupt image: x"],
        ("export", str(out), "--format", "csv"): [done, failed],
    }
    for args, lines in expect.items():
        proc, imported = run_cli(*args, cwd=cwd)
        # status exits 1: one of its jobs failed (docs/cli.md, "Exit codes").
        assert proc.returncode == (1 if args[0] == "status" else 0), (args, proc.stderr[-2000:])
        text = " ".join(proc.stdout.split())   # rich wraps long lines at the terminal width
        for line in lines:
            assert line in text, (args, proc.stdout)
        assert "pipeline.run.orchestrate" in imported or args[0] == "export"
        assert heavy(imported) == [], (args, heavy(imported))
    rows = list(csv.DictReader(io.StringIO(run_cli("export", str(out), cwd=cwd)[0].stdout)))
    assert {r["job_id"]: r["status"] for r in rows} == {done: "done", failed: "failed"}


def test_the_probe_sees_torch_when_a_command_loads_it(tmp_path):
    """The check above would pass vacuously if `-X importtime` missed torch: `stylize` loads it once
    its inputs check out (here to find that the output would overwrite an input)."""
    make_content(tmp_path / "photo.png")
    make_style(tmp_path / "wave.png")
    proc, imported = run_cli("stylize", "photo.png", "wave.png", "-o", "photo.png", cwd=tmp_path)
    assert proc.returncode == 2 and "is one of the inputs" in proc.stderr
    assert "torch" in imported


def test_stylize_reports_a_missing_file_before_loading_torch(tmp_path):
    make_style(tmp_path / "wave.png")
    proc, imported = run_cli("stylize", "missing.png", "wave.png", "-o", "x.png", cwd=tmp_path)
    assert proc.returncode == 2 and "error: image not found: missing.png" in proc.stderr
    assert heavy(imported) == []


def test_memory_estimates_and_weights_ids_need_no_torch(tmp_path):
    """What `plan` may show beyond counts: the memory estimate is arithmetic, the job id's weights id
    a constant or a file hash. Neither may load torch."""
    script = ("import sys; from pipeline.params import DEFAULTS; from pipeline.run import memory; "
              "from pipeline.engine.weights import weights_id; "
              "print(memory.estimate_bytes(DEFAULTS, (480, 640)), weights_id('original'), "
              "sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    estimate, wid, loaded = proc.stdout.split(" ", 2)
    assert int(estimate) > 100 * 2**20 and wid.startswith("original-") and loaded.strip() == "[]"


# --- Static checks over the source: who may import whom ------------------------------------------

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The pipeline modules a file imports at run time, at the top or inside functions.

    Imports under `if TYPE_CHECKING:` are for annotations only and are not counted."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pipeline"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "pipeline":
                base = node.module
            else:
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# Each package's `__init__` docstring states these; a new edge that breaks one fails here.
RULES = {
    "pipeline.engine": ("may only import", ("pipeline.engine", "pipeline.errors", "pipeline.params")),
    "pipeline.views": ("must not import", ("pipeline.engine", "pipeline.executors")),
    "pipeline.executors": ("must not import", ("pipeline.manifest", "pipeline.views")),
    "pipeline.manifest": ("must not import", ("pipeline.engine", "pipeline.executors", "pipeline.run.worker",
                                              "pipeline.run.orchestrate")),
    "pipeline.params": ("may only import", ("pipeline.errors", "pipeline.engine.layers")),
    "pipeline.errors": ("may only import", ()),
    "pipeline.imaging": ("may only import", ("pipeline.errors", "pipeline.fault_hooks", "pipeline.encode16")),
    "pipeline.encode16": ("may only import", ()),       # bytes in, bytes out
    "pipeline.fault_hooks": ("may only import", ()),     # test-only hooks: a leaf, loads no torch
}


def test_packages_import_only_what_their_rules_allow(graph):
    broken = []
    for module, targets in sorted(graph.items()):
        for package, (kind, listed) in RULES.items():
            if not _in(module, package):
                continue
            for target in sorted(targets):
                allowed = _in(target, *listed) if kind == "may only import" else not _in(target, *listed)
                if not allowed:
                    broken.append(f"{module} imports {target} ({package} {kind} {', '.join(listed) or 'nothing'})")
    assert broken == []


def test_rules_see_real_edges(graph):
    """The parser resolves relative imports: known edges are found, so an empty `broken` means something."""
    assert "pipeline.engine.layers" in graph["pipeline.params"]
    assert "pipeline.engine.features" in graph["pipeline.engine.optimize"]
    assert "pipeline.run.jobs" in graph["pipeline.manifest.expand"]
    assert "pipeline.run.orchestrate" in graph["pipeline.cli"]          # a lazy import inside a command
    assert "pipeline.executors.local" not in graph["pipeline.views.progress"]   # type-only


def test_no_import_cycles(graph):
    """No module imports itself through others, counting imports made inside functions too."""
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []



def test_no_module_over_400_lines():
    """A module a reader can hold in their head (docs/architecture.md: one step, one file)."""
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
