"""NSA, natural synthetic anomalies (Schlueter et al., ECCV 2022), as in its released code.

Follows hmsch/natural-synthetic-anomalies@9195916 ``self_sup_data/self_sup_tasks.py``
(``patch_ex``, ``_patch_ex``) with the per-class tables and settings of
``self_sup_data/mvtec.py`` and ``train_mvtec.py`` ('Shift' = NORMAL_CLONE, 'Shift-M' =
MIXED_CLONE, '-Intensity' = the logistic-intensity label):

* the patch comes from a different normal image of the category (``same=False``), picked with
  the sample's generator;
* patch half-widths ``(0.03 + Gamma(2, 0.05)) * size`` per axis, clipped to the class's width
  bounds; the source centre is redrawn (up to 200 times) until the patch holds more than
  ``min_object_pct`` of object;
* resized by ``clip(N(1, 0.5), 0.7, 1.3)`` (textures: ``(0.5, 2)``) keeping its aspect, clipped to
  the bounds;
* a destination centre redrawn (up to 200 times) until the object overlap exceeds
  ``min_overlap_pct``; the patch mask keeps source-or-destination object pixels, and the
  Poisson mask adds pixels that are background in both (against artefacts), border zeroed;
* ``cv2.seamlessClone`` (NORMAL_CLONE, or MIXED_CLONE, or a coin flip: ``mode=mix``);
* the first patch always, each further one (up to the class's ``NUM_PATCHES``) on a coin flip;
* the label: mean absolute change over channels > ``tol`` (1) inside the patch masks, median
  filtered (5 px); the intensity variants turn the median-filtered (disk 5) change into a
  logistic (per-class k, x0) or keep it raw.

Deviations: (1) pixels outside the final label are reset to the source, so the written mask
covers every changed pixel (NSA leaves the sub-threshold changes and the blended background
around the patch unlabelled in the image); (2) a sample whose label comes out empty (every patch
rejected, or the change below ``tol``) is redrawn from the same generator, up to
``max_redraws`` times, since every benchmark sample is anomalous; (3) the continuous label of the
intensity variants is written as the extra array ``label`` (uint8, 255 = 1) beside the binary
mask; (4) the random rotation NSA applies to unaligned objects' training images is a normal-image
augmentation and is not done; (5) categories outside MVTec AD get the texture settings (no
background rule, 4 patches, bounds (0.03, 0.4)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import cv2
import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import GeneratedSample, Generator, GeneratorNeeds, SampleRequest, register_generator
from anobench.generators.foreground import NSA_BACKGROUND, is_texture, nsa_object_mask
from anobench.generators.sources import ImagePool

# self_sup_data/mvtec.py; half-widths as fractions: ((h_min, h_max), (w_min, w_max))
WIDTH_BOUNDS_PCT = {
    "bottle": ((0.03, 0.4), (0.03, 0.4)), "cable": ((0.05, 0.4), (0.05, 0.4)),
    "capsule": ((0.03, 0.15), (0.03, 0.4)), "hazelnut": ((0.03, 0.35), (0.03, 0.35)),
    "metal_nut": ((0.03, 0.4), (0.03, 0.4)), "pill": ((0.03, 0.2), (0.03, 0.4)),
    "screw": ((0.03, 0.12), (0.03, 0.12)), "toothbrush": ((0.03, 0.4), (0.03, 0.2)),
    "transistor": ((0.03, 0.4), (0.03, 0.4)), "zipper": ((0.03, 0.4), (0.03, 0.2)),
    "carpet": ((0.03, 0.4), (0.03, 0.4)), "grid": ((0.03, 0.4), (0.03, 0.4)),
    "leather": ((0.03, 0.4), (0.03, 0.4)), "tile": ((0.03, 0.4), (0.03, 0.4)), "wood": ((0.03, 0.4), (0.03, 0.4)),
}
MIN_OVERLAP_PCT = {"bottle": 0.25, "capsule": 0.25, "hazelnut": 0.25, "metal_nut": 0.25, "pill": 0.25,
                   "screw": 0.25, "toothbrush": 0.25, "zipper": 0.25}
MIN_OBJECT_PCT = {"bottle": 0.7, "capsule": 0.7, "hazelnut": 0.7, "metal_nut": 0.5, "pill": 0.7,
                  "screw": 0.5, "toothbrush": 0.25, "zipper": 0.7}
NUM_PATCHES = {"bottle": 3, "cable": 3, "capsule": 3, "hazelnut": 3, "metal_nut": 3, "pill": 3, "screw": 4,
               "toothbrush": 3, "transistor": 3, "zipper": 4, "carpet": 4, "grid": 4, "leather": 4, "tile": 4,
               "wood": 4}
INTENSITY_LOGISTIC_PARAMS = {
    "bottle": (1 / 12, 24), "cable": (1 / 12, 24), "capsule": (1 / 2, 4), "hazelnut": (1 / 12, 24),
    "metal_nut": (1 / 3, 7), "pill": (1 / 3, 7), "screw": (1, 3), "toothbrush": (1 / 6, 15),
    "transistor": (1 / 6, 15), "zipper": (1 / 6, 15), "carpet": (1 / 3, 7), "grid": (1 / 3, 7),
    "leather": (1 / 3, 7), "tile": (1 / 3, 7), "wood": (1 / 6, 15),
}
TEXTURE_DEFAULTS = {"width_bounds": ((0.03, 0.4), (0.03, 0.4)), "num_patches": 4, "logistic": (1 / 3, 7)}
TEXTURE_RESIZE_BOUNDS = (0.5, 2.0)  # mvtec.py sets these for the five textures
MODES = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}


@dataclass
class NsaConfig:
    """NSA's settings; ``None`` fields take the category's value from NSA's tables."""

    mode: Literal["normal", "mixed", "mix"] = "normal"
    label_mode: Literal["binary", "logistic-intensity", "intensity"] = "binary"
    gamma_params: tuple[float, float, float] = (2.0, 0.05, 0.03)  # shape, scale, offset of the half-width
    resize: bool = True
    resize_bounds: Optional[tuple[float, float]] = None  # None: (0.7, 1.3), textures (0.5, 2)
    shift: bool = True
    skip_background: bool = True  # use the class's background rule where it has one
    tol: float = 1.0
    num_patches: Optional[int] = None
    width_bounds: Optional[tuple[float, float, float, float]] = None  # h_min, h_max, w_min, w_max
    min_object_pct: Optional[float] = None
    min_overlap_pct: Optional[float] = None
    attempts: int = 200
    max_redraws: int = 50

    def validate(self) -> None:
        if self.num_patches is not None and self.num_patches < 1:
            raise AnobenchError("num_patches must be at least 1")
        if self.resize_bounds is not None and not 0 < self.resize_bounds[0] <= self.resize_bounds[1]:
            raise AnobenchError(f"resize_bounds must satisfy 0 < low <= high, got {self.resize_bounds}")


