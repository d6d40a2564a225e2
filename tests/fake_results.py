"""Manifests and finished results written the way a run writes them, without running VGG."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import make_content, make_style
from pipeline.run.index import ResultsIndex
from pipeline.run.orchestrate import prepare


def manifest(root: Path, grid: str = "{style_weight: [10, 200], content_weight: [0.5, 1]}",
             params: str = "{size: 32, steps: 2}", extra: str = "") -> Path:
    make_content(root / "golden_gate.png")
    make_style(root / "vangogh.png")
    path = root / "grid.yaml"
    path.write_text("version: 1\noutput: out\ncontent: [golden_gate.png]\nstyle: [vangogh.png]\n"
                    f"params: {params}\ngrid: {grid}\ndevices: cpu\n{extra}")
    return path


def finish(path: Path, status: str = "done") -> list[dict]:
    """Write every job's image, sidecar and index row as a run does; returns the records."""
    m, jobs = prepare(path)
    records = []
    with ResultsIndex(m.output) as index:
        for job in jobs:
            record = {**job.describe(), "status": status, "steps": 2, "seconds": 0.5, "device": "cpu"}
            image = m.output / job.output
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"\x89PNG fake")
            image.with_suffix(".json").write_text(json.dumps(record))
            index.upsert(record)
            records.append(record)
    return records
