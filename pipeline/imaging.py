"""Reading and writing image files: the only module that touches them.

Inputs are opened read-only and never written. Outputs are written to a temporary file in
the destination folder and moved into place with `os.replace`, so a crash never leaves a
half-written file under a final name.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from . import encode16, fault_hooks
from .errors import InputError, OutputError

if TYPE_CHECKING:   # torch loads in read_image: validate, plan and status read headers only
    import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".tga")
MAX_PIXELS = 120_000_000   # refuse larger inputs before decoding them (decompression bombs)
_UMASK = os.umask(0o022)
os.umask(_UMASK)           # read once at import: os.umask can only be read by setting it
MAX_ASPECT = 50            # a 10000 × 10 strip cannot be stylized meaningfully
_TIFF_DESCRIPTION = 270    # the ImageDescription tag: where TIFF outputs keep their parameters


def read_image(path: str | Path, long_side_hint: int | None = None) -> torch.Tensor:
    """Load any image Pillow reads as a (1, 3, H, W) float tensor, RGB in [0, 1].

    EXIF orientation is applied; an embedded ICC profile (Display P3, Adobe RGB, a CMYK or grey
    profile) is converted to sRGB, the space VGG was trained in and the one outputs are tagged
    with; transparency is composited on white; palette, grey, CMYK and 16-bit images are
    converted. `long_side_hint`: the caller shrinks the image to that long side anyway, so a
    larger image is decoded reduced (JPEG's DCT scaling to no less than that, then Pillow's
    whole-factor `reduce` and Lanczos) to `REDUCE_MARGIN` × the hint, and the caller's
    antialiased resize does the rest: the full-size pixels are never held as floats (a 6000 × 4000 style
    image is 288 MB of them). See `decoded_long_side` for the size that comes back.
    """
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is the limit (checked below with the real size); Pillow's lower warning
            # threshold would otherwise refuse 90–120 Mpx images with a misleading message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_geometry(path, img.size)
                if long_side_hint and img.format == "JPEG":
                    w, h = img.size
                    s = REDUCE_MARGIN * long_side_hint / max(w, h)
                    if s < 1:   # draft keeps at least the size asked for
                        img.draft("RGB", (max(1, math.ceil(w * s)), max(1, math.ceil(h * s))))
                img.load()
                # Reduced after the EXIF rotation (a reduced copy would lose a TIFF's orientation
                # tag) and, where Pillow can average the mode, before the colour conversion.
                upright = _reduced(ImageOps.exif_transpose(img), long_side_hint)
                rgb = _reduced(_to_srgb(upright), long_side_hint)
                del upright
    except InputError:
        raise
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _pillow_error(path, err) from None
    import torch   # only now (seconds to load): a missing or broken file is reported without it

    array = np.asarray(rgb, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)
    # Standard (N, C, H, W) strides, not the channels-last view of the HWC array: L-BFGS flattens
    # gradients with .view(-1), which fails when the image keeps channels-last strides (a
    # content image already at the output size, or a 1 × 1 image, reaches it unresized).
    return tensor.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


REDUCE_MARGIN = 3    # decode reduced to 3× the size the caller resamples to (docs/performance.md)
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F")   # modes Image.reduce averages


def _reduced(img: Image.Image, long_side_hint: int | None) -> Image.Image:
    """`img` resampled to a long side of REDUCE_MARGIN × the hint when it is larger (else, or
    in a mode Pillow cannot average, unchanged): Lanczos, after a box `reduce` by the whole
    factor that leaves 3× that size (Pillow's `reducing_gap`, at which it finds the result
    indistinguishable from resampling the whole image)."""
    target = REDUCE_MARGIN * long_side_hint if long_side_hint else 0
    if not target or max(img.size) <= target or img.mode not in _REDUCIBLE:
        return img
    w, h = img.size
    s = target / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS, reducing_gap=3.0)


def decoded_long_side(long_side: int, long_side_hint: int | None) -> int:
    """The long side `read_image` returns for an image whose (EXIF-rotated) long side is
    `long_side`, at most (a mode Pillow cannot resample keeps a JPEG draft's size, below twice
    this; 16-bit and palette images are rare as large inputs)."""
    if not long_side_hint:
        return long_side
    return min(long_side, REDUCE_MARGIN * long_side_hint + 1)


def _pillow_error(path: str | Path, err: BaseException) -> InputError:
    """What Pillow's failure to open or decode `path` means, in one line."""
    if isinstance(err, Image.DecompressionBombError):
        return InputError(f"{path}: image is too large to decode safely (over {MAX_PIXELS:,} pixels); "
                          "downscale it first")
    if isinstance(err, UnidentifiedImageError):
        return InputError(f"not an image Pillow can read: {path} (is the extension right?)")
    return InputError(f"truncated or corrupt image: {path} ({err})")