@dataclass
class ClassSettings:
    width_bounds: tuple[tuple[float, float], tuple[float, float]]
    num_patches: int
    background: Optional[tuple[int, int]]
    min_object_pct: float
    min_overlap_pct: float
    logistic: tuple[float, float]
    resize_bounds: tuple[float, float] = (0.7, 1.3)


def class_settings(cfg: NsaConfig, dataset: str, category: str) -> ClassSettings:
    known = dataset == "mvtec_ad" and category in WIDTH_BOUNDS_PCT
    bounds = WIDTH_BOUNDS_PCT[category] if known else TEXTURE_DEFAULTS["width_bounds"]
    if cfg.width_bounds is not None:
        b = cfg.width_bounds
        bounds = ((b[0], b[1]), (b[2], b[3]))
    background = NSA_BACKGROUND.get(category) if known and cfg.skip_background else None
    texture = is_texture(dataset, category) or not known
    return ClassSettings(
        width_bounds=bounds,
        num_patches=cfg.num_patches or (NUM_PATCHES[category] if known else TEXTURE_DEFAULTS["num_patches"]),
        background=background,
        min_object_pct=cfg.min_object_pct if cfg.min_object_pct is not None else MIN_OBJECT_PCT.get(category, 0.25),
        min_overlap_pct=cfg.min_overlap_pct if cfg.min_overlap_pct is not None else MIN_OVERLAP_PCT.get(category, 0.25),
        logistic=INTENSITY_LOGISTIC_PARAMS[category] if known else TEXTURE_DEFAULTS["logistic"],
        resize_bounds=cfg.resize_bounds or (TEXTURE_RESIZE_BOUNDS if texture else (0.7, 1.3)),
    )


