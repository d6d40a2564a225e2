"""The static gallery: every job listed, escaping, cached thumbnails, and a real headless browser."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.views.gallery import render_html, write_gallery
from pipeline.views.sheets import load_results
from test_sheets import Run

NASTY = '</script><script>alert("x")</script> & <b>bold</b>'


def sample_run(tmp_path: Path) -> Run:
    """2 contents × 2 styles × 2 seeds; one failed job whose error is hostile HTML."""
    run = Run(tmp_path)
    for i, c in enumerate(("chelsea", "coffee")):
        for j, s in enumerate(("hubble", "wave")):
            for seed in (0, 1):
                # seconds fall as jobs are added, so sorting by seconds reverses the order
                run.add(c, [s], color=(100 * i, 100 * j, 100 * seed + 50), seed=seed,
                        seconds=9.0 - 0.5 * len(run.records))
    run.records[3].update(status="failed", error=NASTY)
    run.write()
    return run


def test_the_page_lists_every_job_and_escapes_what_it_shows(tmp_path):
    run = sample_run(tmp_path)
    page = write_gallery(run.root).read_text()
    for rec in run.records:
        assert f'data-job="{rec["job_id"]}"' in page
    assert page.count("<figure") == 8 and page.count('<tr data-job=') == 8
    assert NASTY not in page and "<b>bold" not in page and "alert(" in page   # shown, inert
    script = re.search(r'<script type="application/json" id="nst-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(script)["jobs"]["0000000000000003"]["status"] == "failed"
    assert 'href="chelsea/hubble/0000000000000000.png"' in page
    assert 'src=".thumbs/0000000000000000.jpg"' in page
    assert "http://" not in page and "https://" not in page


SWEEP = (7, 2, 3, 10, 1, 5)    # style_weight in job-id order, as a hash-named grid lists them


def sweep_run(tmp_path: Path) -> tuple[Run, list[str]]:
    """Two contents × one style × six style weights; and the job ids in reading order."""
    run = Run(tmp_path)
    for c in ("coffee", "chelsea"):
        for w in SWEEP:
            run.add(c, ["wave"], style_weight=float(w))
    run.write()
    by = {(r["output"].split("/")[0], json.loads(r["params"])["style_weight"]): r["job_id"] for r in run.records}
    return run, [by[c, float(w)] for c in ("chelsea", "coffee") for w in sorted(SWEEP)]


def test_a_sweep_is_listed_in_the_order_a_person_reads_it(tmp_path):
    run, expected = sweep_run(tmp_path)
    page = write_gallery(run.root).read_text()
    assert re.findall(r'<figure class="card done" data-job="(\w+)"', page) == expected
    assert re.findall(r'<tr data-job="(\w+)"', page) == expected
    captions = re.findall(r"<small>style_weight=(\d+) · done</small>", page)
    assert captions == [str(w) for w in sorted(SWEEP)] * 2 == ["1", "2", "3", "5", "7", "10"] * 2


def test_names_are_escaped_in_attributes_and_links(tmp_path):
    run = Run(tmp_path)
    run.add('a"b<c>&d', ["w#1"], color=(1, 2, 3))
    run.write()
    results = load_results(run.root)
    page = render_html("t<", results, thumbs={r.job_id: None for r in results},
                       reasons={r.job_id: "missing" for r in results})
    assert 'a"b<c>' not in page and "a&quot;b&lt;c&gt;&amp;d" in page and "<title>t&lt; - nst-batch" in page
    page = write_gallery(run.root).read_text()
    assert 'href="a%22b%3Cc%3E%26d/w%231/0000000000000000.png"' in page


def test_thumbnails_are_made_once_and_again_only_when_the_image_is_newer(tmp_path):
    run = sample_run(tmp_path)
    write_gallery(run.root)
    thumbs = sorted((run.root / ".thumbs").iterdir())
    assert [t.name for t in thumbs] == [f"{r['job_id']}.jpg" for r in run.records if r["status"] == "done"]
    first = thumbs[0].stat().st_mtime_ns
    os.utime(thumbs[1], ns=(1, 1))                         # older than its image: remade
    write_gallery(run.root)
    assert thumbs[0].stat().st_mtime_ns == first
    assert thumbs[1].stat().st_mtime_ns > 1


def test_gallery_command_and_missing_index(tmp_path, capsys):
    run = sample_run(tmp_path)
    main(["gallery", str(run.root)])
    assert capsys.readouterr().out.strip() == str(run.root / "index.html")
    with pytest.raises(InputError, match=r"^no results index in .*; run `nst-batch run MANIFEST` first"):
        write_gallery(tmp_path / "inputs")


# ---------------------------------------------------------------------------- in a browser

def find_browser() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def selftest(browser: str, page: Path, tmp_path: Path) -> dict:
    """Load `page?selftest=1` in headless Chromium and return what the page wrote into the DOM."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=3000",
           "--dump-dom", page.resolve().as_uri() + "?selftest=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    found = re.search(r'<pre id="selftest">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no self-test output (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def browser_or_skip() -> str:
    """Chromium's path; without one a skip, or under CI (env CI set) a failure, so CI cannot
    go green without running the browser test."""
    path = find_browser()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium (/usr/bin/chromium) although CI is set: .ci/run installs Debian's "
                        "chromium package; the gallery's browser test must run in CI")
        pytest.skip("no Chromium on this machine (/usr/bin/chromium); .ci/install-browser installs "
                    "Debian's chromium package where apt-get can")
    return path


