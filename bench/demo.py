"""A procedural demo dataset in MVTec AD layout, made in seconds, for the quickstart and tests.

Three categories: two textures (``weave``, ``grain``) and an object (``disc``, a machined washer
on a plain background). Test defects are drawn as geometric strokes and blobs (``scratch``,
``hole``, ``stain``) with exact masks: a different process from any generator's, so a detector
trained on synthetic data is tested on something it has not seen made. Each defect type comes in
graded difficulty (:data:`LEVELS`: obvious, small, thin, faint, low-contrast), so a table on the
demo data spreads instead of reading 100 everywhere.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes, png_bytes

CATEGORIES = ("weave", "grain", "disc")
DEFECT_TYPES = ("scratch", "hole", "stain")


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _weave(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(14, 18)
    phase = rng.uniform(0, 2 * np.pi, 2)
    warp = np.sin(2 * np.pi * xx / period + phase[0]) * (np.sin(np.pi * yy / period) > 0)
    weft = np.sin(2 * np.pi * yy / period + phase[1]) * (np.sin(np.pi * yy / period) <= 0)
    pattern = 0.5 + 0.25 * (warp + weft) + 0.06 * _smooth_noise(rng, size, 1.5)
    base = np.array([150, 120, 90], np.float32) * rng.uniform(0.95, 1.05)
    return np.clip(pattern[..., None] * base[None, None] * 1.3, 0, 255).astype(np.uint8)


def _grain(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = 12 * _smooth_noise(rng, size, 12)
    rings = np.sin((yy + warp) * rng.uniform(0.18, 0.22) + 0.4 * _smooth_noise(rng, size, 3))
    pattern = 0.62 + 0.12 * rings + 0.05 * _smooth_noise(rng, size, 1.0)
    base = np.array([205, 160, 110], np.float32)
    return np.clip(pattern[..., None] * base[None, None], 0, 255).astype(np.uint8)


def _disc(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A washer: the image and its foreground mask (defects go on the part, not the table)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = np.full((size, size, 3), 40, np.float32) + 4 * _smooth_noise(rng, size, 20)[..., None]
    cy, cx = size / 2 + rng.uniform(-4, 4, 2)
    r = np.hypot(yy - cy, xx - cx)
    outer, inner = size * 0.40, size * 0.15
    ring = (r < outer) & (r > inner)
    shade = 150 + 40 * np.cos(np.arctan2(yy - cy, xx - cx) - rng.uniform(0, 2 * np.pi))
    turning = 8 * np.sin(r * 1.3)  # machining marks
    metal = (shade + turning)[..., None] * np.array([1.0, 1.0, 1.05], np.float32)
    image = np.where(ring[..., None], metal, background)
    image += 3 * _smooth_noise(rng, size, 1.0)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), ring


# Difficulty levels of the test defects: how big, how thick and how strong a defect is drawn.
# ``strength`` scales the blend toward the defect colour; ``tone`` draws the defect in the local
# background colour shifted in brightness only (no hue), which is what makes it low-contrast.
LEVELS: dict[str, dict[str, float]] = {
    "obvious": {"scale": 1.0, "strength": 1.0, "thickness": 1.0, "tone": 0.0},
    "small": {"scale": 0.4, "strength": 1.0, "thickness": 0.7, "tone": 0.0},
    "thin": {"scale": 1.0, "strength": 0.9, "thickness": 0.34, "tone": 0.0},
    "faint": {"scale": 1.0, "strength": 0.3, "thickness": 1.0, "tone": 0.0},
    "low-contrast": {"scale": 0.9, "strength": 1.0, "thickness": 1.0, "tone": 0.16},
}
# Level of defect image i of each type: ORDER[i % len(ORDER)]. Under the default ``thirds``
# protocol with 6 images per type, the references (000, 001) are obvious and small, and the
# held-out test defects (002-005) are obvious, faint, thin and low-contrast.
ORDER = ("obvious", "small", "obvious", "faint", "thin", "low-contrast")


def _defect_colour(out: np.ndarray, mask: np.ndarray, colour: np.ndarray, level: dict[str, float],
                   rng: np.random.Generator) -> np.ndarray:
    """The colour to blend toward: ``colour``, or for low-contrast levels the local mean shifted in brightness."""
    if not level["tone"]:
        return colour
    local = out[mask > 0].mean(axis=0) if mask.any() else out.reshape(-1, 3).mean(axis=0)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return np.clip(local * (1 + sign * level["tone"]), 0, 255)


def _draw_defect(image: np.ndarray, region: np.ndarray, kind: str, rng: np.random.Generator,
                 difficulty: str = "obvious") -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of a difficulty level inside ``region``; return the image and its exact mask.

    The shapes are OpenCV primitives (polylines, filled ellipses, radial blobs), blended toward a
    colour: no anobench generator makes anomalies this way (DRAEM blends Perlin-noise regions of a
    texture; Crop&Paste copies the reference defects, which are these very drawings).
    """
    level = LEVELS[difficulty]
    size = image.shape[0]
    s = size / 256.0 * level["scale"]  # defect sizes are given for 256 px
    margin = max(3, int(25 * size / 256.0)) | 1
    ys, xs = np.nonzero(cv2.erode(region.astype(np.uint8), np.ones((margin, margin), np.uint8)))
    k = int(rng.integers(len(ys)))
    cy, cx = int(ys[k]), int(xs[k])
    mask = np.zeros((size, size), np.uint8)
    out = image.astype(np.float32)
    strength = level["strength"]
    if kind == "scratch":
        points = [(cx, cy)]
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(3, 6))):
            angle += rng.uniform(-0.5, 0.5)
            step = rng.uniform(8, 18) * s
            points.append((int(points[-1][0] + step * np.cos(angle)), int(points[-1][1] + step * np.sin(angle))))
        width = max(1, int(round(rng.integers(2, 4) * size / 256.0 * level["thickness"])))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, thickness=width)
        colour = np.array([235, 235, 230], np.float32) if rng.random() < 0.5 else np.array([20, 20, 20], np.float32)
        colour = _defect_colour(out, mask, colour, level, rng)
        alpha = 0.75 * strength
        out[mask > 0] = (1 - alpha) * out[mask > 0] + alpha * colour
    elif kind == "hole":
        thin = level["thickness"] < 0.5  # a thin hole is a slit
        major = max(2, int(rng.integers(5, 12) * s))
        minor = max(1, int(round(major * 0.15))) if thin else max(2, int(rng.integers(5, 12) * s))
        cv2.ellipse(mask, (cx, cy), (major, minor), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - mask
        dark = _defect_colour(out, mask, np.zeros(3, np.float32), level, rng)
        alpha = 0.85 * strength
        out[mask > 0] = (1 - alpha) * out[mask > 0] + alpha * dark
        if not level["tone"]:
            out[rim > 0] = np.minimum(out[rim > 0] * (1 + 0.6 * strength), 255)
        mask = mask | rim
    else:  # stain: a smooth colour blob (a streak when thin)
        radius = max(2.0, rng.uniform(10, 22) * s)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        squash = 1.0 / max(level["thickness"], 0.1) ** 2
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        wobble = 1 + 0.25 * _smooth_noise(rng, size, max(1.0, 6 * size / 256.0))
        alpha = np.clip(1.5 - np.hypot(u, v * squash) / radius * wobble, 0, 1)
        colour = np.array([rng.uniform(60, 120), rng.uniform(20, 60), rng.uniform(80, 160)], np.float32)
        mask = (alpha > 0.2).astype(np.uint8)
        colour = _defect_colour(out, mask, colour, level, rng)
        alpha = np.where(alpha > 0.2, 0.75 * strength * alpha, 0.0)
        out = out * (1 - alpha[..., None]) + colour * alpha[..., None]
    mask = mask.astype(bool) & region
    result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], result, image), mask