def _check_file(path: Path) -> None:
    """What the file system says before Pillow looks: missing, a folder, unreadable, empty."""
    if path.is_symlink() and not path.exists():
        raise InputError(f"broken symlink: {path} points to a missing file")
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied (check the file's permissions)")
    if path.stat().st_size == 0:
        raise InputError(f"empty file: {path}")


# The bytes a whole file of these formats ends with: JPEG's EOI marker, PNG's IEND chunk (its
# type and CRC). A file cut short by a failed copy or download lacks them.
_TRAILERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}


def check_image_header(path: str | Path) -> None:
    """Raise InputError when `path` is not an image a job could read, without decoding it.

    Caught: a missing, empty, unreadable or folder path; a file Pillow cannot identify (text,
    another format); a size over MAX_PIXELS or beyond MAX_ASPECT; a JPEG or PNG cut short
    (its end marker missing). Not caught: damage inside the compressed data of a whole-length
    file; such a job fails when it runs, with the decoder's message. Reads the header and the
    last bytes only (milliseconds for any size)."""
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size, fmt = img.size, img.format
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _pillow_error(path, err) from None
    _check_geometry(path, size)
    trailers = _TRAILERS.get(fmt or "")
    if trailers:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 16))
            tail = f.read().rstrip(b"\x00")   # some cameras pad JPEGs with zeros after EOI
        if not tail.endswith(trailers):
            raise InputError(f"truncated or corrupt image: {path} (the {fmt} file ends before its end "
                             "marker: copy or export it again)")


def image_shape(path: str | Path) -> tuple[int, int] | None:
    """(H, W) as `read_image` would return it (EXIF rotation included), from the header only;
    None when the file cannot be read (its job will fail with the real error when it runs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
    except Exception:  # any unreadable file: the worker reports it properly
        return None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _check_geometry(path: Path, size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise InputError(f"{path}: {w} × {h} is over {MAX_PIXELS:,} pixels; downscale it first")
    if min(w, h) < 1 or max(w, h) / max(1, min(w, h)) > MAX_ASPECT:
        raise InputError(f"{path}: {w} × {h} has an aspect ratio beyond {MAX_ASPECT}:1; crop it first")


_SRGB = ImageCms.createProfile("sRGB")
SRGB_ICC = ImageCms.ImageCmsProfile(_SRGB).tobytes()
_PROFILE_MODES = {"RGB": ("RGB", "RGBA"), "CMYK": ("CMYK",), "GRAY": ("L",)}


def _to_srgb(img: Image.Image) -> Image.Image:
    """RGB in sRGB: through the embedded ICC profile when there is one Pillow can apply."""
    icc = img.info.get("icc_profile")
    if not icc:
        return _to_rgb(img)
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = source.profile.xcolor_space.strip()
    except (OSError, ImageCms.PyCMSError):
        return _to_rgb(img)        # a broken profile: read the numbers as sRGB, as browsers do
    if space == "RGB" and img.mode not in _PROFILE_MODES["RGB"]:
        img = _to_rgb(img)         # palette, 16-bit or alpha forms first; the profile still holds
    if img.mode not in _PROFILE_MODES.get(space, ()):
        return _to_rgb(img)
    alpha = img.mode == "RGBA"
    if alpha:
        img = _to_rgb(img)         # composite on white in the source space, then convert
    try:
        # Perceptual intent: out-of-gamut colours (P3 reds) are compressed, not clipped flat.
        return ImageCms.profileToProfile(img, source, _SRGB, outputMode="RGB",
                                         renderingIntent=ImageCms.Intent.PERCEPTUAL)
    except ImageCms.PyCMSError:
        return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits rather than clipping everything above 255 to white.
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(array * (255.0 if array.max() <= 1 else 1.0), 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:
        # A palette index or a colour key (PNG tRNS) marks transparent pixels: composite them too.
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


_BAND_ROWS = 256   # rows converted at a time: no float copy of a whole print-size image


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> 8-bit RGB PIL image (rounded, not truncated).

    Converted in bands of rows into one uint8 array: at 12 MP a float copy of the image is
    145 MB and the chain clamp → scale → round would hold two of them at once."""
    if image.dim() == 4:
        image = image[0]
    image = image.detach()
    height = image.shape[-2]
    array = np.empty((height, image.shape[-1], 3), dtype=np.uint8)
    for top in range(0, height, _BAND_ROWS):
        band = image[:, top:top + _BAND_ROWS].float().clamp(0, 1).mul_(255).round_().byte()
        array[top:top + _BAND_ROWS] = band.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def uint16_bands(image: torch.Tensor, alpha: np.ndarray | None = None) -> Iterable[np.ndarray]:
    """(rows, W, 3) uint16 bands of a (1, 3, H, W) or (3, H, W) image in [0, 1], straight from the
    float result (no 8-bit step), _BAND_ROWS at a time as in `to_pil`; (rows, W, 4) with `alpha`."""
    if image.dim() == 4:
        image = image[0]
    image = image.detach()
    for top in range(0, image.shape[-2], _BAND_ROWS):
        band = image[:, top:top + _BAND_ROWS].float().clamp(0, 1).mul_(65535).round_()
        rgb = band.permute(1, 2, 0).cpu().numpy().astype(np.uint16)
        if alpha is not None:
            a = np.round(alpha[top:top + _BAND_ROWS] * 65535).astype(np.uint16)
            rgb = np.concatenate([rgb, a[..., None]], axis=2)
        yield np.ascontiguousarray(rgb)


