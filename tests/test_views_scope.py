"""Views given a manifest show its jobs only; given the folder, everything, and they say which."""
from __future__ import annotations

import csv
import io

from fake_results import finish, manifest
from pipeline.cli import main
from pipeline.views.results import select_rows
from pipeline.views.sheet_plan import plan_sheets


def two_manifests(tmp_path):
    path = manifest(tmp_path)
    old = finish(path)                                      # steps 2
    path.write_text(path.read_text().replace("steps: 2", "steps: 3"))
    new = finish(path)                                      # steps 3: 4 new jobs beside the old
    return path, old, new


def test_sheet_export_and_gallery_given_the_manifest_show_its_jobs_only(tmp_path, capsys):
    path, old, new = two_manifests(tmp_path)
    out = tmp_path / "out"
    ids = {r["job_id"] for r in new}
    assert {r.job_id for r in select_rows(out, ids)} == ids and len(select_rows(out)) == 8
    [plan] = plan_sheets(select_rows(out, ids))
    assert (plan.rows_key, plan.cols_key) == ("content_weight", "style_weight")   # not steps
    main(["export", str(path)])
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert {r["job_id"] for r in rows} == ids and {r["param_steps"] for r in rows} == {"3"}
    assert captured.err == (f"{path}: 4 of its 4 job(s) have results in {out}; 4 other result(s) there are "
                            f"left out (nst-batch prune {path} lists them)\n")
    main(["export", str(out)])
    captured = capsys.readouterr()
    assert len(list(csv.DictReader(io.StringIO(captured.out)))) == 8
    assert captured.err == (f"{out}: all 8 result(s) in the folder, from any manifest "
                            "(give the manifest instead to see only its jobs)\n")
    main(["gallery", str(path)])
    page = (out / "index.html").read_text()
    assert all(r["job_id"] in page for r in new) and not any(r["job_id"] in page for r in old)


def test_status_of_a_folder_counts_everything_and_says_so(tmp_path, capsys):
    _, _, _ = two_manifests(tmp_path)
    main(["status", str(tmp_path / "out")])
    text = " ".join(capsys.readouterr().out.split())
    assert text == (f"{tmp_path / 'out'}: 8 result(s) in the folder, from any manifest "
                    "(give the manifest for its jobs only): 8 done, 0 failed")
