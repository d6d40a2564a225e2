"""The manifest: the example of docs/manifest.md as written, pairing and grid expansion, stable job ids,
exact error lines for malformed manifests, and a fuzz test that only ManifestError escapes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_content, make_style
from pipeline.errors import ManifestError
from pipeline.manifest.expand import pairings
from pipeline.manifest.schema import MAX_JOBS, MAX_NODES, TOP_KEYS, expand, load_manifest, resolved_yaml
from pipeline.manifest.yaml_reader import Loader as _Loader
from pipeline.params import PARAM_NAMES, Params, params_from_mapping

REPO = Path(__file__).resolve().parents[1]
HINT = "paths are relative to the manifest"
LIBYAML = pytest.mark.skipif(not yaml.__with_libyaml__, reason="libyaml's wording of syntax errors")

# The example manifest of docs/manifest.md, byte for byte.
CONTRACT = """\
version: 1
output: out/grid              # output folder
content:                      # files, folders (recursive) or globs; sorted; image extensions case-insensitive
  - photos/*.jpg
style:
  - styles/vangogh.jpg
  - {images: [styles/a.jpg, styles/b.jpg], weights: [0.7, 0.3]}   # a blended style
pairing: product              # product | zip | explicit (then `pairs: [{content: .., style: ..}, ...]`)
params:                       # defaults for every job; any option of `nst-batch stylize`
  size: 512
  steps: 300
  style_weight: 1.0e3
grid:                         # every combination of these values is its own job
  style_weight: [1.0e2, 1.0e3, 1.0e4]
  size: [256, 512]
devices: auto                 # auto | cpu | [cuda:0, cuda:1]
workers_per_device: 1
"""

BASIC = "version: 1\noutput: out\ncontent: photos\nstyle: styles/vangogh.jpg\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """photos/{a,b}.jpg and styles/{vangogh,a,b}.jpg, each with different bytes."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "styles").mkdir()
    make_content(tmp_path / "photos" / "a.jpg", seed=1)
    make_content(tmp_path / "photos" / "b.jpg", seed=2)
    for seed, name in enumerate(("vangogh", "a", "b")):
        make_style(tmp_path / "styles" / f"{name}.jpg", seed=seed)
    return tmp_path


def write(root: Path, text: str | bytes, name: str = "m.yaml") -> Path:
    path = root / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def problems(root: Path, text: str | bytes) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_manifest(write(root, text))
    return err.value.problems


# --- the contract ------------------------------------------------------------------------------

def test_contract_example_works_as_written(project: Path):
    m = load_manifest(write(project, CONTRACT))
    assert m.output == project / "out" / "grid"
    assert m.base_dir == project and m.source == project / "m.yaml"
    assert m.content == (str(project / "photos" / "a.jpg"), str(project / "photos" / "b.jpg"))
    assert [s.label for s in m.styles] == ["styles/vangogh.jpg", "styles/a.jpg (0.7) + styles/b.jpg (0.3)"]
    assert m.styles[1].images == (str(project / "styles" / "a.jpg"), str(project / "styles" / "b.jpg"))
    assert m.styles[1].weights == (0.7, 0.3) and m.styles[0].weights == (1.0,)
    assert m.pairing == "product" and m.pairs == ()
    assert dict(m.params) == {"size": 512, "steps": 300, "style_weight": 1000.0}
    assert m.grid == (("style_weight", (100.0, 1000.0, 10000.0)), ("size", (256, 512)))
    assert (m.devices, m.workers_per_device, m.retries, m.timeout, m.sheet) == ("auto", 1, 2, None, None)

    jobs = expand(m)
    assert len(jobs) == 2 * 2 * 3 * 2 == 24
    assert len({j.job_id for j in jobs}) == 24
    # Content-major, then style, then the grid with its first key varying slowest.
    head = [(Path(j.content).name, j.params.style_weight, j.params.size) for j in jobs[:6]]
    assert head == [("a.jpg", 100.0, 256), ("a.jpg", 100.0, 512), ("a.jpg", 1000.0, 256),
                    ("a.jpg", 1000.0, 512), ("a.jpg", 10000.0, 256), ("a.jpg", 10000.0, 512)]
    assert jobs[6].styles[0].weight == 0.7 and jobs[6].output == "a/a+b/style_weight=100,size=256.png"
    assert jobs[0].output == "a/vangogh/style_weight=100,size=256.png"   # run/naming.py: what varies
    assert all(j.params.steps == 300 for j in jobs)


def test_resolved_yaml_records_every_job(project: Path):
    m = load_manifest(write(project, CONTRACT))
    jobs = expand(m)
    doc = yaml.safe_load(resolved_yaml(m, jobs))
    assert doc["output"] == str(project / "out" / "grid")
    assert doc["content"] == list(m.content)
    assert doc["style"][1]["weights"] == [0.7, 0.3]
    assert doc["grid"] == {"style_weight": [100.0, 1000.0, 10000.0], "size": [256, 512]}
    assert [j["job_id"] for j in doc["jobs"]] == [j.job_id for j in jobs]
    assert doc["jobs"][0]["params"]["style_layers"] == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert doc["jobs"][0]["styles"] == [{"path": str(project / "styles" / "vangogh.jpg"), "weight": 1.0}]
    assert resolved_yaml(m) == resolved_yaml(m, jobs)


@pytest.mark.parametrize("text, value", [
    ("1e3", 1000.0), ("1.0e3", 1000.0), ("1E3", 1000.0), ("-2.5e-3", -0.0025), ("+1e+2", 100.0),
    (".5", 0.5), ("1.", 1.0), ("1_000.5", 1000.5), (".inf", float("inf")), ("-.Inf", float("-inf")),
    ("1e3x", "1e3x"), ("1e", "1e"), ("e3", "e3"), ("12", 12), ("0x10", 16), ("1_000", 1000),
])
def test_floats_read_the_yaml_1_2_way(text: str, value):
    assert yaml.load(f"v: {text}", Loader=_Loader) == {"v": value}


# --- pairing and grids -------------------------------------------------------------------------

def test_product_pairs_every_content_with_every_style(project: Path):
    m = load_manifest(write(project, "version: 1\noutput: out\ncontent: [photos]\nstyle: [styles]\n"))
    assert [s.label for s in m.styles] == ["styles/a.jpg", "styles/b.jpg", "styles/vangogh.jpg"]
    assert len(expand(m)) == 2 * 3


def test_zip_pairs_in_manifest_order(project: Path):
    text = ("version: 1\noutput: out\npairing: zip\ncontent: [photos/b.jpg, photos/a.jpg]\n"
            "style: [styles/a.jpg, styles/vangogh.jpg]\n")
    m = load_manifest(write(project, text))
    assert [(Path(c).name, s.label) for c, s in pairings(m)] == [("b.jpg", "styles/a.jpg"),
                                                                  ("a.jpg", "styles/vangogh.jpg")]
    assert len(expand(m)) == 2


def test_explicit_pairs_with_a_blend_and_a_grid(project: Path):
    text = """\
version: 1
output: out
pairs:
  - {content: photos/a.jpg, style: styles/vangogh.jpg}
  - {content: photos/a.jpg, style: {images: [styles/a.jpg, styles/b.jpg]}}
  - {content: photos/b.jpg, style: styles/a.jpg}
grid:
  seed: [1, 2]
"""
    m = load_manifest(write(project, text))
    assert m.pairing == "explicit"          # implied by `pairs`
    assert m.pairs[1][1].weights == (0.5, 0.5)
    assert len(m.content) == 2 and len(m.styles) == 3
    assert len(expand(m)) == 3 * 2


def test_grid_multiplies_and_duplicates_collapse(project: Path):
    text = BASIC + "grid:\n  size: [64, 64, 96]\n  tv_weight: [0, 1.0e-3]\n"
    m = load_manifest(write(project, text))
    assert len(expand(m)) == 2 * 1 * 2 * 2     # the second size 64 repeats the first


def test_each_style_loss_takes_its_own_default_style_weight(project: Path):
    """A grid over style_loss without style_weight: each loss at its own default (gram's stays
    the paper pipeline's 50, so existing gram jobs keep their ids); a set weight applies to all."""
    text = BASIC + "grid:\n  style_loss: [gram, meancov, sliced]\n"
    weights = {j.params.style_loss: j.params.style_weight for j in expand(load_manifest(write(project, text)))}
    assert weights == {"gram": 50.0, "meancov": 5.0, "sliced": 15.0}
    assert params_from_mapping({}) == Params(style_weight=50.0)
    text = BASIC + "params:\n  style_weight: 20\ngrid:\n  style_loss: [gram, meancov, sliced]\n"
    assert {j.params.style_weight for j in expand(load_manifest(write(project, text)))} == {20.0}


def test_inputs_are_unique_in_manifest_order(project: Path):
    text = "version: 1\noutput: out\ncontent: [photos/b.jpg, photos, photos/*.jpg]\nstyle: [styles/a.jpg, styles/a.jpg]\n"
    m = load_manifest(write(project, text))
    assert [Path(c).name for c in m.content] == ["b.jpg", "a.jpg"]
    assert len(m.styles) == 1


def test_folders_are_recursive_extensions_any_case_hidden_and_outputs_skipped(project: Path):
    photos = project / "photos"
    (photos / "sub").mkdir()
    (photos / "results" / "a" / "vangogh").mkdir(parents=True)
    make_content(photos / "sub" / "c.PNG", seed=3)
    make_content(photos / "d.JPG", seed=4)
    make_content(photos / ".hidden.jpg", seed=5)
    make_content(photos / "results" / "a" / "vangogh" / "0123.png", seed=6)   # an earlier run's output
    (photos / "._a.jpg").write_bytes(b"AppleDouble")
    (photos / "notes.txt").write_text("not an image")
    style = "style: styles/a.jpg\nversion: 1\n"

    folder = load_manifest(write(project, style + "output: photos/results\ncontent: photos\n"))
    assert [Path(c).relative_to(photos).as_posix() for c in folder.content] == [
        "a.jpg", "b.jpg", "d.JPG", "sub/c.PNG"]
    globbed = load_manifest(write(project, style + "output: photos/results\ncontent: photos/**/*.jpg\n"))
    assert [Path(c).name for c in globbed.content] == ["a.jpg", "b.jpg", "d.JPG"]
    # Inputs inside the output folder are read when named below it (the demo keeps its inputs there).
    inside = load_manifest(write(project, style + "output: photos\ncontent: photos/results\n"))
    assert [Path(c).name for c in inside.content] == ["0123.png"]


