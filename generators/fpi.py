"""FPI, foreign patch interpolation (Tan et al., 2020), as in jemtan/FPI@4f05f45 self_sup_task.py.

``patch_ex``: a square patch, centre uniform in the central 80 % of the image, half-width
``randint(round(0.05*size), round(0.2*size))``, clipped to the image; inside it the image
becomes ``alpha*image + (1 - alpha)*other`` with ``alpha ~ U(0.05, 0.95)`` and ``other`` a
different normal image (picked with the sample's generator). The native label is continuous:
``1 - alpha`` on the patch pixels where the two images differ in any channel (0 elsewhere).

Here the binary mask is that label's support and the continuous label is kept as the extra
array ``label`` (uint8, ``round(255*(1 - alpha))``), with ``alpha`` in the record. Deviations:
the interpolated image is rounded to uint8 (FPI works on floats); ``num_classes`` (the
categorical variant) and ``tolerance`` are not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.sources import ImagePool


@dataclass
class FpiConfig:
    core_percent: float = 0.8  # centres lie in the central core of the image
    width_range: tuple[float, float] = (0.05, 0.2)  # half-width, fraction of the size
    alpha_range: tuple[float, float] = (0.05, 0.95)  # weight of the source image inside the patch
    max_redraws: int = 50

    def validate(self) -> None:
        if not 0 < self.core_percent <= 1:
            raise AnobenchError("core_percent must be in (0, 1]")
        if not 0 <= self.alpha_range[0] <= self.alpha_range[1] < 1:
            raise AnobenchError(f"alpha_range must satisfy 0 <= low <= high < 1, got {self.alpha_range}")


def fpi_patch(image: np.ndarray, other: np.ndarray, rng: np.random.Generator, cfg: FpiConfig):
    """(image, binary mask, continuous label, record) of one FPI draw."""
    H, W = image.shape[:2]
    dims = np.array([H, W], float)
    core, offset = cfg.core_percent * dims, (1 - cfg.core_percent) * dims / 2
    cy = int(rng.integers(int(offset[0]), int(offset[0] + core[0])))
    cx = int(rng.integers(int(offset[1]), int(offset[1] + core[1])))
    half = int(rng.integers(int(round(cfg.width_range[0] * W)), int(round(cfg.width_range[1] * W))))
    alpha = float(rng.uniform(*cfg.alpha_range))
    y0, y1 = np.clip([cy - half, cy + half], 0, H)
    x0, x1 = np.clip([cx - half, cx + half], 0, W)
    out = image.copy()
    a, b = image[y0:y1, x0:x1].astype(np.float64), other[y0:y1, x0:x1].astype(np.float64)
    out[y0:y1, x0:x1] = np.clip(np.rint(alpha * a + (1 - alpha) * b), 0, 255).astype(np.uint8)
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = (image[y0:y1, x0:x1] != other[y0:y1, x0:x1]).any(axis=-1)
    label = mask * (1 - alpha)
    record = {"alpha": round(alpha, 6), "center": [cy, cx], "half_width": half, "box": [int(y0), int(y1), int(x0), int(x1)]}
    return out, mask, label, record


@register_generator
class FpiGenerator(Generator):
    name = "fpi"
    display_name = "FPI"
    version = "1"
    description = "FPI: a square patch interpolated with another normal image, alpha ~ U(0.05, 0.95) (Tan et al.)"
    config_class = FpiConfig
    needs = GeneratorNeeds()

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()
        self.pool = ImagePool(list(context.normal_paths), context.image_size, root=context.data_root)

    def _one(self, request: SampleRequest) -> GeneratedSample:
        rng = request.rng()
        for redraw in range(self.config.max_redraws):
            other, path = self.pool.pick(rng, avoid=request.source_path) if len(self.pool) else (
                np.ascontiguousarray(request.source[::-1, ::-1]), "source (flipped)")
            out, mask, label, record = fpi_patch(request.source, other, rng, self.config)
            if mask.any():
                break
        else:
            raise AnobenchError(f"fpi: the patch never differed from the other image for sample {request.index}")
        record.update(patch_source=path, redraws=redraw)
        arrays = {"label": np.clip(np.rint(label * 255), 0, 255).astype(np.uint8)}
        return GeneratedSample(out, mask, defect_type="fpi", extra=record, arrays=arrays)

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]
