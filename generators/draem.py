"""DRAEM's anomaly synthesis (Zavrtanik et al., ICCV 2021), as in its released code.

A Perlin noise map with scale ``2**randint(0, 6)`` per axis is rotated (-90..90 degrees) and
thresholded at 0.5 into the mask; a texture (an anomaly-source image such as DTD, or a Perlin
noise texture when none is given) passes through 3 of DRAEM's 10 photometric augmenters; and
the two are blended ``image*(1-m) + (1-beta)*texture*m + beta*image*m`` with beta ~ U[0, 0.8).
anomalib's ``PerlinAnomalyGenerator`` weights the texture by beta ~ U[0.1, 1.0) instead: the
``variant`` switch selects that rule. Every sample is anomalous (an empty mask is redrawn):
the detector's batches supply the normal half DRAEM's loader would.

DRAEM paints anywhere, so on objects most blobs land on the background; ``foreground`` (an
anobench option, off by default) intersects the mask with a shared per-class foreground rule
(``anobench.generators.foreground``), as MemSeg and GLASS do: ``true`` (or ``memseg``, the same
setting, stored as ``true`` so sets made before the name existed keep their config hash) takes
MemSeg's rules, ``realnet`` RealNet's, ``false`` none.

Pixels outside the mask are copied from the source unchanged, so the mask covers every
changed pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from anobench.datasets import list_images
from anobench.errors import AnobenchError
from anobench.generators.base import (
    GeneratedSample,
    GenerationContext,
    Generator,
    GeneratorNeeds,
    SampleRequest,
    register_generator,
)
from anobench.images import read_rgb

# beta range and which term beta weights, per variant
VARIANTS = {
    "draem": ((0.0, 0.8), "image"),  # DRAEM: beta weights the original image inside the mask
    "anomalib": ((0.1, 1.0), "anomaly"),  # anomalib: beta weights the texture
}


@dataclass
class DraemConfig:
    """DRAEM synthesis settings; defaults are the released DRAEM code's."""

    variant: Literal["draem", "anomalib"] = "draem"
    beta_range: Optional[tuple[float, float]] = None  # None: the variant's range
    min_perlin_scale: int = 0  # scale = 2**randint(min, max) per axis
    max_perlin_scale: int = 6
    threshold: float = 0.5
    rotation: float = 90.0  # noise rotated by U(-rotation, rotation) degrees
    num_augmenters: int = 3  # of DRAEM's 10 photometric augmenters
    # anobench option: keep the mask on the object (anobench.generators.foreground); true = memseg
    foreground: Union[bool, Literal["memseg", "realnet"]] = False

    def __post_init__(self) -> None:
        if self.foreground == "memseg":  # one setting, one hash: memseg is today's true
            self.foreground = True

    def validate(self) -> None:
        lo, hi = self.resolved_beta()
        if not 0.0 <= lo <= hi <= 1.0:
            raise AnobenchError(f"beta_range must satisfy 0 <= low <= high <= 1, got {self.beta_range}")
        if not 0 <= self.min_perlin_scale < self.max_perlin_scale <= 10:
            raise AnobenchError("perlin scales must satisfy 0 <= min_perlin_scale < max_perlin_scale <= 10")
        if not 1 <= self.num_augmenters <= len(AUGMENTERS):
            raise AnobenchError(f"num_augmenters must be in 1..{len(AUGMENTERS)}")

    def resolved_beta(self) -> tuple[float, float]:
        return tuple(self.beta_range) if self.beta_range is not None else VARIANTS[self.variant][0]


