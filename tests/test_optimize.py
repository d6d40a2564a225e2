"""The optimization loop on the real weights: it converges, counts, reports, repeats, keeps colour."""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import pixels
from pipeline.errors import ParamError
from pipeline.imaging import read_image
from pipeline.engine.optimize import DivergedError, Progress, initial_image, style_grams, stylize
from pipeline.params import params_from_mapping

from conftest import make_content, make_style

SMALL = {"size": 32, "steps": 5}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    content = read_image(make_content(root / "c.png", size=(64, 56)))     # (1, 3, 56, 64)
    style = read_image(make_style(root / "s.png", size=(48, 48)))
    return content, style


def _targets(feats, style, params, variant_of=None, sides=None):
    """Style targets as the worker builds them: the style image at each stage's long side."""
    if variant_of is not None:
        style = pixels.style_variant(style, variant_of, params.preserve_color)

    def targets(long_side: int):
        if sides is not None:
            sides.append(long_side)
        return style_grams(feats, pixels.resize_long_side(style, long_side), params.style_layers)

    return targets


def _run(feats, images, progress=None, sides=None, **values):
    content, style = images
    params = params_from_mapping({**SMALL, **values})
    variant = content if params.preserve_color != "none" else None
    return stylize(feats, content, _targets(feats, style, params, variant, sides), params, progress=progress)


@pytest.mark.slow
def test_lbfgs_halves_the_loss_and_returns_the_right_size(feats, images):
    seen: list[Progress] = []
    result = _run(feats, images, progress=seen.append, size=48, steps=40)
    assert result.steps == 40 and len(result.history) == 40
    assert result.losses["total"] <= 0.5 * result.history[0], (result.history[0], result.losses)
    assert result.history[-1] < result.history[0]
    # The content image is 64 × 56: the long side becomes 48, the aspect ratio is kept.
    assert result.image.shape == (1, 3, 42, 48)
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
    assert set(result.losses) == {"total", "content", "style"}
    p = params_from_mapping({**SMALL, "size": 48, "steps": 40})
    assert result.losses["total"] == pytest.approx(p.content_weight * result.losses["content"]
                                                   + p.style_weight * result.losses["style"], rel=1e-5)
    # The progress callback saw every evaluation, numbered 1..N, with the loss history.
    assert [s.step for s in seen] == list(range(1, 41))
    assert all(s.total == 40 and s.stage == 0 and s.stages == 1 for s in seen)
    assert [s.losses["total"] for s in seen] == result.history
    assert all(b.elapsed >= a.elapsed >= 0 for a, b in zip(seen, seen[1:]))


def test_adam_runs_and_lowers_the_loss(feats, images):
    result = _run(feats, images, optimizer="adam", steps=8, tv_weight=1.0)
    assert result.steps == 8 and len(result.history) == 8
    assert result.losses["total"] < result.history[0]
    assert result.history[-1] < result.history[0]
    assert set(result.losses) == {"total", "content", "style", "tv"}
    assert result.image.shape == (1, 3, 28, 32)


@pytest.mark.parametrize("optimizer, steps", [("lbfgs", 5), ("adam", 5)])
def test_multiscale_stages_and_exact_step_count(feats, images, optimizer, steps):
    seen: list[Progress] = []
    sides: list[int] = []
    result = _run(feats, images, progress=seen.append, sides=sides, size=48, steps=steps,
                  multiscale=2, optimizer=optimizer)
    assert sides == [24, 48]                          # stage long sides: size / 2, size
    assert result.steps == steps and len(result.history) == steps
    assert [s.step for s in seen] == list(range(1, steps + 1))
    assert all(s.total == steps and s.stages == 2 for s in seen)
    assert [s.stage for s in seen] == [0, 0, 1, 1, 1]  # the final stage gets the remainder
    assert result.image.shape == (1, 3, 42, 48)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_fewer_steps_than_stages_counts_exactly(feats, images, optimizer):
    seen: list[Progress] = []
    sides: list[int] = []
    result = _run(feats, images, progress=seen.append, sides=sides, size=48, steps=1,
                  multiscale=2, optimizer=optimizer)
    assert sides == [48]                              # the stage with no steps is dropped
    assert result.steps == 1 and [(s.step, s.stage, s.stages) for s in seen] == [(1, 0, 1)]


