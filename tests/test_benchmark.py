"""benchmarks/throughput.py: its docs writer keeps other devices' sections; a tiny run prints a table."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import make_content, make_style

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = module      # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("throughput", None)


def test_vgg_flops_at_512_match_the_issue(bench):
    from pipeline.params import Params

    # 2·Cin·Cout·9·H·W per conv up to conv5_1, ×2 for forward and input-gradient backward:
    # Σ Cin·Cout·H·W over blocks = (3·64 + 64·64)·512² + (64·128 + 128·128)·256²
    #   + (128·256 + 3·256·256)·128² + (256·512 + 3·512·512)·64² + 512·512·32².
    macs = ((3 * 64 + 64 * 64) * 512**2 + (64 * 128 + 128 * 128) * 256**2 + (128 * 256 + 3 * 256**2) * 128**2
            + (256 * 512 + 3 * 512**2) * 64**2 + 512**2 * 32**2)
    assert bench.eval_flops(Params(), 512, 512) == 2 * 2 * 9 * macs == 378_695_319_552   # ≈ 380 GFLOP
    assert bench.eval_flops(Params(), 128, 128) == 378_695_319_552 / 16


def test_write_docs_replaces_its_section_and_keeps_the_others(bench, tmp_path):
    doc = tmp_path / "benchmarks.md"
    bench.write_docs(doc, "cpu: X", "## X\n\nfirst\n")
    text = doc.read_text()
    assert "<!-- section: cpu: X -->\n## X\n\nfirst\n<!-- end section -->" in text
    assert "## GPU (H100 / H200): pending" in text
    bench.write_docs(doc, "cpu: X", "## X\n\nagain\n")
    assert "## GPU (H100 / H200): pending" in doc.read_text()
    bench.write_docs(doc, "cuda: H200", "## H200\n\nrow\n")
    bench.write_docs(doc, "cpu: X", "## X\n\nsecond\n")
    text = doc.read_text()
    assert "second" in text and "first" not in text
    assert "<!-- section: cuda: H200 -->\n## H200\n\nrow\n<!-- end section -->" in text
    assert "pending" not in text
    assert text.index("cpu: X") < text.index("cuda: H200")


@pytest.mark.slow
def test_tiny_run_prints_a_table_and_writes_docs(bench, tmp_path, capsys):
    content = make_content(tmp_path / "c.png", (40, 40))
    style = make_style(tmp_path / "s.png", (40, 40))
    doc = tmp_path / "bench.md"
    code = bench.main(["--device", "cpu", "--n", "1", "--size", "32", "--evals", "4", "--no-search",
                       "--content", str(content), "--style", str(style), "--write-docs", str(doc)])
    out = capsys.readouterr().out
    assert code == 0
    assert "| reference | 4 |" in out and "| pipeline | 4 |" in out
    assert "**0** when the same styles run again" in out
    assert "| reference | 4 |" in doc.read_text()
