"""Crop&Paste (Lin et al., ICME 2021): real defects cut out by their masks and pasted elsewhere.

Defects come only from the protocol's few-shot reference anomalies. Each sample takes one
reference, cuts the bounding box of its mask, augments it (flips, rotation, scale, brightness
and contrast), and pastes it onto the normal source image at a position where the whole defect
lies inside the object's foreground. Blending is a hard alpha paste or OpenCV's Poisson
``seamlessClone``; either way only pixels under the written mask change, so the mask matches
the pasted pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import (
    GeneratedSample,
    GenerationContext,
    Generator,
    GeneratorNeeds,
    ReferenceAnomaly,
    SampleRequest,
    register_generator,
)


@dataclass
class CropPasteConfig:
    blend: Literal["alpha", "seamless"] = "alpha"
    flip: bool = True
    rotation: float = 180.0  # degrees, uniform in (-rotation, rotation)
    scale_range: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.15  # additive jitter, fraction of 255
    contrast: float = 0.15  # multiplicative jitter around 1
    foreground: Literal["auto", "full"] = "auto"  # auto: estimate the object's region; full: whole image
    max_tries: int = 50

    def validate(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise AnobenchError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.max_tries < 1:
            raise AnobenchError("max_tries must be at least 1")


def foreground_mask(image: np.ndarray) -> np.ndarray:
    """The object's region, estimated from how far pixels are from the border colour.

    Textures and images filling the frame give (almost) everything; an object on a plain
    background gives its filled silhouette.
    """
    h, w = image.shape[:2]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    background = np.median(border, axis=0)
    spread = np.median(np.abs(border - background).sum(axis=1))
    distance = np.abs(image.astype(np.float32) - background).sum(axis=2)
    distance = cv2.GaussianBlur(distance, (0, 0), 2.0)
    if spread > 30:  # a busy border: a texture or a full-frame object
        return np.ones((h, w), bool)
    scaled = np.clip(distance * (255.0 / max(distance.max(), 1e-6)), 0, 255).astype(np.uint8)
    _, fg = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 1:
        return np.ones((h, w), bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # fill holes: everything not reachable from the border through background
    flood = region.copy()
    cv2.floodFill(flood, np.zeros((h + 2, w + 2), np.uint8), (0, 0), 1) if region[0, 0] == 0 else None
    region = region | (1 - flood)
    fraction = region.mean()
    if fraction < 0.02 or fraction > 0.97:
        return np.ones((h, w), bool)
    return cv2.erode(region, np.ones((5, 5), np.uint8)).astype(bool)


def cut_defect(reference: ReferenceAnomaly) -> tuple[np.ndarray, np.ndarray]:
    """(patch, patch mask) cropped to the bounding box of the reference's mask."""
    ys, xs = np.nonzero(reference.mask)
    if ys.size == 0:
        raise AnobenchError(f"{reference.path}: reference anomaly has an empty mask")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return reference.image[y0:y1, x0:x1].copy(), reference.mask[y0:y1, x0:x1].copy()


