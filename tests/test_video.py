"""Clips (docs/video.md): optical flow on a clip whose motion is known, the temporal loss, the
batched chain of frames with its outputs, and resume after the whole run is killed mid-clip.

The synthetic clip is a window sliding SHIFT px right per frame over a smooth random texture:
frame t at x shows texture(x + t·SHIFT), so frame t's pixel x was at x + SHIFT in frame t−1
(backward flow = +SHIFT) and the rightmost SHIFT columns of frame t are new.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("cv2")
av = pytest.importorskip("av")

from pipeline import imaging  # noqa: E402
from pipeline.engine import flow  # noqa: E402
from pipeline.params import DEFAULTS, params_from_mapping  # noqa: E402
from pipeline.run.cache import StyleTargetCache  # noqa: E402
from pipeline.fault_hooks import KILL_RUN_MID_CLIP  # noqa: E402
from pipeline.run.clips import FRAMES_LOG, frame_name  # noqa: E402
from pipeline.run.jobs import make_job  # noqa: E402
from pipeline.run.worker import JobRunner  # noqa: E402
from pipeline.video import Clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIFT = 3


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) smooth random colours: enough texture everywhere for flow to lock on."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 2, w // 2, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def sliding(n: int, size: int, shift: int = SHIFT) -> torch.Tensor:
    """(n, 3, size, size): a window sliding `shift` px right per frame over the texture."""
    big = texture(size, size + shift * n + 4)
    return torch.cat([big[..., :, t * shift:t * shift + size] for t in range(n)])


def write_frames(folder: Path, frames: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(len(frames)):
        imaging.save_image(frames[t:t + 1], folder / f"walk_{t + 1:04d}.png")
    return folder


def write_style(path: Path) -> Path:
    g = torch.Generator().manual_seed(7)
    blocks = F.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(48, 48), mode="nearest")
    imaging.save_image(blocks, path)
    return path


# --------------------------------------------------------------------------- flow (pure)

def test_flow_matches_the_known_shift_and_warping_reproduces_the_next_frame():
    frames = sliding(4, 48)
    forward, backward = flow.clip_flows(frames)
    interior = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    dx, dy = backward[:, 0:1][interior], backward[:, 1:2][interior]
    assert (dx - SHIFT).abs().mean() < 0.1 and (dx - SHIFT).abs().max() < 0.5
    assert dy.abs().mean() < 0.1
    assert (forward[:, 0:1][interior] + SHIFT).abs().mean() < 0.1
    warped = flow.warp(frames[:-1], backward)                   # frame t-1 pulled onto frame t
    seen = (slice(None), slice(None), slice(2, -2), slice(2, -SHIFT - 2))
    assert (warped - frames[1:])[seen].abs().mean() < 0.01
    assert (frames[:-1] - frames[1:])[seen].abs().mean() > 0.05  # the frames do differ


def test_reliability_mask_marks_the_revealed_strip():
    frames = sliding(3, 48)
    forward, backward = flow.clip_flows(frames)
    mask = flow.reliability(forward, backward)                   # (2, 1, 48, 48)
    assert mask.shape == (2, 1, 48, 48)
    assert mask[..., 2:-2, -SHIFT:].sum() == 0                   # new content: no previous frame
    assert mask[..., 4:-4, 4:-SHIFT - 4].mean() > 0.98           # the rest is reliable
    e = flow.temporal_error(frames[1:], frames[:-1], backward, mask)
    assert e.shape == (2,) and float(e.max()) < 1e-3             # the content itself does not flicker


def test_flow_and_the_temporal_term_name_every_device(feats):
    """Under the device-placement mode (tests/test_device_placement.py) flow, masks, warping and a
    batch mixing a job with a temporal term and one without create no tensor on the default device."""
    from pipeline.engine.objective import style_grams
    from pipeline.engine.optimize import JobInput, Precision, stylize_batch
    from test_device_placement import strict_devices

    frames, style = sliding(3, 32), texture(36, 36, seed=5)
    p = params_from_mapping({"size": 32, "steps": 3})
    with strict_devices():
        forward, backward = flow.clip_flows(frames)
        mask = flow.reliability(forward, backward)
        start = flow.warm_start(frames[:1], frames[1:2], backward[:1], mask[:1])
        error = flow.temporal_error(frames[1:2], frames[:1], backward[:1], mask[:1])

        def targets(side: int):
            return style_grams(feats, style, p.style_layers)

        out = stylize_batch(feats, [
            JobInput(frames[1:2], targets, p, start, temporal=(flow.warp(frames[:1], backward[:1]), mask[:1])),
            JobInput(frames[2:3], targets, p)], Precision())
    assert mask.device.type == start.device.type == error.device.type == "cpu"
    assert all(not isinstance(r, Exception) for r in out), out
    assert out[0].losses["temporal"] > 0 and out[1].losses["temporal"] == 0   # a zero mask for the second


# --------------------------------------------------------------------------- the chain in a batch

def group(runner: JobRunner, jobs: list, root: Path) -> dict[str, object]:
    """Run jobs as an executor's worker does; job_id -> its record (a dict) and the events seen."""
    events: list[tuple] = []
    runner.run_group(jobs, root, events.append)
    return {"records": {e[1]: e[2].as_dict() for e in events if e[0] == "record"},
            "kinds": [(e[0], e[1]) for e in events]}


