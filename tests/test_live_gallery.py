"""The gallery while a run works: rewritten on a clock, showing running jobs and the ETA,
reloading itself only while the run is live; a failing write never fails the run."""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "faults"))

from faultkit import Hold, Run, make_project, wait_for  # noqa: E402
from pipeline.views.gallery import render_html  # noqa: E402
from pipeline.views.live import LiveGallery, LiveState, RunningJob  # noqa: E402


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rewrites_are_rate_limited_and_the_last_page_is_still(tmp_path):
    clock, pages = Clock(), []
    live = LiveGallery(tmp_path, 3, lambda: "ETA 5m00s", print, clock,
                       write=lambda root, live: pages.append(live), every=10)
    live.started("a", "p.png × s.png", 0, "cpu", [2, 4])
    assert len(pages) == 1 and pages[0].active and pages[0].running[0].job_id == "a"
    clock.t = 3
    live.progress("a", 3, 6, 0.5)
    assert len(pages) == 1                     # within 10 s of the last write
    clock.t = 11
    live.update()                              # the executor's tick: no event needed
    assert len(pages) == 2 and pages[1].running[0].stage == (2, 2) and pages[1].eta == "ETA 5m00s"
    live.ended("a", True)
    live.close()
    assert pages[-1].active is False and pages[-1].running == () and pages[-1].done == 1


def test_a_slow_page_is_written_less_often(tmp_path):
    clock, pages = Clock(), []

    def slow(root, live):
        pages.append(clock.t)
        clock.t += 8                           # 8 s to write: 2,000 jobs on a busy machine

    live = LiveGallery(tmp_path, 3, lambda: "ETA --", print, clock, write=slow, every=10)
    for t in range(0, 100):
        clock.t = max(clock.t, float(t))
        live.update()
    gaps = [b - a for a, b in zip(pages, pages[1:])]
    assert gaps and min(gaps) >= 24            # 3 × its cost apart, not every 10 s


def test_a_failing_write_warns_once_per_reason_and_never_raises(tmp_path):
    clock, warnings = Clock(), []

    def full(root, live):
        raise OSError(28, "No space left on device")

    live = LiveGallery(tmp_path, 2, lambda: "ETA --", warnings.append, clock, write=full, every=1)
    for t in range(5):
        clock.t = t * 2
        live.update()
    live.close()
    assert warnings == ["warning: [Errno 28] No space left on device"]


def test_the_page_reloads_only_while_live_and_shows_each_running_job():
    running = (RunningJob("abc", "p.png × s.png", 1, "cuda:1", (2, 4), step=3, total=6, loss=0.25),)
    page = render_html("out", [], {}, {}, live=LiveState(True, 10, "ETA 1h23m (~07:52)", 4, 1, 7, 12, running))
    assert '<meta http-equiv="refresh" content="10">' in page
    assert "ETA 1h23m (~07:52)" in page and "done 4 · failed 1 · remaining 7 of 12" in page
    card = re.search(r'<figure class="card running" data-running="abc">.*?</figure>', page).group(0)
    assert "worker 1 cuda:1 · stage 2/2 · step 3/6 · loss 0.25" in card
    still = render_html("out", [], {}, {}, live=LiveState(False, 10, "ETA 0s", 12, 0, 0, 12))
    assert "http-equiv=\"refresh\"" not in still and 'data-state="finished"' in still


def test_a_held_run_shows_its_running_job_then_its_result(tmp_path):
    manifest = make_project(tmp_path, contents=2, steps=3)
    hold = Hold(tmp_path / "hold")
    run = Run(tmp_path / "logs", "run", str(manifest), "--live-every", "0.2", env=hold.env())
    page_path = tmp_path / "out" / "index.html"
    try:
        job = hold.next_running(run)
        page = wait_for(lambda: page_path.is_file() and f'src=".thumbs/live/{job}.jpg' in (text := page_path.read_text())
                        and text, 120, run, "the live page to list the running job with its thumbnail")
        assert '<meta http-equiv="refresh" content="1">' in page
        # its latest iterate, written by the worker at its first evaluation
        card = re.search(rf'<figure class="card running" data-running="{job}">.*?</figure>', page).group(0)
        thumb = re.search(r'<img src="([^"?]+)', card).group(1)
        assert thumb == f".thumbs/live/{job}.jpg" and (tmp_path / "out" / thumb).is_file()
        # its first progress report is in before the hold: the ETA is measured, not "--"
        page = wait_for(lambda: re.search(r"Run running</b> · ETA \d", text := page_path.read_text()) and text,
                        60, run, "a measured ETA on the live page")
        assert re.search(r"done 0 · failed 0 · remaining 2 of 2", page)
        hold.release_all()
        assert run.wait() == 0, run.describe()
    finally:
        hold.release_all()
        if run.proc.poll() is None:
            run.kill_all()
    final = page_path.read_text()
    assert "http-equiv=\"refresh\"" not in final and 'data-running=' not in final
    assert not list((tmp_path / "out" / ".thumbs" / "live").glob("*.jpg"))   # removed as jobs end
    assert len(re.findall(r'<figure class="card done" data-job="', final)) == 2
