"""torchvision's ColorJitter with its factors drawn from a numpy generator.

The same four operations (torchvision.transforms.functional adjust_brightness, _contrast,
_saturation, _hue) in a random order, with factors uniform in [1-s, 1+s] (hue in [-s, s]), as
``transforms.ColorJitter(s, s, s, s)`` draws them; only the source of randomness differs, so a
sample is fixed by its seed.
"""

from __future__ import annotations

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image


def color_jitter(image: Image.Image, rng: np.random.Generator, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0) -> tuple[Image.Image, dict]:
    """Jittered copy of a PIL RGB image and the factors used."""
    ops = []
    if brightness > 0:
        ops.append(("brightness", TF.adjust_brightness, float(rng.uniform(max(0.0, 1 - brightness), 1 + brightness))))
    if contrast > 0:
        ops.append(("contrast", TF.adjust_contrast, float(rng.uniform(max(0.0, 1 - contrast), 1 + contrast))))
    if saturation > 0:
        ops.append(("saturation", TF.adjust_saturation, float(rng.uniform(max(0.0, 1 - saturation), 1 + saturation))))
    if hue > 0:
        ops.append(("hue", TF.adjust_hue, float(rng.uniform(-hue, hue))))
    record = {}
    for k in rng.permutation(len(ops)):
        name, fn, factor = ops[k]
        image = fn(image, factor)
        record[name] = round(factor, 5)
    return image, record