# ----------------------------------------------------------------------------- Perlin noise


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], angles: np.ndarray) -> np.ndarray:
    """2-D gradient noise on a ``res`` lattice, quintic fade (DRAEM's ``rand_perlin_2d_np``).

    ``angles`` is the (res[0]+1, res[1]+1) array of gradient angles; ``shape`` must be a
    multiple of ``res``. Values lie roughly in [-1, 1].
    """
    h, w = shape
    d0, d1 = h // res[0], w // res[1]
    grid_y = (np.arange(h, dtype=np.float32) * (res[0] / h)) % 1.0
    grid_x = (np.arange(w, dtype=np.float32) * (res[1] / w)) % 1.0
    gy, gx = np.meshgrid(grid_y, grid_x, indexing="ij")
    grads = np.stack((np.cos(angles), np.sin(angles)), axis=-1).astype(np.float32)

    def tiled(sy: slice, sx: slice) -> np.ndarray:
        return np.repeat(np.repeat(grads[sy, sx], d0, axis=0), d1, axis=1)

    def dot(g: np.ndarray, oy: float, ox: float) -> np.ndarray:
        return (gy + oy) * g[..., 0] + (gx + ox) * g[..., 1]

    n00 = dot(tiled(slice(0, -1), slice(0, -1)), 0.0, 0.0)
    n10 = dot(tiled(slice(1, None), slice(0, -1)), -1.0, 0.0)
    n01 = dot(tiled(slice(0, -1), slice(1, None)), 0.0, -1.0)
    n11 = dot(tiled(slice(1, None), slice(1, None)), -1.0, -1.0)
    ty = 6 * gy**5 - 15 * gy**4 + 10 * gy**3
    tx = 6 * gx**5 - 15 * gx**4 + 10 * gx**3
    top = n00 + ty * (n10 - n00)
    bottom = n01 + ty * (n11 - n01)
    return np.sqrt(2.0, dtype=np.float32) * (top + tx * (bottom - top))


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def perlin_mask(rng: np.random.Generator, size: int, cfg: DraemConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rotated noise, binary mask) of one draw; noise computed on a power-of-two grid and cropped."""
    sy = 2 ** int(rng.integers(cfg.min_perlin_scale, cfg.max_perlin_scale))
    sx = 2 ** int(rng.integers(cfg.min_perlin_scale, cfg.max_perlin_scale))
    pad = max(_next_pow2(size), sy, sx)
    angles = 2 * np.pi * rng.random((sy + 1, sx + 1))
    noise = perlin_noise((pad, pad), (sy, sx), angles)[:size, :size]
    angle = float(rng.uniform(-cfg.rotation, cfg.rotation))
    rot = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
    noise = cv2.warpAffine(noise, rot, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return noise, noise > cfg.threshold


# ----------------------------------------------------------------------------- augmenters
# DRAEM's list (imgaug): GammaContrast, MultiplyAndAddToBrightness, EnhanceSharpness,
# AddToHueAndSaturation, Solarize, Posterize, Invert, Autocontrast, Equalize, Affine(rotate).


def _gamma(img, rng):
    gamma = rng.uniform(0.5, 2.0, size=3)  # per channel
    return np.clip(255.0 * (img / 255.0) ** gamma, 0, 255).astype(np.uint8)


def _brightness(img, rng):
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[..., 0] = ycc[..., 0] * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30)
    return cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def _sharpness(img, rng):
    return np.asarray(ImageEnhance.Sharpness(Image.fromarray(img)).enhance(rng.uniform(0.0, 2.0)))


def _hue_saturation(img, rng):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int32)
    hue_shift, sat_shift = rng.integers(-50, 51, size=2)
    hsv[..., 0] = (hsv[..., 0] + int(round(hue_shift * 180 / 255))) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + sat_shift, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _solarize(img, rng):
    if rng.random() >= 0.5:
        return img
    threshold = rng.uniform(32, 128)
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


def _posterize(img, rng):
    bits = int(rng.integers(1, 9))
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    return img & mask


def _invert(img, rng):
    return 255 - img


def _autocontrast(img, rng):
    return np.asarray(ImageOps.autocontrast(Image.fromarray(img), cutoff=float(rng.uniform(0, 20))))


def _equalize(img, rng):
    return np.asarray(ImageOps.equalize(Image.fromarray(img)))


def _rotate(img, rng):
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(rng.uniform(-45, 45)), 1.0)
    return cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


AUGMENTERS = (_gamma, _brightness, _sharpness, _hue_saturation, _solarize,
              _posterize, _invert, _autocontrast, _equalize, _rotate)


def augment_texture(texture: np.ndarray, rng: np.random.Generator, count: int = 3) -> np.ndarray:
    """Apply ``count`` distinct augmenters, chosen at random, in a random order (DRAEM)."""
    out = np.ascontiguousarray(texture)
    for k in rng.choice(len(AUGMENTERS), count, replace=False):
        out = np.ascontiguousarray(AUGMENTERS[k](out, rng))
    return out


# ----------------------------------------------------------------------------- generator


@register_generator
class DraemGenerator(Generator):
    name = "draem"
    version = "1"
    display_name = "DRAEM"
    description = "DRAEM Perlin-noise anomalies textured from DTD (or noise), blended with beta"
    config_class = DraemConfig
    needs = GeneratorNeeds(anomaly_source=True)

    def setup(self, context: GenerationContext) -> None:
        super().setup(context)
        self.config.validate()
        self.size = context.image_size
        self.texture_paths: list[Path] = []
        if context.anomaly_source is not None:
            root = Path(context.anomaly_source)
            folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
            self.texture_paths = [p for folder in folders for p in list_images(folder)]
            if not self.texture_paths:
                raise AnobenchError(f"{root}: --anomaly-source holds no images")
        self._textures: dict[int, np.ndarray] = {}

    def _texture(self, rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
        if not self.texture_paths:
            # anomalib's rule without a source: the Perlin noise itself as a grey texture
            grey = np.clip((noise * 0.5 + 0.25) * 255.0, 0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        k = int(rng.integers(len(self.texture_paths)))
        if k not in self._textures:  # decode and resize each texture once per run
            self._textures[k] = read_rgb(self.texture_paths[k], self.size)
        return self._textures[k]

    def synthesize(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        """(anomalous image, mask, beta) for one uint8 image."""
        cfg = self.config
        size = image.shape[0]
        fg = None
        if cfg.foreground:
            from anobench.generators.foreground import foreground_mask

            rules = "realnet" if cfg.foreground == "realnet" else "memseg"
            fg = foreground_mask(image, self.context.dataset, self.context.category, rules)
            fg = fg if fg.any() else None
        for _ in range(1000):
            noise, mask = perlin_mask(rng, size, cfg)
            if fg is not None:
                mask = mask & fg
            if mask.any():
                break
        else:
            raise AnobenchError("draem: could not draw a non-empty Perlin mask in 1000 tries; lower `threshold`")
        texture = augment_texture(self._texture(rng, noise), rng, cfg.num_augmenters)
        lo, hi = cfg.resolved_beta()
        beta = float(rng.uniform(lo, hi))
        texture_weight = beta if VARIANTS[cfg.variant][1] == "anomaly" else 1.0 - beta
        blended = texture_weight * texture.astype(np.float32) + (1.0 - texture_weight) * image.astype(np.float32)
        blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        out = np.where(mask[..., None], blended, image)
        return out, mask, beta

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        samples = []
        for request in requests:
            image, mask, beta = self.synthesize(request.source, request.rng())
            samples.append(GeneratedSample(image, mask, defect_type="perlin", extra={"beta": round(beta, 6)}))
        return samples
