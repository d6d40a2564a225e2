"""Jobs: frozen units of work with stable ids, and their output paths.

A job id hashes what determines the output image, never where the inputs live: the content
image's bytes, each style image's bytes and blend weight, the fully resolved parameters, the
weights id and the algorithm version. Renaming an input keeps the id; changing a parameter
changes it. A job with regions hashes each region instead of a style list: its name, its mask's
bytes (or its label map's bytes and colour), its styles' bytes, normalised blend weights and
style-mask bytes, and its weights; a job without regions hashes exactly what it did before.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError, OutputError
from ..engine.weights import weights_id
from ..imaging import image_shape
from ..params import DEFAULTS, MAX_SIZE, Params
from ..video import Clip, clip_shape

# Bump when a change to the algorithm would make old outputs differ from new ones: job ids
# hash it, so resume then redoes the old outputs instead of keeping them as if new. GOLDEN is
# the losses of a fixed tiny job under this version (tests/faults/test_faults_golden_outputs.py
# fails when they move): update both together. 2: tol across multiscale stages, wide styles.
# 3: every iterate projected into [0, 1] after each step (the saved image is the one optimized,
# no final clamp), L-BFGS storing the step actually taken; `average` (off by default) added.
ALGORITHM_VERSION = "gatys2016-nstbatch-3"
GOLDEN = {"version": "gatys2016-nstbatch-3", "loss_total": 30.33111, "loss_content": 2.365293, "loss_style": 0.5593164}
INIT_KEYWORDS = ("content", "noise")


@dataclass(frozen=True)
class StyleRef:
    path: str          # absolute path
    weight: float = 1.0
    mask: str | None = None   # absolute path of a mask on the style image: use only that part


@dataclass(frozen=True)
class RegionSpec:
    """One region of a content image and what to do there (Gatys et al. 2017; docs/regions.md).

    The mask is a grey image (`mask`) or one colour of a label map (`labels` + `colour`)."""
    name: str
    styles: tuple[StyleRef, ...]         # its (blended) style; () keeps the photo here ("style: none")
    mask: str | None = None              # absolute path of the mask image (0–255 grey weights)
    labels: str | None = None            # absolute path of a label map ...
    colour: tuple[int, int, int] | None = None   # ... and this region's colour in it
    style_weight: float = 1.0            # multiplies this region's style term
    content_weight: float | None = None  # multiplies the content weight inside the region (None: 1)


@dataclass(frozen=True)
class Job:
    job_id: str
    content: str                      # absolute path
    styles: tuple[StyleRef, ...]
    params: Params
    output: str                       # image path relative to the output folder (a clip: its mp4)
    clip: Clip | None = None          # a chain of frames (content is the video or frames folder)
    # (key, value) of the parameters that vary among the manifest's jobs (run/naming.py): what
    # progress lines show to tell a grid's jobs apart.
    variant: tuple[tuple[str, str], ...] = ()
    # Spatial control: regions with their own styles; `styles` then lists every region's
    # styles (what names and views show), and the engine reads the regions.
    regions: tuple[RegionSpec, ...] = ()

    @property
    def sidecar(self) -> str:
        return str(Path(self.output).with_suffix(".json"))

    def describe(self) -> dict[str, Any]:
        """What the index and sidecar record about the job's inputs."""
        return {
            "job_id": self.job_id,
            "content": self.content,
            "styles": [{"path": s.path, "weight": s.weight} for s in self.styles],
            "params": self.params.to_dict(),
            "output": self.output,
            **({"clip": self.clip.selection()} if self.clip is not None else {}),
            **({"regions": _regions_of(self)} if self.regions else {}),
        }


def _regions_of(job: "Job") -> list[dict[str, Any]]:
    """A job's regions as manifest.resolved.yaml lists them (records.regions_of for sidecars)."""
    return [{"name": r.name, "mask": r.mask, "labels": r.labels, "colour": list(r.colour) if r.colour else None,
             "styles": [{"path": s.path, "weight": s.weight, "mask": s.mask} for s in r.styles],
             "style_weight": r.style_weight, "content_weight": r.content_weight} for r in job.regions]


