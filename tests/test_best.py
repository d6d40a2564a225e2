"""`nst-batch best` and the Pareto front on fake results (no VGG): exactly the non-dominated set."""
from __future__ import annotations

from fake_results import finish, manifest
from pipeline.cli import main
from pipeline.run.index import ResultsIndex
from pipeline.run.orchestrate import prepare
from pipeline.views.best import pareto_front
from pipeline.views.results import select_rows

# (style_distance, content_distance) per job, in the order `prepare` lists the grid's four jobs:
# the 3rd is beaten by the 1st on both; the others trade one score for the other.
SCORES = [(0.2, 0.5), (0.5, 0.1), (0.3, 0.6), (0.1, 0.9)]


def scored_grid(tmp_path, scores=SCORES):
    path = manifest(tmp_path)
    records = finish(path)
    m, _ = prepare(path)
    with ResultsIndex(m.output) as index:
        for record, pair in zip(records, scores):
            if pair is not None:
                index.upsert({**record, "style_distance": pair[0], "content_distance": pair[1]})
    return path, records, m.output


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as exit:
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_pareto_front_is_exactly_the_results_no_other_beats_on_both(tmp_path):
    _, records, out = scored_grid(tmp_path)
    front = {r.job_id for r in pareto_front(select_rows(out))}
    assert front == {records[i]["job_id"] for i in (0, 1, 3)}


def test_best_prints_the_winners_with_both_scores_and_what_varies(tmp_path, capsys):
    path, records, out = scored_grid(tmp_path)
    code, text, err = run_cli(["best", str(path), "--by", "style", "-n", "2"], capsys)
    assert code == 0
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["1", records[3]["output"]]
    assert "style_distance=0.1 content_distance=0.9" in lines[0]
    assert "style_weight=" in lines[0] and "content_weight=" in lines[0]
    assert lines[1].split()[1] == records[0]["output"]
    code, text, _ = run_cli(["best", str(out)], capsys)      # the folder: pareto by default
    assert code == 0 and [l.split()[1] for l in text.splitlines()] == [records[i]["output"] for i in (3, 0, 1)]
    code, text, _ = run_cli(["best", str(out), "--by", "content"], capsys)
    assert text.splitlines()[0].split()[1] == records[1]["output"]


def test_results_without_scores_are_skipped_with_one_line(tmp_path, capsys):
    path = manifest(tmp_path)
    finish(path)
    code, text, err = run_cli(["best", str(path)], capsys)
    assert code == 0 and text == ""
    assert "4 finished result(s) have no scores and were skipped: they predate scores" in err


def test_a_bad_by_is_one_line(tmp_path, capsys):
    path, _, _ = scored_grid(tmp_path)
    code, _, err = run_cli(["best", str(path), "--by", "loss"], capsys)
    assert code == 2 and "--by must be style, content or pareto" in err and "Traceback" not in err
