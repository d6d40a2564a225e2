"""Photos with regions in a manifest: both forms, named styles, grids over region keys, job ids
(unchanged without regions, changed by a mask's bytes), and every bad input as one line."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import make_content, make_style
from pipeline.errors import ManifestError
from pipeline.manifest.schema import expand, load_manifest, resolved_yaml
from pipeline.params import DEFAULTS
from pipeline.run.jobs import job_id_for, make_job
from pipeline.run.region_checks import region_problems

HINT = "paths are relative to the manifest"


def _mask(path: Path, size=(48, 40), box=None, value=255) -> Path:
    img = Image.new("L", size, 0)
    img.paste(value, box or (0, 0, size[0], size[1] // 2))
    img.save(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for folder in ("photos", "styles", "masks"):
        (tmp_path / folder).mkdir()
    make_content(tmp_path / "photos" / "street.png")           # 48 × 40
    make_style(tmp_path / "styles" / "a.png", seed=1)
    make_style(tmp_path / "styles" / "b.png", seed=2)
    _mask(tmp_path / "masks" / "sky.png")
    _mask(tmp_path / "masks" / "ground.png", box=(0, 20, 48, 40))
    labels = Image.new("RGB", (48, 40), (0, 0, 255))
    labels.paste((0, 255, 0), (0, 20, 48, 40))
    labels.save(tmp_path / "masks" / "labels.png")
    return tmp_path


def write(root: Path, text: str) -> Path:
    (root / "m.yaml").write_text(text)
    return root / "m.yaml"


HEAD = "version: 1\noutput: out\n"
MASKS = HEAD + """content:
  - image: photos/street.png
    regions:
      sky: {mask: masks/sky.png, style: styles/a.png}
      ground: {mask: masks/ground.png, style: [styles/a.png, {image: styles/b.png, mask: masks/sky.png}], blend: [3, 1]}
"""


def problems(root: Path, text: str) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_manifest(write(root, text))
    return err.value.problems


def test_mask_form_makes_one_job_with_its_regions(project):
    jobs = expand(load_manifest(write(project, MASKS)))
    assert len(jobs) == 1
    job = jobs[0]
    sky, ground = job.regions
    assert (sky.name, sky.mask, sky.style_weight, sky.content_weight) == \
        ("sky", str(project / "masks/sky.png"), 1.0, None)
    assert [(Path(s.path).name, s.weight, s.mask) for s in ground.styles] == \
        [("a.png", 3.0, None), ("b.png", 1.0, str(project / "masks/sky.png"))]
    assert [Path(s.path).name for s in job.styles] == ["a.png", "a.png", "b.png"]   # every region's styles
    assert job.output == "street/sky-a+ground-a,b/street_sky-a+ground-a,b.png"
    assert "regions:" in resolved_yaml(load_manifest(write(project, MASKS)), jobs)


def test_label_form_named_style_and_none(project):
    text = HEAD + """style:
  - {name: wave, images: [styles/b.png]}
content:
  - image: photos/street.png
    labels: masks/labels.png
    regions:
      sky: {colour: "#0000ff", style: wave, style_weight: 2}
      ground: {colour: [0, 255, 0], style: none, content_weight: 3}