@lru_cache(maxsize=4096)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    try:
        st = Path(path).stat()
        return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)
    except OSError as err:
        if Path(path).is_symlink() and not Path(path).exists():   # the words imaging.read_image uses
            raise InputError(f"broken symlink: {path} points to a missing file") from None
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None


def input_identity(path: str) -> str:
    """An image's identity in job ids: the sha256 of its bytes.

    A file that cannot be read (a broken symlink or a locked file in a content folder) is
    identified by its path instead, so its jobs exist, fail alone with the reason when they
    run, and the rest of the batch runs."""
    try:
        return content_sha256(path)
    except InputError:
        return "unreadable:" + path


def clip_sha256(clip: Clip) -> str:
    """sha256 of a clip's bytes: the video file, or every frame of the folder in order."""
    if clip.kind == "video":
        return content_sha256(clip.path)
    from ..video import frame_files

    digest = hashlib.sha256()
    for frame in frame_files(clip.path):
        digest.update(content_sha256(frame).encode())
    return digest.hexdigest()


def _style_identity(styles: tuple[StyleRef, ...]) -> list[list[Any]]:
    total = sum(s.weight for s in styles)
    return [[input_identity(s.path), round(s.weight / total, 12)] + ([input_identity(s.mask)] if s.mask else [])
            for s in styles]


