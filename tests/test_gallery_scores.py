"""The gallery's scores: a line on each card, the Pareto front marked and explained, the card sort."""
from __future__ import annotations

from test_best import SCORES, scored_grid
from test_gallery import browser_or_skip, selftest
from pipeline.views.gallery import write_gallery


def test_each_card_shows_both_scores_and_the_front_is_marked_and_explained(tmp_path):
    _, records, out = scored_grid(tmp_path)
    page = write_gallery(out).read_text()
    for record, (s, c) in zip(records, SCORES):
        assert f"style {s:.4g} · content {c:.4g}" in page
        assert f'data-style_distance="{s!r}"' in page
    assert page.count('title="on the Pareto front">&#9733; front</b>') == 3
    assert page.count(' data-pareto="front"') == 3
    assert 'id="pareto-legend"' in page and "the 3 result(s) no other result shown here beats on both" in page
    assert '<select id="card-sort">' in page and '<th data-col="style_distance">' in page


def test_the_cards_sort_by_style_distance_in_the_browser(tmp_path):
    browser = browser_or_skip()
    _, records, out = scored_grid(tmp_path)
    report = selftest(browser, write_gallery(out), tmp_path)
    by_style = [r["job_id"] for _, r in sorted(zip(SCORES, records), key=lambda p: p[0][0])]
    assert report["cards_by_style"] == by_style