"""
    manifest = load_manifest(write(project, text))
    jobs = expand(manifest)
    assert len(jobs) == 1   # a photo with regions is not paired with the style list
    sky, ground = jobs[0].regions
    assert (sky.labels, sky.colour, sky.mask, sky.style_weight) == (str(project / "masks/labels.png"), (0, 0, 255), None, 2.0)
    assert [Path(s.path).name for s in sky.styles] == ["b.png"]
    assert (ground.styles, ground.colour, ground.content_weight) == ((), (0, 255, 0), 3.0)


def test_grid_over_region_styles_and_weights(project):
    text = MASKS + "grid:\n  regions.sky.style: [styles/a.png, styles/b.png, none]\n  regions.sky.style_weight: [0.5, 2]\n" \
                   "  steps: [3, 4]\n"
    jobs = expand(load_manifest(write(project, text)))
    assert len(jobs) == 12 and len({j.job_id for j in jobs}) == 12 and len({j.output for j in jobs}) == 12
    first = jobs[0]
    assert first.variant == (("regions.sky.style", "a"), ("regions.sky.style_weight", "0.5"), ("steps", "3"))
    assert first.output == "street/sky-a+ground-a,b/sky.style=a,sky.style_weight=0.5,steps=3.png"
    assert {j.regions[0].styles and Path(j.regions[0].styles[0].path).name for j in jobs} == {"a.png", "b.png", ()}


def test_region_grid_leaves_plain_jobs_alone(project):
    text = MASKS + "style: [styles/b.png]\ncontent_extra: 1\n"
    text = text.replace("content:\n", "content:\n  - photos/street.png\n").replace("content_extra: 1\n", "")
    text += "grid:\n  regions.sky.style_weight: [1, 2, 4]\n"
    jobs = expand(load_manifest(write(project, text)))
    plain = [j for j in jobs if not j.regions]
    assert len(plain) == 1 and len(jobs) == 4 and plain[0].variant == ()


def test_ids_of_jobs_without_regions_are_unchanged_and_masks_change_ids(project):
    content, style = str(project / "photos/street.png"), str(project / "styles/a.png")
    job = make_job(content, [(style, 1.0)], DEFAULTS)
    # the id as main computed it before regions existed: hash of the same spec, no regions key
    import hashlib, json
    from pipeline.engine.weights import weights_id
    from pipeline.run.jobs import ALGORITHM_VERSION, content_sha256
    values = DEFAULTS.to_dict()
    for key in ("temporal_weight", "dpi"):
        del values[key]
    del values["bit_depth"], values["style_loss"], values["average"]   # at their defaults: not hashed
    spec = {"algorithm": ALGORITHM_VERSION, "content": content_sha256(content),
            "styles": [[content_sha256(style), 1.0]], "params": {**values, "init": "content", "weights": weights_id("original")}}
    old = hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert job.job_id == old == job_id_for(content, job.styles, DEFAULTS)
    before = expand(load_manifest(write(project, MASKS)))[0].job_id
    assert before != job.job_id
    _mask(project / "masks" / "sky.png", box=(0, 0, 48, 10))     # other bytes, same name
    after = expand(load_manifest(write(project, MASKS)))[0].job_id
    assert after != before
    renamed = MASKS.replace("masks/ground.png", "masks/ground2.png")
    (project / "masks" / "ground.png").rename(project / "masks" / "ground2.png")
    assert expand(load_manifest(write(project, renamed)))[0].job_id == after   # a path is not an identity


@pytest.mark.parametrize("region, expected", [
    ("{mask: masks/nope.png, style: styles/a.png}",
     f"content[0].regions.sky.mask: mask image not found: masks/nope.png (line 6; {HINT})"),
    ("{mask: masks/sky.png, style: starry}",
     "content[0].regions.sky.style: unknown style starry: not an image file and no style entry is named so "
     "(named styles: none have a name); give the file, or name a style entry {name: starry, images: [...]} (line 6)"),
    ("{mask: masks/sky.png, style: styles/a.png, wieght: 1}",
     'content[0].regions.sky.wieght: unknown key; expected one of mask, colour, style, blend, style_weight, content_weight (line 6)'),
    ("{mask: masks/sky.png, style: [styles/a.png, styles/b.png], blend: [1, 2, 3]}",
     "content[0].regions.sky.blend: has 3 weight(s) for 2 image(s); give one weight per image (line 6)"),
    ("{mask: masks/sky.png, colour: '#0000ff', style: none}",
     "content[0].regions.sky.colour: only used with labels: (a label map); add labels: masks/map.png to this photo, "
     "or give this region a mask: (line 6)"),
    ("{mask: masks/sky.png, style: none, blend: [1]}",
     "content[0].regions.sky.blend: not used with style: none (no style to blend) (line 6)"),
    ("{mask: masks/sky.png, style: styles/a.png, style_weight: -1}",
     "content[0].regions.sky.style_weight: expected a number ≥ 0, got -1 (line 6)"),
    ("{style: styles/a.png}",
     "content[0].regions.sky: missing mask: name the region's mask image (grey levels are weights), e.g. mask: masks/sky.png (line 6)"),
])
def test_bad_region_is_one_line(project, region, expected):
    text = HEAD + f"content:\n  - image: photos/street.png\n    regions:\n      sky: {region}\n"
    assert problems(project, text) == [expected]


def test_label_form_mixed_wrongly_and_folders_refused(project):
    text = HEAD + """content:
  - image: photos/street.png
    labels: masks/labels.png
    regions:
      sky: {mask: masks/sky.png, style: none}
      ground: {colour: nope, style: none}
  - image: photos
    regions: {sky: {mask: masks/sky.png, style: none}}
