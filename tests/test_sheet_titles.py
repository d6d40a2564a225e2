"""Sheet titles say what is fixed; headers and captions are wrapped in full, never cut."""
from __future__ import annotations

from fake_results import finish, manifest
from pipeline.views import sheets
from pipeline.views.results import load_results
from pipeline.views.sheet_plan import fixed_title, plan_sheets
from pipeline.views.sheets import _font, make_sheets, wrap_words


def test_title_names_photo_painting_and_fixed_settings(tmp_path):
    path = manifest(tmp_path, params="{size: 32, steps: 2, tv_weight: 0.001}")
    finish(path)
    [plan] = plan_sheets(load_results(tmp_path / "out"))
    assert plan.title == "photo golden_gate · style vangogh · size=32, steps=2, tv_weight=0.001 · 4 job(s)"
    assert fixed_title(load_results(tmp_path / "out"), ("content", "style")) == \
        "size=32, steps=2, tv_weight=0.001 · 4 job(s)"


def test_wrapping_keeps_every_character_and_breaks_at_separators():
    font = _font(10)
    text = "style_weight=10, content_weight=0.5"
    lines = wrap_words(text, font, 64)
    assert len(lines) > 1 and all(font.getlength(line) <= 64 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert lines[0] in ("style_", "style_weight=") and not any(line.endswith("...") for line in lines)


def test_captions_and_headers_are_drawn_in_full_at_64_px(tmp_path, monkeypatch):
    finish(manifest(tmp_path))
    drawn: list[str] = []
    real = sheets._draw_text
    monkeypatch.setattr(sheets, "_draw_text", lambda d, xy, text, *a: (drawn.append(text), real(d, xy, text, *a)))
    make_sheets(tmp_path / "out", thumb=64)
    text = "".join(drawn).replace(" ", "")
    assert text.count("content_weight=0.5,style_weight=200") == 1     # one cell's caption, whole
    assert text.count("content_weight=1,style_weight=10") == 1
    assert "rows:content_weight" in text and "cols:style_weight" in text


def test_a_cell_label_too_long_is_cut_at_a_word_end_never_mid_word():
    from pipeline.views.sheets import _fit, _font

    font = _font(12)
    name = "woman-with-hat-matisse.jpg"
    cut = _fit(name, font, int(font.getlength("woman-with-hat")))
    assert cut.endswith("...") and name.startswith(cut[:-3])
    assert cut[:-4] in ("woman", "woman-with", "woman-with-hat") and cut[-4] == "-"
    assert _fit(name, font, 1000) == name
