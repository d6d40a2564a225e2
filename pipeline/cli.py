"""The command line: parses, delegates, and is the only place that prints errors and exits.

Every user mistake ends as one line on stderr and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # Typer ≥ 0.2x vendors click; older releases use the click package.
    from typer.exceptions import TyperException as _UsageBase
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import ClickException as _UsageBase  # type: ignore[assignment]

from .cli_habits import readable_help, single_dash_options, version_line
from .errors import NSTError, OutputError
from .params import CHOICES, DEFAULTS, STYLE_WEIGHTS
from .views.sheets import DEFAULT_MAX_CELLS, DEFAULT_THUMB

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Batch neural style transfer (Gatys et al. 2016) on the original VGG-19.")

D = DEFAULTS
MAX_WORKERS = 1024   # worker processes of one run: a typo must not fork thousands
MAX_RETRIES = 100    # as the manifest's retries


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print the version, torch's and the weights id.")] = False) -> None:
    """Batch neural style transfer (Gatys et al. 2016) on the original VGG-19."""


def _csv(value: Optional[str], cast=str):
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise typer.BadParameter(f"expected a comma-separated list of numbers, got {value!r}") from None


@app.command()
def stylize(
    content: Annotated[Path, typer.Argument(help="Content image (any format Pillow reads).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file: .png, .jpg/.jpeg (JPEG) or .tif/.tiff (TIFF, LZW); tagged sRGB.")],
    styles: Annotated[Optional[list[Path]], typer.Argument(help="One or more style images; several are blended (none with --region).")] = None,
    size: Annotated[Optional[str], typer.Option(help=f"Long side of the output in pixels, or native (the content's own size) [default: {D.size}].")] = None,
    steps: Annotated[Optional[int], typer.Option(help=f"Objective evaluations in all stages [default: {D.steps}].")] = None,
    content_weight: Annotated[Optional[float], typer.Option(help=f"Content loss weight [default: {D.content_weight:g}].")] = None,
    style_weight: Annotated[Optional[float], typer.Option(help="Style loss weight [default: per --style-loss: " + ", ".join(f"{k} {v:g}" for k, v in STYLE_WEIGHTS.items()) + "].")] = None,
    tv_weight: Annotated[Optional[float], typer.Option(help=f"Total-variation weight [default: {D.tv_weight:g}].")] = None,
    content_layers: Annotated[Optional[str], typer.Option(help=f"Comma-separated content layers [default: {','.join(D.content_layers)}].")] = None,
    style_layers: Annotated[Optional[str], typer.Option(help=f"Comma-separated style layers [default: {','.join(D.style_layers)}].")] = None,
    style_layer_weights: Annotated[Optional[str], typer.Option(help="Comma-separated weight per style layer [default: equal].")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help=f"{' | '.join(CHOICES['optimizer'])} [default: {D.optimizer}].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Step size [default: 1.0 for L-BFGS, 0.02 for Adam].")] = None,
    init: Annotated[Optional[str], typer.Option(help=f"content | noise | path to an image [default: {D.init}].")] = None,
    seed: Annotated[Optional[int], typer.Option(help=f"Random seed [default: {D.seed}].")] = None,
    preserve_color: Annotated[Optional[str], typer.Option(help=f"{' | '.join(CHOICES['preserve_color'])} [default: {D.preserve_color}].")] = None,
    weights: Annotated[Optional[str], typer.Option(help=f"original | torchvision | path to a .pth/.safetensors [default: {D.weights}].")] = None,
    pooling: Annotated[Optional[str], typer.Option(help=f"max | avg [default: {D.pooling}].")] = None,
    style_loss: Annotated[Optional[str], typer.Option(help=f"{' | '.join(CHOICES['style_loss'])}: Gram matrices (the paper's), Gaussian W2 of mean and covariance, sliced Wasserstein [default: {D.style_loss}].")] = None,
    style_blend: Annotated[Optional[str], typer.Option(help="Comma-separated blend weight per style image [default: equal].")] = None,
    style_scale: Annotated[Optional[float], typer.Option(help=f"Style image size relative to the output [default: {D.style_scale:g}].")] = None,
    multiscale: Annotated[Optional[str], typer.Option(help=f"Coarse-to-fine stages, each twice the last: auto (from about 256 px up) or a count, 1 for one stage [default: {D.multiscale}].")] = None,
    tol: Annotated[Optional[float], typer.Option(help=f"End a stage early when the loss improves by less than this fraction over 25 evaluations; 0 never [default: {D.tol:g}].")] = None,
    average: Annotated[Optional[float], typer.Option(help=f"Save the moving average of the iterates with this decay, in [0, 1), e.g. 0.99; 0 off [default: {D.average:g}].")] = None,
    quality: Annotated[Optional[int], typer.Option(help=f"JPEG quality [default: {D.quality}].")] = None,
    dpi: Annotated[Optional[int], typer.Option(help="Print resolution written in the file [default: 300 for TIFF, none for PNG/JPEG].")] = None,
    bit_depth: Annotated[Optional[int], typer.Option(help="8 | 16 bits per channel; 16 for PNG or TIFF, written from the float result [default: 8].")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    memory_limit: Annotated[Optional[str], typer.Option(help="Memory the job may use, e.g. 2GB; larger sizes run in tiles [default: what the device has free].")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Style-target cache folder [default: $NST_BATCH_CACHE_DIR or the user cache dir].")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the style-target cache.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    save_every: Annotated[int, typer.Option(help="Write the current image every N evaluations, and at each stage's end, into OUTPUT-stem.steps/ (the last 5 kept); 0: off.")] = 0,
    region: Annotated[Optional[list[str]], typer.Option("--region", help="[NAME:]MASK=STYLE: the masked region in STYLE (an image, none: keep the photo, a.jpg+b.jpg: a blend); repeat for more regions (docs/regions.md).")] = None,
) -> None:
    """Stylize one content image with one or more style images."""
    from .cli_regions import region_specs
    from .run.stylize_one import stylize_one

    if not 0 <= save_every <= 1_000_000:
        raise typer.BadParameter(f"--save-every must be between 0 (off) and 1000000 evaluations, got {save_every}")
    values = {
        "size": _int_or("native", size, "a number of pixels or native", "--size"),
        "steps": steps, "content_weight": content_weight, "style_weight": style_weight,
        "tv_weight": tv_weight, "content_layers": _csv(content_layers), "style_layers": _csv(style_layers),
        "style_layer_weights": _csv(style_layer_weights, float), "optimizer": optimizer, "lr": lr,
        "init": init, "seed": seed, "preserve_color": preserve_color, "weights": weights,
        "pooling": pooling, "style_scale": style_scale, "quality": quality, "dpi": dpi, "bit_depth": bit_depth,
        "multiscale": _int_or("auto", multiscale, "auto or a number of stages", "--multiscale"),
        "tol": tol, "average": average, "style_loss": style_loss,
    }
    stylize_one(content, list(styles or []), output, {k: v for k, v in values.items() if v is not None},
                blend=_csv(style_blend, float), device=device, cache_dir=cache_dir,
                use_cache=not no_cache, show_progress=not quiet, memory_limit=_memory(memory_limit),
                save_every=save_every, regions=region_specs(region or []))


def _int_or(word: str, value: Optional[str], expected: str, option: str):
    """An option that takes a number or one keyword (`--size native`, `--multiscale auto`)."""
    if value is None or value == word:
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"expected {expected}, got {value!r}", param_hint=f"'{option}'") from None


def _memory(value: Optional[str]) -> Optional[int]:
    from .run.memory import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="'--memory-limit'") from None


def _shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected I/N such as 0/4, got {value!r}") from None
    if n < 1 or not 0 <= i < n:
        raise typer.BadParameter(f"shard {value!r}: need 0 <= I < N")
    return i, n


def _devices(value: Optional[str]):
    if value is None or value in ("auto", "cpu"):
        return value
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def validate(manifest: Annotated[Path, typer.Argument(help="Manifest YAML file.")]) -> None:
    """Check a manifest and report every problem at once; warn of images and sizes that would fail."""
    from .run.preflight import preflight

    checked = preflight(manifest)
    for warning in checked.warnings:
        typer.echo(f"warning: {warning}", err=True)
    note = f"; {checked.failing} warning(s) above: those jobs would fail" if checked.failing else ""
    typer.echo(f"{manifest}: valid, {len(checked.jobs)} job(s) → {checked.manifest.output}{note}")


@app.command()
def plan(manifest: Annotated[Path, typer.Argument(help="Manifest YAML file.")],
         cache_dir: Annotated[Optional[Path], typer.Option(help="Style-target cache folder.")] = None,
         calibrate: Annotated[bool, typer.Option("--calibrate/--no-calibrate", help="Time a few evaluations of the largest batch on the run's device when no figure is cached, for the estimated run time (loads torch and VGG: seconds to a minute) [default: --no-calibrate: show the cached figure only].")] = False) -> None:
    """Show what a run would do: jobs by size and status, cached style targets, memory, time."""
    from .run.orchestrate import plan_manifest
    from .views.report import print_plan

    print_plan(plan_manifest(manifest, cache_dir, calibrate=calibrate))


@app.command()
def run(
    manifest: Annotated[Path, typer.Argument(help="Manifest YAML file.")],
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda:0,cuda:1 (overrides the manifest's devices).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Number of worker processes, spread over the devices [default: workers_per_device per device].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun every job, finished or not.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also rerun jobs that failed before.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would run; run nothing.")] = False,
    retries: Annotated[Optional[int], typer.Option(help="Retries of a job whose worker died [default: manifest's retries, 2].")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds before a job is killed and marked timeout [default: none].")] = None,
    now: Annotated[bool, typer.Option("--now", help="On Ctrl-C abort running jobs at once instead of letting them finish.")] = False,
    shard: Annotated[Optional[str], typer.Option(help="Run only shard I/N of the jobs (sidecars only; merge with reindex).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Style-target cache folder [default: $NST_BATCH_CACHE_DIR or the user cache dir].")] = None,
    executor: Annotated[str, typer.Option(help="local (worker processes on this machine) | ray (Ray actors on a cluster; docs/cluster.md).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="With --executor ray: auto (join the running cluster) | HOST:PORT [default: start a local Ray].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Jobs optimized together in one batch [default: auto: 1 on CPU, what fits on a GPU].")] = None,
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the network in each worker.")] = False,
    memory_limit: Annotated[Optional[str], typer.Option(help="Memory each worker may use, e.g. 2GB [default: manifest's memory_limit, else the device's free memory shared among its workers].")] = None,
    live_every: Annotated[float, typer.Option(help="Seconds between rewrites of the live gallery OUTPUT/index.html during the run (0: only at the end).")] = 10.0,
    save_every: Annotated[Optional[int], typer.Option(help="Write each job's current image every N evaluations, and at each stage's end, into <output>.steps/ (the last 5 kept) [default: manifest's save_every, 0: off].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live view or per-job lines: failures, retries and the summary only.")] = False,
) -> None:
    """Run every unfinished job of a manifest; rerunning resumes."""
    from .run.orchestrate import RunOptions, run_manifest
    from .views.report import finish_run

    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise typer.BadParameter(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    if retries is not None and not 0 <= retries <= MAX_RETRIES:
        raise typer.BadParameter(f"--retries must be between 0 and {MAX_RETRIES}, got {retries}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        # 0 or less would time every job out at once (or silently mean no limit): refuse it.
        raise typer.BadParameter(f"--timeout must be a number of seconds > 0, got {timeout:g}; "
                                 "leave it out for no limit")
    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"--executor must be local or ray, got {executor!r}")
    if batch_size is not None and batch_size < 1:
        raise typer.BadParameter("--batch-size must be at least 1")
    if precision not in ("auto", "fp32", "bf16"):
        raise typer.BadParameter(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    if address is not None and executor != "ray":
        raise typer.BadParameter("--address needs --executor ray")
    if save_every is not None and not 0 <= save_every <= 1_000_000:
        raise typer.BadParameter(f"--save-every must be between 0 (off) and 1000000 evaluations, got {save_every}")
    if not (math.isfinite(live_every) and 0 <= live_every <= 86400):
        raise typer.BadParameter(f"--live-every must be between 0 and 86400 seconds, got {live_every:g}")
    options = RunOptions(devices=_devices(device), workers=workers, force=force, retry_failed=retry_failed,
                         dry_run=dry_run, retries=retries, timeout=timeout, cache_dir=cache_dir, now=now,
                         executor=executor, address=address, batch_size=batch_size, precision=precision,
                         compile=compile, memory_limit=_memory(memory_limit), live_every=live_every,
                         save_every=save_every, quiet=quiet)
    summary = run_manifest(manifest, options, shard=_shard(shard))
    raise typer.Exit(finish_run(summary))


@app.command()
def status(manifest: Annotated[Path, typer.Argument(metavar="MANIFEST|OUTPUT", help="Manifest YAML file, or an output folder (every result in it).")]) -> None:
    """Done / failed / pending counts of a manifest's jobs, and the failures."""
    from .views.report import print_folder_status, print_status

    raise typer.Exit(print_status(manifest) if not manifest.is_dir() else print_folder_status(manifest))


