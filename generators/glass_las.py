"""GLASS's local anomaly synthesis (Chen et al., ECCV 2024), the image-level half of GLASS.

Follows cqylunlun/GLASS@f788d56 ``perlin.py`` (``perlin_mask``, ``generate_thr``) and
``datasets/mvtec.py`` (``__getitem__``, ``rand_augmenter``):

* two DRAEM Perlin masks (scales ``2**randint(0, 6)``, rotation U(-90, 90), threshold 0.5);
  with probability 1/3 each their union, their intersection, or the first alone; times the
  foreground mask; redrawn until the mask, max-pooled to the feature grid (1/8), is non-empty;
* the anomaly source: a DTD image through 3 distinct operations of 9 (contrast, brightness,
  saturation+hue jitter, horizontal flip, vertical flip, greyscale, autocontrast, equalize,
  rotation U(-45, 45)), torchvision's functional versions with factors drawn here;
* ``aug = image*(1-m) + (1-beta)*source*m + beta*image*m`` with ``beta ~ N(0.5, 0.1)`` clipped
  to [0.2, 0.8]. GLASS blends ImageNet-normalised tensors; normalisation is affine per channel
  and the weights sum to 1, so blending the [0, 1] images is the same (tested).

Deviations: GLASS reads precomputed foreground images (``fg_mask/<class>/``) for the classes its
spreadsheet marks; here the shared per-class threshold rule (``anobench.generators.foreground``)
stands in (``foreground=realnet``: RealNet's Otsu/triangle rules), textures use the whole image,
``foreground=none`` turns it off. Without
``--anomaly-source`` the other normal images are the source (GLASS's code has that hook with
weight 0). The rotation op fills with black as torchvision's RandomAffine does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.draem import DraemConfig, perlin_mask
from anobench.generators.foreground import foreground_mask
from anobench.generators.sources import ImagePool, texture_paths

OPS = ("contrast", "brightness", "saturation_hue", "hflip", "vflip", "grayscale", "autocontrast", "equalize", "rotate")


@dataclass
class GlassLasConfig:
    beta_mean: float = 0.5
    beta_std: float = 0.1
    beta_clip: tuple[float, float] = (0.2, 0.8)
    min_perlin_scale: int = 0
    max_perlin_scale: int = 6
    threshold: float = 0.5
    num_ops: int = 3
    feature_stride: int = 8  # the mask must survive max-pooling to the 1/8 feature grid
    foreground: Literal["class", "realnet", "none"] = "class"  # class: MemSeg's rules; realnet: RealNet's
    max_redraws: int = 1000

    def validate(self) -> None:
        if not 0 <= self.beta_clip[0] <= self.beta_clip[1] <= 1:
            raise AnobenchError(f"beta_clip must satisfy 0 <= low <= high <= 1, got {self.beta_clip}")
        if not 1 <= self.num_ops <= len(OPS):
            raise AnobenchError(f"num_ops must be in 1..{len(OPS)}")


def augment(image: Image.Image, rng: np.random.Generator, count: int = 3) -> tuple[Image.Image, list[str]]:
    names = []
    for k in rng.choice(len(OPS), count, replace=False):
        op = OPS[k]
        names.append(op)
        if op == "contrast":
            image = TF.adjust_contrast(image, float(rng.uniform(0.8, 1.2)))
        elif op == "brightness":
            image = TF.adjust_brightness(image, float(rng.uniform(0.8, 1.2)))
        elif op == "saturation_hue":  # ColorJitter applies its two factors in a random order
            sat, hue = float(rng.uniform(0.8, 1.2)), float(rng.uniform(-0.2, 0.2))
            steps = [lambda im: TF.adjust_saturation(im, sat), lambda im: TF.adjust_hue(im, hue)]
            for j in rng.permutation(2):
                image = steps[j](image)
        elif op == "hflip":
            image = TF.hflip(image)
        elif op == "vflip":
            image = TF.vflip(image)
        elif op == "grayscale":
            image = TF.rgb_to_grayscale(image, num_output_channels=3)
        elif op == "autocontrast":
            image = TF.autocontrast(image)
        elif op == "equalize":
            image = TF.equalize(image)
        else:
            image = TF.rotate(image, float(rng.uniform(-45, 45)))
    return image, names


def las_mask(rng: np.random.Generator, size: int, fg: np.ndarray, perlin: DraemConfig, stride: int,
             tries: int) -> tuple[np.ndarray, str]:
    """GLASS's perlin_mask: union / intersection / single of two Perlin masks, times the foreground."""
    for _ in range(tries):
        _, a = perlin_mask(rng, size, perlin)
        _, b = perlin_mask(rng, size, perlin)
        u = rng.random()
        kind = "union" if u > 2 / 3 else "intersection" if u > 1 / 3 else "single"
        m = (a | b) if kind == "union" else (a & b) if kind == "intersection" else a
        m = m & fg
        pooled = torch.nn.functional.max_pool2d(torch.from_numpy(m[None, None].astype(np.float32)), stride)
        if pooled.max() > 0:
            return m, kind
    raise AnobenchError(f"glass_las: no mask met the foreground in {tries} draws")


@register_generator
class GlassLasGenerator(Generator):
    name = "glass_las"
    display_name = "GLASS-LAS"
    version = "1"
    description = "GLASS LAS: union/intersection Perlin masks on the foreground, DTD with 3 of 9 ops, beta ~ N(0.5, 0.1)"
    config_class = GlassLasConfig
    needs = GeneratorNeeds(anomaly_source=True)

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()
        textures = texture_paths(context.anomaly_source)
        self.sources = ImagePool(textures or list(context.normal_paths), context.image_size,
                                 root=context.anomaly_source if textures else context.data_root)
        self.perlin = DraemConfig(min_perlin_scale=self.config.min_perlin_scale,
                                  max_perlin_scale=self.config.max_perlin_scale, threshold=self.config.threshold)

    def _one(self, request: SampleRequest) -> GeneratedSample:
        cfg, rng, image = self.config, request.rng(), request.source
        source, path = self.sources.pick(rng) if len(self.sources) else (image, request.source_path)
        aug, ops = augment(Image.fromarray(source), rng, cfg.num_ops)
        fg = np.ones(image.shape[:2], bool) if cfg.foreground == "none" else foreground_mask(
            image, self.context.dataset, self.context.category, "realnet" if cfg.foreground == "realnet" else "memseg")
        if not fg.any():
            fg = np.ones(image.shape[:2], bool)
        mask, kind = las_mask(rng, image.shape[0], fg, self.perlin, cfg.feature_stride, cfg.max_redraws)
        beta = float(np.clip(rng.normal(cfg.beta_mean, cfg.beta_std), *cfg.beta_clip))
        m = mask[..., None].astype(np.float32)
        img = image.astype(np.float32) / 255.0
        src = np.asarray(aug, dtype=np.float32) / 255.0
        out = img * (1 - m) + (1 - beta) * src * m + beta * img * m
        out = np.where(mask[..., None], np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), image)
        return GeneratedSample(out, mask, defect_type=kind, extra={"beta": round(beta, 6), "mask": kind, "ops": ops,
                                                                   "source": path})

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]
