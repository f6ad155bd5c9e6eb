"""MemSeg's anomaly simulation (Yang et al., 2023), as in TooTouch/MemSeg@836bd46.

``data/dataset.py`` ``generate_anomaly`` with ``configs.yaml`` and ``anomaly_mask.json``:

* mask = DRAEM Perlin mask (scales ``2**randint(0, 6)``, rotation U(-90, 90), threshold 0.5)
  times the class's foreground (grey threshold, ``bg_reverse``; textures: the whole image);
* anomaly source, with probability 1/2 each when a texture folder is given (else always the
  structure source): a DTD image resized to the image (*texture*), or the image itself through 3
  of DRAEM's 10 augmenters, cut into an 8 x 8 grid of tiles and shuffled (*structure*);
* ``out = factor*source*m + (1 - factor)*image*m + image*(1 - m)`` with factor ~ U[0.15, 1],
  truncated to uint8 as the original's ``astype``.

Deviations: images are made at the benchmark's size directly (MemSeg resizes to 288 and
centre-crops 256, so its foreground thresholds act on the same pixels, slightly rescaled); a
draw whose mask is empty (the noise missed the object) is redrawn, since every benchmark sample
is anomalous (MemSeg keeps it as a normal sample); augmenters are anobench's re-implementation
of the imgaug ones (``anobench.generators.draem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.draem import DraemConfig, augment_texture, perlin_mask
from anobench.generators.foreground import foreground_mask
from anobench.generators.sources import ImagePool, texture_paths


@dataclass
class MemSegConfig:
    transparency_range: tuple[float, float] = (0.15, 1.0)
    min_perlin_scale: int = 0
    perlin_scale: int = 6
    perlin_noise_threshold: float = 0.5
    structure_grid_size: int = 8
    texture_probability: float = 0.5  # when a texture folder is given
    foreground: Literal["class", "realnet", "none"] = "class"  # class: MemSeg's rules; realnet: RealNet's
    max_redraws: int = 200

    def validate(self) -> None:
        lo, hi = self.transparency_range
        if not 0 <= lo <= hi <= 1:
            raise AnobenchError(f"transparency_range must satisfy 0 <= low <= high <= 1, got {self.transparency_range}")
        if self.structure_grid_size < 1:
            raise AnobenchError("structure_grid_size must be at least 1")

    def perlin(self) -> DraemConfig:
        return DraemConfig(min_perlin_scale=self.min_perlin_scale, max_perlin_scale=self.perlin_scale,
                           threshold=self.perlin_noise_threshold)


def structure_source(image: np.ndarray, rng: np.random.Generator, grid: int) -> np.ndarray:
    """The image through 3 augmenters, its grid x grid tiles shuffled."""
    aug = augment_texture(image, rng, 3)
    h, w = aug.shape[:2]
    if h % grid or w % grid:
        raise AnobenchError(f"memseg: image size {h}x{w} is not divisible by structure_grid_size {grid}")
    th, tw = h // grid, w // grid
    tiles = aug.reshape(grid, th, grid, tw, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, th, tw, 3)
    tiles = tiles[rng.permutation(grid * grid)]
    return tiles.reshape(grid, grid, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)


@register_generator
class MemSegGenerator(Generator):
    name = "memseg"
    display_name = "MemSeg"
    version = "1"
    description = "MemSeg: Perlin mask x foreground, DTD texture or shuffled-tile structure, factor U[0.15, 1]"
    config_class = MemSegConfig
    needs = GeneratorNeeds(anomaly_source=True)

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()
        self.textures = ImagePool(texture_paths(context.anomaly_source), context.image_size, root=context.anomaly_source)

    def _one(self, request: SampleRequest) -> GeneratedSample:
        cfg, rng, image = self.config, request.rng(), request.source
        fg = np.ones(image.shape[:2], bool) if cfg.foreground == "none" else foreground_mask(
            image, self.context.dataset, self.context.category, "realnet" if cfg.foreground == "realnet" else "memseg")
        if not fg.any():
            fg = np.ones(image.shape[:2], bool)
        for redraw in range(cfg.max_redraws):
            _, noise_mask = perlin_mask(rng, image.shape[0], cfg.perlin())
            mask = noise_mask & fg
            if mask.any():
                break
        else:
            raise AnobenchError(f"memseg: the Perlin mask never met the foreground in {cfg.max_redraws} draws")
        use_texture = len(self.textures) > 0 and rng.uniform() < cfg.texture_probability
        if use_texture:
            source, path = self.textures.pick(rng)
            kind = "texture"
        else:
            source, path, kind = structure_source(image, rng, cfg.structure_grid_size), None, "structure"
        factor = float(rng.uniform(*cfg.transparency_range))
        m = mask[..., None].astype(np.float64)
        out = factor * (m * source) + (1 - factor) * (m * image) + (1 - m) * image
        out = out.astype(np.uint8)
        extra = {"source": kind, "factor": round(factor, 6), "redraws": redraw}
        if path:
            extra["texture"] = path
        return GeneratedSample(out, mask, defect_type=kind, extra=extra)

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]
