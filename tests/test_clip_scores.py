"""A clip's scores: its middle frame, as saved, against that content frame."""
from __future__ import annotations

from test_video import _run


def test_a_clip_is_scored_on_its_middle_frame(tmp_path):
    _, records = _run(tmp_path, [0.0])
    (record,) = records.values()
    assert record["status"] == "done", record["error"]
    assert record["style_distance"] > 0 and record["content_distance"] > 0
    assert record["scores"]["frames"] == 1 and record["scores"]["size"] == 256
    assert not any(n.startswith("scores not computed") for n in record["notes"])