"""
    assert problems(project, text) == [
        'content[0].regions.sky.mask: not used with labels: (one label map for every region); give this region\'s '
        'colour: "#rrggbb" instead, or drop labels: and give every region a mask (line 7)',
        'content[0].regions.sky: missing colour: with labels: each region names its colour in the label map, '
        'e.g. colour: "#0000ff" (line 7)',
        'content[0].regions.ground.colour: expected "#rrggbb" or [r, g, b] (each 0–255), got "nope" (line 8)',
        "content[1].image: photos is a folder or glob; regions belong to one photo (their masks are drawn on it): "
        "list each photo with its own regions (line 9)",
    ]


def test_bad_region_grid_keys(project):
    text = MASKS + "grid:\n  regions.tree.style: [styles/a.png]\n  regions.sky.colour: [1]\n" \
                   "  regions.ground.style: [styles/a.png]\n"
    assert problems(project, text) == [
        'grid."regions.tree.style": no photo has a region named tree (regions: sky, ground) (line 9)',
        'grid."regions.sky.colour": a region grid key is regions.NAME.FIELD, FIELD one of style, blend, '
        'style_weight, content_weight; got regions.sky.colour (line 10)',
    ]
    text = MASKS + "grid:\n  regions.ground.style: [styles/a.png]\n"
    assert problems(project, text) == [
        "grid: with regions.ground.style=a: region ground's blend has 2 weight(s) for 1 style image(s); "
        "give one weight per image (line 8)"]


def test_mask_pixels_checked_at_validate_with_the_line(project):
    _mask(project / "masks" / "tall.png", size=(20, 40))
    _mask(project / "masks" / "empty.png", value=0)
    _mask(project / "masks" / "small.png", size=(24, 20))   # same aspect, other size: fine
    text = HEAD + """content:
  - image: photos/street.png
    regions:
      sky: {mask: masks/tall.png, style: styles/a.png}
      ground: {mask: masks/empty.png, style: none}
      small: {mask: masks/small.png, style: styles/b.png}
"""
    failing, ignored = region_problems(load_manifest(write(project, text)))
    assert failing == [f"m.yaml: content[0].regions.sky.mask: mask {project / 'masks/tall.png'} is 20 × 40 px, "
                       "aspect 0.500, but its image is 48 × 40 px, aspect 1.200; draw the mask on the same frame "
                       "(same aspect ratio); the photo's jobs will fail (line 6)"]
    assert ignored == [f"m.yaml: content[0].regions.ground.mask: mask {project / 'masks/empty.png'} is empty "
                       "(covers nothing): region ground is ignored; paint the region or remove it (line 7)"]


def test_stray_label_colour_is_one_line(project):
    labels = Image.new("RGB", (48, 40), (0, 0, 255))
    labels.paste((255, 0, 0), (0, 0, 4, 4))
    labels.save(project / "masks" / "labels.png")
    text = HEAD + """content:
  - image: photos/street.png
    labels: masks/labels.png
    regions:
      sky: {colour: "#0000ff", style: styles/a.png}
"""
    failing, _ = region_problems(load_manifest(write(project, text)))
    assert len(failing) == 1 and "colour #ff0000" in failing[0] and "is not in the legend (sky: #0000ff)" in failing[0]
    assert failing[0].startswith("m.yaml: content[0].regions.sky.colour: label map ") and failing[0].endswith("(line 7)")


def test_validate_prints_mask_warnings_and_counts_only_failing_ones(project):
    from test_fast_commands import heavy, run_cli

    _mask(project / "masks" / "tall.png", size=(20, 40))
    _mask(project / "masks" / "empty.png", value=0)
    write(project, HEAD + """content:
  - image: photos/street.png
    regions:
      sky: {mask: masks/tall.png, style: styles/a.png}
      ground: {mask: masks/empty.png, style: none}
""")
    proc, imported = run_cli("validate", "m.yaml", cwd=project)
    assert proc.returncode == 0 and heavy(imported) == []
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: m.yaml: content[0].regions.sky.mask: mask {project / 'masks/tall.png'} is 20 × 40")
    assert warnings[1] == (f"warning: m.yaml: content[0].regions.ground.mask: mask {project / 'masks/empty.png'} is empty "
                           "(covers nothing): region ground is ignored; paint the region or remove it (line 7)")
    assert "valid, 1 job(s)" in proc.stdout and "; 1 warning(s) above: those jobs would fail" in proc.stdout
