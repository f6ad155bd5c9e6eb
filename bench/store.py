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

from anobench.artifacts import CREATED, RUNNING, open_artifact, resolve_stored_path
from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes, atomic_write_text, png_bytes, read_mask, read_rgb
from anobench.records import DatasetRecord

MANIFEST = "manifest.jsonl"
DATASET_JSON = DatasetRecord.FILE
# dataset.json keys that must match for a run to resume into an existing folder
IDENTITY_KEYS = DatasetRecord.IDENTITY


def sample_id(index: int) -> str:
    return f"{index:05d}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DatasetWriter:
    """Writes one generated set; opening an existing folder resumes it (or refuses a mismatch).

    The folder is locked for one writer (:mod:`anobench.artifacts`). Rows whose files are
    missing are dropped on open, so their samples are made again; with ``verify`` every file's
    sha256 is checked as well and damaged samples are regenerated.
    """

    def __init__(self, folder: str | os.PathLike, record: DatasetRecord | dict[str, Any], verify: bool = False) -> None:
        self.folder = Path(folder)
        if not isinstance(record, DatasetRecord):  # a plain dict is checked as a record
            record = DatasetRecord.from_dict(record, self.folder)
        self.artifact = open_artifact(self.folder, record)
        try:
            self.session_device = record.device  # this session's device, merged into the stored cost
            self.dropped: list[int] = []
            self.rows: dict[int, dict[str, Any]] = {}
            self._open(verify)
        except BaseException:
            self.close()
            raise

    def _open(self, verify: bool) -> None:
        rows = {int(r["index"]): r for r in _read_manifest(self.folder, repair=True)}
        for leftover in self.folder.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        for index, row in sorted(rows.items()):
            problem = sample_problem(self.folder, row, verify)
            if problem is None:
                self.rows[index] = row
            else:
                self.dropped.append(index)
        if self.dropped:  # rewrite the manifest without them: their samples are made again
            atomic_write_text(self.folder / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n"
                                                              for _, r in sorted(self.rows.items())))

    @property
    def done(self) -> set[int]:
        return set(self.rows)

    @property
    def record(self) -> DatasetRecord:
        return self.artifact.record  # type: ignore[return-value]

    def write_meta(self, **updates: Any) -> None:
        self.artifact.save(**updates)

    def record_cost(self, peak_memory_mb: float, **updates: Any) -> None:
        """Merge this session's cost into the record: the peak over sessions, every device used."""
        old_peak = self.record.peak_memory_mb
        peak = peak_memory_mb if old_peak is None else max(float(old_peak), peak_memory_mb)
        devices = [d for d in str(self.record.device or "").split(",") if d]
        new_device = self.session_device
        if new_device and new_device not in devices:
            devices.append(str(new_device))
        self.write_meta(peak_memory_mb=peak, device=",".join(devices) or None, **updates)

    def close(self) -> None:
        self.artifact.close()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

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
        if self.artifact.status == CREATED:
            self.write_meta(status=RUNNING)
        return full


def sample_problem(folder: Path, row: dict[str, Any], verify: bool = False) -> str | None:
    """Why a manifest row's sample is unusable (a file missing, or with ``verify`` its hash wrong)."""
    for key, name in row["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        expected = (row.get("sha256") or {}).get(key)
        if verify and expected and sha256_bytes(path.read_bytes()) != expected:
            return f"{path}: sha256 differs from the manifest"
    return None


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
    record: DatasetRecord
    rows: list[dict[str, Any]]

    @classmethod
    def open(cls, folder: str | os.PathLike, limit: int | None = None) -> "GeneratedSet":
        """The set in ``folder``; with ``limit``, its first ``limit`` samples (indices 0 .. limit-1).

        Sample ``i`` depends only on (seed, category, i), so the first ``limit`` samples of a
        larger set are exactly what a fresh set of that size holds; a gap among them is refused.
        """
        folder = Path(folder)
        if not (folder / DATASET_JSON).exists():
            raise AnobenchError(f"{folder}: not a generated set (no {DATASET_JSON})")
        record = DatasetRecord.read(folder)
        rows = sorted(_read_manifest(folder), key=lambda r: int(r["index"]))
        if not rows:
            raise AnobenchError(f"{folder}: generated set is empty (no rows in {MANIFEST})")
        if limit is not None:
            rows = [r for r in rows if int(r["index"]) < limit]
            if len(rows) < limit:
                raise AnobenchError(f"{folder}: holds {len(rows)} of samples 0..{limit - 1}, {limit} asked for; "
                                    "generate them first (the same generate command with --num "
                                    f"{limit} completes the set)")
        for row in rows:
            for key in ("image", "mask"):
                name = str(row["files"][key])
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise AnobenchError(f"{folder / MANIFEST}: sample {row.get('id')}: file {name!r} is outside the set")
                if not (folder / row["files"][key]).exists():
                    raise AnobenchError(f"{folder / row['files'][key]}: listed in {MANIFEST} but missing")
        return cls(folder, record, rows)

    def data_root(self) -> Path:
        """The real dataset's root the set was generated from (relative record first, then absolute)."""
        found = resolve_stored_path(self.folder, self.record, "data_root")
        if found is None:
            raise AnobenchError(f"{self.folder}: the dataset it was generated from is not at "
                                f"{self.record.data_root_abs or self.record.data_root}; pass --data-root")
        return found

    @property
    def generator(self) -> str:
        return self.record.generator

    @property
    def category(self) -> str:
        return self.record.category

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, i: int) -> Path:
        return self.folder / self.rows[i]["files"]["image"]

    def mask_path(self, i: int) -> Path:
        return self.folder / self.rows[i]["files"]["mask"]

    def load(self, i: int, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 HxWx3 image, bool HxW mask) of sample ``i``."""
        return read_rgb(self.image_path(i), size), read_mask(self.mask_path(i), size)
