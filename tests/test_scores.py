"""Scores (engine/scores.py, run/job_scores.py): deterministic, batch-independent, in the record,
the index and the export, and meaning what they say on real values."""
from __future__ import annotations

import json

import torch

from conftest import make_content, make_style
from pipeline import imaging
from pipeline.engine import scores
from pipeline.run.cache import StyleTargetCache
from pipeline.run.jobs import make_job
from pipeline.run.job_scores import measure
from pipeline.run.worker import JobRunner
from pipeline.params import Params

CPU = torch.device("cpu")


def _images(tmp_path):
    content = imaging.read_image(make_content(tmp_path / "c.png", size=(64, 48)))
    style = imaging.read_image(make_style(tmp_path / "s.png", size=(64, 64)))
    return content, style


def test_the_content_itself_has_content_distance_0_and_a_texture_of_the_style_scores_lower(tmp_path, feats):
    content, style = _images(tmp_path)
    of_content = measure(feats, [content], [content], [(style, 1.0)])
    # The style itself (cropped to the content's shape) is a perfectly stylized image.
    of_style = measure(feats, [style[..., :48, :]], [content], [(style, 1.0)])
    assert of_content["content_distance"] == 0.0
    assert of_style["style_distance"] < 0.5 * of_content["style_distance"]
    assert of_style["content_distance"] > 0.3
    assert of_content["scores"]["projections"] == scores.PROJECTIONS
    assert set(of_content["scores"]["style_layers"]) == set(scores.STYLE_LAYERS)


def test_scores_are_the_same_every_time_and_a_blend_lies_between_its_styles(tmp_path, feats):
    content, style = _images(tmp_path)
    other = imaging.read_image(make_style(tmp_path / "t.png", size=(48, 48), seed=7)).flip(-1)
    once = measure(feats, [content], [content], [(style, 1.0)])
    again = measure(feats, [content], [content], [(style, 1.0)])
    assert once == again
    # The style image against a 50:50 blend with another style: farther than from itself alone.
    alone = measure(feats, [style], [style], [(style, 1.0)])["style_distance"]
    blend = measure(feats, [style], [style], [(style, 1.0), (other, 1.0)])["style_distance"]
    assert alone < 1e-6 < blend


def _job(tmp_path, name, style_weight):
    c = make_content(tmp_path / f"{name}.png", size=(40, 32), seed=len(name))
    s = make_style(tmp_path / "style.png")
    return make_job(c, [(s, 1.0)], Params(size=32, steps=3, style_weight=style_weight))


def test_the_worker_scores_each_job_the_same_in_a_batch_as_alone(tmp_path):
    jobs = [_job(tmp_path, "a", 100.0), _job(tmp_path, "bb", 1000.0)]
    records = {}

    def emit(event):
        if event[0] == "record":
            records[event[1]] = event[2]

    JobRunner(CPU, StyleTargetCache(tmp_path / "cache"), batch_size=2).run_group(jobs, tmp_path / "out", emit)
    net = JobRunner(CPU, StyleTargetCache(tmp_path / "cache2")).features("original", "max")
    for job in jobs:
        r = records[job.job_id]
        assert r.done and r.batch_size == 2 and r.scores["size"] == scores.EVAL_SIZE
        alone = measure(net, [imaging.read_image(tmp_path / "out" / job.output)], [imaging.read_image(job.content)],
                        [(imaging.read_image(job.styles[0].path), 1.0)])
        assert abs(r.style_distance - alone["style_distance"]) <= 1e-5 * max(1.0, alone["style_distance"])
        assert abs(r.content_distance - alone["content_distance"]) <= 1e-5 * max(1.0, alone["content_distance"])
        assert 0 < r.content_distance and 0 < r.style_distance


def test_scores_reach_the_sidecar_the_index_and_the_export_and_survive_reindex(tmp_path):
    from pipeline.run.index import ResultsIndex, reindex
    from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
    from pipeline.views.export import export

    make_content(tmp_path / "p.png")
    make_style(tmp_path / "s.png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [p.png]\nstyle: [s.png]\n"
                        "params: {size: 32, steps: 2}\ndevices: cpu\n")
    assert run_manifest(manifest, RunOptions(live=False, workers=1))["done"] == 1
    m, (job,) = prepare(manifest)
    sidecar = json.loads((m.output / job.sidecar).read_text())
    assert sidecar["style_distance"] > 0 and sidecar["content_distance"] > 0
    assert sidecar["scores"]["seed"] == scores.SEED
    for _ in range(2):
        with ResultsIndex(m.output) as index:
            row = index.get(job.job_id)
        assert (row["style_distance"], row["content_distance"]) == (sidecar["style_distance"], sidecar["content_distance"])
        reindex(m.output)
    lines = export(m.output, "jsonl").splitlines()
    exported = json.loads(lines[0])
    assert exported["style_distance"] == sidecar["style_distance"]
    assert exported["content_distance"] == sidecar["content_distance"]
    header = export(m.output, "csv").splitlines()[0].split(",")
    assert "style_distance" in header and "content_distance" in header
