"""The images a manifest names: files, folders, globs, blends and explicit pairs.

Every path is relative to the manifest's folder. A folder is searched recursively and a glob
matches extensions in any case; both skip what lies in the output folder. `InputChecker` turns
the `content`, `style`, `pairing` and `pairs` keys into absolute image paths and `StyleEntry`s,
reporting every problem against its key path.
"""
from __future__ import annotations

import glob
import math
import os
import re
import stat
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable

from ..imaging import IMAGE_EXTENSIONS
from ..run.jobs import safe_stem, style_stem
from .yaml_reader import INVALID, Report, describe, has_invalid, is_number
from ..params import show_value

PAIRINGS = ("product", "zip", "explicit")
MAX_JOBS = 100_000         # per manifest; also bounds the images one entry may match
PATH_HINT = "paths are relative to the manifest"
_MAGIC = re.compile(r"[*?[]")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class StyleEntry:
    """One style of the batch: a single image, or a blend of several with weights."""

    images: tuple[str, ...]      # absolute paths
    weights: tuple[float, ...]   # one per image; (1.0,) for a single image
    label: str                   # "styles/a.jpg" or "styles/a.jpg (0.7) + styles/b.jpg (0.3)"
    name: str | None = None      # `name:` of a blend mapping: what a region's `style:` may name

    @property
    def refs(self) -> list[tuple[str, float]]:
        """(path, weight) pairs, as `make_job` takes them."""
        return list(zip(self.images, self.weights))


