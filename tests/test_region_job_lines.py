"""Console lines and the live gallery tell region jobs apart by which style goes where."""
from __future__ import annotations

from dataclasses import replace

from pipeline.params import Params
from pipeline.run.jobs import Job, RegionSpec, StyleRef
from pipeline.views.progress import describe, short


def _job(**kw) -> Job:
    return Job(job_id="abcdef123456", content="/p/street.jpg", styles=(StyleRef("/s/a.jpg", 1.0),), params=Params(), output="o.png", **kw)


def test_region_job_line_names_each_region_and_its_style():
    regions = (RegionSpec("sky", (StyleRef("/s/starry_night.jpg", 1.0),), mask="/m/sky.png"),
               RegionSpec("building", (StyleRef("/s/a.jpg", 0.7), StyleRef("/s/b.jpg", 0.3)), mask="/m/b.png"),
               RegionSpec("person", (), mask="/m/p.png"))
    job = _job(regions=regions)
    line = describe(job)
    assert line == "street.jpg × [sky=starry_night; building=a:0.7+b:0.3; person=photo]"
    swapped = replace(job, regions=(replace(regions[0], name="building"), replace(regions[1], name="sky"), regions[2]))
    assert describe(swapped) != line
    assert line in short(job)


def test_plain_job_line_unchanged():
    assert describe(_job()) == "street.jpg × a.jpg"
