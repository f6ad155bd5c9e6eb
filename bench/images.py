"""Image and mask file I/O with one-line errors, and deterministic atomic PNG writes.

Readers accept what real inspection datasets contain: 8-bit RGB, grayscale (MVTec AD grid,
screw, zipper; Magnetic-tile) replicated to three channels, palette and alpha images, and 16-bit
PNG scaled to 8 bits. Anything PIL cannot decode, and any image over PIL's decompression-bomb
limit, is an :class:`AnobenchError` naming the file.

The mask rule, one for every mode (:func:`mask_labels`, used by every reader):

* a pixel is anomalous when its label is non-zero;
* grey modes (``1``, ``L``, ``I``, ``I;16``, ``F``): the raw value is the label, never rescaled,
  so a 16-bit mask of 0/1 labels is a mask;
* colour modes (``RGB``, ``CMYK``, ``YCbCr``, ...): the label is the largest RGB channel;
* palette modes (``P``, ``PA``): the label is the palette colour's largest channel, so index 0
  painted white is anomalous and index 5 painted black is not;
* alpha (``RGBA``, ``LA``, ``PA``, a palette's transparency) is never a label: it is dropped.
  ``datasets check`` warns when a mask's alpha varies (labels drawn only in alpha read as empty)
  and when a mask covers (almost) the whole image.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anobench.errors import AnobenchError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_UMASK = os.umask(0)
os.umask(_UMASK)


_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError)


def _bomb(path: Path, exc: Exception) -> AnobenchError:
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels, " if found else ""
    return AnobenchError(f"{path}: image too large to decode safely ({size}over PIL's decompression-bomb limit "
                         f"of {2 * (Image.MAX_IMAGE_PIXELS or 0):,})")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise AnobenchError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnobenchError(f"{path}: is a folder, not an image") from None
    except Image.DecompressionBombError as exc:
        raise _bomb(path, exc) from None
    except _DECODE_ERRORS as exc:
        raise AnobenchError(f"{path}: unreadable image ({exc.__class__.__name__})") from None
    return image


def _to_uint8_array(image: Image.Image) -> np.ndarray:
    """Array of an image in 8 bits: 16/32-bit integer modes are scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
    if image.mode == "I":
        arr = np.asarray(image, dtype=np.int64)
        top = 65535 if arr.max(initial=0) > 255 else 255
        return (np.clip(arr, 0, top) * 255 // top).astype(np.uint8)
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max(initial=0.0)
        scale = 255.0 if top <= 1.0 else (255.0 / 65535.0 if top > 255 else 1.0)
        return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    return np.asarray(image)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise AnobenchError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnobenchError(f"{path}: is a folder, not an image") from None
    except Image.DecompressionBombError as exc:
        raise _bomb(path, exc) from None
    except _DECODE_ERRORS as exc:
        raise AnobenchError(f"{path}: unreadable image ({exc.__class__.__name__})") from None


def read_rgb(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read an image as uint8 HxWx3 RGB, resized (bilinear) to ``size`` x ``size``."""
    path = Path(path)
    image = _open(path)
    if image.mode not in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "1"):
        image = Image.fromarray(_to_uint8_array(image))
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).copy()


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def mask_labels(image: Image.Image) -> np.ndarray:
    """HxW raw labels of a mask image by the module's mask rule (alpha dropped, never rescaled)."""
    mode = image.mode
    if mode in ("P", "PA"):
        arr = np.asarray(image.convert("RGB"))  # palette colours; transparency dropped
    elif mode in ("LA", "La"):
        arr = np.asarray(image)[..., 0]
    elif mode in ("RGBA", "RGBa", "RGBX"):
        arr = np.asarray(image)[..., :3]
    elif mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        arr = np.asarray(image)
    else:  # CMYK, YCbCr, LAB, HSV: their RGB rendering
        arr = np.asarray(image.convert("RGB"))
    return arr.max(axis=2) if arr.ndim == 3 else arr


def mask_alpha_varies(image: Image.Image) -> bool:
    """True when a mask carries an alpha channel that is not constant (the rule ignores it)."""
    if image.mode in _ALPHA_MODES:
        alpha = np.asarray(image.getchannel(image.getbands()[-1]))
    elif image.mode == "P" and "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
    else:
        return False
    return bool(alpha.min() != alpha.max())


# a mask covering at least this share of its image is flagged (inverted labels, a label in alpha)
FULL_MASK_SHARE = 0.99


def mask_warnings(path: str | os.PathLike) -> list[str]:
    """What looks wrong in a mask file under the mask rule, one line each (empty: nothing)."""
    path = Path(path)
    image = _open(path)
    notes = []
    share = float((mask_labels(image) > 0).mean()) if image.width and image.height else 0.0
    if mask_alpha_varies(image):
        notes.append(f"{path}: {image.mode} mask whose alpha varies; alpha is not a label (labels are read "
                     "from the grey or colour channels), so a label drawn only in alpha is lost")
    if share >= FULL_MASK_SHARE:
        notes.append(f"{path}: mask marks {share:.0%} of the image as anomalous (inverted labels, or labels "
                     "only in the alpha channel?)")
    return notes


def read_mask(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read a mask as bool HxW by the module's mask rule (label > 0, alpha ignored); resized nearest."""
    path = Path(path)
    mask = mask_labels(_open(path)) > 0
    if size is not None and mask.shape != (size, size):
        pil = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
        mask = np.asarray(pil) > 0
    return mask


def png_bytes(array: np.ndarray) -> bytes:
    """Deterministic PNG encoding (no timestamps or metadata): same array, same bytes."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    """Write via a temp file in the same folder and rename: readers never see a partial file.

    The rename alone survives a killed process; ``durable`` also fsyncs, for power loss. A
    symlink is written through (its target gets the bytes, the link stays) and an existing
    file keeps its mode. A full or read-only disk is an :class:`AnobenchError` naming the file,
    and the old file is left as it was.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK  # mkstemp makes 0600; give the mode a plain open() would
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        from anobench.safety import os_error

        raise os_error(exc, target, prefer_path=True) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