def test_job_ids_survive_renames_and_follow_params(project: Path):
    path = write(project, BASIC)
    before = expand(load_manifest(path))
    (project / "photos" / "a.jpg").rename(project / "photos" / "renamed.jpg")
    after = expand(load_manifest(path))
    assert sorted(j.job_id for j in after) == sorted(j.job_id for j in before)
    assert {j.output.split("/")[0] for j in after} == {"b", "renamed"}
    changed = expand(load_manifest(write(project, BASIC + "params: {steps: 301}\n")))
    assert not {j.job_id for j in changed} & {j.job_id for j in before}


def test_params_paths_resolve_relative_to_the_manifest(project: Path):
    (project / "sub").mkdir()
    text = "version: 1\noutput: out\ncontent: ../photos/a.jpg\nstyle: ../styles\nparams: {init: ../photos/b.jpg}\n"
    m = load_manifest(write(project, text, "sub/m.yaml"))
    assert m.params["init"] == str(project / "photos" / "b.jpg")
    assert m.output == project / "sub" / "out"
    assert [s.label for s in m.styles] == ["../styles/a.jpg", "../styles/b.jpg", "../styles/vangogh.jpg"]
    assert expand(m)[0].params.init == str(project / "photos" / "b.jpg")


def test_optional_keys(project: Path):
    text = BASIC + "devices: [cuda:0, cuda:1]\nworkers_per_device: 2\nretries: 0\ntimeout: 90.5\n" \
                   "sheet: {rows: content, cols: style_weight, thumb: 128}\n"
    m = load_manifest(write(project, text))
    assert (m.devices, m.workers_per_device, m.retries, m.timeout) == (("cuda:0", "cuda:1"), 2, 0, 90.5)
    assert (m.sheet.rows, m.sheet.cols, m.sheet.thumb) == ("content", "style_weight", 128)


