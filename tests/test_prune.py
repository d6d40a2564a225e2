"""`nst-batch prune MANIFEST`: lists, moves (--yes) or deletes (--yes --delete) what no longer belongs."""
from __future__ import annotations

import os

from fake_results import finish, manifest
from pipeline.cli import main
from pipeline.run.index import ResultsIndex
from pipeline.run.prune import prune_manifest


def changed_manifest(tmp_path):
    path = manifest(tmp_path)
    old = finish(path)
    out = tmp_path / "out"
    (out / ".thumbs").mkdir()
    for r in old:
        (out / ".thumbs" / f"{r['job_id']}.jpg").write_bytes(b"thumb")
    path.write_text(path.read_text().replace("steps: 2", "steps: 3"))
    new = finish(path)
    return path, out, old, new


def test_prune_lists_then_moves_image_sidecar_and_thumbnail_and_updates_the_index(tmp_path, capsys):
    path, out, old, new = changed_manifest(tmp_path)
    main(["prune", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [f"  {r['output']}  (done; not a job of grid.yaml)" for r in old]
    assert lines[4].startswith(f"4 result(s) in {out} no longer belong to grid.yaml; --yes moves them to")
    assert all((out / r["output"]).is_file() for r in old)                 # listing changes nothing
    main(["prune", str(path), "--yes"])
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"moved 4 result(s) (12 file(s) and folder(s)) to {out / '.pruned'}; the index no longer lists them")
    for r in old:
        for moved in (r["output"], r["output"].replace(".png", ".json"), f".thumbs/{r['job_id']}.jpg"):
            assert not os.path.lexists(out / moved) and (out / ".pruned" / moved).is_file()
    assert all((out / r["output"]).is_file() for r in new)
    with ResultsIndex(out) as index:
        assert {row["job_id"] for row in index.rows()} == {r["job_id"] for r in new}
    assert prune_manifest(path).stale == []


def test_delete_really_deletes_and_needs_yes(tmp_path, capsys):
    path, out, old, _ = changed_manifest(tmp_path)
    main(["prune", str(path), "--delete"])
    assert capsys.readouterr().out.splitlines()[-1].endswith("; add --yes to delete them")
    assert all((out / r["output"]).is_file() for r in old)
    main(["prune", str(path), "--yes", "--delete"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("deleted 4 result(s)")
    assert not any((out / r["output"]).exists() for r in old) and not (out / ".pruned").exists()


def test_a_result_behind_a_symlinked_folder_is_left_alone(tmp_path):
    path, out, old, _ = changed_manifest(tmp_path)
    outside = tmp_path / "elsewhere"
    (out / "golden_gate" / "vangogh").rename(outside)
    os.symlink(outside, out / "golden_gate" / "vangogh")
    result = prune_manifest(path, apply=True)
    # Sidecars behind the link are not read; the old rows are stale index rows whose files lie out there.
    assert len(result.stale) == 4 and all(s.sidecar is None for s in result.stale)
    assert sorted(result.skipped) == sorted(f"{s.output}: its folder is a symlink out of the output folder; left alone"
                                            for s in result.stale)
    assert all((outside / os.path.basename(r["output"])).is_file() for r in old)   # nothing moved out there
