"""Foreground masks shared by the generators that paint anomalies only on the object.

Two rule sets, chosen by ``rules`` in :func:`foreground_mask`:

* ``memseg`` (the default): TooTouch/MemSeg@836bd46 anomaly_mask.json, data/dataset.py
  ``generate_target_foreground_mask``: the grey image thresholded at a per-class level, keeping
  the dark side (or the bright side, ``bg_reverse``); textures use the whole image.
* ``realnet``: cnulab/RealNet@5e89b3a datasets/realnet_dataset.py
  ``RealNetDataset.generate_target_foreground_mask`` (lines 258-330, counted in the stored file):
  an automatic threshold (Otsu or triangle, cv2) on the grey image or one colour channel, the
  bright or the dark side kept, then a closing and an opening with square footprints
  (scikit-image). MVTec AD, lines 261-279: the whole image for carpet, leather, tile, wood,
  cable and transistor (cable and transistor too, unlike MemSeg; grid is thresholded, not a
  texture); pill: Otsu, bright side; hazelnut, metal_nut, toothbrush: triangle, bright side;
  bottle, capsule, grid, screw, zipper: Otsu, dark side; then closing 6, opening 6. VisA, lines
  281-297: capsules whole; pcb1-4: triangle on the blue channel, bright, closing 8, opening 3;
  the rest: Otsu grey, bright, closing 3, opening 3. MPDD, lines 299-316: Otsu on green
  (bracket_black, bracket_brown, connector), blue (bracket_white, tubes; bright side) or grey
  (the rest), the dark side kept except for bracket_white and tubes, closing 6, no opening.
  BTAD, lines 318-328: 02 whole; the rest: Otsu grey, bright side (the source names it
  ``target_background_mask`` and uses it as the foreground), closing 15, opening 6.

NSA (hmsch/natural-synthetic-anomalies self_sup_data/mvtec.py ``BACKGROUND``) keeps pixels
whose mean intensity is further than a threshold from the background level, median-filtered
with a 7 px window. GLASS ships precomputed foreground images instead; there the MemSeg rule
stands in (``anobench.generators.glass_las``).

Deviations (``realnet``): RealNet pins scikit-image 0.19.3; here scikit-image 0.26's closing
and opening run, whose handling of even footprints (6 x 6) changed after 0.19 (the footprint is
padded, not shifted), meant to give the same result and not checked pixel for pixel against
0.19.3. RealNet raises on a category outside its tables; here such a category falls back as
below. RealNet's full commit: 5e89b3a9781cb2222594c436ea6cf1ee530d9049.

A category with no table entry is a texture when the dataset is one of textures (Magnetic-tile)
or an MVTec texture, and otherwise gets the border-colour estimate of ``crop_paste``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from anobench.errors import AnobenchError

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


FOREGROUND_RULES = ("memseg", "realnet")


@dataclass(frozen=True)
class RealNetRule:
    """One class's rule in RealNet: threshold ``method`` on ``channel``, keep ``bright`` or dark side."""

    method: str  # otsu | triangle
    bright: bool  # True: pixels above the threshold are the object
    close: int  # side of the square footprint of the closing (0: none)
    open: int  # side of the square footprint of the opening (0: none)
    channel: str = "grey"  # grey | green | blue (of the RGB image)


# RealNet realnet_dataset.py generate_target_foreground_mask: dataset -> classes kept whole
REALNET_WHOLE: dict[str, tuple[str, ...]] = {
    "mvtec_ad": ("carpet", "leather", "tile", "wood", "cable", "transistor"),
    "visa": ("capsules",),
    "btad": ("02",),
}
_OTSU_BRIGHT, _OTSU_DARK = RealNetRule("otsu", True, 6, 6), RealNetRule("otsu", False, 6, 6)
_TRIANGLE_BRIGHT = RealNetRule("triangle", True, 6, 6)
_PCB = RealNetRule("triangle", True, 8, 3, "blue")
_MPDD_GREEN, _MPDD_BLUE = RealNetRule("otsu", False, 6, 0, "green"), RealNetRule("otsu", True, 6, 0, "blue")
# dataset -> class -> rule; "*" is the dataset's rule for every other class (MVTec AD has none)
REALNET_RULES: dict[str, dict[str, RealNetRule]] = {
    "mvtec_ad": {"pill": _OTSU_BRIGHT, "hazelnut": _TRIANGLE_BRIGHT, "metal_nut": _TRIANGLE_BRIGHT,
                 "toothbrush": _TRIANGLE_BRIGHT, "bottle": _OTSU_DARK, "capsule": _OTSU_DARK, "grid": _OTSU_DARK,
                 "screw": _OTSU_DARK, "zipper": _OTSU_DARK},
    "visa": {**{f"pcb{i}": _PCB for i in range(1, 5)}, "*": RealNetRule("otsu", True, 3, 3)},
    "mpdd": {"bracket_black": _MPDD_GREEN, "bracket_brown": _MPDD_GREEN, "connector": _MPDD_GREEN,
             "bracket_white": _MPDD_BLUE, "tubes": _MPDD_BLUE, "*": RealNetRule("otsu", False, 6, 0)},
    "btad": {"*": RealNetRule("otsu", True, 15, 6)},
}
_CHANNELS = {"green": 1, "blue": 2}
_METHODS = {"otsu": cv2.THRESH_OTSU, "triangle": cv2.THRESH_TRIANGLE}


def realnet_foreground(image: np.ndarray, rule: RealNetRule) -> np.ndarray:
    """RealNet's rule on a uint8 RGB image: automatic threshold, one side, closing then opening."""
    from skimage.morphology import closing, opening

    plane = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if rule.channel == "grey" \
        else np.ascontiguousarray(image[:, :, _CHANNELS[rule.channel]])
    _, bright = cv2.threshold(plane, 100, 1, cv2.THRESH_BINARY | _METHODS[rule.method])  # 100: ignored
    mask = bright if rule.bright else 1 - bright
    if rule.close:
        mask = closing(mask, np.ones((rule.close, rule.close), bool))
    if rule.open:
        mask = opening(mask, np.ones((rule.open, rule.open), bool))
    return mask.astype(bool)


def realnet_rule(dataset: str, category: str) -> RealNetRule | None:
    """The class's RealNet rule, None where RealNet keeps the whole image or has no rule."""
    table = REALNET_RULES.get(dataset, {})
    return table.get(category, table.get("*"))


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


def foreground_mask(image: np.ndarray, dataset: str, category: str, rules: str = "memseg") -> np.ndarray:
    """The object region of ``image`` (bool HxW) by the per-class ``rules``; textures: all True."""
    if rules not in FOREGROUND_RULES:
        raise AnobenchError(f"unknown foreground rules {rules!r} (known: {', '.join(FOREGROUND_RULES)})")
    if rules == "realnet":
        if category in REALNET_WHOLE.get(dataset, ()):
            return np.ones(image.shape[:2], bool)
        rule = realnet_rule(dataset, category)
        if rule is not None:
            return realnet_foreground(image, rule)
    if is_texture(dataset, category):
        return np.ones(image.shape[:2], bool)
    if dataset == "mvtec_ad" and category in MEMSEG_THRESHOLDS:
        return memseg_foreground(image, *MEMSEG_THRESHOLDS[category])
    from anobench.generators.crop_paste import foreground_mask as estimate

    return estimate(image)
