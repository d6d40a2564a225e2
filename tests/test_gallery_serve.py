"""`nst-batch gallery --serve`: the output folder, read-only, on localhost; nothing outside it."""
from __future__ import annotations

import http.client
import os
import threading

import pytest

from pipeline.errors import InputError
from pipeline.views.serve import make_server


@pytest.fixture
def served(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<p>gallery</p>")
    (out / ".thumbs").mkdir()
    (out / ".thumbs" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", out / "link.txt")
    server = make_server(out, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def _request(address, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_serves_the_page_and_its_files_on_loopback_only(served):
    assert served[0] == "127.0.0.1"
    assert _request(served, "GET", "/") == (200, b"<p>gallery</p>")
    assert _request(served, "GET", "/.thumbs/a.jpg") == (200, b"\xff\xd8jpeg")


def test_nothing_outside_the_folder_and_no_write_route(served):
    assert _request(served, "GET", "/link.txt")[0] == 404        # a link out of the folder
    assert _request(served, "GET", "/../secret.txt")[0] == 404
    assert _request(served, "GET", "/%2e%2e/secret.txt")[0] == 404
    assert _request(served, "GET", "/.thumbs/")[0] == 404        # folders are not listed
    for method in ("POST", "PUT", "DELETE"):
        assert _request(served, method, "/index.html")[0] == 501


def test_a_folder_without_a_gallery_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no gallery in .*index.html is missing"):
        make_server(tmp_path, port=0)