def _normal(category: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    if category == "disc":
        return _disc(rng, size)
    image = _weave(rng, size) if category == "weave" else _grain(rng, size)
    return image, np.ones((size, size), bool)


MARKER = "anobench-demo.json"  # written last; says the folder is a demo dataset and what it holds


@dataclass
class DemoSummary:
    """What the folder holds after writing: files counted on disk, per category."""

    root: Path
    images: dict[str, int]
    masks: dict[str, int]
    replaced: bool  # an earlier demo dataset was there and has been replaced as a whole

    def line(self) -> str:
        parts = ", ".join(f"{c} ({self.images[c]} images, {self.masks[c]} masks)" for c in self.images)
        return f"{self.root}: {parts}" + ("; the earlier demo data there was replaced" if self.replaced else "")


def _count(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*.png") if not p.name.startswith(".")]
    masks = sum(1 for p in files if "ground_truth" in p.relative_to(folder).parts)
    return len(files) - masks, masks


def _check_target(out: Path) -> bool:
    """True when ``out`` holds an earlier demo dataset; refuse a folder holding anything else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise AnobenchError(f"{out}: exists and is not a folder")
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return False
    if (out / MARKER).is_file() or all(p.is_dir() and p.name in CATEGORIES for p in entries):
        return True
    raise AnobenchError(f"{out}: not empty and not a demo dataset (found {entries[0].name}); "
                        "give a new or empty folder, or an earlier demo-data folder to replace")


def make_demo_dataset(out: str | Path, seed: int = 0, size: int = 256, n_train: int = 40,
                      n_test_good: int = 10, n_per_defect: int = 6) -> DemoSummary:
    """Write the demo dataset to ``out``, replacing an earlier demo dataset there as a whole.

    Each category is written to a hidden temp folder and swapped in by rename, so the folder
    never mixes images of two calls (other sizes, seeds or counts). A folder holding anything
    but a demo dataset is refused. ``anobench-demo.json`` lists the settings and every test
    defect's difficulty level.
    """
    out = Path(out)
    replaced = _check_target(out)
    out.mkdir(parents=True, exist_ok=True)
    levels: dict[str, str] = {}
    images, masks = {}, {}
    for c, category in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, c])
        tmp = out / f".{category}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(n_train):
            atomic_write_bytes(tmp / "train" / "good" / f"{i:03d}.png", png_bytes(_normal(category, rng, size)[0]))
        for i in range(n_test_good):
            atomic_write_bytes(tmp / "test" / "good" / f"{i:03d}.png", png_bytes(_normal(category, rng, size)[0]))
        for kind in DEFECT_TYPES:
            for i in range(n_per_defect):
                difficulty = ORDER[i % len(ORDER)]
                mask = None
                while mask is None or not mask.any():  # a defect clipped to nothing is redrawn
                    image, region = _normal(category, rng, size)
                    image, mask = _draw_defect(image, region, kind, rng, difficulty)
                atomic_write_bytes(tmp / "test" / kind / f"{i:03d}.png", png_bytes(image))
                atomic_write_bytes(tmp / "ground_truth" / kind / f"{i:03d}_mask.png", png_bytes(mask))
                levels[f"{category}/test/{kind}/{i:03d}.png"] = difficulty
        final, old = out / category, out / f".{category}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        images[category], masks[category] = _count(final)
    info = {"seed": seed, "size": size, "n_train": n_train, "n_test_good": n_test_good,
            "n_per_defect": n_per_defect, "images": images, "masks": masks, "difficulty": levels}
    atomic_write_bytes(out / MARKER, (json.dumps(info, indent=1) + "\n").encode())
    return DemoSummary(out, images, masks, replaced)
