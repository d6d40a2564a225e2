"""`nst-batch gallery --serve`: the output folder over HTTP, read-only, on localhost.

For a run on a remote machine: `ssh -L 8000:localhost:8000 host`, then open
http://localhost:8000/ . The page itself needs no server (it works from `file://`); this
only saves copying the folder. GET and HEAD only (no route writes anything); paths that
leave the folder, through `..` or a symbolic link, are 404; folders are not listed; the
server binds to the loopback address unless told otherwise.
"""
from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import InputError


class _ReadOnly(SimpleHTTPRequestHandler):
    root: Path

    def send_head(self):   # noqa: ANN201 - the base class's signature
        real = Path(self.translate_path(self.path))
        try:
            real = real.resolve(strict=False)
        except (OSError, RuntimeError):
            real = self.root / "\u2205"
        if real != self.root and self.root not in real.parents:
            self.send_error(404, "outside the output folder")   # `..` or a link out of it
            return None
        return super().send_head()

    def list_directory(self, path):   # noqa: ANN001 - the base class's signature
        self.send_error(404, "folders are not listed")
        return None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")   # the live page and thumbnails change
        super().end_headers()

    def log_message(self, format: str, *args) -> None:   # noqa: A002 - the base class's name
        pass


def make_server(output_dir: Path, port: int = 8000, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    root = Path(output_dir).resolve()
    if not (root / "index.html").is_file():
        raise InputError(f"no gallery in {output_dir} (index.html is missing); run `nst-batch gallery "
                         f"{output_dir}` or start a run first")
    handler = type("Handler", (_ReadOnly,), {"root": root})
    try:
        return ThreadingHTTPServer((host, port), functools.partial(handler, directory=os.fspath(root)))
    except OSError as err:
        raise InputError(f"cannot serve on {host}:{port}: {err.strerror or err} (choose another --port)") from None
