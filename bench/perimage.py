"""What the bootstrap needs from one evaluation, kept compactly in the run folder.

``RUN/maps-<protocol>.npz`` holds, for every test image in evaluation order: its image score,
label, defect type and relative path, its ground-truth mask (bit-packed) and its anomaly map
quantised to ``uint16`` codes. The codes are ranks into ``edges``, at most 65536 increasing
values taken at quantiles of the pooled map values (one sort of all pixels): a pixel's code is
the index of the largest edge not above it, so equal values always share a code and the order
of pixels in different codes is the order of their values. Ranking metrics on the codes equal
the metrics on the float maps except for pixels that fall into the same quantile bin, which is
at most 1/65536 of the pixels per bin (tests/perf/bench_bootstrap.py measures the difference:
well below 1e-3).

Why codes and not float16 or uint8 maps: sigmoid maps crowd near 0 and 1, where fixed-step
quantisation ties many normal and anomalous pixels; quantile codes spread the ties evenly.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes

MAX_CODES = 65536
FILE_PATTERN = "maps-{protocol}.npz"


@dataclass
class PerImage:
    """One evaluation's test set: per-image scores and labels, quantised maps and masks."""

    scores: np.ndarray  # (N,) float64
    labels: np.ndarray  # (N,) bool
    codes: np.ndarray | None  # (N, H, W) uint16 or None (image scores only)
    masks: np.ndarray | None  # (N, H, W) bool
    edges: np.ndarray | None  # (K,) float64, the value of each code
    names: list[str] = field(default_factory=list)
    defect_types: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.scores.size)

    @property
    def has_maps(self) -> bool:
        return self.codes is not None

    def maps(self) -> np.ndarray:
        """The quantised maps as float values (each code replaced by its edge)."""
        if self.codes is None:
            raise AnobenchError("no anomaly maps stored")
        return self.edges[self.codes]

    def key(self) -> tuple:
        m = self.meta
        return (m.get("dataset"), m.get("category"), m.get("generator"), m.get("detector"), m.get("protocol"),
                int(m.get("seed", 0)), m.get("config_hash"))


def quantise(maps: np.ndarray, max_codes: int = MAX_CODES) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 codes of the same shape, increasing edge values) from one sort of all values."""
    values = np.asarray(maps)
    flat = np.sort(values.reshape(-1).astype(np.float64))
    if flat.size == 0:
        return np.zeros(values.shape, np.uint16), np.zeros(1)
    if np.isnan(flat[-1]):
        raise AnobenchError("anomaly maps contain NaN")
    positions = np.linspace(0, flat.size - 1, num=min(max_codes, flat.size)).round().astype(np.int64)
    edges = np.unique(flat[positions])
    edges[0] = min(edges[0], flat[0])
    codes = np.searchsorted(edges, values.astype(np.float64), side="right") - 1
    return codes.astype(np.uint16), edges


def from_arrays(scores, labels, maps=None, masks=None, names=(), defect_types=(), meta=None,
                max_codes: int = MAX_CODES) -> PerImage:
    """A :class:`PerImage` from float maps (quantised here) and boolean masks."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    codes = edges = mask_arr = None
    if maps is not None:
        maps = np.asarray(maps)
        if maps.ndim == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        codes, edges = quantise(maps, max_codes)
        mask_arr = np.asarray(masks)
        if mask_arr.ndim == 4 and mask_arr.shape[1] == 1:
            mask_arr = mask_arr[:, 0]
        mask_arr = mask_arr > 0
        if mask_arr.shape != codes.shape:
            raise AnobenchError(f"masks have shape {mask_arr.shape} but maps {codes.shape}")
    return PerImage(scores, labels, codes, mask_arr, edges, list(names), list(defect_types), dict(meta or {}))


def save(path: str | Path, data: PerImage) -> Path:
    """Write ``data`` as one compressed .npz (atomic: a crash leaves the old file or the new one)."""
    arrays: dict[str, Any] = {
        "scores": data.scores.astype(np.float64), "labels": data.labels.astype(bool),
        "names": np.array(data.names, dtype=str), "defect_types": np.array(data.defect_types, dtype=str),
        "meta": np.array(json.dumps(data.meta, sort_keys=True)),
    }
    if data.codes is not None:
        arrays.update(codes=data.codes.astype(np.uint16), edges=data.edges.astype(np.float64),
                      masks=np.packbits(data.masks, axis=-1), mask_width=np.array(data.masks.shape[-1]))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load(path: str | Path) -> PerImage:
    """Read a file written by :func:`save`; a damaged file is an :class:`AnobenchError` naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            codes = edges = masks = None
            if "codes" in z.files:
                codes, edges = z["codes"], z["edges"]
                masks = np.unpackbits(z["masks"], axis=-1, count=int(z["mask_width"])).astype(bool)
            return PerImage(z["scores"], z["labels"].astype(bool), codes, masks, edges,
                            [str(s) for s in z["names"]], [str(s) for s in z["defect_types"]], meta)
    except FileNotFoundError:
        raise AnobenchError(f"{path}: per-image file not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise AnobenchError(f"{path}: not a per-image maps file ({exc.__class__.__name__})") from None


def find(paths) -> list[Path]:
    """Every ``maps-*.npz`` in the given run folders (recursively) or named directly."""
    found: list[Path] = []
    for entry in [paths] if isinstance(paths, (str, Path)) else paths:
        entry = Path(entry)
        if entry.is_file() and entry.suffix == ".npz":
            found.append(entry)
        elif entry.is_dir():
            found.extend(sorted(entry.rglob("maps-*.npz")))
    return found