@pytest.mark.parametrize("name, jobs", [("folder.yaml", 3), ("grid.yaml", 3 * 2 * 3 * 2), ("blend.yaml", 3 * 3)])
def test_example_manifests_validate(project: Path, name: str, jobs: int):
    """On the sample inputs `make run` makes (pipeline/demo.py): tests/test_shipped_manifests.py."""
    from pipeline.demo import materialize

    (project / "manifests").mkdir()
    shutil.copy(REPO / "manifests" / name, project / "manifests" / name)
    shutil.copytree(REPO / "pipeline" / "demo_assets", project / "pipeline" / "demo_assets")
    materialize(project)
    m = load_manifest(project / "manifests" / name)
    assert m.output == project / "out" / name.removesuffix(".yaml")
    assert len(expand(m)) == jobs


# --- malformed manifests: every problem, exact text -----------------------------------------------

def test_contract_typo_in_grid(project: Path):
    assert problems(project, CONTRACT.replace("1.0e4]", "1e3x]")) == [
        'grid.style_weight[2]: expected a number, got "1e3x" (line 14)']


def test_missing_style_and_unmatched_content(project: Path):
    (project / "styles" / "vangogh.jpg").unlink()
    for p in (project / "photos").iterdir():
        p.unlink()
    assert problems(project, CONTRACT) == [
        f'content[0]: "photos/*.jpg" matched no image files (line 4; {HINT})',
        f"style[0]: style image not found: styles/vangogh.jpg (line 6; {HINT})",
    ]