def augment_defect(patch: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: CropPasteConfig,
                   limit: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Flip, rotate and scale the patch and its mask together; jitter the patch's colour."""
    record: dict = {}
    if cfg.flip:
        if rng.random() < 0.5:
            patch, mask = patch[:, ::-1], mask[:, ::-1]
            record["hflip"] = True
        if rng.random() < 0.5:
            patch, mask = patch[::-1], mask[::-1]
            record["vflip"] = True
    angle = float(rng.uniform(-cfg.rotation, cfg.rotation)) if cfg.rotation > 0 else 0.0
    scale = float(rng.uniform(*cfg.scale_range))
    h, w = mask.shape
    longest = np.hypot(h, w) * scale
    if longest > limit:  # keep the defect smaller than the image
        scale *= limit / longest
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    new_w, new_h = max(1, int(np.ceil(h * sin + w * cos))), max(1, int(np.ceil(h * cos + w * sin)))
    rot[0, 2] += new_w / 2 - w / 2
    rot[1, 2] += new_h / 2 - h / 2
    patch = cv2.warpAffine(np.ascontiguousarray(patch), rot, (new_w, new_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(np.ascontiguousarray(mask).astype(np.uint8), rot, (new_w, new_h),
                          flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    gain = 1.0 + float(rng.uniform(-cfg.contrast, cfg.contrast))
    offset = float(rng.uniform(-cfg.brightness, cfg.brightness)) * 255.0
    mean = patch.reshape(-1, 3).mean(axis=0)
    patch = np.clip((patch.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)
    record.update(angle=round(angle, 3), scale=round(scale, 4), gain=round(gain, 4), offset=round(offset, 2))
    return patch, mask, record


def place(mask: np.ndarray, region: np.ndarray, rng: np.random.Generator, tries: int) -> tuple[int, int, bool]:
    """Top-left corner where the mask lies inside ``region``; falls back to the best try."""
    H, W = region.shape
    h, w = mask.shape
    best, best_inside = (0, 0), -1.0
    total = max(int(mask.sum()), 1)
    for _ in range(tries):
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        inside = region[y:y + h, x:x + w][mask].sum() / total
        if inside >= 1.0:
            return y, x, True
        if inside > best_inside:
            best, best_inside = (y, x), inside
    return best[0], best[1], False


def paste(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, y: int, x: int, blend: str) -> tuple[np.ndarray, np.ndarray]:
    """Paste at (y, x); returns the new image and the full-size mask of changed pixels."""
    H, W = image.shape[:2]
    h, w = mask.shape
    full_mask = np.zeros((H, W), bool)
    full_mask[y:y + h, x:x + w] = mask
    source = image.copy()
    source[y:y + h, x:x + w][mask] = patch[mask]
    if blend == "seamless":
        pad = 8  # seamlessClone misbehaves when the mask touches the border
        src = cv2.copyMakeBorder(source, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        dst = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        m = cv2.copyMakeBorder(full_mask.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        ys, xs = np.nonzero(m)
        center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
        # seamlessClone centres the mask's bounding box at `center`; keep it where it is
        cloned = cv2.seamlessClone(src, dst, m, center, cv2.NORMAL_CLONE)[pad:-pad, pad:-pad]
        blended = np.where(full_mask[..., None], cloned, image)
        # a faint defect can vanish in the Poisson solve: a labelled sample identical to its
        # normal source would teach the detector a false positive, so keep the plain paste then
        if (blended != image).any():
            source = blended
    return source, full_mask


@register_generator
class CropPasteGenerator(Generator):
    name = "crop_paste"
    version = "1"
    display_name = "Crop&Paste"
    description = "Crop&Paste: real defects cut from the few-shot references, augmented and pasted"
    config_class = CropPasteConfig
    needs = GeneratorNeeds(reference_anomalies=True)

    def setup(self, context: GenerationContext) -> None:
        super().setup(context)
        self.config.validate()
        # a reference with an empty mask (Magnetic-tile has a few) has nothing to cut
        self.references = [r for r in context.references if r.mask.any()]
        if not self.references:
            raise AnobenchError("crop_paste needs at least one few-shot reference anomaly with a non-empty mask")
        self.cuts = [cut_defect(r) for r in self.references]
        self.by_type: dict[str, list[int]] = {}
        for i, ref in enumerate(self.references):
            self.by_type.setdefault(ref.defect_type, []).append(i)

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        return [self._one(r) for r in requests]

    def _one(self, request: SampleRequest) -> GeneratedSample:
        cfg, rng, image = self.config, request.rng(), request.source
        types = sorted(self.by_type)
        defect_type = types[int(rng.integers(len(types)))]  # defect types equally likely
        k = self.by_type[defect_type][int(rng.integers(len(self.by_type[defect_type])))]
        region = foreground_mask(image) if cfg.foreground == "auto" else np.ones(image.shape[:2], bool)
        patch, mask, record = augment_defect(*self.cuts[k], rng, cfg, limit=int(0.9 * min(image.shape[:2])))
        y, x, inside = place(mask, region, rng, cfg.max_tries)
        if not inside:  # the mask follows the paste: keep only the part on the object
            h, w = mask.shape
            mask = mask & region[y:y + h, x:x + w]
            if not mask.any():
                mask = self.cuts[k][1][: image.shape[0], : image.shape[1]].copy()
                patch = self.cuts[k][0][: image.shape[0], : image.shape[1]]
                y, x = 0, 0
        out, full_mask = paste(image, patch, mask, y, x, cfg.blend)
        record.update(reference=self.references[k].path, y=y, x=x, inside_foreground=bool(inside))
        return GeneratedSample(out, full_mask, defect_type=defect_type, extra=record)