def draw_half_width(rng: np.random.Generator, gamma_params, size: int, lo: int, hi: int) -> int:
    shape, scale, offset = gamma_params
    return int(np.clip((offset + rng.gamma(shape, scale)) * size, lo, hi))


def one_patch(dest, src_image, dest_obj, src_obj, rng, cfg: NsaConfig, st: ClassSettings, mode: int):
    """One patch blended into ``dest``: (new image, (y0, y1, x0, x1), patch mask) or None when rejected."""
    H, W = dest.shape[:2]
    (h_lo, h_hi), (w_lo, w_hi) = st.width_bounds
    min1, max1 = int(round(h_lo * H)), int(round(h_hi * H))
    min2, max2 = int(round(w_lo * W)), int(round(w_hi * W))
    skip = dest_obj is not None
    half1 = draw_half_width(rng, cfg.gamma_params, H, min1, max1)
    half2 = draw_half_width(rng, cfg.gamma_params, W, min2, max2)
    for attempt in range(cfg.attempts):
        c1, c2 = int(rng.integers(min1, H - min1)), int(rng.integers(min2, W - min2))
        y0, y1 = max(c1 - half1, 0), min(c1 + half1, H)
        x0, x1 = max(c2 - half2, 0), min(c2 + half2, W)
        if not skip or src_obj[y0:y1, x0:x1].mean() > st.min_object_pct:
            break
    else:
        return None
    src = src_image[y0:y1, x0:x1]
    patch_mask = np.ones(src.shape[:2], np.uint8)
    src_obj_patch = src_obj[y0:y1, x0:x1] if skip else None
    height, width = src.shape[:2]
    if cfg.resize:
        scale = float(np.clip(rng.normal(1, 0.5), *st.resize_bounds))
        new_h = np.clip(scale * height, min1, max1)
        new_w = int(np.clip(int(new_h / height * width), min2, max2))
        new_h = int(np.clip(int(new_w / width * height), min1, max1))
        src = cv2.resize(src, (new_w, new_h))
        patch_mask = cv2.resize(patch_mask, (new_w, new_h))
        height, width = new_h, new_w
        if skip:
            src_obj_patch = cv2.resize(src_obj_patch, (width, height))
    if cfg.shift:
        for attempt in range(cfg.attempts):
            c1 = int(rng.integers(height // 2 + 1, H - height // 2 - 1))
            c2 = int(rng.integers(width // 2 + 1, W - width // 2 - 1))
            y0, y1 = c1 - height // 2, c1 + (height + 1) // 2
            x0, x1 = c2 - width // 2, c2 + (width + 1) // 2
            if not skip:
                break
            dest_patch = dest_obj[y0:y1, x0:x1]
            both = dest_patch & src_obj_patch & patch_mask
            if (src_obj_patch.sum() / patch_mask.size > st.min_object_pct
                    and src_obj_patch.sum() > 0 and both.sum() / src_obj_patch.sum() > st.min_overlap_pct):
                break
        else:
            return None
    if skip:
        dest_patch = dest_obj[y0:y1, x0:x1]
        patch_mask = patch_mask & (src_obj_patch | dest_patch)
        clone_mask = 255 * (patch_mask | ((1 - src_obj_patch) & (1 - dest_patch)))
    else:
        clone_mask = 255 * patch_mask
    clone_mask = clone_mask.astype(np.uint8)
    clone_mask[0], clone_mask[-1], clone_mask[:, 0], clone_mask[:, -1] = 0, 0, 0, 0
    if (clone_mask > 0).sum() < 50:  # seamlessClone fails on tiny masks
        return None
    center = (x1 - (x1 - x0) // 2, y0 + (y1 - y0) // 2)
    try:
        out = cv2.seamlessClone(np.ascontiguousarray(src), dest, clone_mask, center, mode)
    except cv2.error:
        return None
    return out, (y0, y1, x0, x1), patch_mask


def nsa_sample(dest: np.ndarray, src_image: np.ndarray, rng: np.random.Generator, cfg: NsaConfig,
               st: ClassSettings, src_obj: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(image, binary label, continuous label or None, record) of one NSA draw."""
    mode = MODES["normal" if cfg.mode == "normal" else "mixed"]
    if cfg.mode == "mix":
        mode = (cv2.NORMAL_CLONE, cv2.MIXED_CLONE)[int(rng.integers(2))]
    dest_obj = None
    if st.background is not None:
        dest_obj = nsa_object_mask(dest, *st.background).astype(np.uint8)
        if src_obj is None:
            src_obj = nsa_object_mask(src_image, *st.background).astype(np.uint8)
    else:
        src_obj = None
    H, W = dest.shape[:2]
    mask = np.zeros((H, W), np.uint8)
    out = dest.copy()
    placed = []
    for i in range(st.num_patches):
        if i == 0 or rng.integers(2) > 0:
            result = one_patch(out, src_image, dest_obj, src_obj, rng, cfg, st, mode)
            if result is not None:
                out, (y0, y1, x0, x1), patch_mask = result
                mask[y0:y1, x0:x1] = patch_mask
                placed.append([y0, y1, x0, x1])
    m = mask[..., None].astype(np.float64)
    change = np.abs(m * dest - m * out).mean(axis=-1)
    label = cv2.medianBlur((change > cfg.tol).astype(np.uint8), 5).astype(bool)
    continuous = None
    if cfg.label_mode != "binary":
        from skimage.filters import median
        from skimage.morphology import disk

        raw = np.abs(label[..., None] * dest.astype(np.float64) - label[..., None] * out).mean(axis=-1)
        raw = median(raw, disk(5))
        if cfg.label_mode == "logistic-intensity":
            k, x0 = st.logistic
            continuous = label / (1 + np.exp(-k * (raw - x0)))
        else:
            continuous = raw / 255.0
    record = {"mode": "normal" if mode == cv2.NORMAL_CLONE else "mixed", "patches": placed}
    return out, label, continuous, record


@register_generator
class NsaGenerator(Generator):
    name = "nsa"
    display_name = "NSA"
    version = "1"
    description = "NSA: patches of another normal image, rescaled, Poisson-blended (Schlueter et al. 2022)"
    config_class = NsaConfig
    needs = GeneratorNeeds()

    def setup(self, context) -> None:
        super().setup(context)
        self.config.validate()
        self.settings = class_settings(self.config, context.dataset, context.category)
        self.pool = ImagePool(list(context.normal_paths), context.image_size, root=context.data_root)
        self._objects: dict[str, np.ndarray] = {}

    def _one(self, request: SampleRequest) -> GeneratedSample:
        rng = request.rng()
        for redraw in range(self.config.max_redraws):
            if len(self.pool):
                src_image, src_path = self.pool.pick(rng, avoid=request.source_path)
            else:  # no other normal image: the source itself (NSA's same=True)
                src_image, src_path = request.source, request.source_path
            src_obj = None
            if self.settings.background is not None:  # one object mask per normal image and run
                if src_path not in self._objects:
                    self._objects[src_path] = nsa_object_mask(src_image, *self.settings.background).astype(np.uint8)
                src_obj = self._objects[src_path]
            out, label, continuous, record = nsa_sample(request.source, src_image, rng, self.config, self.settings,
                                                        src_obj)
            if label.any():
                break
        else:
            raise AnobenchError(f"nsa: no patch passed NSA's checks in {self.config.max_redraws} draws "
                                f"for sample {request.index}; lower min_object_pct / min_overlap_pct")
        out = np.where(label[..., None], out, request.source)
        record.update(patch_source=src_path, redraws=redraw, num_patches=self.settings.num_patches)
        arrays = {}
        if continuous is not None:
            arrays["label"] = np.clip(np.rint(continuous * 255), 0, 255).astype(np.uint8)
        return GeneratedSample(out, label, defect_type=f"nsa_{record['mode']}", extra=record, arrays=arrays)

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]