def test_every_problem_at_once(project: Path):
    text = """\
version: 2
output: out
contnt: [photos]
content: [photos/*.png, notes.txt]
style:
  - styles/vangogh.jpg
  - {images: [styles/a.jpg, styles/b.jpg], weights: [0.7]}
  - {images: [styles/a.jpg], weights: [-1], extra: 1}
pairing: prodcut
params:
  size: -5
  steps: 1e3x
  style_wieght: 1
  style_weight: .nan
  size: 10
grid:
  sise: [1]
  tv_weight: []
devices: [cuda:0, cuda:0, gpu]
workers_per_device: 0
retries: -1
timeout: 0
sheet: {rows: contnt, thumb: 5, foo: 1}
"""
    (project / "notes.txt").write_text("hi")
    with pytest.raises(ManifestError) as err:
        load_manifest(write(project, text))
    assert err.value.problems == [
        "version: must be 1, got 2 (line 1)",
        'contnt: unknown key, did you mean "content"? (line 3)',
        f'content[0]: "photos/*.png" matched no image files (line 4; {HINT})',
        "content[1]: not an image file: notes.txt (line 4; extensions: .jpg .jpeg .png .bmp .gif .tif .tiff "
        ".webp .ppm .pgm .tga)",
        "style[1].weights: has 1 weight(s) for 2 image(s); give one weight per image (line 7)",
        "style[2].extra: unknown key; expected one of images, weights, name (line 8)",
        "style[2].weights: weights must be finite numbers ≥ 0 with a positive sum (line 8)",
        'pairing: expected one of product, zip, explicit, got "prodcut" (line 9)',
        "params.size: must be between 16 and 16384, got -5 (line 11)",
        'params.steps: expected an integer, got "1e3x" (line 12)',
        'params.style_wieght: unknown parameter, did you mean "style_weight"? (line 13)',
        "params.style_weight: must be a finite number ≥ 0, got nan (line 14)",
        "params.size: duplicate key (line 15; first on line 11)",
        'grid.sise: unknown parameter, did you mean "size"? (line 17)',
        "grid.tv_weight: expected a non-empty list of values, got an empty list (line 18)",
        "devices[1]: cuda:0 is listed twice; use workers_per_device for more workers (line 19)",
        'devices[2]: expected cpu, cuda or cuda:N, got "gpu" (line 19)',
        "workers_per_device: must be between 1 and 64, got 0 (line 20)",
        "retries: must be between 0 and 100, got -1 (line 21)",
        "timeout: expected seconds > 0 or null (no limit), got 0 (line 22)",
        "sheet.foo: unknown key; expected one of rows, cols, thumb (line 23)",
        'sheet.rows: unknown axis "contnt", did you mean "content"? (line 23)',
        "sheet.thumb: must be between 32 and 1024, got 5 (line 23)",
    ]
    assert str(err.value).splitlines()[0] == f"{project / 'm.yaml'}: 23 problem(s)"