def test_coarse_stages_stay_large_enough_for_conv5_1(feats, images):
    # 64 × 56 at a long side of 16 would be 16 × 14: too small for conv5_1 (four poolings: 16 px).
    sides: list[int] = []
    result = _run(feats, images, sides=sides, size=64, steps=3, multiscale=3)
    assert sides == [18, 32, 64]
    assert result.steps == 3 and result.image.shape == (1, 3, 56, 64)


def test_output_too_small_for_the_layers_is_a_clear_error(feats, images):
    with pytest.raises(ParamError) as err:
        _run(feats, images, size=16, steps=1)
    assert str(err.value) == ("an image of 16 × 14 px is too small for layer conv5_1, which needs at least "
                              "16 px on each side; raise size (or style_scale), or use shallower layers")
    # Shallower layers need less.
    result = _run(feats, images, size=16, steps=1, style_layers=["conv1_1", "conv3_1"], content_layers=["conv3_2"])
    assert result.image.shape == (1, 3, 14, 16)


@pytest.mark.parametrize("init", ["noise", "content"])
def test_same_seed_is_bit_identical(feats, images, init):
    first = _run(feats, images, init=init, seed=3, steps=3)
    torch.manual_seed(12345)                          # the global RNG must not matter
    second = _run(feats, images, init=init, seed=3, steps=3)
    assert torch.equal(first.image, second.image)
    assert first.history == second.history


def test_different_seeds_differ_for_noise(feats, images):
    a = _run(feats, images, init="noise", seed=1, steps=2)
    b = _run(feats, images, init="noise", seed=2, steps=2)
    assert not torch.equal(a.image, b.image)
    assert float((a.image - b.image).abs().mean()) > 0.01


def test_initial_image():
    content = torch.rand(1, 3, 6, 8)
    assert torch.equal(initial_image(content, "content", 0), content)
    noise = initial_image(content, "noise", 7)
    assert noise.shape == content.shape and torch.equal(noise, initial_image(content, "noise", 7))
    assert 0.0 <= float(noise.min()) and float(noise.max()) <= 1.0
    assert not torch.equal(noise, initial_image(content, "noise", 8))
    given = initial_image(content, torch.rand(1, 3, 12, 16), 0)
    assert given.shape == content.shape
    with pytest.raises(ValueError, match="init must be"):
        initial_image(content, "zeros", 0)


def test_init_image_tensor(feats, images):
    content, _ = images
    start = torch.full((1, 3, 10, 10), 0.5)
    params = params_from_mapping({**SMALL, "steps": 2})
    _, style = images
    seen: list[Progress] = []
    result = stylize(feats, content, _targets(feats, style, params), params, init=start, progress=seen.append)
    assert result.image.shape == (1, 3, 28, 32) and result.steps == 2 and len(seen) == 2
    assert seen[0].losses["content"] > 0.1          # it started from the grey image, not the content


def test_diverged_loss_is_a_clear_error(feats, images):
    content, style = images
    params = params_from_mapping(SMALL)
    broken = content.clone()
    broken[..., 0, 0] = float("nan")
    with pytest.raises(DivergedError) as err:
        stylize(feats, broken, _targets(feats, style, params), params)
    assert str(err.value) == "the loss diverged at step 1 (got nan); lower lr or the loss weights"


# --- Colour preservation ----------------------------------------------------------------------------