@app.command()
def reindex(output: Annotated[Path, typer.Argument(help="Output folder of a run.")]) -> None:
    """Rebuild index.sqlite from the JSON sidecars (the source of truth)."""
    from .run.orchestrate import hold_output
    from .run.index import reindex as rebuild

    if not output.is_dir():
        raise OutputError(f"not an nst-batch output folder: {output} (no such folder)")
    with hold_output(output):
        count = rebuild(output)
    typer.echo(f"{output / 'index.sqlite'}: {count} job(s) indexed")


@app.command()
def export(target: Annotated[Path, typer.Argument(metavar="OUTPUT|MANIFEST", help="Output folder of a run (every result), or a manifest (its jobs only).")],
           format: Annotated[str, typer.Option("--format", help="csv | jsonl")] = "csv",
           to: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write [default: stdout].")] = None) -> None:
    """Write the results index out as CSV or JSON lines, one column per parameter."""
    from .views.export import export as dump

    if format not in ("csv", "jsonl"):
        raise typer.BadParameter(f"--format must be csv or jsonl, got {format!r}")
    scope = _scope(target)
    text = dump(scope.output_dir, format, to, job_ids=scope.job_ids)
    _say(scope)
    if to is None:
        sys.stdout.write(str(text))
    else:
        typer.echo(f"wrote {to}", err=True)


@app.command()
def sheet(
    target: Annotated[Path, typer.Argument(metavar="OUTPUT|MANIFEST", help="Output folder of a run (every result), or a manifest (its jobs only).")],
    rows: Annotated[Optional[str], typer.Option(help="Key on the rows: content, style or a parameter [default: content, or the first varying key].")] = None,
    cols: Annotated[Optional[str], typer.Option(help="Key on the columns [default: style, or the next varying key].")] = None,
    where: Annotated[Optional[list[str]], typer.Option("--where", help="KEY=VALUE: only jobs with that value; repeat for more keys (one key twice: either value).")] = None,
    thumb: Annotated[int, typer.Option(help="Cell size in pixels (32-1024).")] = DEFAULT_THUMB,
    max_cells: Annotated[int, typer.Option(help="Cells per page; larger grids are split into pages.")] = DEFAULT_MAX_CELLS,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Sheet file, .png or .jpg [default: OUTPUT/contact_sheet.png].")] = None,
) -> None:
    """Draw a labelled contact sheet (rows × columns of outputs) from the results index."""
    from .views.sheets import make_sheets, parse_where

    scope = _scope(target)
    for path in make_sheets(scope.output_dir, rows=rows, cols=cols, where=parse_where(where or []), thumb=thumb,
                            dest=out, max_cells_per_page=max_cells, job_ids=scope.job_ids):
        typer.echo(str(path))
    _say(scope)


@app.command()
def gallery(
    target: Annotated[Path, typer.Argument(metavar="OUTPUT|MANIFEST", help="Output folder of a run (every result), or a manifest (its jobs only).")],
    serve: Annotated[bool, typer.Option("--serve", help="Then serve the folder read-only over HTTP on localhost (for port-forwarding from a remote machine); Ctrl-C stops.")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8000,
) -> None:
    """Write OUTPUT/index.html: a static gallery with filters and a sortable table."""
    from .views.gallery import write_gallery

    if not 1 <= port <= 65535:
        raise typer.BadParameter(f"--port must be between 1 and 65535, got {port}")
    scope = _scope(target)
    typer.echo(str(write_gallery(scope.output_dir, job_ids=scope.job_ids)))
    _say(scope)
    if serve:
        from .views.serve import make_server

        server = make_server(scope.output_dir, port)
        typer.echo(f"serving {scope.output_dir} read-only at http://localhost:{server.server_address[1]}/ "
                   "(Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


@app.command()
def prune(manifest: Annotated[Path, typer.Argument(help="Manifest YAML file.")],
          yes: Annotated[bool, typer.Option("--yes", help="Move the listed results to OUTPUT/.pruned/ (or delete them with --delete).")] = False,
          delete: Annotated[bool, typer.Option("--delete", help="With --yes: delete instead of moving to OUTPUT/.pruned/.")] = False) -> None:
    """List the results in the manifest's output folder that are no longer its jobs; --yes moves them away."""
    from .run.prune import PRUNED_DIR, prune_manifest

    result = prune_manifest(manifest, apply=yes, delete=delete)
    for item in result.stale:
        typer.echo(f"  {item.output}  ({item.status}; {item.reason})")
    for line in result.skipped:
        typer.echo(f"warning: {line}", err=True)
    where = result.output_dir / PRUNED_DIR
    if not result.stale:
        typer.echo(f"{result.output_dir}: every result belongs to {manifest.name}; nothing to prune")
    elif not yes:
        typer.echo(f"{len(result.stale)} result(s) in {result.output_dir} no longer belong to {manifest.name}; "
                   f"--yes moves them to {where}" + (", --yes --delete deletes them" if not delete else
                                                     "; add --yes to delete them"))
    else:
        typer.echo(f"{'deleted' if delete else 'moved'} {len(result.stale)} result(s) ({result.moved} file(s) "
                   f"and folder(s)){'' if delete else ' to ' + str(where)}; the index no longer lists them")


from .cli_best import best as _best  # noqa: E402 - a command of its own module (cli.py's size)

app.command(name="best")(_best)


def _scope(target: Path):
    """A view's target: a manifest (its jobs only) or an output folder (everything)."""
    from .run.scope import scope_of

    return scope_of(target)


def _say(scope) -> None:
    """One line on stderr says what the view showed, so a sheet never silently mixes in the
    results of an earlier manifest."""
    from .views.results import scope_line

    typer.echo(scope_line(scope.output_dir, scope.job_ids, scope.manifest), err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line per error, exit codes 2 (user error) or 130 (interrupted)."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    command = typer.main.get_command(app)
    readable_help(command)
    mistake = single_dash_options(command, sys.argv[1:] if argv is None else argv)
    if mistake:
        print(f"error: {mistake}", file=sys.stderr)
        sys.exit(2)
    try:
        # prog_name: hints read "nst-batch stylize --help" however the CLI was started.
        code = command.main(args=argv, prog_name="nst-batch", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)   # typer.Exit(N) comes back as a return value outside standalone mode
    except NSTError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except _UsageBase as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            print(err.format_message())   # the help text: bare `nst-batch` must not print nothing
            sys.exit(0)
        ctx = getattr(err, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {err.format_message()}{hint}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # python -m pipeline.cli
    main()
