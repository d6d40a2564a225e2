"""The one exception family users see.

Every message is a single line that names the problem and, where there is one, the fix.
Only `pipeline.cli` turns these into exit codes; everything else raises.
"""
from __future__ import annotations


class NSTError(Exception):
    """A problem the user can fix. `str(err)` is the one line shown to them."""

    exit_code = 2


class InputError(NSTError):
    """A missing, unreadable or unsupported input file."""


class ParamError(NSTError):
    """A parameter value that is out of range or unknown."""


class ManifestError(NSTError):
    """A manifest that does not validate; `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        head = f"{source}: {len(self.problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join(f"  {p}" for p in self.problems))


class DeviceError(NSTError):
    """A device that was asked for but is not there, or ran out of memory."""


class WeightsError(NSTError):
    """VGG weights that cannot be found, verified or loaded."""


class OutputError(NSTError):
    """An output path that escapes the output folder or cannot be written."""