def file_kind(path: Path) -> str | None:
    """"file", "dir", or None for anything missing, special or unreadable; never raises."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None


def resolve(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):   # RuntimeError: a symlink loop (Python < 3.13)
        return None


def _is_image(name: str | Path) -> bool:
    return os.path.splitext(str(name))[1].lower() in IMAGE_EXTENSIONS


def _any_case_extension(pattern: str) -> str:
    """`photos/*.jpg` -> `photos/*.[jJ][pP][gG]`: cameras write IMG_0001.JPG."""
    stem, ext = os.path.splitext(pattern)
    if ext.lower() not in IMAGE_EXTENSIONS:
        return pattern
    return stem + "." + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext[1:])


class InputChecker:
    """Checks and resolves the image entries of one manifest; every problem goes to the report."""

    def __init__(self, base: Path, output: Path | None, report: Report,
                 check_clip: Callable[["InputChecker", tuple, dict], Any] | None = None):
        self.base, self.output, self.report = base, output, report
        self._holding: set[Path] = set()   # input folders already reported as inside the output
        # Clip entries `{video: ...}` / `{frames: ...}` (manifest/clips.py, passed in by the schema
        # so that module can use the helpers here without a cycle): content path -> video.Clip.
        self.check_clip = check_clip
        self.clips: dict[str, Any] = {}
        # Photos with regions `{image: ..., regions: ...}`: checked by manifest/regions.py once
        # the named styles are known; (key path, mapping) in manifest order.
        self.region_items: list[tuple[tuple, dict]] = []
        self.named_styles: dict[str, StyleEntry] = {}

    def add(self, path: tuple, message: str, **kw: Any) -> None:
        self.report.add(path, message, **kw)

    def pairing(self, data: dict) -> str | None:
        value = data.get("pairing", "explicit" if "pairs" in data else "product")
        if value is INVALID:
            return None
        if value not in PAIRINGS:
            self.add(("pairing",), f"expected one of {', '.join(PAIRINGS)}, got {describe(value)}")
            return None
        if value == "explicit":
            for key in ("content", "style"):
                if key in data:
                    self.add((key,), "not used with pairing: explicit; list each content image and "
                                     "its style under pairs")
        elif "pairs" in data:
            self.add(("pairs",), f"only used with pairing: explicit, not {value}; remove it or "
                                 "set pairing: explicit")
        return value

    def _entries(self, key: str, data: dict, what: str) -> list[tuple[tuple, Any]]:
        value, path = data.get(key), (key,)
        if key not in data:
            self.add(path, f"missing; list {what}")
        elif value is INVALID:
            pass
        elif isinstance(value, (str, dict)):
            return [(path, value)]
        elif not isinstance(value, list):
            self.add(path, f"expected a list of {what}, got {describe(value)}")
        elif not value:
            self.add(path, f"is empty; list {what}")
        else:
            return [(path + (i,), item) for i, item in enumerate(value)]
        return []

    def content(self, data: dict) -> list[str]:
        found: list[Path] = []
        for path, item in self._entries("content", data, "image files, folders or globs"):
            if isinstance(item, dict) and ("image" in item or "regions" in item or "labels" in item):
                self.region_items.append((path, item))   # a photo with regions: docs/manifest.md
                continue
            if isinstance(item, dict) and self.check_clip is not None:   # a clip: docs/video.md
                clip = self.check_clip(self, path, item)
                if clip is not None and self.clips.setdefault(clip.path, clip) != clip:
                    self.add(path, f"the clip {self._label(Path(clip.path))} is listed twice with different "
                                   "frame selections; keep one entry per clip")
                found += [Path(clip.path)] if clip is not None else []
                continue
            found += self._images(path, item, "content")
        return list(dict.fromkeys(str(p) for p in found))

    def styles(self, data: dict) -> list[StyleEntry]:
        styles: list[StyleEntry] = []
        for path, item in self._entries("style", data, "image files, folders, globs or blends"):
            if isinstance(item, dict):
                entry = self._blend(path, item)
                styles += [entry] if entry else []
            else:
                styles += [StyleEntry((str(p),), (1.0,), self._label(p)) for p in self._images(path, item, "style")]
        return list(dict.fromkeys(styles))

    def _text_path(self, path: tuple, value: Any, what: str) -> bool:
        if value is INVALID:
            return False
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"expected {what}, got {describe(value)}")
        elif "\0" in value:
            self.add(path, "contains a NUL byte")
        else:
            return True
        return False

    def _label(self, path: Path) -> str:
        """The path as the manifest would write it: relative when that stays short."""
        relative = Path(os.path.relpath(path, self.base))
        return relative.as_posix() if relative.parts[:3].count("..") < 3 else str(path)

    def _images(self, path: tuple, pattern: Any, role: str) -> list[Path]:
        """Every image a string names: a file, a folder (recursively) or a glob; sorted."""
        if not self._text_path(path, pattern, "a file, folder or glob" + (" or a blend" if role == "style" else "")):
            return []
        target = self.base / pattern
        kind = file_kind(target)
        if kind == "file":
            return self._one_image(path, pattern, role)
        if kind == "dir":
            self._outside_output(resolve(target))
            found = self._walk(path, target)
            if not found:
                self.add(path, f"folder {show_value(pattern)} contains no image files",
                         hint="extensions: " + " ".join(IMAGE_EXTENSIONS))
            return found
        if not _MAGIC.search(pattern):
            self.add(path, f"{role} image not found: {pattern}", hint=PATH_HINT)
            return []
        try:
            hits = list(islice(glob.iglob(_any_case_extension(pattern), root_dir=self.base,
                                          recursive=True), MAX_JOBS * 10))
        except (OSError, ValueError):
            hits = []
        root = resolve(self.base / pattern[:_MAGIC.search(pattern).start()].rpartition("/")[0])
        self._outside_output(root)
        found = sorted({p for p in (self._candidate(path, self.base / hit, root) for hit in sorted(hits)
                                    if _is_image(hit)) if p is not None})
        if not found:
            self.add(path, f"{show_value(pattern)} matched no image files", hint=PATH_HINT)
        return found[:MAX_JOBS + 1]

    def _outside_output(self, folder: Path | None) -> None:
        """Refuse an output folder that is an input folder; note input folders inside it.

        Results written into an input folder would be read back as new content by the next
        run (the job count would grow every run), and index.html, index.sqlite,
        manifest.resolved.yaml or contact_sheet.png would replace a user's files of those
        names. An input folder further down is checked once the images are known
        (`check_inside_output`): the demo keeps its inputs in out/demo/inputs/."""
        out = self.output
        if out is None or folder is None or not folder.is_relative_to(out) or folder in self._holding:
            return
        self._holding.add(folder)
        if folder == out:
            self._refuse_output("is", folder)

    def _refuse_output(self, relation: str, folder: Path) -> None:
        self.add(("output",), f"{self._label(self.output)} {relation} the input folder {self._label(folder)}; "
                              "results would mix with the inputs: choose an output folder outside them")

    def check_inside_output(self, content: list[str], styles: list[StyleEntry]) -> None:
        """Refuse an output folder above an input folder that some result would land in.

        A result is written to `<output>/<content stem>/<style stem>/<job_id>.<ext>`
        (jobs.output_path_for), so `<output>/a` or `<output>/a/b` is at risk when a content
        image's stem is `a` (and a style's is `b`); a deeper folder never is."""
        out = self.output
        inside = [f for f in self._holding if out is not None and f != out]
        if not inside:
            return
        content_stems = {safe_stem(c) for c in content}
        style_stems = {style_stem(s.images) for s in styles}
        for folder in sorted(inside):
            parts = folder.relative_to(out).parts
            if len(parts) <= 2 and parts[0] in content_stems and (len(parts) == 1 or parts[1] in style_stems):
                self._refuse_output("holds", folder)

    def _skipped_output(self, root: Path | None, path: Path) -> bool:
        """Results are not inputs: a folder or glob above the output folder skips what is in it."""
        out = self.output
        return (out is not None and root is not None and path.is_relative_to(out)
                and not root.is_relative_to(out))

    def _candidate(self, path: tuple, entry: Path, root: Path | None) -> Path | None:
        """`entry`, an image file a folder or glob matched, resolved; None if it cannot be an input.

        A broken symlink or a file without read permission stays an input, with a warning:
        its jobs fail alone with the reason when they run and the rest of the folder runs
        (one bad entry among thousands of photos must not refuse the whole batch; silently
        skipped, it would just be missing from the results). A file the manifest names itself
        is still an error (`_one_image`).
        """
        target = resolve(entry)
        if target is not None and self._skipped_output(root, target):
            return None
        if entry.is_symlink() and not entry.exists():
            self.report.warn(path, f"broken symlink {self._label(entry)} (to {os.readlink(entry)}); its "
                                   "jobs will fail until its target is restored or it is removed")
            return Path(os.path.abspath(entry))
        if target is None or file_kind(target) != "file":
            return None
        if not os.access(target, os.R_OK):
            self.report.warn(path, f"cannot read {self._label(entry)}: permission denied; its jobs will "
                                   "fail until its permissions are fixed or it is moved out of the folder")
        return target

    def _walk(self, path: tuple, folder: Path) -> list[Path]:
        root = resolve(folder)
        found: list[Path] = []
        # Hidden files are skipped: macOS writes `._IMG.jpg` companions that are not images.
        for here, dirs, files in os.walk(folder):   # followlinks=False: no symlink cycles
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if _is_image(name) and not name.startswith("."):
                    p = self._candidate(path, Path(here, name), root)
                    found += [p] if p is not None else []
            if len(found) > MAX_JOBS:
                break
        return sorted(found)

    def _one_image(self, path: tuple, value: Any, role: str) -> list[Path]:
        """A single image file (blends and pairs name files, not folders or globs)."""
        if not self._text_path(path, value, "an image file"):
            return []
        target = self.base / value
        kind = file_kind(target)
        if kind == "dir":
            self.add(path, f"{value} is a folder; name one image file here")
        elif kind is None:
            self.add(path, f"{role} image not found: {value}", hint=PATH_HINT)
        elif not _is_image(target):
            self.add(path, f"not an image file: {value}", hint="extensions: " + " ".join(IMAGE_EXTENSIONS))
        elif not os.access(target, os.R_OK):
            self.add(path, f"cannot read {value}: permission denied; fix its permissions")
        else:
            resolved = resolve(target)
            self._outside_output(resolved.parent if resolved else None)
            return [resolved] if resolved else []
        return []

    def _blend(self, path: tuple, item: dict) -> StyleEntry | None:
        self.report.unknown_keys(path, item, ("images", "weights", "name"))
        name = self._style_name(path + ("name",), item.get("name"))
        images, ipath = item.get("images"), path + ("images",)
        if "images" not in item:
            self.add(path, "a blended style needs images: [a.jpg, b.jpg] (and optional weights)")
            return None
        if images is INVALID:
            return None
        if not isinstance(images, list) or not images:
            self.add(ipath, f"expected a non-empty list of image files, got {describe(images)}")
            return None
        files = [self._one_image(ipath + (i,), p, "style") for i, p in enumerate(images)]
        weights = self._weights(path + ("weights",), item.get("weights"), len(images))
        if weights is None or not all(files):
            return None
        paths = [f[0] for f in files]
        label = " + ".join(f"{self._label(p)} ({w:g})" for p, w in zip(paths, weights))
        entry = StyleEntry(tuple(map(str, paths)), weights, label, name)
        if name is not None:
            self.named_styles[name] = entry
        return entry

    def _style_name(self, path: tuple, value: Any) -> str | None:
        """A style's `name:` (regions name styles by it): a plain word, once per manifest."""
        if value is None or value is INVALID:
            return None
        if not isinstance(value, str) or not _NAME.match(value) or value.lower() == "none":
            self.add(path, f"expected a plain name (letters, digits, _ or -, not none), got {describe(value)}")
        elif value in self.named_styles:
            self.add(path, f"the style name {value} is used twice; give each style its own name")
        else:
            return value
        return None

    def _weights(self, path: tuple, value: Any, n: int) -> tuple[float, ...] | None:
        if value is None:
            return tuple([1.0 / n] * n)
        if has_invalid(value):
            return None
        if not isinstance(value, list) or not all(is_number(v) for v in value):
            self.add(path, f"expected a list of numbers, got {describe(value)}")
        elif len(value) != n:
            self.add(path, f"has {len(value)} weight(s) for {n} image(s); give one weight per image")
        elif not all(math.isfinite(v) and v >= 0 for v in value) or not 0 < sum(value) < math.inf:
            self.add(path, "weights must be finite numbers ≥ 0 with a positive sum")
        else:
            return tuple(float(v) for v in value)
        return None

    def pairs(self, data: dict) -> list[tuple[str, StyleEntry]]:
        pairs: list[tuple[str, StyleEntry]] = []
        for path, item in self._entries("pairs", data, "{content: a.jpg, style: b.jpg} mappings"):
            if item is INVALID:
                continue
            if not isinstance(item, dict):
                self.add(path, f"expected a mapping {{content: a.jpg, style: b.jpg}}, got {describe(item)}")
                continue
            self.report.unknown_keys(path, item, ("content", "style"))
            if "content" not in item:
                self.add(path + ("content",), "missing; each pair names one content image")
            content = self._one_image(path + ("content",), item.get("content", INVALID), "content")
            if "style" not in item:
                self.add(path + ("style",), "missing; each pair names one style image or blend")
            style, spath = item.get("style", INVALID), path + ("style",)
            if isinstance(style, dict):
                entry = self._blend(spath, style)
            else:
                found = self._one_image(spath, style, "style")
                entry = StyleEntry((str(found[0]),), (1.0,), self._label(found[0])) if found else None
            if content and entry:
                pairs.append((str(content[0]), entry))
        return pairs