@pytest.mark.parametrize("text, expected", [
    pytest.param(b"", ['the manifest is empty; start it with "version: 1"'], id="empty"),
    pytest.param(b"# only a comment\n", ['the manifest is empty; start it with "version: 1"'], id="comments"),
    pytest.param(b"- a\n- b\n", ["a manifest is a mapping of keys (version, output, content, style, ...), "
                                 "got a list (line 1)"], id="not-a-mapping"),
    pytest.param(b"version: 1\noutput: out\n# caf\xe9\n",
                 ["not UTF-8 text (byte 0xe9); save the manifest as UTF-8 (line 3)"], id="not-utf8"),
    pytest.param(b"version: 1\nparams:\n  size: 64\n\tsteps: 3\n",
                 ["YAML syntax error: tab character in the indentation (line 4, column 1; indent with spaces, "
                  "not tabs)"], id="tab"),
    pytest.param(b"version: 1\noutput: [out\n", ["YAML syntax error: did not find expected ',' or ']' "
                                                 "(line 3, column 1)"], id="unclosed", marks=LIBYAML),
    pytest.param(b"version: 1\n---\nversion: 1\n", ["YAML syntax error: expected a single document in the "
                                                    "stream, but found another document (line 2, column 1)"],
                 id="two-documents"),
    pytest.param(b"version: 1\noutput: out\x07\n",
                 ["control character U+0007 is not allowed in YAML; remove it (line 2)"], id="control-char"),
    pytest.param(b"a: &a [*a]\n", ["nested more than 32 levels deep (is an alias inside itself?) (line 1)"],
                 id="recursive-alias"),
    pytest.param(b"[" * 5000 + b"]" * 5000, ["YAML syntax error: exceeded maximum nesting depth (line 1, column 1001)"],
                 id="deep", marks=LIBYAML),
])
def test_unreadable_files(tmp_path: Path, text: bytes, expected: list[str]):
    assert problems(tmp_path, text) == expected


