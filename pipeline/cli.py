"""The command line: parses, delegates, and is the only place that prints errors and exits.

Every user mistake ends as one line on stderr and a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # Typer ≥ 0.2x vendors click; older releases use the click package.
    from typer.exceptions import TyperException as _UsageBase
except ImportError:  # pragma: no cover - depends on the installed Typer
    from click import ClickException as _UsageBase  # type: ignore[assignment]

from .errors import NSTError
from .params import CHOICES, DEFAULTS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Batch neural style transfer (Gatys et al. 2016) on the original VGG-19.")

D = DEFAULTS


@app.callback()
def _root() -> None:
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
    styles: Annotated[list[Path], typer.Argument(help="One or more style images; several are blended.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.png, or .jpg/.jpeg for JPEG).")],
    size: Annotated[Optional[int], typer.Option(help=f"Long side of the output in pixels [default: {D.size}].")] = None,
    steps: Annotated[Optional[int], typer.Option(help=f"Objective evaluations in all stages [default: {D.steps}].")] = None,
    content_weight: Annotated[Optional[float], typer.Option(help=f"Content loss weight [default: {D.content_weight:g}].")] = None,
    style_weight: Annotated[Optional[float], typer.Option(help=f"Style loss weight [default: {D.style_weight:g}].")] = None,
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
    style_blend: Annotated[Optional[str], typer.Option(help="Comma-separated blend weight per style image [default: equal].")] = None,
    style_scale: Annotated[Optional[float], typer.Option(help=f"Style image size relative to the output [default: {D.style_scale:g}].")] = None,
    multiscale: Annotated[Optional[int], typer.Option(help=f"Coarse-to-fine stages, each twice the last [default: {D.multiscale}].")] = None,
    quality: Annotated[Optional[int], typer.Option(help=f"JPEG quality [default: {D.quality}].")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option(help="Style-target cache folder [default: $NST_BATCH_CACHE_DIR or the user cache dir].")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the style-target cache.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Stylize one content image with one or more style images."""
    from .single import stylize_one

    values = {
        "size": size, "steps": steps, "content_weight": content_weight, "style_weight": style_weight,
        "tv_weight": tv_weight, "content_layers": _csv(content_layers), "style_layers": _csv(style_layers),
        "style_layer_weights": _csv(style_layer_weights, float), "optimizer": optimizer, "lr": lr,
        "init": init, "seed": seed, "preserve_color": preserve_color, "weights": weights,
        "pooling": pooling, "style_scale": style_scale, "multiscale": multiscale, "quality": quality,
    }
    stylize_one(content, list(styles), output, {k: v for k, v in values.items() if v is not None},
                blend=_csv(style_blend, float), device=device, cache_dir=cache_dir,
                use_cache=not no_cache, show_progress=not quiet)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line per error, exit codes 2 (user error) or 130 (interrupted)."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except NSTError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except _UsageBase as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            sys.exit(0)
        ctx = getattr(err, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {err.format_message()}{hint}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
