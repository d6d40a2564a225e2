"""The `best` command (registered by cli.py): parses and delegates to views/best.py."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def best(target: Annotated[Path, typer.Argument(metavar="MANIFEST|OUTPUT", help="Manifest YAML file (its jobs only), or an output folder (every result in it).")],
         by: Annotated[str, typer.Option("--by", help="style | content (the lowest distance first) | pareto (the results no other beats on both scores).")] = "pareto",
         count: Annotated[Optional[int], typer.Option("-n", help="Print at most K winners [default: all of the Pareto front; 10 by one score].")] = None) -> None:
    """Print a grid's winners by their scores: rank, output, both scores, what varies."""
    from .run.scope import scope_of
    from .views.best import BY, lines, unscored_line
    from .views.results import scope_line, select_rows

    if by not in BY:
        raise typer.BadParameter(f"--by must be style, content or pareto, got {by!r}")
    if count is not None and count < 1:
        raise typer.BadParameter(f"-n must be at least 1, got {count}")
    scope = scope_of(target)
    results = select_rows(scope.output_dir, scope.job_ids)
    for line in lines(results, by, count if count is not None or by == "pareto" else 10):
        typer.echo(line)
    skipped = unscored_line(results)
    if skipped:
        typer.echo(skipped, err=True)
    typer.echo(scope_line(scope.output_dir, scope.job_ids, scope.manifest), err=True)
