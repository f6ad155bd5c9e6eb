"""Cutout (DeVries & Taylor, 2017) as an anomaly: one square hole filled with 0.

As DeVries & Taylor's ``Cutout`` (uoguelph-mlrg/Cutout util/cutout.py, also vendored as
M-3LAB/ASBench@9c0bafc MemSeg/data/CutOut.py): the centre is uniform over the whole image and
the square ``[c - L//2, c + L//2)`` is clipped at the border, so holes at the edge are partial.
One hole, its length ``L`` uniform in [20, 50] px at 256 px (scaled with the image size); the
mask is the clipped hole (black pixels inside it are part of the defect). ASBench's other copy,
``cut_out`` in MemSeg/data/cutpaste.py, returns the image unchanged with a box as the mask.
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
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(0, cy - side // 2), min(h, cy + side // 2)
    x0, x1 = max(0, cx - side // 2), min(w, cx + side // 2)
    out = image.copy()
    out[y0:y1, x0:x1] = cfg.fill
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return out, mask, {"side": side, "center": [cy, cx], "box": [y0, y1, x0, x1]}


@register_generator
class CutoutGenerator(Generator):
    name = "cutout"
    display_name = "Cutout"
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
            rng = request.rng()
            for _ in range(100):  # a 1-px-wide clipped hole of an odd side can be empty
                image, mask, record = cutout(request.source, rng, self.config)
                if mask.any():
                    break
            out.append(GeneratedSample(image, mask, defect_type="cutout", extra=record))
        return out
