"""Output names carry what varies (run/naming.py); templates; resume over old and changed names."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import make_content
from fake_results import finish, manifest
from pipeline.errors import ManifestError
from pipeline.manifest.schema import load_manifest
from pipeline.run.orchestrate import classify, prepare
from pipeline.run.index import reindex, ResultsIndex
from pipeline.views.progress import short


def test_default_names_carry_the_varying_parameters_in_grid_order(tmp_path):
    _, jobs = prepare(manifest(tmp_path))
    assert [j.output for j in jobs] == [
        "golden_gate/vangogh/style_weight=10,content_weight=0.5.png",
        "golden_gate/vangogh/style_weight=10,content_weight=1.png",
        "golden_gate/vangogh/style_weight=200,content_weight=0.5.png",
        "golden_gate/vangogh/style_weight=200,content_weight=1.png"]
    assert short(jobs[2]).endswith("golden_gate.png × vangogh.png (style_weight=200, content_weight=0.5)")


def test_nothing_varies_names_content_and_style(tmp_path):
    _, [job] = prepare(manifest(tmp_path, grid="{seed: [0]}"))
    assert job.output == "golden_gate/vangogh/golden_gate_vangogh.png" and short(job).endswith("vangogh.png")


def test_colliding_names_get_the_short_id(tmp_path):
    (tmp_path / "other").mkdir()
    make_content(tmp_path / "other" / "golden_gate.png", seed=5)
    path = manifest(tmp_path, grid="{seed: [0]}")
    path.write_text(path.read_text().replace("[golden_gate.png]", "[golden_gate.png, other/golden_gate.png]"))
    _, jobs = prepare(path)
    assert [j.output for j in jobs] == [f"golden_gate/vangogh/golden_gate_vangogh_{j.job_id[:8]}.png" for j in jobs]
    assert len({j.output for j in jobs}) == 2


def test_template_names_and_its_one_line_errors(tmp_path):
    path = manifest(tmp_path, extra="output_name: '{content}_{style}_sw{style_weight}_cw{content_weight}'\n")
    _, jobs = prepare(path)
    assert jobs[1].output == "golden_gate_vangogh_sw10_cw1.png"
    path.write_text(path.read_text().replace("_cw{content_weight}", "").replace("{style_weight}", "{style_wieght}"))
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.problems == ["output_name: unknown field {style_wieght} in '{content}_{style}_sw{style_wieght}'; "
                                  "fields: content, style, id (8 hex digits of the job id), job_id or a parameter "
                                  "(style_weight, content_weight, size, ...) (line 8)"]
    path.write_text(path.read_text().replace("{style_wieght}", "{style_weight}"))
    with pytest.raises(ManifestError) as err:
        prepare(path)
    assert err.value.problems == ["output_name: '{content}_{style}_sw{style_weight}' gives 2 jobs the name "
                                  "golden_gate_vangogh_sw10.png (they differ in content_weight); "
                                  "add the fields that differ, or {id}"]


def test_a_folder_of_old_id_named_results_resumes_as_done(tmp_path):
    path = manifest(tmp_path)
    records = finish(path)
    out = tmp_path / "out"
    for record in records:   # what nst-batch wrote before names carried parameters
        old = f"golden_gate/vangogh/{record['job_id']}.png"
        (out / record["output"]).rename(out / old)
        (out / record["output"]).with_suffix(".json").unlink()
        (out / old).with_suffix(".json").write_text(json.dumps({**record, "output": old}))
    m, jobs = prepare(path)
    assert [j.output for j in jobs] == [f"golden_gate/vangogh/{r['job_id']}.png" for r in records]
    state = classify(jobs, m.output)
    assert (len(state.done), len(state.pending)) == (4, 0)
    assert reindex(out) == 4   # old and new sidecar names both index


def test_changed_steps_makes_new_names_beside_the_old_results_never_over_them(tmp_path):
    path = manifest(tmp_path)
    old = finish(path)
    path.write_text(path.read_text().replace("steps: 2", "steps: 3"))
    m, jobs = prepare(path)
    assert [j.output for j in jobs] == [r["output"].replace(".png", f"_{j.job_id[:8]}.png") for r, j in zip(old, jobs)]
    assert len(classify(jobs, m.output).pending) == 4
    finish(path)
    for record in old:   # the earlier results are where they were, untouched
        assert json.loads((m.output / record["output"]).with_suffix(".json").read_text())["job_id"] == record["job_id"]
    _, again = prepare(path)
    assert [j.output for j in again] == [j.output for j in jobs]      # stable: resume finds them
    with ResultsIndex(m.output) as index:
        assert len(index.rows()) == 8