@pytest.mark.slow
def test_luminance_mode_keeps_the_contents_chroma(feats, images):
    content, _ = images
    result = _run(feats, images, preserve_color="luminance", size=32, steps=10)
    out = pixels.rgb_to_yiq(result.image)
    ref = pixels.rgb_to_yiq(pixels.resize(content, tuple(result.image.shape[-2:])))
    # I and Q are the content's wherever the final clamp into [0, 1] left the pixel alone...
    inside = ((result.image > 0) & (result.image < 1)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    assert float(inside.float().mean()) > 0.8
    assert float((out[:, 1:] - ref[:, 1:])[inside].abs().max()) < 1e-4
    # ...and close everywhere, while the luminance is the stylized one.
    assert float((out[:, 1:] - ref[:, 1:]).abs().mean()) < 0.005
    assert float((out[:, :1] - ref[:, :1]).abs().mean()) > 0.02


def test_luminance_targets_are_grey(images):
    content, style = images
    grey = pixels.style_variant(style, content, "luminance")
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    # Gatys et al. 2016 §3: the style's luminance gets the content's mean and spread.
    assert float(grey[:, 0].mean()) == pytest.approx(float(pixels.luminance(content).mean()), abs=0.02)
    assert float(grey[:, 0].std()) == pytest.approx(float(pixels.luminance(content).std()), abs=0.02)


def test_histogram_matching_has_the_contents_mean_and_covariance(images):
    content, style = images
    # A style with a moderate spread, so the mapped pixels stay inside [0, 1] (no clamping).
    style = 0.35 + 0.3 * style
    out = pixels.match_color(style, content)
    assert out.shape == style.shape
    flat_o, flat_c = out[0].reshape(3, -1).double(), content[0].reshape(3, -1).double()
    assert torch.allclose(flat_o.mean(1), flat_c.mean(1), atol=2e-3)
    assert torch.allclose(torch.cov(flat_o), torch.cov(flat_c), atol=2e-3)
    assert pixels.style_variant(style, content, "histogram").equal(out)
    assert pixels.style_variant(style, content, "none") is style


def test_yiq_round_trip_and_combine():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 7, generator=gen)
    assert torch.allclose(pixels.yiq_to_rgb(pixels.rgb_to_yiq(x)), x, atol=1e-5)
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(pixels.rgb_to_yiq(white)[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    a, b = x[:1] * 0.5 + 0.25, x[1:] * 0.5 + 0.25
    mixed = pixels.combine_luminance(a, b)
    assert torch.allclose(pixels.luminance(mixed), pixels.luminance(a), atol=1e-5)
    assert torch.allclose(pixels.rgb_to_yiq(mixed)[:, 1:], pixels.rgb_to_yiq(b)[:, 1:], atol=1e-5)


def test_sizes():
    assert pixels.scaled_size(56, 64, 48) == (42, 48)
    assert pixels.scaled_size(64, 56, 48) == (48, 42)
    assert pixels.scaled_size(10, 1000, 100) == (1, 100)
    x = torch.rand(1, 3, 56, 64)
    assert pixels.resize(x, (56, 64)) is x
    small = pixels.resize_long_side(x, 16)
    assert small.shape == (1, 3, 14, 16) and 0 <= float(small.min()) and float(small.max()) <= 1



def test_stage_schedule():
    params = params_from_mapping({"size": 100, "multiscale": 3, "steps": 10})
    assert params.stage_sizes() == [25, 50, 100] and params.stage_steps() == [3, 3, 4]
    # Never a stage without steps: fewer steps than stages means fewer stages.
    few = params.replace(steps=2)
    assert few.stages == 2 and few.stage_sizes() == [50, 100] and few.stage_steps() == [1, 1]
    assert params.replace(steps=1).stage_sizes() == [100]
    # Given the content's shape, coarse stages grow until conv5_1 fits (16 px short side).
    wide = params_from_mapping({"size": 64, "multiscale": 3, "steps": 3})
    assert wide.stage_sizes() == [16, 32, 64]
    assert wide.stage_sizes((56, 64)) == [18, 32, 64]
    assert wide.stage_sizes((16, 64)) == [62, 62, 64]          # 4:1: 62 × 16 (15.5 rounds to 16)
    shallow = wide.replace(style_layers=["conv1_1", "conv2_1"], content_layers=["conv2_2"])
    assert shallow.stage_sizes((56, 64)) == [16, 32, 64]        # conv2_x needs only 2 px


def test_job_runner_luminance_keeps_chroma_end_to_end(tmp_path, content_path, style_path):
    """The worker's wiring: grey style targets, colour recombined, saved as 8-bit PNG."""
    from pipeline.run.cache import StyleTargetCache
    from pipeline.run.jobs import make_job
    from pipeline.run.worker import JobRunner

    params = params_from_mapping({"size": 32, "steps": 6, "preserve_color": "luminance"})
    job = make_job(content_path, [(style_path, 1.0)], params)
    runner = JobRunner(torch.device("cpu"), StyleTargetCache(tmp_path / "cache"))
    record = runner.run(job, tmp_path / "out.png", tmp_path / "out.json")
    assert record["status"] == "done" and record["steps"] == 6
    out = read_image(tmp_path / "out.png")
    assert out.shape == (1, 3, record["height"], record["width"]) == (1, 3, 27, 32)
    content = pixels.resize(read_image(content_path), (27, 32))
    yiq_out, yiq_ref = pixels.rgb_to_yiq(out), pixels.rgb_to_yiq(content)
    # 8-bit rounding moves I and Q by at most ~1/255 per channel.
    assert float((yiq_out[:, 1:] - yiq_ref[:, 1:]).abs().mean()) < 0.005
    assert float((yiq_out[:, :1] - yiq_ref[:, :1]).abs().mean()) > 0.01
