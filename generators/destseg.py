"""DeSTSeg's anomaly synthesis (Zhang et al., CVPR 2023), as in apple/ml-destseg@f6ea31f.

``data/data_utils.py`` ``perlin_noise`` with ``aug_prob=1.0`` (every sample perturbed): DRAEM's
Perlin mask (scales ``2**randint(0, 6)``, rotation U(-90, 90), threshold 0.5) and the raw DTD
image resized bilinearly, with *no* random augmentation (DRAEM's three augmenters are dropped),
blended ``image*(1-m) + (1-beta)*dtd*m + beta*image*m`` with ``beta = 0.8*U[0, 1)``.

``train.py`` rotates each class's training images: none (capsule, metal_nut, pill, toothbrush,
transistor), ``U(-5, 5)`` degrees (wood, zipper, cable), or a multiple of 90 then ``U(-5, 5)``
(bottle, grid, hazelnut, leather, tile, carpet, screw), filled with grey 114. That rotation is a
normal-image augmentation (both the clean and the perturbed image are rotated); here it is off by
default (``rotation=none``) because it would change pixels outside the mask relative to the
source. ``rotation=class`` applies the table to the source before the perturbation and records
the angle; the mask then marks only the perturbation.

Deviations: without ``--anomaly-source`` the texture is the Perlin noise as grey (the DRAEM
fallback here); an empty mask is redrawn; randomness from the sample's generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.draem import DraemConfig, perlin_mask
from anobench.generators.sources import ImagePool, texture_paths

NO_ROTATION = ("capsule", "metal_nut", "pill", "toothbrush", "transistor")
SLIGHT_ROTATION = ("wood", "zipper", "cable")
ROTATION = ("bottle", "grid", "hazelnut", "leather", "tile", "carpet", "screw")


@dataclass
class DestSegConfig:
    beta_max: float = 0.8  # beta = beta_max * U[0, 1)
    min_perlin_scale: int = 0
    max_perlin_scale: int = 6
    threshold: float = 0.5
    rotation: Literal["none", "class"] = "none"
    slight_rotation: float = 5.0
    fill: int = 114
    max_redraws: int = 1000

    def validate(self) -> None:
        if not 0 <= self.beta_max <= 1:
            raise AnobenchError("beta_max must be in [0, 1]")


def rotation_rule(category: str) -> tuple[bool, bool]:
    """(rotate by a multiple of 90, rotate slightly) for a category, by DeSTSeg's train.py."""
    if category in ROTATION:
        return True, True
    if category in SLIGHT_ROTATION:
        return False, True
    return False, False


@register_generator
class DestSegGenerator(Generator):
    name = "destseg"
    display_name = "DeSTSeg"
    version = "1"
    description = "DeSTSeg: DRAEM Perlin masks textured by raw DTD (no augmenters), beta = 0.8*U"
    config_class = DestSegConfig
    needs = GeneratorNeeds(anomaly_source=True)

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()
        self.textures = ImagePool(texture_paths(context.anomaly_source), context.image_size, root=context.anomaly_source)
        self.perlin = DraemConfig(min_perlin_scale=self.config.min_perlin_scale,
                                  max_perlin_scale=self.config.max_perlin_scale, threshold=self.config.threshold)

    def _rotate(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        quarter, slight = rotation_rule(self.context.category) if self.context.dataset == "mvtec_ad" else (False, False)
        degree = 0.0
        if quarter:
            degree += float(rng.choice([0, 90, 180, 270]))
        if slight:
            degree += float(rng.uniform(-self.config.slight_rotation, self.config.slight_rotation))
        if degree == 0.0:
            return image, 0.0
        fill = (self.config.fill,) * 3
        return np.asarray(Image.fromarray(image).rotate(degree, fillcolor=fill, resample=Image.BILINEAR)), degree

    def _one(self, request: SampleRequest) -> GeneratedSample:
        rng, image = request.rng(), request.source
        extra = {}
        if self.config.rotation == "class":
            image, degree = self._rotate(image, rng)
            extra["rotation"] = round(degree, 4)
        size = image.shape[0]
        for redraw in range(self.config.max_redraws):
            noise, mask = perlin_mask(rng, size, self.perlin)
            if mask.any():
                break
        else:
            raise AnobenchError("destseg: no non-empty Perlin mask; lower `threshold`")
        if len(self.textures):
            texture, path = self.textures.pick(rng)
            extra["texture"] = path
        else:
            grey = np.clip((noise * 0.5 + 0.25) * 255.0, 0, 255).astype(np.uint8)
            texture = np.repeat(grey[..., None], 3, axis=2)
        beta = float(rng.random()) * self.config.beta_max
        m = mask[..., None].astype(np.float32)
        img = image.astype(np.float32) / 255.0
        out = img * (1 - m) + (1 - beta) * (texture.astype(np.float32) / 255.0) * m + beta * img * m
        out = np.where(mask[..., None], np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), image)
        extra.update(beta=round(beta, 6), redraws=redraw)
        return GeneratedSample(out, mask, defect_type="perlin", extra=extra)

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]
