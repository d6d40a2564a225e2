"""Each style loss's cache entries, planning and bad input: sliced is never tiled."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import DeviceError
from pipeline.params import ParamError, Params, params_from_mapping
from pipeline.run import memory
from pipeline.run.cache import StyleTargetCache, TargetKey, key_for


def test_cache_keys_differ_per_loss_and_entries_are_not_read_as_another(tmp_path, style_path, content_path):
    keys = {loss: key_for(Params(style_loss=loss), str(style_path), str(content_path), 64, "w")
            for loss in ("gram", "meancov", "sliced")}
    assert len({k.digest() for k in keys.values()}) == 3
    # gram's digest is what it was before the loss field existed.
    assert keys["gram"].digest() == TargetKey(**{**keys["gram"].__dict__}).digest()
    cache = StyleTargetCache(tmp_path)
    layers = keys["gram"].layers
    gram = {n: torch.eye(4).unsqueeze(0) for n in layers}
    cache.get_or_compute(keys["gram"], lambda: gram)
    # A gram entry copied to the meancov path is refused (its key, and meancov's shape check).
    src, dst = cache.path_for(keys["gram"]), cache.path_for(keys["meancov"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    fresh = StyleTargetCache(tmp_path)
    meancov = {**gram, **{n + ".mean": torch.zeros(1, 4) for n in layers}}
    got, hit = fresh.get_or_compute(keys["meancov"], lambda: meancov)
    assert not hit and set(got) == set(meancov) and fresh.stats["corrupt"] == 1
    from pipeline.engine import style_loss
    assert not style_loss.get("meancov").valid(gram, layers)
    assert not style_loss.get("sliced").valid(meancov, layers)
    assert style_loss.get("meancov").valid(meancov, layers)


def test_planner_never_tiles_a_sliced_job():
    shape = (1536, 2048)
    gram = Params(size=2048)
    sliced = Params(size=2048, style_loss="sliced")
    budget = memory.estimate_bytes(gram, shape) // 3
    assert memory.plan_job(gram, shape, budget).tiles[-1] is not None      # gram tiles to fit
    with pytest.raises(DeviceError) as err:
        memory.plan_job(sliced, shape, budget)
    line = str(err.value)
    assert "\n" not in line and "style_loss sliced" in line and "cannot run in tiles" in line
    assert "lower size, raise --memory-limit, or use style_loss gram or meancov" in line
    # Whole when it fits.
    assert memory.plan_job(sliced, shape, memory.estimate_bytes(sliced, shape) * 2).tiles == (None,) * 4


def test_sliced_refuses_a_style_image_too_large_to_compute_whole():
    p = Params(size=512, style_loss="sliced", style_scale=16.0)
    need = memory.estimate_bytes(Params(size=512, style_loss="sliced"), (384, 512))
    with pytest.raises(DeviceError, match="lower style_scale or size"):
        memory.plan_job(p, (384, 512), int(need * 1.5))


def test_an_unknown_loss_names_the_key_and_the_choices():
    with pytest.raises(ParamError) as err:
        params_from_mapping({"style_loss": "wasserstein"})
    assert str(err.value) == 'style_loss: expected one of gram, meancov, sliced, got "wasserstein"'


def test_cli_and_manifest_name_the_key(tmp_path, capsys, content_path, style_path):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["stylize", str(content_path), str(style_path), "-o", str(tmp_path / "o.png"), "--style-loss", "foo"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ['error: style_loss: expected one of gram, meancov, sliced, got "foo"']
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\noutput: {tmp_path / 'out'}\ncontent: [{content_path}]\nstyle: [{style_path}]\n"
                        "params:\n  size: 32\n  style_loss: wasserstein\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(manifest)])
    assert exit_info.value.code == 2
    assert ('params.style_loss: expected one of gram, meancov, sliced, got "wasserstein" (line 7)'
            in capsys.readouterr().err)
