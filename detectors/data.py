"""Training data of a detector: normals and generated pairs, the validation split, the batches.

Batch ``s`` is drawn from ``(seed, s)`` alone, so a resumed run sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anobench.detectors.profiles import TrainConfig
from anobench.errors import AnobenchError
from anobench.images import read_mask, read_rgb
from anobench.store import GeneratedSet


class ImageCache:
    """Decoded images and masks (uint8 CHW tensors), read once from disk and kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._images: dict[str, torch.Tensor] = {}
        self._masks: dict[str, torch.Tensor] = {}

    def image(self, path: Path) -> torch.Tensor:
        key = str(path)
        if key not in self._images:
            self._images[key] = torch.from_numpy(read_rgb(path, self.size)).permute(2, 0, 1).contiguous()
        return self._images[key]

    def mask(self, path: Path) -> torch.Tensor:
        key = str(path)
        if key not in self._masks:
            self._masks[key] = torch.from_numpy(read_mask(path, self.size)).unsqueeze(0)
        return self._masks[key]


@dataclass
class TrainingData:
    """Normal image paths and generated (image, mask) paths, split into train and validation."""

    normals: list[Path]
    synthetic: list[tuple[Path, Path]]
    val_normals: list[Path]
    val_synthetic: list[tuple[Path, Path]]

    @classmethod
    def split(cls, normals: list[Path], generated: GeneratedSet, config: TrainConfig, seed: int) -> "TrainingData":
        pairs = [(generated.image_path(i), generated.mask_path(i)) for i in range(len(generated))]
        order = np.random.default_rng([seed, 1]).permutation(len(pairs))
        n_val = min(config.max_val_samples, int(round(config.val_fraction * len(pairs))))
        n_val = n_val if len(pairs) - n_val >= 1 else 0
        normal_order = np.random.default_rng([seed, 2]).permutation(len(normals))
        n_val_normals = min(config.val_normals, len(normals) // 5) if n_val else 0
        return cls(
            normals=[normals[i] for i in sorted(normal_order[n_val_normals:])],
            synthetic=[pairs[i] for i in sorted(order[n_val:])],
            val_normals=[normals[i] for i in sorted(normal_order[:n_val_normals])],
            val_synthetic=[pairs[i] for i in sorted(order[:n_val])],
        )

    def to_record(self, generated: GeneratedSet, relpath) -> dict[str, Any]:
        """The split as run.json freezes it: sample ids with their image sha256, normal file names."""
        by_image = {generated.image_path(i): generated.rows[i] for i in range(len(generated))}

        def ids(pairs: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
            rows = [by_image[image] for image, _ in pairs]
            return [{"index": int(r["index"]), "sha256": (r.get("sha256") or {}).get("image")} for r in rows]

        return {"train_synthetic": ids(self.synthetic), "val_synthetic": ids(self.val_synthetic),
                "train_normals": [relpath(p) for p in self.normals],
                "val_normals": [relpath(p) for p in self.val_normals]}

    @classmethod
    def from_record(cls, record: dict[str, Any], generated: GeneratedSet, normals: list[Path], relpath,
                    where: Path) -> "TrainingData":
        """The frozen split read back; a sample missing from the set or changed since is refused."""
        rows = {int(r["index"]): (i, r) for i, r in enumerate(generated.rows)}
        by_name = {relpath(p): p for p in normals}

        def pairs(entries: list[dict[str, Any]]) -> list[tuple[Path, Path]]:
            out = []
            for entry in entries:
                found = rows.get(int(entry["index"]))
                if found is None:
                    raise AnobenchError(f"{where}: sample {entry['index']} of the frozen training split is no "
                                        f"longer in {generated.folder}")
                i, row = found
                if entry.get("sha256") and (row.get("sha256") or {}).get("image") != entry["sha256"]:
                    raise AnobenchError(f"{generated.image_path(i)}: changed since {where} froze its training split")
                out.append((generated.image_path(i), generated.mask_path(i)))
            return out

        def files(names: list[str]) -> list[Path]:
            missing = [n for n in names if n not in by_name]
            if missing:
                raise AnobenchError(f"{where}: normal image {missing[0]} of the frozen split is not in the data")
            return [by_name[n] for n in names]

        try:
            return cls(files(record["train_normals"]), pairs(record["train_synthetic"]),
                       files(record["val_normals"]), pairs(record["val_synthetic"]))
        except (KeyError, TypeError, ValueError):
            raise AnobenchError(f"{where}: unreadable frozen training split") from None

    def summary(self) -> dict[str, int]:
        return {"train_normals": len(self.normals), "train_synthetic": len(self.synthetic),
                "val_normals": len(self.val_normals), "val_synthetic": len(self.val_synthetic)}


class BatchSource:
    """Batch ``step`` = a fixed draw from (seed, step); the next batch is decoded in a thread."""

    def __init__(self, data: TrainingData, config: TrainConfig, seed: int) -> None:
        self.data, self.config, self.seed = data, config, seed
        self.cache = ImageCache(config.image_size)
        self.n_synthetic = max(1, min(config.batch_size - 1, round(config.batch_size * config.synthetic_fraction)))
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: dict[int, Any] = {}

    def _indices(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 3, step])
        n_normal = self.config.batch_size - self.n_synthetic
        normals = rng.choice(len(self.data.normals), n_normal, replace=len(self.data.normals) < n_normal)
        synthetic = rng.choice(len(self.data.synthetic), self.n_synthetic,
                               replace=len(self.data.synthetic) < self.n_synthetic)
        flips = rng.random(self.config.batch_size) < 0.5 if self.config.hflip else np.zeros(self.config.batch_size, bool)
        return normals, synthetic, flips

    def _load(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        normals, synthetic, flips = self._indices(step)
        size = self.config.image_size
        images = [self.cache.image(self.data.normals[i]) for i in normals]
        masks = [torch.zeros((1, size, size), dtype=torch.bool)] * len(normals)
        for i in synthetic:
            image_path, mask_path = self.data.synthetic[i]
            images.append(self.cache.image(image_path))
            masks.append(self.cache.mask(mask_path))
        x, y = torch.stack(images), torch.stack(masks)
        if flips.any():
            x[flips] = x[flips].flip(-1)
            y[flips] = y[flips].flip(-1)
        return x, y

    def get(self, step: int, prefetch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` as uint8 images and bool masks; starts decoding ``prefetch`` meanwhile."""
        future = self._pending.pop(step, None)
        batch = future.result() if future is not None else self._load(step)
        if prefetch is not None and prefetch not in self._pending:
            self._pending[prefetch] = self._pool.submit(self._load, prefetch)
        return batch

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
