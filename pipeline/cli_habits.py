"""What the CLI does for people's habits: readable help, other tools' option spellings, --version.

Kept apart from cli.py, which only parses and delegates.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin


def version_line() -> str:
    """`--version`: ours, torch's (from its package metadata: importing torch takes seconds) and the
    default weights' id, the three things a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__
    from .engine.weights import weights_id
    from .params import DEFAULTS

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"nst-batch {__version__} (torch {torch_version}; weights {weights_id(DEFAULTS.weights)})"


_TYPE_WORDS = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT"}


def readable_help(group: Any) -> None:
    """Metavars people read (CONTENT STYLES..., --steps INTEGER, -o PATH) instead of this Typer's
    `{content}` and `<list[Path]>`. Typer internals: left as they are where they differ."""
    for command in group.commands.values():
        for param in command.params:
            desc = getattr(param, "type_descriptor", None)
            if desc is None or getattr(param, "is_flag", False):
                continue
            annotation = desc.annotation
            inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
            word = "PATH" if desc.is_path or inner is Path else _TYPE_WORDS.get(getattr(inner, "__name__", ""), "VALUE")
            param.display_type = lambda ctx, word=word: word
            if param.param_type_name == "argument":
                name = param.name.upper() + ("..." if param.nargs != 1 else "")
                param._usage_display_name = lambda name=name, required=param.required: (
                    name if required else f"[{name}]")


_SINGLE_DASH = re.compile(r"-([A-Za-z][A-Za-z0-9]*[_-][A-Za-z0-9_-]*|[A-Za-z]{2,})(=.*)?")


def single_dash_options(group: Any, argv: list[str]) -> str | None:
    """`-style_weight 100` (jcjohnson/neural-style's spelling): the message naming the option meant.

    Only words that are one of our long options once given two dashes and dashes for
    underscores are caught; anything else goes to click's own message."""
    known = {opt for command in group.commands.values() for param in command.params for opt in param.opts}
    found = []
    for arg in argv:
        if arg == "--":
            break
        match = _SINGLE_DASH.fullmatch(arg)
        meant = "--" + match.group(1).replace("_", "-").lower() if match else None
        if meant in known:
            found.append(f"{arg.split('=')[0]}: did you mean {meant}?")
    if not found:
        return None
    return ("unknown option " + "; ".join(found)
            + " (long options take two dashes and hyphens: --style-weight 100)")
