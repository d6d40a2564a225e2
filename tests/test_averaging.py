"""`average`: the saved image is the debiased exponential moving average of the iterates.

Checked against an EMA computed here, independently, from the iterates the engine shows its
snapshot callback: per stage avg = Σₖ (1 − β) βᵗ⁻ᵏ xₖ / (1 − βᵗ⁺¹) over x₀ … xₜ, and each
stage starts from the previous stage's average, upsampled.
"""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import optimize, pixels
from pipeline.engine.optimize import JobInput, stylize_batch
from pipeline.errors import ManifestError, ParamError
from pipeline.imaging import read_image
from pipeline.params import params_from_mapping

from conftest import make_content, make_style


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("average-images")
    contents = [read_image(make_content(root / f"c{i}.png", size=(48, 40), seed=i)) for i in range(3)]
    return contents, read_image(make_style(root / "s.png", size=(40, 40), seed=5))


def _spec(feats, content, style, snaps=None, **values) -> JobInput:
    from pipeline.engine.objective import style_grams

    params = params_from_mapping({"size": 32, "steps": 12, "style_weight": 200.0, **values})
    snapshot = None
    if snaps is not None:
        snapshot = lambda step, stage, end, image: snaps.append((stage, image().double()))  # noqa: E731
    return JobInput(content, lambda side: style_grams(feats, pixels.resize_long_side(style, side),
                                                      params.style_layers), params, snapshot=snapshot)


def ema(iterates: list[torch.Tensor], decay: float) -> torch.Tensor:
    """The debiased EMA of x₀ … xₜ, written out as the weighted sum it is."""
    t = len(iterates) - 1
    weights = [(1 - decay) * decay ** (t - k) for k in range(t + 1)]
    return sum(w * x for w, x in zip(weights, iterates)) / (1 - decay ** (t + 1))


@pytest.mark.parametrize("decay", [0.9, 0.99])
def test_the_saved_image_is_the_ema_of_the_iterates_and_each_stage_starts_from_the_average(feats, images, decay):
    contents, style = images
    snaps: list = []
    spec = _spec(feats, contents[0], style, snaps, average=decay, multiscale=2)
    result = stylize_batch(feats, [spec])[0]
    stage0 = [x for s, x in snaps if s == 0]
    stage1 = [x for s, x in snaps if s == 1]
    assert len(stage0) == len(stage1) == 6
    first_average = ema(stage0, decay)
    # The second stage's first iterate is the first stage's average, upsampled.
    start = pixels.resize(first_average.float(), tuple(stage1[0].shape[-2:])).double()
    assert (stage1[0] - start).abs().max() < 1e-5
    assert (stage1[0] - pixels.resize(stage0[-1].float(), tuple(stage1[0].shape[-2:]))).abs().max() > 1e-3
    # The saved image is the second stage's average, not its last iterate.
    assert (result.image.double() - ema(stage1, decay)).abs().max() < 1e-5
    assert (result.image.double() - stage1[-1]).abs().max() > 1e-3
    # Both losses: the average's (a last extra pass) and the last iterate's (its evaluation).
    assert result.iterate_losses["total"] == result.loss_history["total"][-1]
    assert result.losses["total"] != pytest.approx(result.iterate_losses["total"], rel=1e-4)


