"""Human-readable output of `plan`, `status` and the end of `run` (rich tables on stdout)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table

from .console import make_console

console = make_console()
errors = make_console(stderr=True)


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
    if "time" in plan:
        console.print(time_line(plan["time"]), soft_wrap=True, markup=False, highlight=False)
    for line in plan.get("print_sizes", []):   # the resolution in the file: what a print shop reads
        console.print(f"print: {line}")
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


def time_line(row: dict[str, Any] | None) -> str:
    """`estimated run time 1h23m on 2 cpu workers (calibrated: …)`, or how to get one."""
    from .eta import format_eta

    if row is None:
        return "estimated run time: nothing to run"
    if row["seconds"] is None:
        return (f"estimated run time: not calibrated for this {row['device']} and size yet "
                "(plan --calibrate measures a few evaluations, then caches the figure)")
    took = format_eta(row["seconds"]).removeprefix("ETA ")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["measured_at"]))
    plural = "s" if row["workers"] != 1 else ""
    return (f"estimated run time {took} on {row['workers']} {row['device']} worker{plural} "
            f"({row['work']:.3g} px-evals; calibrated: {row['evaluations']} evaluations of a "
            f"{row['side']} px batch of {row['batch']} on {row['device']} ({row['precision']}), "
            f"{row['throughput']:.3g} px-evals/s; cached {when})")


def print_status(manifest_path: Path) -> int:
    """Print the counts and the failures; returns the exit code (docs/cli.md, "Exit codes")."""
    from ..run.orchestrate import classify, prepare

    manifest, jobs = prepare(manifest_path)
    state = classify(jobs, manifest.output)
    console.print(f"{manifest.output}: {len(jobs)} job(s): {len(state.done)} done, "
                  f"{len(state.failed)} failed, {len(state.pending)} pending")
    for job in state.failed:
        record = state.records[job.job_id]
        console.print(f"  {record.get('status')} {job.job_id} {Path(job.content).name}: {record.get('error')}")
    return status_code(len(state.failed), len(state.pending))


EXIT_DONE, EXIT_FAILED, EXIT_REFUSED, EXIT_PENDING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def status_code(failed: int, pending: int) -> int:
    """`status`: 0 all done, 1 some job failed (kept or new), 3 some pending and none failed."""
    return EXIT_FAILED if failed else EXIT_PENDING if pending else EXIT_DONE


def finish_run(summary: dict[str, Any]) -> int:
    """Print the end-of-run summary; returns the exit code: 0 all done, 1 some job failed (in
    this run or kept from an earlier one), 130 interrupted (jobs left pending)."""
    if summary.get("dry_run"):
        refused, refused_jobs = summary.get("refused", []), summary.get("refused_jobs", 0)
        console.print(f"dry run: {summary['jobs']} job(s), {summary['skipped_done']} already done, "
                      f"{summary['kept_failed']} failed before (kept), "
                      f"{summary['to_run'] - refused_jobs} would run"
                      + (f", {refused_jobs} would be refused by the memory planner" if refused else "")
                      + f" on {len(summary['workers'])} worker(s): {', '.join(summary['workers'])}")
        for line in refused:   # what `plan` shows in its memory table, before the night, not during it
            errors.print(f"refused: {line}", markup=False)
        # As the run would end: failures kept or to come are exit 1 (refused jobs fail at run time).
        return EXIT_FAILED if refused or summary["kept_failed"] else EXIT_DONE
    kept = f", {summary['kept_failed']} failed earlier (--retry-failed reruns them)" if summary["kept_failed"] else ""
    pending = summary.get("to_run", 0) - summary.get("done", 0) - summary.get("failed", 0)
    console.print(f"{summary['output']}: {summary['jobs']} job(s): {summary['skipped_done']} already done{kept}; "
                  f"this run: {summary.get('done', 0)} done, {summary.get('failed', 0)} failed"
                  + (f", {pending} pending" if summary.get("interrupted") else "")
                  + (f", {summary['retried']} retried" if summary.get("retried") else ""))
    for retired in summary.get("retired", []):   # a sick device: its jobs ran on the others
        errors.print(f"warning: {retired}", soft_wrap=True, markup=False)
    for view in summary.get("views", []):
        console.print(f"wrote {view}")
    for warning in summary.get("warnings", []):   # a full disk: what was not written, and the fix
        errors.print(f"warning: {warning}", markup=False)
    if summary.get("interrupted"):
        console.print(f"interrupted: rerun the same command to finish the rest ({pending} job(s) pending)")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.get("failed") or summary["kept_failed"] else EXIT_DONE


def print_folder_status(output_dir: Path) -> int:
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
    return EXIT_FAILED if counts["failed"] or counts["timeout"] else EXIT_DONE
