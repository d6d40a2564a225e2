"""Outputs only ever land inside the output folder; weights files never run code."""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from conftest import make_content, make_style
from faultkit import cli_inline as run_cli
from pipeline.errors import OutputError
from pipeline.run.index import reindex
from pipeline.run.jobs import make_job
from pipeline.params import params_from_mapping
from pipeline.run.jobs import safe_join


@pytest.mark.parametrize("relative, message", [
    ("../x.png", "escapes the output folder {root}"),
    ("a/../../x.png", "escapes the output folder {root}"),
    ("a/b/../../../etc/x.png", "escapes the output folder {root}"),
    ("/etc/passwd", "must be relative to the output folder"),
    ("a/\0b.png", "must be relative to the output folder"),
])
def test_safe_join_refuses_every_escape(tmp_path, relative, message):
    root = tmp_path / "out"
    with pytest.raises(OutputError) as err:
        safe_join(root, relative)
    assert str(err.value) == f"output path {relative!r} " + message.format(root=root)


def test_a_symlinked_folder_inside_the_output_cannot_carry_writes_out(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "photo").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(OutputError, match="escapes the output folder"):
        safe_join(root, "photo/style/0123456789abcdef.png")
    assert safe_join(root, "photo2/style/0123456789abcdef.png").is_relative_to(root.resolve())


@pytest.mark.parametrize("name", ["..png", "...png", ".hidden.png", "-rf.png", "a b#c?*.png", "ünï cødé.png",
                                  "x" * 200 + ".png", "..%2f..%2fetc.png", "~root.png", "con.png"])
def test_naming_from_hostile_file_names_stays_inside(tmp_path, name):
    content = make_content(tmp_path / "c.png").rename(tmp_path / name)
    style = make_style(tmp_path / "s.png").rename(tmp_path / ("s" + name))
    job = make_job(content, [(style, 1.0)], params_from_mapping({"size": 32}))
    parts = Path(job.output).parts
    assert len(parts) == 3 and parts[2] == f"{job.job_id}.png"
    # Never hidden (reindex and the gallery skip hidden folders), never "..", one name each.
    assert all(p not in ("", ".", "..") and not p.startswith(".") and "/" not in p for p in parts)
    assert all(len(p.encode()) <= 255 for p in parts)
    root = tmp_path / "out"
    assert safe_join(root, job.output).is_relative_to(root.resolve())


def test_a_forged_sidecar_pointing_outside_is_never_indexed(tmp_path, caplog):
    root = tmp_path / "out"
    (root / "a" / "b").mkdir(parents=True)
    for job_id, output in (("0123456789abcdef", "../../evil.png"), ("1123456789abcdef", "/etc/passwd"),
                           ("2123456789abcdef", "a/../../x.png")):
        (root / "a" / "b" / f"{job_id}.json").write_text(
            f'{{"job_id": "{job_id}", "status": "done", "output": "{output}"}}')
    caplog.set_level(logging.WARNING, logger="pipeline.run.index")
    assert reindex(root) == 0
    assert caplog.text.count("is not a path inside the output folder") == 3


def test_manifest_output_with_a_nul_byte_is_refused_and_a_folder_elsewhere_is_the_users_choice(tmp_path):
    (tmp_path / "in" / "photos").mkdir(parents=True)
    make_content(tmp_path / "in" / "photos" / "a.png")
    make_style(tmp_path / "in" / "s.png")
    manifest = tmp_path / "in" / "m.yaml"
    manifest.write_text('version: 1\noutput: "out\\0x"\ncontent: photos\nstyle: s.png\n')
    assert run_cli("validate", str(manifest)) == (
        2, "", f"error: {manifest}: 1 problem(s)\n  output: contains a NUL byte; write a plain folder path (line 2)\n")
    manifest.write_text("version: 1\noutput: .\ncontent: photos\nstyle: s.png\n")
    assert run_cli("validate", str(manifest))[2] == (
        f"error: {manifest}: 1 problem(s)\n  output: must not be the manifest's folder or one above it; "
        "use a subfolder such as out/ (line 2)\n")
    # A results folder beside the inputs' folder, or absolute, is where the user wants results.
    for output in ("../results", str(tmp_path / "abs")):
        manifest.write_text(f"version: 1\noutput: {output}\ncontent: photos\nstyle: s.png\n")
        code, stdout, stderr = run_cli("validate", str(manifest))
        assert (code, stderr) == (0, "") and stdout.endswith(f"1 job(s) → {(manifest.parent / output).resolve()}\n")


class RunsCode:
    """Unpickling this calls os.system: what a booby-trapped .pth would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["torch.save", "raw pickle"])
def test_a_weights_pickle_that_would_run_code_is_refused_not_run(tmp_path, content_path, style_path, layout):
    marker, weights = tmp_path / "pwned", tmp_path / "vgg19.pth"
    payload = {"features.0.weight": RunsCode(marker)}
    if layout == "torch.save":
        torch.save(payload, weights)
    else:
        weights.write_bytes(pickle.dumps(payload))
    code, stdout, stderr = run_cli("stylize", str(content_path), str(style_path), "-o", str(tmp_path / "o.png"),
                                   "--weights", str(weights), "--size", "32", "--steps", "1",
                                   "--device", "cpu", "--quiet")
    assert code == 2 and stdout == ""
    assert stderr.startswith(f"error: refusing to load {weights}: not a plain tensor state dict (")
    assert stderr.endswith("); convert it to .safetensors or a weights-only .pth\n") and stderr.count("\n") == 1
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "o.png").exists()
