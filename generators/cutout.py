"""Cutout (DeVries & Taylor, 2017) as an anomaly: one square hole filled with 0.

The side is drawn uniformly in [20, 50] px at 256 px (scaled with the image size) and the hole
lies wholly inside the image. ASBench's ``cut_out`` (M-3LAB/ASBench@9c0bafc
MemSeg/data/cutpaste.py) draws a CutPaste-shaped box and returns the image unchanged with the
box as its mask; here the box is filled, so the mask marks pixels that changed (and black pixels
inside the hole, which are part of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator


@dataclass
class CutoutConfig:
    side: tuple[int, int] = (20, 50)  # px at 256, inclusive
    fill: int = 0
    reference_size: int = 256  # the size ``side`` is given at

    def validate(self) -> None:
        if not 1 <= self.side[0] <= self.side[1]:
            raise AnobenchError(f"side must satisfy 1 <= low <= high, got {self.side}")
        if not 0 <= self.fill <= 255:
            raise AnobenchError("fill must be in 0..255")


def cutout(image: np.ndarray, rng: np.random.Generator, cfg: CutoutConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    h, w = image.shape[:2]
    scale = min(h, w) / cfg.reference_size
    lo = max(1, int(round(cfg.side[0] * scale)))
    hi = max(lo, min(min(h, w), int(round(cfg.side[1] * scale))))
    side = int(rng.integers(lo, hi + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out = image.copy()
    out[y:y + side, x:x + side] = cfg.fill
    mask = np.zeros((h, w), bool)
    mask[y:y + side, x:x + side] = True
    return out, mask, {"side": side, "y": y, "x": x}


@register_generator
class CutoutGenerator(Generator):
    name = "cutout"
    version = "1"
    description = "Cutout: one square hole filled with 0, side 20-50 px at 256 (DeVries & Taylor 2017)"
    config_class = CutoutConfig
    needs = GeneratorNeeds()

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        out = []
        for request in requests:
            image, mask, record = cutout(request.source, request.rng(), self.config)
            out.append(GeneratedSample(image, mask, defect_type="cutout", extra=record))
        return out
