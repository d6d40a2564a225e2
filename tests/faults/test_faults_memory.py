"""Sizes the device cannot hold: refused before the job starts, with the largest that fits."""
from __future__ import annotations

import re

import pytest
import torch

from pipeline.run import memory
from pipeline.cli import main
from pipeline.errors import DeviceError
from pipeline.run.memory import SLACK, check_fits, estimate_bytes, free_bytes, largest_size
from pipeline.params import params_from_mapping

GB = 10**9


def params(**values):
    return params_from_mapping({"size": 512, "steps": 400, **values})


def test_the_estimate_grows_with_the_pixels_the_history_and_the_batch():
    small, large = estimate_bytes(params(size=256)), estimate_bytes(params(size=512))
    assert 3.8 < (large - SLACK) / (small - SLACK) < 4.2          # four times the pixels
    wide = estimate_bytes(params(size=512), shape=(256, 512))       # same long side, half the pixels
    assert 0.45 < (wide - SLACK) / (large - SLACK) < 0.55
    assert estimate_bytes(params(steps=10)) == estimate_bytes(params(steps=400))     # history allocated up front
    assert estimate_bytes(params(optimizer="adam")) < estimate_bytes(params())
    one, four = estimate_bytes(params()), estimate_bytes(params(), batch=4)
    assert four - SLACK == pytest.approx(4 * (one - SLACK), rel=1e-6)
    half = estimate_bytes(params(optimizer="adam"), bf16=True)    # bf16 autocast: 2-byte activations
    assert 0.5 < (half - SLACK) / (estimate_bytes(params(optimizer="adam")) - SLACK) < 0.55
    shallow = estimate_bytes(params(style_layers=["conv1_1"], content_layers=["conv1_2"]))
    assert shallow < estimate_bytes(params())
    # Calibrated against peak RSS on CPU above the loaded network, 512 px: Adam used 703 MiB,
    # L-BFGS 1354 MiB. The estimate may be a little above, never below.
    assert 703 * 2**20 <= estimate_bytes(params(optimizer="adam", steps=2)) <= 1.15 * 703 * 2**20
    assert 1354 * 2**20 <= estimate_bytes(params(steps=5)) <= 1.15 * 1354 * 2**20


def test_refusal_names_the_need_the_free_memory_and_the_largest_size_that_fits(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 3 * GB)
    p = params(size=16000)
    with pytest.raises(DeviceError) as err:
        check_fits(p, (3000, 4000), "cpu")
    best = largest_size(p, (3000, 4000), 3 * GB)
    need = estimate_bytes(p, (3000, 4000))
    assert str(err.value) == (f"size 16000 needs about {need // GB:,} GB, this device (cpu) has 3.0 GB free; "
                              f"the largest that fits is about {best} px; lower size")
    assert best % 16 == 0 and estimate_bytes(p.replace(size=best), (3000, 4000)) <= 3 * GB
    assert estimate_bytes(p.replace(size=best + 16), (3000, 4000)) > 3 * GB
    check_fits(p.replace(size=best), (3000, 4000), "cpu")            # that size is accepted


def test_nothing_fits_and_unknown_free_memory(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: 10 * 2**20)
    with pytest.raises(DeviceError, match=r"has 0\.0 GB free; not even size 16 fits; free memory or use "
                                          r"another device$"):
        check_fits(params(size=64), (1, 1), "cpu")
    monkeypatch.setattr(memory, "free_bytes", lambda device: None)
    check_fits(params(size=16000), (1, 1), "cpu")                    # cannot tell: no refusal


def test_free_memory_on_cpu_and_cuda(monkeypatch):
    cpu = free_bytes("cpu")
    assert cpu is not None and 0 < cpu
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024
               for line in open("/proc/meminfo") if line.startswith("MemAvailable")}
    assert cpu <= meminfo["MemAvailable"] * 1.2
    # CUDA: what the driver has free plus what PyTorch's caching allocator holds unused.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * GB)
    assert free_bytes("cuda:0") == 7 * GB


def test_stylize_at_16000_px_says_what_fits_instead_of_running_out_of_memory(tmp_path, content_path, style_path,
                                                                               capsys):
    with pytest.raises(SystemExit) as stop:
        main(["stylize", str(content_path), str(style_path), "-o", str(tmp_path / "o.png"), "--size", "16000",
              "--device", "cpu", "--quiet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: size 16000 needs about [\d,]+ GB, this device \(cpu\) has [\d.,]+ GB free; "
                        r"the largest that fits is about \d+ px; lower size\n", err), err
    assert not (tmp_path / "o.png").exists()