def test_batched_equals_alone_with_a_different_average_per_job(feats, images):
    contents, style = images
    decays = (0.0, 0.9, 0.99)
    snaps: list[list] = [[] for _ in decays]
    # Adam: L-BFGS without line search amplifies batched convolutions' last bits into visibly
    # different images within a few steps on these tiny images (the same before averaging
    # existed: tests/test_optimize_batch.py bounds it loosely); Adam, elementwise, does not.
    specs = [_spec(feats, c, style, s, average=d, multiscale=2, optimizer="adam")
             for c, s, d in zip(contents, snaps, decays)]
    together = stylize_batch(feats, specs)
    # The job without averaging saves its last iterate, next to jobs that average.
    assert torch.equal(together[0].image.double(), snaps[0][-1][1])
    for spec, decay, batched, seen in zip(specs, decays, together, snaps):
        alone_snaps: list = []
        alone = stylize_batch(feats, [_spec(feats, spec.content, style, alone_snaps, average=decay,
                                            multiscale=2, optimizer="adam")])[0]
        # Measured: images agree to 1e-4 at most, losses to 1e-6; the bounds leave a margin.
        assert batched.losses["total"] == pytest.approx(alone.losses["total"], rel=1e-3)
        assert (batched.image - alone.image).abs().max() < 1e-3
        final = [x for s, x in seen if s == 1]
        expected = ema(final, decay) if decay else final[-1]
        assert (batched.image.double() - expected).abs().max() < 1e-5


def test_averaging_off_makes_no_average(feats, images, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an IterateAverage was made for jobs that do not average")

    monkeypatch.setattr(optimize, "IterateAverage", refuse)
    contents, style = images
    result = stylize_batch(feats, [_spec(feats, contents[0], style, steps=4)])[0]
    assert result.steps == 4


@pytest.mark.parametrize("value, message", [
    (1.0, "average: must be in [0, 1) (0: off, e.g. 0.99), got 1"),
    (-0.5, "average: must be in [0, 1) (0: off, e.g. 0.99), got -0.5"),
    (float("nan"), "average: must be in [0, 1) (0: off, e.g. 0.99), got nan"),
    ("0.99", 'average: expected a number in [0, 1) (0: off, e.g. 0.99), got "0.99"'),
    (True, "average: expected a number in [0, 1) (0: off, e.g. 0.99), got true"),
])
def test_average_out_of_range_is_one_line(value, message):
    with pytest.raises(ParamError) as err:
        params_from_mapping({"average": value})
    assert str(err.value) == message


def test_average_in_a_manifest_names_the_key_and_the_line(tmp_path):
    from pipeline.manifest.schema import load_manifest

    (tmp_path / "photos").mkdir()
    make_content(tmp_path / "photos" / "a.jpg")
    make_style(tmp_path / "s.jpg")
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\noutput: out\ncontent: photos\nstyle: s.jpg\nparams:\n  size: 64\n  average: 1.5\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.problems == ["params.average: must be in [0, 1) (0: off, e.g. 0.99), got 1.5 (line 7)"]
    path.write_text("version: 1\noutput: out\ncontent: photos\nstyle: s.jpg\ngrid:\n  average: [0, 0.9, 1]\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.problems == ["grid.average[2]: must be in [0, 1) (0: off, e.g. 0.99), got 1 (line 6)"]
    path.write_text("version: 1\noutput: out\ncontent: photos\nstyle: s.jpg\ngrid:\n  average: [0, 0.9, 0.99]\n")
    from pipeline.manifest.schema import expand

    assert sorted(j.params.average for j in expand(load_manifest(path))) == [0.0, 0.9, 0.99]


def test_average_on_the_command_line(tmp_path, capsys):
    from pipeline.cli import main

    content, style = make_content(tmp_path / "c.png"), make_style(tmp_path / "s.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["stylize", str(content), str(style), "-o", str(tmp_path / "o.png"), "--average", "1.5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: average: must be in [0, 1) (0: off, e.g. 0.99), got 1.5"


def test_job_ids_and_memory_estimates():
    from pipeline.run.jobs import job_id_for
    from pipeline.run.memory import estimate_bytes

    off, on = params_from_mapping({}), params_from_mapping({"average": 0.99})
    assert off.average == 0.0 and off == params_from_mapping({"average": 0})
    assert job_id_for("content", (), off) != job_id_for("content", (), on)
    # The average is one more image-sized vector per job.
    extra = estimate_bytes(on, (384, 512)) - estimate_bytes(off, (384, 512))
    assert extra == 3 * 4 * 384 * 512
