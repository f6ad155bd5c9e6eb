"""CutPaste (Li et al., CVPR 2021): a patch of the image cut, colour-jittered and pasted elsewhere.

Follows the reference vendored in M-3LAB/ASBench@9c0bafc MemSeg/data/cutpaste.py (classes
``CutPasteNormal``, ``CutPasteScar``, ``CutPasteUnion``), which is the unofficial
implementation the field uses:

* ``cutpaste``: area U[0.02, 0.15] of the image, aspect ratio log-uniform in [0.3, 1/0.3],
  ``cut_w = round(sqrt(area*aspect))``, ``cut_h = round(sqrt(area/aspect))``; corners
  ``int(U(0, size - cut))`` for the cut and the paste; ColorJitter(0.1, 0.1, 0.1, 0.1) on the
  patch.
* ``cutpaste_scar``: width U[2, 16], height U[10, 25], jittered, rotated U[-45, 45] degrees with
  PIL's ``rotate(expand=True)`` (nearest neighbour) on an RGBA patch, pasted through its alpha.
* ``cutpaste_3way``: the union variant, one of the two above with probability 1/2 each (the
  classifier's three classes are normal, cutpaste and scar; the benchmark's normal class is the
  detector's normal batch).

Deviations: ASBench's functional ``cut_paste_*`` writes the pasted *box* (for the scar, the
rotated bounding box) as the mask; here the mask is the pasted alpha, i.e. exactly the pixels
written, and pixels equal to what they replace are still marked (the patch is a defect even
where it happens to match). The scar's float width and height are rounded to whole pixels
before cropping (PIL rounds a float crop box the same way). Randomness comes from the sample's
numpy generator, not Python's ``random`` and torch's global generators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.jitter import color_jitter


@dataclass
class CutPasteConfig:
    """Both variants' recipe; defaults are the reference's."""

    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: float = 0.3  # aspect log-uniform in [aspect_ratio, 1/aspect_ratio]
    scar_width: tuple[float, float] = (2.0, 16.0)
    scar_height: tuple[float, float] = (10.0, 25.0)
    scar_rotation: tuple[float, float] = (-45.0, 45.0)
    color_jitter: float = 0.1  # brightness, contrast, saturation and hue; 0 turns it off
    scar_probability: float = 0.5  # cutpaste_3way only: chance of a scar

    def validate(self) -> None:
        lo, hi = self.area_ratio
        if not 0 < lo <= hi < 1:
            raise AnobenchError(f"area_ratio must satisfy 0 < low <= high < 1, got {self.area_ratio}")
        if not 0 < self.aspect_ratio <= 1:
            raise AnobenchError(f"aspect_ratio must be in (0, 1], got {self.aspect_ratio}")
        if not 0 < self.scar_width[0] <= self.scar_width[1] or not 0 < self.scar_height[0] <= self.scar_height[1]:
            raise AnobenchError("scar_width and scar_height must be positive (low, high) pairs")
        if not 0 <= self.scar_probability <= 1:
            raise AnobenchError("scar_probability must be in [0, 1]")


def _jitter(patch: Image.Image, rng: np.random.Generator, s: float) -> tuple[Image.Image, dict]:
    return color_jitter(patch, rng, s, s, s, s) if s > 0 else (patch, {})


def cutpaste_normal(image: np.ndarray, rng: np.random.Generator, cfg: CutPasteConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """One rectangular patch cut and pasted; returns (image, mask, record)."""
    h, w = image.shape[:2]
    area = rng.uniform(*cfg.area_ratio) * w * h
    aspect = math.exp(rng.uniform(math.log(cfg.aspect_ratio), math.log(1 / cfg.aspect_ratio)))
    cut_w = min(w, int(round(math.sqrt(area * aspect))))
    cut_h = min(h, int(round(math.sqrt(area / aspect))))
    fy, fx = int(rng.uniform(0, h - cut_h)), int(rng.uniform(0, w - cut_w))
    patch = Image.fromarray(image[fy:fy + cut_h, fx:fx + cut_w])
    patch, jitter = _jitter(patch, rng, cfg.color_jitter)
    ty, tx = int(rng.uniform(0, h - cut_h)), int(rng.uniform(0, w - cut_w))
    out = image.copy()
    out[ty:ty + cut_h, tx:tx + cut_w] = np.asarray(patch)
    mask = np.zeros((h, w), bool)
    mask[ty:ty + cut_h, tx:tx + cut_w] = True
    record = {"variant": "normal", "area_ratio": round(cut_w * cut_h / (w * h), 6), "aspect": round(aspect, 6),
              "cut_w": cut_w, "cut_h": cut_h, "from": [fy, fx], "to": [ty, tx], "jitter": jitter}
    return out, mask, record


def cutpaste_scar(image: np.ndarray, rng: np.random.Generator, cfg: CutPasteConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """One thin patch cut, jittered, rotated and pasted through its alpha."""
    h, w = image.shape[:2]
    cut_w = max(1, int(round(rng.uniform(*cfg.scar_width))))
    cut_h = max(1, int(round(rng.uniform(*cfg.scar_height))))
    fy, fx = int(rng.uniform(0, h - cut_h)), int(rng.uniform(0, w - cut_w))
    patch = Image.fromarray(image[fy:fy + cut_h, fx:fx + cut_w])
    patch, jitter = _jitter(patch, rng, cfg.color_jitter)
    angle = float(rng.uniform(*cfg.scar_rotation))
    rotated = np.asarray(patch.convert("RGBA").rotate(angle, expand=True))
    ph, pw = rotated.shape[:2]
    ty, tx = int(rng.uniform(0, h - ph)), int(rng.uniform(0, w - pw))
    alpha = rotated[..., 3] > 0
    out = image.copy()
    region = out[ty:ty + ph, tx:tx + pw]
    region[alpha] = rotated[..., :3][alpha]
    mask = np.zeros((h, w), bool)
    mask[ty:ty + ph, tx:tx + pw] = alpha
    record = {"variant": "scar", "cut_w": cut_w, "cut_h": cut_h, "angle": round(angle, 4),
              "from": [fy, fx], "to": [ty, tx], "jitter": jitter}
    return out, mask, record


class _CutPasteBase(Generator):
    version = "1"
    config_class = CutPasteConfig
    needs = GeneratorNeeds()

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()

    def make(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
        raise NotImplementedError

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        samples = []
        for request in requests:
            out, mask, record = self.make(request.source, request.rng())
            samples.append(GeneratedSample(out, mask, defect_type=record["variant"], extra=record))
        return samples


@register_generator
class CutPasteGenerator(_CutPasteBase):
    name = "cutpaste"
    display_name = "CutPaste"
    description = "CutPaste: a rectangle of the image, colour-jittered, pasted elsewhere (Li et al. 2021)"

    def make(self, image, rng):
        return cutpaste_normal(image, rng, self.config)


@register_generator
class CutPasteScarGenerator(_CutPasteBase):
    name = "cutpaste_scar"
    display_name = "CutPaste-Scar"
    description = "CutPaste-Scar: a thin jittered strip, rotated, pasted through its alpha (Li et al. 2021)"

    def make(self, image, rng):
        return cutpaste_scar(image, rng, self.config)


@register_generator
class CutPaste3WayGenerator(_CutPasteBase):
    name = "cutpaste_3way"
    display_name = "CutPaste-3way"
    description = "CutPaste union: cutpaste or cutpaste_scar with probability 1/2 each (Li et al. 2021)"

    def make(self, image, rng):
        scar = rng.random() < self.config.scar_probability
        return (cutpaste_scar if scar else cutpaste_normal)(image, rng, self.config)