@pytest.fixture
def browser() -> str:
    return browser_or_skip()


def test_the_page_works_in_headless_chromium_without_the_network(tmp_path, browser):
    run = sample_run(tmp_path)
    report = selftest(browser, write_gallery(run.root), tmp_path)
    done = [r["job_id"] for r in run.records if r["status"] == "done"]
    assert [i["src"] for i in report["images"]] == [f".thumbs/{j}.jpg" for j in done]
    assert all(i["width"] == 32 for i in report["images"])              # decoded: naturalWidth > 0
    assert report["visible_before"] == 8
    assert report["filter"] == {"key": "content", "value": "chelsea"} and report["visible_after"] == 4
    assert report["sorted_by_seconds"] == [r["job_id"] for r in reversed(run.records)]
    assert report["resources"] == [] or all(u.startswith("file:") for u in report["resources"])
    assert report["csp_violations"] == []


def test_the_self_test_would_see_a_network_request(tmp_path, browser):
    """Guards the check above: an image from the network shows up (and is blocked by the CSP)."""
    run = sample_run(tmp_path)
    page = write_gallery(run.root)
    leaky = page.with_name("leaky.html")
    leaky.write_text(page.read_text().replace('<div id="grid">', '<div id="grid"><img src="http://192.0.2.1/x.png">'))
    report = selftest(browser, leaky, tmp_path)
    assert "http://192.0.2.1/x.png" in report["resources"]
    assert report["csp_violations"] == ["http://192.0.2.1/x.png"]


def test_a_sweep_reads_in_order_in_the_browser(tmp_path, browser):
    run, expected = sweep_run(tmp_path)
    report = selftest(browser, write_gallery(run.root), tmp_path)
    assert report["cards"] == expected and report["rows"] == expected


def test_cards_come_in_pages_and_a_filter_selects_across_them(tmp_path, browser, monkeypatch):
    """Pages of PAGE_SIZE cards (3 here, 200 in use): the first page shows 3 of 8; a filter
    matches 4 cards on pages 1 and 2, and the pager then pages those 4 (3 + 1)."""
    import pipeline.views.gallery as gallery

    monkeypatch.setattr(gallery, "PAGE_SIZE", 3)
    run = sample_run(tmp_path)
    page = write_gallery(run.root)
    assert len(re.findall(r'<figure [^>]*" hidden>', page.read_text())) == 5   # from the first layout on
    report = selftest(browser, page, tmp_path)
    assert report["pages"] == 3 and report["on_page"] == 3 and report["visible_before"] == 8
    chelsea = [j for j in report["cards"] if j in {r["job_id"] for r in run.records if "chelsea" in r["content"]}]
    assert report["filter"] == {"key": "content", "value": "chelsea"}
    assert report["visible_after"] == 4 and report["pages_after"] == 2
    assert report["last_page_cards"] == chelsea[3:]


def test_the_live_page_and_the_scatter_plot_in_the_browser(tmp_path, browser):
    """Mid-run: the running job with its latest iterate and the ETA, a page that reloads itself,
    and the style-vs-content plot with one linked, titled point per finished job."""
    from PIL import Image

    from pipeline.views.live import LiveState, RunningJob, live_thumb

    run = sample_run(tmp_path)
    for i, r in enumerate(run.records):
        r.update(loss_content=1.0 + i, loss_style=10.0 / (1 + i))
    (run.root / "index.sqlite").unlink()
    run.write()
    thumb = run.root / live_thumb("feedbeef")
    thumb.parent.mkdir(parents=True)
    Image.new("RGB", (32, 24), (10, 200, 10)).save(thumb)
    running = (RunningJob("feedbeef", "chelsea.png × wave.png", 0, "cpu", (4, 4), step=6, total=8, loss=0.5),)
    page = write_gallery(run.root, live=LiveState(True, 10, "ETA 2m00s (~07:52)", 7, 1, 2, 10, running))
    report = selftest(browser, page, tmp_path)
    assert report["refresh"] == "10" and report["live_running"] == ["feedbeef"]
    assert "ETA 2m00s (~07:52)" in report["live_head"] and "remaining 2 of 10" in report["live_head"]
    live_image = [i for i in report["images"] if i["src"].startswith(".thumbs/live/")]
    assert len(live_image) == 1 and live_image[0]["width"] == 32      # the thumbnail decoded
    done = [r for r in run.records if r["status"] == "done"]
    assert len(report["scatter"]) == len(done) == 7
    assert all(p["target"] for p in report["scatter"])                # each point links to its card
    assert {p["href"] for p in report["scatter"]} == {f"#job-{r['job_id']}" for r in done}
    assert all("×" in p["title"] for p in report["scatter"])          # hover names the job
    assert report["csp_violations"] == []
    still = selftest(browser, write_gallery(run.root), tmp_path)     # the run ended
    assert still["refresh"] is None and still["live_running"] == []
