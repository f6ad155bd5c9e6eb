"""The generated-dataset store: ``images/``, ``masks/``, ``manifest.jsonl`` and ``dataset.json``.

Layout of one generated set (``<out>/<generator>/<category>/``)::

    images/00000.png ...     synthetic anomalous images (RGB, 8-bit)
    masks/00000.png ...      binary masks (0/255), same file names (anomalib Folder format)
    extras/<key>/00000.png   optional per-sample outputs (e.g. a localisation heatmap)
    manifest.jsonl           one JSON row per finished sample
    dataset.json             generator, version, full config, protocol split, device, cost

Every file is written atomically (temp file + rename) and a manifest row is appended only after
its files are on disk, so a killed run leaves no truncated file and resumes at the first index
without a row. The pixels of sample ``i`` depend only on (seed, i), so a resumed run and an
uninterrupted one give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes, atomic_write_text, png_bytes, read_mask, read_rgb

MANIFEST = "manifest.jsonl"
DATASET_JSON = "dataset.json"
# dataset.json keys that must match for a run to resume into an existing folder
IDENTITY_KEYS = (
    "generator", "generator_version", "config", "dataset", "category", "seed", "image_size", "protocol",
    "anomaly_source", "model", "checkpoint",
)


def sample_id(index: int) -> str:
    return f"{index:05d}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DatasetWriter:
    """Writes one generated set; opening an existing folder resumes it (or refuses a mismatch)."""

    def __init__(self, folder: str | os.PathLike, meta: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.meta = dict(meta)
        self.rows: dict[int, dict[str, Any]] = {}
        self._open()

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.folder / DATASET_JSON
        if existing.exists():
            from anobench.metadata import read_json_object

            old = read_json_object(existing)
            diff = [k for k in IDENTITY_KEYS if old.get(k) != self.meta.get(k)]
            if diff:
                raise AnobenchError(
                    f"{self.folder}: holds a set made with other settings ({', '.join(diff)} differ); "
                    "use another --out or delete it"
                )
        self.rows = {int(r["index"]): r for r in _read_manifest(self.folder, repair=True)}
        for leftover in self.folder.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        self.meta.setdefault("status", "running")
        self.write_meta()

    @property
    def done(self) -> set[int]:
        return set(self.rows)

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        atomic_write_text(self.folder / DATASET_JSON, json.dumps(self.meta, indent=2, sort_keys=True) + "\n")

    def add(self, index: int, image: np.ndarray, mask: np.ndarray, row: dict[str, Any],
            arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Write one sample's files, then its manifest row; returns the row."""
        sid = sample_id(index)
        image_bytes, mask_bytes = png_bytes(image), png_bytes(mask.astype(bool))
        atomic_write_bytes(self.folder / "images" / f"{sid}.png", image_bytes)
        atomic_write_bytes(self.folder / "masks" / f"{sid}.png", mask_bytes)
        files = {"image": f"images/{sid}.png", "mask": f"masks/{sid}.png"}
        sha = {"image": sha256_bytes(image_bytes), "mask": sha256_bytes(mask_bytes)}
        for key, array in (arrays or {}).items():
            data = png_bytes(array)
            atomic_write_bytes(self.folder / "extras" / key / f"{sid}.png", data)
            files[key] = f"extras/{key}/{sid}.png"
            sha[key] = sha256_bytes(data)
        full = {"id": sid, "index": index, "files": files, "sha256": sha, **row}
        line = json.dumps(full, sort_keys=True) + "\n"
        with open(self.folder / MANIFEST, "a", encoding="utf-8") as handle:
            handle.write(line)  # one write of a whole line: a kill leaves at most a torn last line
        self.rows[index] = full
        return full


def _read_manifest(folder: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Manifest rows; a torn last line (killed mid-append) is dropped, and with ``repair`` removed."""
    path = folder / MANIFEST
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            int(row["index"])
            row["files"]["image"], row["files"]["mask"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number == len(lines) and not line.endswith("\n"):
                if repair:
                    atomic_write_text(path, "".join(lines[:-1]))
                break
            raise AnobenchError(f"{path}:{number}: broken manifest row") from None
        rows.append(row)
    return rows


@dataclass
class GeneratedSet:
    """A finished generated set, as the detector and the quality metrics read it."""

    folder: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "GeneratedSet":
        folder = Path(folder)
        meta_path = folder / DATASET_JSON
        if not meta_path.exists():
            raise AnobenchError(f"{folder}: not a generated set (no {DATASET_JSON})")
        from anobench.metadata import DATASET_KEYS, read_json_object

        meta = read_json_object(meta_path, DATASET_KEYS)
        rows = sorted(_read_manifest(folder), key=lambda r: int(r["index"]))
        if not rows:
            raise AnobenchError(f"{folder}: generated set is empty (no rows in {MANIFEST})")
        for row in rows:
            for key in ("image", "mask"):
                name = str(row["files"][key])
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise AnobenchError(f"{folder / MANIFEST}: sample {row.get('id')}: file {name!r} is outside the set")
                if not (folder / row["files"][key]).exists():
                    raise AnobenchError(f"{folder / row['files'][key]}: listed in {MANIFEST} but missing")
        return cls(folder, meta, rows)

    @property
    def generator(self) -> str:
        return self.meta.get("generator", "?")

    @property
    def category(self) -> str:
        return self.meta.get("category", "?")

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, i: int) -> Path:
        return self.folder / self.rows[i]["files"]["image"]

    def mask_path(self, i: int) -> Path:
        return self.folder / self.rows[i]["files"]["mask"]

    def load(self, i: int, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 image, bool HxW mask) of sample ``i``."""
        return read_rgb(self.image_path(i), size), read_mask(self.mask_path(i), size)
