"""Image and mask file I/O with one-line errors, and deterministic atomic PNG writes.

Readers accept what real inspection datasets contain: 8-bit RGB, grayscale (MVTec AD grid,
screw, zipper; Magnetic-tile) replicated to three channels, palette and alpha images, and 16-bit
PNG scaled to 8 bits. Anything PIL cannot decode is an :class:`AnobenchError` naming the file.
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


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise AnobenchError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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


def read_mask(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read a mask as bool HxW: any non-zero pixel is anomalous; resized nearest."""
    path = Path(path)
    image = _open(path)
    # raw values, not scaled to 8 bits: a 16-bit mask of 0/1 labels is still a mask
    arr = np.asarray(image.convert("L")) if image.mode in ("1", "P") else np.asarray(image)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    mask = arr > 0
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

    The rename alone survives a killed process; ``durable`` also fsyncs, for power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the mode a plain open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
