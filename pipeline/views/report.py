"""Human-readable output of `plan`, `status` and the end of `run` (rich tables on stdout)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def print_plan(plan: dict[str, Any]) -> None:
    table = Table(title=f"{plan['manifest']} → {plan['output']}")
    for col in ("size", "jobs", "done", "failed", "pending"):
        table.add_column(col, justify="right")
    for size, row in plan["by_size"].items():
        table.add_row(str(size), str(sum(row.values())), str(row["done"]), str(row["failed"]),
                      str(row["pending"]))
    console.print(table)
    console.print(f"{plan['jobs']} job(s): {plan['done']} done, {plan['failed']} failed (kept; "
                  f"--retry-failed reruns them), {plan['to_run']} would run")
    console.print(f"style targets: {plan['targets_cached']} of {plan['targets_total']} cached in "
                  f"{plan['cache_dir']}")
    if plan.get("memory"):
        budget = plan["memory_budget"]
        table = Table(title="memory plan per job (budget: "
                      + ("unknown" if budget is None else f"{budget / 1e9:.1f} GB") + ")")
        for col in ("output size", "jobs", "mode", "optimizer", "est. peak", "notes"):
            table.add_column(col, justify="right" if col in ("jobs", "est. peak") else "left")
        for row in plan["memory"]:
            peak = "-" if row["peak"] is None else f"{row['peak'] / 1e9:.2f} GB"
            table.add_row(row["size"], str(row["jobs"]), row["mode"], row["optimizer"], peak, row["notes"])
        console.print(table)


def print_status(manifest_path: Path) -> None:
    from ..run.orchestrate import classify, prepare

    manifest, jobs = prepare(manifest_path)
    state = classify(jobs, manifest.output)
    console.print(f"{manifest.output}: {len(jobs)} job(s): {len(state.done)} done, "
                  f"{len(state.failed)} failed, {len(state.pending)} pending")
    for job in state.failed:
        record = state.records[job.job_id]
        console.print(f"  {record.get('status')} {job.job_id} {Path(job.content).name}: {record.get('error')}")


def finish_run(summary: dict[str, Any]) -> int:
    """Print the end-of-run summary; returns the exit code (0 all good, 1 failures, 130 interrupted)."""
    if summary.get("dry_run"):
        console.print(f"dry run: {summary['jobs']} job(s), {summary['skipped_done']} already done, "
                      f"{summary['kept_failed']} failed before (kept), {summary['to_run']} would run "
                      f"on {len(summary['workers'])} worker(s): {', '.join(summary['workers'])}")
        return 0
    kept = f", {summary['kept_failed']} failed earlier (--retry-failed reruns them)" if summary["kept_failed"] else ""
    console.print(f"{summary['output']}: {summary['jobs']} job(s): {summary['skipped_done']} already done{kept}; "
                  f"this run: {summary.get('done', 0)} done, {summary.get('failed', 0)} failed"
                  + (f", {summary['retried']} retried" if summary.get("retried") else ""))
    for view in summary.get("views", []):
        console.print(f"wrote {view}")
    for warning in summary.get("warnings", []):   # a full disk: what was not written, and the fix
        errors.print(f"warning: {warning}", soft_wrap=True, markup=False)
    if summary.get("interrupted"):
        console.print("interrupted: rerun the same command to finish the rest")
        return 130
    return 1 if summary.get("failed") else 0


def print_folder_status(output_dir: Path) -> None:
    """`status OUTPUT`: counts of every result in the folder, from any manifest (the scope line,
    printed by the CLI, says so), and the failures."""
    from .results import load_results

    results = load_results(output_dir)
    counts = {s: sum(r.status == s for r in results) for s in ("done", "failed", "timeout")}
    console.print(f"{output_dir}: {len(results)} result(s) in the folder, from any manifest (give the "
                  f"manifest for its jobs only): {counts['done']} done, {counts['failed']} failed"
                  + (f", {counts['timeout']} timeout" if counts["timeout"] else ""), soft_wrap=True)
    for r in results:
        if r.status != "done":
            console.print(f"  {r.status} {r.job_id} {Path(r.content).name}: {r.error}", soft_wrap=True, markup=False)
