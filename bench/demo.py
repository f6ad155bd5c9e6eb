"""A procedural demo dataset in MVTec AD layout, made in seconds, for the quickstart and tests.

Three categories: two textures (``weave``, ``grain``) and an object (``disc``, a machined washer
on a plain background). Test defects are drawn as geometric strokes and blobs (``scratch``,
``hole``, ``stain``) with exact masks: a different process from any generator's, so a detector
trained on synthetic data is tested on something it has not seen made.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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


def _draw_defect(image: np.ndarray, region: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect inside ``region``; return the image and its exact mask."""
    size = image.shape[0]
    s = size / 256.0  # defect sizes are given for 256 px
    margin = max(3, int(25 * s)) | 1
    ys, xs = np.nonzero(cv2.erode(region.astype(np.uint8), np.ones((margin, margin), np.uint8)))
    k = int(rng.integers(len(ys)))
    cy, cx = int(ys[k]), int(xs[k])
    mask = np.zeros((size, size), np.uint8)
    out = image.astype(np.float32)
    if kind == "scratch":
        points = [(cx, cy)]
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(3, 6))):
            angle += rng.uniform(-0.5, 0.5)
            step = rng.uniform(8, 18) * s
            points.append((int(points[-1][0] + step * np.cos(angle)), int(points[-1][1] + step * np.sin(angle))))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, thickness=max(1, int(rng.integers(2, 4) * s)))
        colour = np.array([235, 235, 230], np.float32) if rng.random() < 0.5 else np.array([20, 20, 20], np.float32)
        out[mask > 0] = 0.25 * out[mask > 0] + 0.75 * colour
    elif kind == "hole":
        axes = (max(2, int(rng.integers(5, 12) * s)), max(2, int(rng.integers(5, 12) * s)))
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - mask
        out[mask > 0] = out[mask > 0] * 0.15
        out[rim > 0] = np.minimum(out[rim > 0] * 1.6, 255)
        mask = mask | rim
    else:  # stain: a smooth colour blob
        radius = rng.uniform(10, 22) * s
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        wobble = 1 + 0.25 * _smooth_noise(rng, size, max(1.0, 6 * s))
        alpha = np.clip(1.5 - np.hypot(yy - cy, xx - cx) / radius * wobble, 0, 1)
        colour = np.array([rng.uniform(60, 120), rng.uniform(20, 60), rng.uniform(80, 160)], np.float32)
        alpha = np.where(alpha > 0.2, 0.75 * alpha, 0.0)
        out = out * (1 - alpha[..., None]) + colour * alpha[..., None]
        mask = (alpha > 0).astype(np.uint8)
    mask = mask.astype(bool) & region
    result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], result, image), mask


def _normal(category: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    if category == "disc":
        return _disc(rng, size)
    image = _weave(rng, size) if category == "weave" else _grain(rng, size)
    return image, np.ones((size, size), bool)


def make_demo_dataset(out: str | Path, seed: int = 0, size: int = 256, n_train: int = 40,
                      n_test_good: int = 10, n_per_defect: int = 6) -> dict[str, int]:
    """Write the demo dataset to ``out``; returns images written per category."""
    out = Path(out)
    counts = {}
    for c, category in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, c])
        base = out / category
        n = 0
        for i in range(n_train):
            atomic_write_bytes(base / "train" / "good" / f"{i:03d}.png", png_bytes(_normal(category, rng, size)[0]))
            n += 1
        for i in range(n_test_good):
            atomic_write_bytes(base / "test" / "good" / f"{i:03d}.png", png_bytes(_normal(category, rng, size)[0]))
            n += 1
        for kind in DEFECT_TYPES:
            for i in range(n_per_defect):
                image, region = _normal(category, rng, size)
                image, mask = _draw_defect(image, region, kind, rng)
                atomic_write_bytes(base / "test" / kind / f"{i:03d}.png", png_bytes(image))
                atomic_write_bytes(base / "ground_truth" / kind / f"{i:03d}_mask.png", png_bytes(mask))
                n += 1
        counts[category] = n
    return counts