def _run(tmp: Path, weights: list[float], frames: int = 3, size: int = 32, steps: int = 12):
    folder = write_frames(tmp / "clips" / "walk", sliding(frames, size))
    style = write_style(tmp / "style.png")
    runner = JobRunner(torch.device("cpu"), StyleTargetCache(tmp / "cache"), batch_size=len(weights))
    jobs = [make_job(folder, [(style, 1.0)], params_from_mapping({"size": size, "steps": steps, "temporal_weight": w}),
                     clip=Clip("frames", str(folder))) for w in weights]
    out = group(runner, jobs, tmp / "out")
    records = {job.params.temporal_weight: out["records"][job.job_id] for job in jobs}
    for job in jobs:   # exactly one started and one record per job
        assert [k for k, j in out["kinds"] if j == job.job_id and k != "progress"] == ["started", "record"]
    return jobs, records


def test_temporal_loss_cuts_temporal_error_at_equal_evaluations(tmp_path):
    default = DEFAULTS.temporal_weight
    jobs, records = _run(tmp_path, [0.0, default])
    for r in records.values():
        assert r["status"] == "done", r["error"]
        assert r["clip"]["frame_count"] == 3 and r["batch_size"] == 2
        assert r["steps"] == 3 * 12                                # equal evaluations
    independent, coherent = records[0.0], records[default]
    # The clip's flows are computed once and cached; the second job of the clip reads them.
    assert sorted(r["clip"]["flow_cache_hit"] for r in records.values()) == [False, True]
    assert independent["temporal_error"] >= 3 * coherent["temporal_error"]
    for a, b in zip(independent["clip"]["frames"], coherent["clip"]["frames"]):
        # Style is kept: no frame's style loss more than 10 % above its independent twin's.
        assert b["loss_style"] <= 1.10 * a["loss_style"]
    # The outputs: frames, frames.json, an mp4 with every frame (the executor writes the sidecar).
    for job in jobs:
        video = tmp_path / "out" / job.output
        assert video.parent.name == job.job_id and records[job.params.temporal_weight]["output"] == job.output
        assert sorted(p.name for p in video.parent.glob("frame_*.png")) == [frame_name(i) for i in range(3)]
        assert json.loads((video.parent / FRAMES_LOG).read_text())["frames"] == records[job.params.temporal_weight]["clip"]["frames"]
        with av.open(str(video)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 3


def test_photo_job_ids_ignore_temporal_weight_and_clip_ids_follow_the_selection(tmp_path):
    photo = tmp_path / "a.png"
    imaging.save_image(texture(16, 16), photo)
    style = write_style(tmp_path / "s.png")
    p = params_from_mapping({"size": 32})
    assert make_job(photo, [(style, 1.0)], p).job_id == make_job(photo, [(style, 1.0)], p.replace(temporal_weight=5.0)).job_id
    folder = write_frames(tmp_path / "f", sliding(3, 16))
    every = make_job(folder, [(style, 1.0)], p, clip=Clip("frames", str(folder)))
    second = make_job(folder, [(style, 1.0)], p, clip=Clip("frames", str(folder), frame_step=2))
    assert every.job_id != second.job_id
    assert every.output == f"f/s/{every.job_id}/{every.job_id}.mp4" and every.sidecar.endswith(f"{every.job_id}.json")


def test_flow_cache_recomputes_a_corrupt_entry_and_never_trusts_it(tmp_path):
    from safetensors.torch import load_file

    from pipeline.run.flow_cache import FlowCache, flow_key

    frames = sliding(3, 32)
    forward, backward = flow.clip_flows(frames)
    calls = []

    def compute(k):
        calls.append(k)
        return forward[k:k + 1], backward[k:k + 1]

    cache, digest, shape = FlowCache(tmp_path), flow_key("abc", {"kind": "frames"}, (32, 32), 3), (2, 2, 32, 32)
    first, hit = cache.get_or_compute(digest, shape, compute)
    assert not hit and calls == [0, 1]
    pair = first.pair(1)
    assert pair[0].dtype == torch.float16 and tuple(pair[1].shape) == (1, 2, 32, 32)
    assert torch.equal(pair[1], backward[1:2].half())
    stored = load_file(str(cache.path_for(digest)))       # a plain safetensors file
    assert torch.equal(stored["forward"], forward.half()) and torch.equal(stored["backward"], backward.half())
    again, hit = cache.get_or_compute(digest, shape, compute)
    assert hit and calls == [0, 1] and torch.equal(again.pair(0)[1], first.pair(0)[1])
    first.close(), again.close()
    path = cache.path_for(digest)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF                                    # one flipped byte in the flow values
    path.write_bytes(bytes(data))
    fixed, hit = cache.get_or_compute(digest, shape, compute)
    assert not hit and calls == [0, 1, 0, 1] and cache.stats["corrupt"] == 1
    assert torch.equal(fixed.pair(1)[1], backward[1:2].half())
    assert not list(tmp_path.rglob("*.tmp"))


# --------------------------------------------------------------------------- kill and resume

MANIFEST = """version: 1
output: out
content:
  - {frames: clips/walk/}
style: [style.png]
params: {size: 32, steps: 4}
devices: cpu
workers_per_device: 1
"""


def _cli(tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(tmp / "m.yaml"),
                           "--cache-dir", str(tmp / "cache")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)   # the fault hook kills this process group only


@pytest.mark.slow
def test_a_run_killed_mid_clip_resumes_at_the_first_unfinished_frame(tmp_path):
    write_frames(tmp_path / "clips" / "walk", sliding(5, 32))
    write_style(tmp_path / "style.png")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    marker = tmp_path / "killed"
    first = _cli(tmp_path, {**env, KILL_RUN_MID_CLIP: str(marker)})
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert marker.exists()
    [folder] = [p for p in (tmp_path / "out" / "walk" / "style").iterdir() if p.is_dir()]
    done = json.loads((folder / FRAMES_LOG).read_text())["frames"]
    assert [r["frame"] for r in done] == [1, 2]                 # killed right after frame 2
    assert not (folder / frame_name(2)).exists() and not (folder / f"{folder.name}.json").exists()
    kept = {name: (folder / name).stat().st_mtime_ns for name in (frame_name(0), frame_name(1))}

    second = _cli(tmp_path, env)
    assert second.returncode == 0, second.stderr[-2000:]
    sidecar = json.loads((folder / f"{folder.name}.json").read_text())
    frames = sidecar["clip"]["frames"]
    assert sidecar["status"] == "done" and [r["frame"] for r in frames] == [1, 2, 3, 4, 5]
    assert frames[:2] == done                                   # the finished frames were not redone
    assert {name: (folder / name).stat().st_mtime_ns for name in kept} == kept
    assert sidecar["temporal_error"] is not None and sidecar["steps"] == 5 * 4
    # the loss history of the frames this run stylized, end to end (3, 4 and 5; 4 steps each)
    history = sidecar["loss_history"]
    assert history["frame"] == [3] * 4 + [4] * 4 + [5] * 4 and history["step"] == list(range(1, 13))
    assert len(history["temporal"]) == 12 and all(v is not None for v in history["temporal"])
    page = (tmp_path / "out" / "index.html").read_text()
    assert f'<video class="clip"' in page and f"{folder.name}.mp4" in page


# --------------------------------------------------------------------------- bad input

def _manifest(tmp: Path, entry: str) -> Path:
    write_style(tmp / "style.png")
    path = tmp / "m.yaml"
    path.write_text(MANIFEST.replace("{frames: clips/walk/}", entry))
    return path


@pytest.mark.parametrize("setup, entry, message", [
    ("gap", "{frames: clips/walk/}", "has a gap: frame 3 is missing after walk_0002.png"),
    ("one", "{frames: clips/walk/}", "keeps 1 frame(s) with frame_step 1; a clip needs at least 2"),
    ("none", "{video: clips/none.mp4}", "video not found: clips/none.mp4"),
    ("gap", "{frames: clips/walk/, start: 1}", 'unknown key'),
    ("gap", "{video: clips/walk/}", "is a folder; name a video file"),
])
def test_bad_clip_entries_are_one_line_manifest_errors(tmp_path, setup, entry, message):
    from pipeline.errors import ManifestError
    from pipeline.manifest.schema import load_manifest

    folder = write_frames(tmp_path / "clips" / "walk", sliding(4 if setup == "gap" else 1, 16))
    if setup == "gap":
        (folder / "walk_0003.png").unlink()
    with pytest.raises(ManifestError) as err:
        load_manifest(_manifest(tmp_path, entry))
    assert message in str(err.value) and "Traceback" not in str(err.value)


def test_without_the_video_extra_a_clip_entry_says_how_to_install_it(tmp_path, monkeypatch):
    from pipeline.errors import ManifestError
    from pipeline.manifest import clips
    from pipeline.manifest.schema import load_manifest

    write_frames(tmp_path / "clips" / "walk", sliding(2, 16))
    monkeypatch.setattr(clips, "missing_extra", lambda: "clips need PyAV and OpenCV, which are not installed: "
                                                        "pip install 'nst-batch[video]'")
    with pytest.raises(ManifestError, match=r"pip install 'nst-batch\[video\]'"):
        load_manifest(_manifest(tmp_path, "{frames: clips/walk/}"))


def test_unreadable_video_and_mixed_sizes_fail_their_jobs_with_one_line(tmp_path):
    style = write_style(tmp_path / "style.png")
    (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    mixed = write_frames(tmp_path / "mixed", sliding(2, 32))
    imaging.save_image(texture(16, 24), mixed / "walk_0003.png")
    runner = JobRunner(torch.device("cpu"), StyleTargetCache(tmp_path / "cache"))
    p = params_from_mapping({"size": 32, "steps": 2})
    jobs = [make_job(clip.path, [(style, 1.0)], p, clip=clip)
            for clip in (Clip("video", str(tmp_path / "bad.mp4")), Clip("frames", str(mixed)))]
    records = group(runner, jobs, tmp_path / "out")["records"]
    bad_video, mixed_sizes = (records[job.job_id] for job in jobs)
    assert bad_video["status"] == mixed_sizes["status"] == "failed"
    assert bad_video["error"].startswith(f"cannot decode video {tmp_path / 'bad.mp4'}")
    assert "mixes frame sizes (24×16, 32×32)" in mixed_sizes["error"]


def test_video_selection_by_time_step_and_count(tmp_path):
    from pipeline.video import read_frames, write_mp4

    frames = [np.full((16, 16, 3), 20 * k, np.uint8) for k in range(10)]
    write_mp4(frames, tmp_path / "c.mp4", fps=10.0)
    got, fps = read_frames(Clip("video", str(tmp_path / "c.mp4"), frame_step=2, start=0.2, end=0.9), 16)
    assert [round(f.mean() / 20) for f in got] == [2, 4, 6, 8] and fps == 5.0
    got, _ = read_frames(Clip("video", str(tmp_path / "c.mp4"), max_frames=3), 16)
    assert [round(f.mean() / 20) for f in got] == [0, 1, 2]
    from pipeline.errors import InputError

    with pytest.raises(InputError, match=r"has 1 frame\(s\) after selection \(frame_step 1, start 0.85s\); "
                                         "a clip needs at least 2"):
        read_frames(Clip("video", str(tmp_path / "c.mp4"), start=0.85), 16)


def test_clips_on_the_ray_executor_are_refused_in_one_line_before_anything_runs(tmp_path):
    write_frames(tmp_path / "clips" / "walk", sliding(2, 16))
    write_style(tmp_path / "style.png")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(tmp_path / "m.yaml"),
                           "--executor", "ray", "--cache-dir", str(tmp_path / "cache")],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: 1 clip job(s) (video/frames entries) cannot run on the Ray executor yet: run them "
        "with --executor local (the default), or as Slurm shards"]
    assert not list((tmp_path / "out").rglob("*.png"))