def _mask_identity(path: str) -> str:
    """A mask's bytes; a clip's folder of masks, one per frame: every file's, in name order."""
    if not Path(path).is_dir():
        return input_identity(path)
    digest = hashlib.sha256()
    for frame in sorted(p for p in Path(path).iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(input_identity(str(frame)).encode())
    return "folder:" + digest.hexdigest()


def _region_identity(region: RegionSpec) -> dict[str, Any]:
    """What of a region changes the output; paths are not (renaming a mask keeps the id)."""
    return {"name": region.name,
            "mask": _mask_identity(region.mask) if region.mask else None,
            "labels": input_identity(region.labels) if region.labels else None,
            "colour": list(region.colour) if region.colour else None,
            "styles": _style_identity(region.styles) if region.styles else [],
            "style_weight": region.style_weight,
            # None and 1 both leave the content weight as it is: one output, one id
            "content_weight": None if region.content_weight in (None, 1.0) else region.content_weight}


def job_id_for(content: str, styles: tuple[StyleRef, ...], params: Params, clip: Clip | None = None,
               regions: tuple[RegionSpec, ...] = ()) -> str:
    init = params.init if params.init in INIT_KEYWORDS else "file:" + content_sha256(params.init)
    values = params.to_dict()
    if clip is None:
        # temporal_weight cannot change a photo: keep photo ids what they were before clips.
        del values["temporal_weight"]
    # dpi and bit_depth change the file (so a result written with others is not reused), but at
    # their defaults they leave the id what it was before they existed: earlier runs resume.
    if values["dpi"] is None:
        del values["dpi"]
    if values["bit_depth"] == 8:
        del values["bit_depth"]
    if values["style_loss"] == "gram":   # the paper's loss: ids from before other losses stay
        del values["style_loss"]
    if values["average"] == 0:   # off: the id is what it was before averaging existed
        del values["average"]
    spec = {
        "algorithm": ALGORITHM_VERSION,
        "content": input_identity(content) if clip is None else clip_sha256(clip),
        "styles": _style_identity(styles) if not regions else [],
        "params": {**values, "init": init, "weights": weights_id(params.weights)},
    }
    if clip is not None:
        spec["clip"] = {k: v for k, v in clip.selection().items() if k != "kind"}
    if regions:   # only then: ids of jobs without regions stay what they were
        spec["regions"] = [_region_identity(r) for r in regions]
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(path: str) -> str:
    """A file stem usable as one folder name: no separators, no dots at the start, bounded length."""
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._") or "image"
    return stem[:60]


def style_stem(paths: Iterable[str]) -> str:
    """The folder name of a style: its stem; a blend's joins its parts' stems with '+'."""
    return "+".join(safe_stem(p) for p in paths)[:120]


def regions_stem(regions: Iterable[RegionSpec]) -> str:
    """The folder name of a job with regions: `<region>-<its style stem>` joined with '+',
    a blend's parts joined with ',' and `none` for a region kept as photo, e.g.
    `sky-starry_night+building-a,b+person-none`; bounded like a style's."""
    parts = [f"{safe_stem(r.name)}-{','.join(safe_stem(s.path) for s in r.styles) or 'none'}" for r in regions]
    return "+".join(parts)[:120]


def job_style_stem(job: "Job") -> str:
    """The style part of a job's names: its style stem, or its regions' stem."""
    return regions_stem(job.regions) if job.regions else style_stem(s.path for s in job.styles)


def output_path_for(content: str, styles: tuple[StyleRef, ...], job_id: str, fmt: str,
                    regions: tuple[RegionSpec, ...] = ()) -> str:
    """`<content-stem>/<style-stem>/<job_id>.<ext>`: one job alone (`stylize`); a manifest's
    jobs are renamed by run/naming.py after the parameters that vary."""
    ext = {"png": "png", "jpeg": "jpg", "tiff": "tif"}[fmt]
    stem = regions_stem(regions) if regions else style_stem(s.path for s in styles)
    return f"{safe_stem(content)}/{stem}/{job_id}.{ext}"


def safe_join(root: Path, relative: str) -> Path:
    """root / relative, refusing anything that would land outside root."""
    if "\0" in relative or Path(relative).is_absolute():
        raise OutputError(f"output path {relative!r} must be relative to the output folder")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise OutputError(f"output path {relative!r} escapes the output folder {root}")
    return target


def _absolute(path: str | Path) -> str:
    """The resolved path; a broken symlink stays itself, so its job's error names the link."""
    path = Path(path)
    return str(path.resolve() if path.exists() or not path.is_symlink() else path.absolute())


def _absolute_region(region: RegionSpec) -> RegionSpec:
    return replace(region, mask=_absolute(region.mask) if region.mask else None,
                   labels=_absolute(region.labels) if region.labels else None,
                   styles=tuple(replace(s, path=_absolute(s.path), weight=float(s.weight),
                                        mask=_absolute(s.mask) if s.mask else None) for s in region.styles))


def make_job(content: str | Path, styles: list[tuple[str | Path, float]], params: Params,
             clip: Clip | None = None, regions: Iterable[RegionSpec] = ()) -> Job:
    """A job of `content` in `styles`, or, with `regions`, each region in its own styles
    (`styles` is then ignored and `Job.styles` lists every region's styles, once each)."""
    content = _absolute(content)
    if params.size == "native":
        # The content's own long side (EXIF rotation does not change it), or its clip's frames'.
        # An unreadable file gets the default size here and fails with its real error later.
        shape = image_shape(content) if clip is None else clip_shape(clip)
        params = params.replace(size=min(MAX_SIZE, max(16, max(shape))) if shape else DEFAULTS.size)
    specs = tuple(_absolute_region(r) for r in regions)
    if specs:
        refs = tuple(dict.fromkeys(s for r in specs for s in r.styles))
    else:
        refs = tuple(StyleRef(_absolute(p), float(w)) for p, w in styles)
    if params.init not in INIT_KEYWORDS:
        params = params.replace(init=str(Path(params.init).resolve()))
    job_id = job_id_for(content, refs, params, clip, specs)
    if clip is not None:
        # `<clip>/<style>/<job_id>/`: the frames, the mp4 and the sidecar side by side.
        folder = output_path_for(content, refs, job_id, "png", specs).rsplit(".", 1)[0]
        return Job(job_id, content, refs, params, f"{folder}/{job_id}.mp4", clip, regions=specs)
    return Job(job_id, content, refs, params, output_path_for(content, refs, job_id, params.format, specs),
               regions=specs)