def test_billion_laughs_is_refused(tmp_path: Path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    assert problems(tmp_path, "\n".join(lines) + "\n") == [
        f"more than {MAX_NODES} values once anchors and aliases are expanded; "
        "a manifest lists folders and globs, not files (line 1)"]


def test_wide_file_is_refused(tmp_path: Path):
    assert problems(tmp_path, "a: [" + "1," * (MAX_NODES + 10) + "]\n") == [
        f"more than {MAX_NODES} values; a manifest lists folders and globs, not files (line 1)"]


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(ManifestError, match="manifest not found; check the path"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match="not a regular file"):
        load_manifest(tmp_path)


def test_required_keys_and_types(project: Path):
    assert problems(project, "foo: 1\n") == [
        'version: missing; add "version: 1" at the top',
        "output: missing; name the folder for the results, e.g. output: out/run1",
        "content: missing; list image files, folders or globs",
        "style: missing; list image files, folders, globs or blends",
        f"foo: unknown key; expected one of {', '.join(TOP_KEYS)} (line 1)",
    ]
    assert problems(project, 'version: "1"\noutput: [a]\ncontent: []\nstyle: styles\ngrid: {}\nparams: [1]\n'
                             "devices: []\n") == [
        'version: must be 1, got "1" (line 1)',
        "output: expected a folder path, got a list (line 2)",
        "content: is empty; list image files, folders or globs (line 3)",
        "grid: expected a mapping of parameter: [values], e.g. style_weight: [1.0e2, 1.0e3], got an empty "
        "mapping (line 5)",
        "params: expected a mapping of stylize options, got a list (line 6)",
        "devices: expected auto, cpu or a list such as [cuda:0, cuda:1], got an empty list (line 7)",
    ]


def test_huge_and_non_finite_numbers(project: Path):
    text = BASIC + "params:\n  seed: 123456789012345678901234567890\n  size: " + "9" * 5000 + \
        "\n  style_weight: 1e999\n  tv_weight: -.inf\ntimeout: .nan\n"
    assert problems(project, text) == [
        "params.seed: number is too large (line 6)",
        "params.size: number is too large (line 7)",
        "params.style_weight: must be a finite number ≥ 0, got inf (line 8)",
        "params.tv_weight: must be a finite number ≥ 0, got -inf (line 9)",
        "timeout: expected seconds > 0 or null (no limit), got NaN (line 10)",
    ]


def test_output_must_be_a_plain_folder(project: Path):
    base = "content: photos\nstyle: styles\nversion: 1\n"
    assert problems(project, base + 'output: "out\\0x"\n') == [
        "output: contains a NUL byte; write a plain folder path (line 4)"]
    assert problems(project, base + "output: .\n") == [
        "output: must not be the manifest's folder or one above it; use a subfolder such as out/ (line 4)"]
    assert problems(project, base + "output: photos/a.jpg\n") == [
        "output: photos/a.jpg is a file; output must be a folder (line 4)"]
    assert problems(project, base + "output: ~/out\n") == [
        "output: ~ is not expanded; write an absolute path or one relative to the manifest (line 4)"]
    absolute = load_manifest(write(project, base + f"output: {project / 'elsewhere'}\n"))
    assert absolute.output == project / "elsewhere"


def test_zip_counts_must_match(project: Path):
    assert problems(project, BASIC.replace("styles/vangogh.jpg", "styles") + "pairing: zip\n") == [
        "pairing: zip pairs the i-th content image with the i-th style, but content has 2 image(s) and style "
        "has 3 style(s); make them equal or use pairing: product (line 5)"]


def test_explicit_pairs_problems(project: Path):
    text = """\
version: 1
output: out
content: photos
pairing: explicit
pairs:
  - {content: photos/a.jpg, style: styles/a.jpg, seed: 1}
  - {content: photos/zz.jpg}
  - {content: photos, style: {images: [styles/a.jpg, styles/*.jpg]}}
  - 5
"""
    assert problems(project, text) == [
        "content: not used with pairing: explicit; list each content image and its style under pairs (line 3)",
        "pairs[0].seed: unknown key; expected one of content, style (line 6)",
        f"pairs[1].content: content image not found: photos/zz.jpg (line 7; {HINT})",
        "pairs[1].style: missing; each pair names one style image or blend (line 7)",
        "pairs[2].content: photos is a folder; name one image file here (line 8)",
        f"pairs[2].style.images[1]: style image not found: styles/*.jpg (line 8; {HINT})",
        "pairs[3]: expected a mapping {content: a.jpg, style: b.jpg}, got 5 (line 9)",
    ]


def test_parameters_that_only_fail_together(project: Path):
    assert problems(project, BASIC + "params:\n  style_layer_weights: [1, 2]\n") == [
        "params: style_layer_weights: has 2 values but style_layers has 5 layers (line 5)"]
    text = BASIC + "params:\n  style_layer_weights: [1, 2]\ngrid:\n  style_layers: [[conv1_1, conv2_1], [conv1_1]]\n"
    assert problems(project, text) == [
        'grid: with style_layers=["conv1_1"]: style_layer_weights: has 2 values but style_layers has 1 layers '
        "(line 7)"]


def test_param_paths_and_values(project: Path):
    text = BASIC + "params: {init: nope.png, weights: w.pth, optimizer: sgd}\ngrid:\n  style_layers: [conv1_1]\n"
    assert problems(project, text) == [
        f"params.init: init image not found: nope.png (line 5; {HINT})",
        f"params.weights: weights file not found: w.pth (line 5; {HINT})",
        'params.optimizer: expected one of lbfgs, adam, got "sgd" (line 5)',
        'grid.style_layers[0]: expected a non-empty list of layer names, got "conv1_1" (line 7)',
    ]


def test_too_many_jobs(project: Path):
    values = ", ".join(str(i) for i in range(300))
    text = BASIC + f"grid:\n  seed: [{values}]\n  steps: [{', '.join(str(i + 1) for i in range(300))}]\n"
    assert problems(project, text) == [
        f"grid: the manifest expands to 180000 jobs (2 content-style pair(s) × 90000 parameter combination(s)); "
        f"at most {MAX_JOBS} per manifest: split it into several manifests (line 5)"]


def test_tags_merge_keys_and_odd_keys(project: Path):
    text = 'version: !!python/object:os.system 1\noutput: !!binary aGVsbG8=\ncontent: !!set {a}\n' \
           'style: [!!int "x", !foo bar]\n<<: {a: 1}\n1: 2\n"a\\nb": 3\n'
    assert problems(project, text) == [
        "version: unsupported YAML tag !!python/object:os.system; write plain values (line 1)",
        "output: unsupported YAML tag !!binary; write plain values (line 2)",
        "content: unsupported YAML tag !!set; write plain values (line 3)",
        'style[0]: cannot read "x" as !!int (line 4)',
        "style[1]: unsupported YAML tag !foo; write plain values (line 4)",
        'merge keys ("<<") are not supported; write the keys out (line 5)',
        "keys must be names, got 1 (line 6)",
        f'"a\\nb": unknown key; expected one of {", ".join(TOP_KEYS)} (line 7)',
    ]


def test_shorthands_and_anchors(project: Path):
    text = """\
version: 1
output: out
content: photos/a.jpg                 # one entry needs no list
style: {images: [styles/a.jpg, styles/b.jpg], weights: [1, 3]}
params: &base {size: 64, steps: 10}
grid:
  seed: [1, 2]
devices: cuda:1
timeout: null
"""
    m = load_manifest(write(project, text))
    assert (len(m.content), m.styles[0].weights, m.devices, m.timeout) == (1, (1.0, 3.0), ("cuda:1",), None)
    assert m.styles[0].label == "styles/a.jpg (1) + styles/b.jpg (3)"
    assert len(expand(m)) == 2


def test_dates_are_text_not_timestamps(project: Path):
    m = load_manifest(write(project, BASIC.replace("output: out", "output: 2024-05-01")))
    assert m.output == project / "2024-05-01"


# --- fuzz ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "photos").mkdir()
    (root / "styles").mkdir()
    make_content(root / "photos" / "a.jpg")
    make_style(root / "styles" / "a.jpg")
    return root


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["photos", "styles/a.jpg", "photos/*.jpg", "auto", "cpu", "cuda:0",
                                           "product", "zip", "explicit", "conv1_1", "content", "1e3", "out"]))
