"""Images a generator draws from besides its source: other normal images, texture folders.

Picks are made with the sample's own generator, so the same seed picks the same image; each
file is decoded and resized once per run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anobench.datasets import list_images
from anobench.errors import AnobenchError
from anobench.images import read_rgb


def texture_paths(root: Path | None) -> list[Path]:
    """Every image under ``root`` (DTD's ``images/<class>/*.jpg`` layout or flat), sorted."""
    if root is None:
        return []
    root = Path(root)
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    paths = [p for folder in folders for p in list_images(folder)]
    if not paths:
        raise AnobenchError(f"{root}: --anomaly-source holds no images")
    return paths


class ImagePool:
    """A list of image files read at one size on demand, picked with a caller's rng."""

    def __init__(self, paths: list[Path], size: int, root: Path | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.root = Path(root).resolve() if root is not None else None
        self._cache: dict[int, np.ndarray] = {}

    def name(self, k: int) -> str:
        """How records name image ``k``: relative to ``root`` (else the file name), never an absolute
        path, so a moved dataset or grid writes the same manifest."""
        if self.root is not None:
            try:
                return self.paths[k].resolve().relative_to(self.root).as_posix()
            except ValueError:
                pass
        return self.paths[k].name

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, k: int) -> np.ndarray:
        if k not in self._cache:
            self._cache[k] = read_rgb(self.paths[k], self.size)
        return self._cache[k]

    def pick(self, rng: np.random.Generator, avoid: str | None = None) -> tuple[np.ndarray, str]:
        """(image, name) drawn uniformly; ``avoid`` (a path suffix, the source's) is skipped when possible."""
        if not self.paths:
            raise AnobenchError("no images to pick from")
        k = int(rng.integers(len(self.paths)))
        if avoid and len(self.paths) > 1 and self.paths[k].as_posix().endswith(str(avoid)):
            k = (k + 1 + int(rng.integers(len(self.paths) - 1))) % len(self.paths)
        return self.get(k), self.name(k)
