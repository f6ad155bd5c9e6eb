"""FractalAD's fractal anomaly generation (FAG), as in AIRS-CSR/FractalAD@ed56b98 fag.py.

A square patch (side ``U(0.1, 0.5) * size``, corner in the central 10-90 % band) is cut,
passed through one of three colour changes (ColorJitter 0.2; ColorJitter brightness=1,
contrast=1; two channels, drawn with replacement, scaled by ``2*U(0, 1)``), flipped left-right
and top-bottom with probability 1/2 each, rotated ``U(15, 75)`` degrees on an RGBA canvas
without expanding (nearest neighbour), and cut by a binary IFS fractal of 2 affine maps
rendered at the patch size; it is pasted at a second position through the rotated alpha times
the fractal. The mask is the pasted region dilated by a 3x3 kernel 3 times, as the authors make
it; with probability 1/2 Gaussian noise of amplitude 10 (one value per pixel, all channels) is
added inside that dilated mask.

The fractal code FractalAD imports (``fractals.ifs``, Anderson & Farrell, WACV 2022) is not in
the repository; ``sample_system`` here follows that paper's rule: the sigma factor
``sum(s1 + 2*s2)`` uniform in [(5+n)/2, (6+n)/2], rotations uniform, a random reflection, offsets
in [-1, 1], maps picked with probability proportional to |det|.

Deviations: (1) ChangeColor clips the scaled channel to 255 (the original's ``np.uint8`` cast
wraps values over 255 around); (2) the 100 000 IFS points come from 1 000 chains of 100 steps
(after 20 burn-in steps) instead of one chain of 100 000, the same attractor drawn fast;
(3) FractalAD's final ColorJitter(0.05) applied identically to the normal and the anomalous image
is a normal-image augmentation and is not done; (4) ``is_findobj`` (object-guided placement) is
not offered; (5) the sample's numpy generator replaces Python's, numpy's and torch's globals.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.jitter import color_jitter


@dataclass
class FractalConfig:
    size_range: tuple[float, float] = (0.1, 0.5)  # lb, hb: patch side as a fraction of the image
    rotation: tuple[float, float] = (15.0, 75.0)
    color_jitter: float = 0.2
    noise_amp: float = 10.0
    noise_probability: float = 0.5
    region: tuple[float, float] = (0.1, 0.9)  # start_rito, end_rito
    ifs_maps: int = 2
    ifs_points: int = 100_000
    dilate_iterations: int = 3
    max_redraws: int = 20

    def validate(self) -> None:
        lo, hi = self.size_range
        if not 0 < lo <= hi <= self.region[1] - self.region[0]:
            raise AnobenchError(f"size_range must satisfy 0 < low <= high <= region width, got {self.size_range}")
        if self.ifs_maps < 2:
            raise AnobenchError("ifs_maps must be at least 2")


# ----------------------------------------------------------------------------- IFS fractals


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def sample_system(n: int, rng: np.random.Generator) -> np.ndarray:
    """An (n, 2, 3) array of contractive affine maps [A | b] with sigma factor in [(5+n)/2, (6+n)/2]."""
    alpha = rng.uniform(0.5 * (5 + n), 0.5 * (6 + n))
    while True:  # singular values s1 >= s2 with sum(s1 + 2 s2) = alpha and every s1 < 1
        s1 = rng.uniform(0, 1, n)
        s2 = s1 * rng.uniform(0, 1, n)
        scale = alpha / (s1 + 2 * s2).sum()
        s1, s2 = s1 * scale, s2 * scale
        if (s1 < 1).all():
            break
    maps = np.zeros((n, 2, 3))
    for i in range(n):
        flip = rng.choice([-1.0, 1.0])
        a = _rotation(rng.uniform(0, 2 * np.pi)) @ np.diag([s1[i], flip * s2[i]]) @ _rotation(rng.uniform(0, 2 * np.pi))
        maps[i, :, :2] = a
        maps[i, :, 2] = rng.uniform(-1, 1, 2)
    return maps


def iterate(maps: np.ndarray, points: int, rng: np.random.Generator, chains: int = 1000, burn_in: int = 20) -> np.ndarray:
    """``points`` points of the attractor: parallel chains, maps chosen by |det|."""
    det = np.abs(np.linalg.det(maps[:, :, :2]))
    steps = -(-points // chains)
    choice = np.searchsorted(np.cumsum(det / det.sum())[:-1], rng.random((burn_in + steps, chains)), side="right")
    a, b, c, d, e, f = (maps[:, 0, 0], maps[:, 0, 1], maps[:, 1, 0], maps[:, 1, 1], maps[:, 0, 2], maps[:, 1, 2])
    x, y = np.zeros(chains), np.zeros(chains)
    out = np.empty((steps, chains, 2))
    for t in range(burn_in + steps):
        k = choice[t]
        x, y = a[k] * x + b[k] * y + e[k], c[k] * x + d[k] * y + f[k]
        if t >= burn_in:
            out[t - burn_in, :, 0], out[t - burn_in, :, 1] = x, y
    return out.reshape(-1, 2)[:points]


def render(points: np.ndarray, side: int) -> np.ndarray:
    """Binary side x side image of the points, each axis scaled to the full patch."""
    img = np.zeros(side * side, np.uint8)
    index = np.zeros(len(points), np.int64)
    for axis, stride in ((1, side), (0, 1)):
        v = points[:, axis]
        lo, hi = v.min(), v.max()
        index += stride * np.rint((v - lo) * ((side - 1) / max(hi - lo, 1e-12))).astype(np.int64)
    img[index] = 1
    img = img.reshape(side, side)
    return img


def fractal_shape(side: int, rng: np.random.Generator, maps: int = 2, points: int = 100_000) -> np.ndarray:
    return render(iterate(sample_system(maps, rng), points, rng), side)


# ----------------------------------------------------------------------------- FAG


def change_color(patch: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    arr = np.asarray(patch).astype(np.float64).copy()
    channels = rng.choice(3, 2)  # with replacement, as np.random.choice([0, 1, 2], 2)
    factors = rng.random(2)
    for c, r in zip(channels, factors):
        arr[..., c] = np.clip(arr[..., c] * r * 2, 0, 255)
    return Image.fromarray(arr.astype(np.uint8)), {"channels": channels.tolist(), "factors": np.round(factors, 5).tolist()}


def jitter(patch: Image.Image, rng: np.random.Generator, s: float) -> tuple[Image.Image, dict]:
    choice = int(rng.integers(3))
    if choice == 0:
        patch, rec = color_jitter(patch, rng, s, s, s, s)
    elif choice == 1:
        patch, rec = color_jitter(patch, rng, brightness=1.0, contrast=1.0)
    else:
        patch, rec = change_color(patch, rng)
    return patch, {"jitter": ["color_jitter", "brightness_contrast", "change_color"][choice], **rec}


def fag(image: np.ndarray, rng: np.random.Generator, cfg: FractalConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    h, w = image.shape[:2]
    proc = min(h, w)
    cut = int(rng.uniform(cfg.size_range[0] * proc, cfg.size_range[1] * proc))
    r0, r1 = cfg.region
    fy, fx = int(rng.uniform(h * r0, h * r1 - cut)), int(rng.uniform(w * r0, w * r1 - cut))
    patch = Image.fromarray(image[fy:fy + cut, fx:fx + cut])
    patch, record = jitter(patch, rng, cfg.color_jitter)
    if rng.random() > 0.5:
        patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
        record["hflip"] = True
    if rng.random() > 0.5:
        patch = patch.transpose(Image.FLIP_TOP_BOTTOM)
        record["vflip"] = True
    angle = float(rng.uniform(*cfg.rotation))
    rotated = np.asarray(patch.convert("RGBA").rotate(angle, expand=False))
    ty, tx = int(rng.uniform(h * r0, h * r1 - cut)), int(rng.uniform(w * r0, w * r1 - cut))
    shape = fractal_shape(cut, rng, cfg.ifs_maps, cfg.ifs_points).astype(bool)
    paste = (rotated[..., 3] > 0) & shape
    out = image.copy()
    region = out[ty:ty + cut, tx:tx + cut]
    region[paste] = rotated[..., :3][paste]  # the fractal-multiplied patch, through the alpha
    mask = np.zeros((h, w), np.uint8)
    mask[ty:ty + cut, tx:tx + cut] = paste
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=cfg.dilate_iterations).astype(bool)
    noise = rng.random() < cfg.noise_probability
    if noise:
        n = cfg.noise_amp * rng.normal(0, 1, (h, w, 1))
        noisy = np.clip(out + n, 0, 255).astype(np.uint8)
        out = np.where(mask[..., None], noisy, out)
    record.update(side=cut, angle=round(angle, 4), **{"from": [fy, fx], "to": [ty, tx]}, noise=bool(noise),
                  fractal_fill=round(float(shape.mean()), 5))
    return out, mask, record


@register_generator
class FractalGenerator(Generator):
    name = "fractal"
    display_name = "FractalAD"
    version = "1"
    description = "FractalAD: jittered, flipped, rotated patches cut by IFS fractals, dilated mask (FAG)"
    config_class = FractalConfig
    needs = GeneratorNeeds()

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()

    def _one(self, request: SampleRequest) -> GeneratedSample:
        rng = request.rng()
        for _ in range(self.config.max_redraws):
            out, mask, record = fag(request.source, rng, self.config)
            if mask.any():
                return GeneratedSample(out, mask, defect_type="fractal", extra=record)
        raise AnobenchError(f"fractal: empty paste in {self.config.max_redraws} draws for sample {request.index}")

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]