_keys = st.one_of(st.sampled_from(TOP_KEYS + PARAM_NAMES + ("images", "weights", "rows", "cols", "thumb")),
                  st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=12)
_manifests = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 2, "1"]), "output": st.sampled_from(["out", "", ".", "photos/a.jpg"])},
    optional={key: _values for key in TOP_KEYS[2:]})
_yamlish = st.text(alphabet="ab1e.:-[]{}*&!|>'\"#\n\t ,?%@`~<", max_size=120)
_VALID = {"version": 1, "output": "out", "content": ["photos"], "style": ["styles/a.jpg"]}
_one_key_off = st.tuples(st.sampled_from(TOP_KEYS), _values).map(lambda kv: {**_VALID, kv[0]: kv[1]})
_odd_params = st.tuples(st.sampled_from(["params", "grid"]),
                        st.dictionaries(st.sampled_from(PARAM_NAMES), _values, max_size=3)).map(
    lambda kv: {**_VALID, kv[0]: kv[1]})


def _dump(value) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), _yamlish.map(str.encode), _values.map(_dump),
                 _manifests.map(_dump), _one_key_off.map(_dump), _odd_params.map(_dump)))
def test_fuzz_only_manifest_errors(fuzz_root: Path, data: bytes):
    path = fuzz_root / "fuzz.yaml"
    path.write_bytes(data)
    try:
        manifest = load_manifest(path)
    except ManifestError as err:
        assert err.problems and all("\n" not in p for p in err.problems)
        return
    if len(manifest.content) * len(manifest.styles) <= 64:
        expand(manifest)
