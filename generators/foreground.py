"""Foreground masks shared by the generators that paint anomalies only on the object.

MemSeg (TooTouch/MemSeg@836bd46 anomaly_mask.json, data/dataset.py
``generate_target_foreground_mask``) thresholds the grey image at a per-class level and keeps the
dark side (or the bright side, ``bg_reverse``); NSA (hmsch/natural-synthetic-anomalies
self_sup_data/mvtec.py ``BACKGROUND``) keeps pixels whose mean intensity is further than a
threshold from the background level, median-filtered with a 7 px window. Textures use the whole
image in both. GLASS and RealNet ship precomputed foreground images instead; here they use the
MemSeg rule, the same family of per-class thresholds.

A category with no table entry is a texture when the dataset is one of textures (Magnetic-tile)
or an MVTec texture, and otherwise gets the border-colour estimate of ``crop_paste``.
"""

from __future__ import annotations

import cv2
import numpy as np

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
TEXTURE_DATASETS = ("magnetic_tile",)

# MemSeg anomaly_mask.json: class -> (grey threshold, bg_reverse); textures: use_mask false
MEMSEG_THRESHOLDS: dict[str, tuple[int, bool]] = {
    "bottle": (250, False), "cable": (150, True), "capsule": (120, False), "hazelnut": (50, True),
    "metal_nut": (40, True), "pill": (100, True), "screw": (110, False), "toothbrush": (30, True),
    "transistor": (90, False), "zipper": (100, False),
}

# NSA self_sup_data/mvtec.py BACKGROUND: class -> (background level, threshold)
NSA_BACKGROUND: dict[str, tuple[int, int]] = {
    "bottle": (200, 60), "screw": (200, 60), "capsule": (200, 60), "zipper": (200, 60),
    "hazelnut": (20, 20), "pill": (20, 20), "toothbrush": (20, 20), "metal_nut": (20, 20),
}


def is_texture(dataset: str, category: str) -> bool:
    return dataset in TEXTURE_DATASETS or (dataset == "mvtec_ad" and category in MVTEC_TEXTURES)


def memseg_foreground(image: np.ndarray, threshold: int, reverse: bool) -> np.ndarray:
    """MemSeg's rule: grey > threshold is background (foreground when ``reverse``)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    bright = grey > threshold
    return bright if reverse else ~bright


def nsa_object_mask(image: np.ndarray, background: int, threshold: int) -> np.ndarray:
    """NSA's rule: |mean intensity - background| > threshold, median-filtered (7 px)."""
    # |mean - background| > threshold, in integers: |sum - 3*background| > 3*threshold (exact)
    total = image.sum(axis=-1, dtype=np.int32)
    far = (np.abs(total - 3 * background) > 3 * threshold).astype(np.uint8)
    return cv2.medianBlur(far, 7).astype(bool)


def foreground_mask(image: np.ndarray, dataset: str, category: str) -> np.ndarray:
    """The object region of ``image`` (bool HxW) by the per-class rules; textures: all True."""
    if is_texture(dataset, category):
        return np.ones(image.shape[:2], bool)
    if dataset == "mvtec_ad" and category in MEMSEG_THRESHOLDS:
        return memseg_foreground(image, *MEMSEG_THRESHOLDS[category])
    from anobench.generators.crop_paste import foreground_mask as estimate

    return estimate(image)