def read_alpha(path: str | Path, height: int, width: int) -> np.ndarray | None:
    """The content image's transparency, resized exactly to the output, as (H, W) float32 in
    [0, 1]; None when it has none. The stylized pixels were computed on the image composited on
    white (`read_image`); this puts the alpha back over them."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in img.info:
            return None
        alpha = img.convert("RGBA").getchannel("A")
    if alpha.getextrema() == (255, 255):   # an alpha channel that hides nothing: keep outputs opaque
        return None
    resized = alpha.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float32) / 255.0


DEFAULT_TIFF_DPI = 300   # what print shops assume; Pillow reads a TIFF without one as 1 dpi


def effective_dpi(fmt: str, dpi: int | None) -> int | None:
    """The resolution written in the file: `dpi`, else 300 for TIFF, else none (screen images)."""
    return dpi if dpi is not None else DEFAULT_TIFF_DPI if fmt == "tiff" else None


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Write `path` through a hidden temp file beside it: fsynced, renamed at the end, gone if it raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        fault_hooks.kill_before_replace(path)           # test-only
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and `os.replace`."""
    with atomic_file(path) as fh:
        fault_hooks.disk_full(path, fh, data)        # test-only (fault_hooks.py)
        fh.write(data)


def remove_partial_writes(paths: Iterable[Path]) -> int:
    """Delete the temp files left by writes to `paths` that were killed before their replace.

    They only ever have hidden names (`.<name>.<random>.tmp`), never a final one; one scan per
    folder. Only call it when no live process can be writing those paths. Returns how many.
    """
    wanted: dict[Path, set[str]] = {}
    for path in paths:
        wanted.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            with os.scandir(folder) as entries:
                stale = [e.path for e in entries if e.name.startswith(".") and e.name.endswith(".tmp")
                         and e.name[1:-4].rpartition(".")[0] in names]
        except OSError:
            continue
        for tmp in stale:
            try:
                os.unlink(tmp)
                removed += 1
            except OSError:
                pass
    return removed


def save_image(image: torch.Tensor, path: str | Path, fmt: str = "png", quality: int = 95,
               metadata: dict[str, Any] | None = None, dpi: int | None = None, bit_depth: int = 8,
               alpha: np.ndarray | None = None) -> Path:
    """Save atomically as PNG (parameters in a text chunk), JPEG (in the comment) or TIFF (in
    the ImageDescription tag, LZW-compressed), always tagged with an sRGB ICC profile and, where
    `effective_dpi` gives one, a resolution. bit_depth 16 (PNG, TIFF): encode16.py. `alpha`
    ((H, W) in [0, 1], `read_alpha`) is written as a fourth channel by PNG and TIFF; JPEG has
    none (the caller warns)."""
    path = Path(path)
    if fmt == "jpeg":
        alpha = None
    text = json.dumps(metadata or {}, sort_keys=True)
    dpi = effective_dpi(fmt, dpi)
    if bit_depth == 16:
        if fmt not in ("png", "tiff"):
            raise OutputError(f"bit_depth 16 needs a .png or .tif output; {fmt.upper()} stores 8 bits")
        height, width = image.shape[-2:]
        encode = encode16.png16 if fmt == "png" else encode16.tiff16
        data = encode(uint16_bands(image, alpha), width, height, dpi, SRGB_ICC, text,
                      channels=3 if alpha is None else 4)
    else:
        pil = to_pil(image)
        if alpha is not None:
            pil.putalpha(Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L"))
        buffer = io.BytesIO()
        resolution = {"dpi": (dpi, dpi)} if dpi else {}
        if fmt == "png":
            info = PngInfo()
            info.add_text("nst-batch", text)
            pil.save(buffer, format="PNG", pnginfo=info, icc_profile=SRGB_ICC, **resolution)
        elif fmt == "jpeg":
            pil.save(buffer, format="JPEG", quality=quality, comment=text.encode(), icc_profile=SRGB_ICC,
                     **resolution)
        elif fmt == "tiff":
            pil.save(buffer, format="TIFF", compression="tiff_lzw", icc_profile=SRGB_ICC,
                     tiffinfo={_TIFF_DESCRIPTION: text}, **resolution)
        else:
            raise OutputError(f"unknown output format {fmt!r}; use png, jpeg or tiff")
        data = buffer.getvalue()
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The parameters embedded by `save_image`."""
    with Image.open(path) as img:
        tags = getattr(img, "tag_v2", {})
        raw = img.info.get("nst-batch") or img.info.get("comment") or tags.get(_TIFF_DESCRIPTION) or b"{}"
    return json.loads(raw if isinstance(raw, str) else raw.decode())
