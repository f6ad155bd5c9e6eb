"""Detection metrics of one category: image/pixel AUROC, AP, F1-max, and AUPRO.

The values are those of scikit-learn (``roc_auc_score``, ``average_precision_score``, the
maximum F1 over ``precision_recall_curve``) and of anomalib 2.7's ``AUPRO`` (global FPR up to a
limit, per-region TPR averaged over the connected components of all masks, area normalised by the
limit). Ties are handled like scikit-learn: thresholds collapse at distinct score values, so tied
scores count half in AUROC and enter AP, F1 and the PRO curve as one step.

Why not call those libraries: a category's pixels (150 maps of 256x256 is ~10M values) make
scikit-learn sort them once per metric and anomalib sort them again on top of a per-region Python
loop. Here every ranking metric is counted from one sort of the normal pixels and one (small) sort
of the anomalous ones:

- AUROC is the Mann-Whitney count: for every anomalous value, how many normal values lie below it
  plus half of those equal to it (``searchsorted`` left and right), which equals the trapezoidal
  ROC area over collapsed thresholds.
- AP and F1 change only where recall changes, i.e. at the distinct anomalous values, so they are
  evaluated there with the false positives counted by the same ``searchsorted``.
- AUPRO walks only the normal values above the FPR limit (the top 30%); the PRO value at each
  of them is a suffix sum of per-pixel region weights ``1 / (region size * regions)`` over the
  sorted anomalous pixels.

Undefined values are NaN, never an exception: AUROC needs both classes; AP and F1-max need at least
one positive (with no negative they are 1.0, as in scikit-learn); pixel AUROC and AUPRO need both
anomalous and normal pixels (anomalib would return 0.0 for AUPRO there). Maps are ranked in their
own dtype (anomalib casts to float32 first: give float32 maps to reproduce its ties exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

DETECTION_METRICS = (
    "image_auroc", "image_ap", "image_f1max",
    "pixel_auroc", "pixel_ap", "pixel_f1max",
    "aupro",
)
AUPRO_FPR_LIMIT = 0.3


def detection_metrics(image_scores: Any, image_labels: Any, anomaly_maps: Any, masks: Any,
                      fpr_limit: float = AUPRO_FPR_LIMIT) -> dict[str, float]:
    """All detection metrics of one category's test set, as plain floats in [0, 1] (or NaN).

    Args:
        image_scores: (N,) anomaly score per test image (higher = more anomalous).
        image_labels: (N,) 1/True for anomalous test images.
        anomaly_maps: (N, H, W) or (N, 1, H, W) array, or a sequence of N (H, W) maps.
        masks: ground-truth masks of the same shapes; any non-zero pixel is anomalous.
        fpr_limit: upper FPR bound of the AUPRO integral.

    Pixel metrics pool every pixel of every map, as the papers do.
    """
    scores = _as_scores(image_scores, "image_scores")
    labels = _as_labels(image_labels, "image_labels")
    if scores.shape != labels.shape:
        raise ValueError(f"image_scores has {scores.size} values but image_labels has {labels.size}")
    pixels = _split_pixels(anomaly_maps, masks)
    if len(pixels.images) != scores.size:
        raise ValueError(f"{len(pixels.images)} anomaly maps for {scores.size} image scores")

    image_auroc, image_ap, image_f1 = ranking_metrics(scores, labels)
    pos, weights = pixels.sorted_positives()
    neg = np.sort(pixels.negatives())
    _reject_nan(pos, neg)
    pixel_auroc, pixel_ap, pixel_f1 = _ranking_from_sorted(pos, neg)
    return {
        "image_auroc": image_auroc, "image_ap": image_ap, "image_f1max": image_f1,
        "pixel_auroc": pixel_auroc, "pixel_ap": pixel_ap, "pixel_f1max": pixel_f1,
        "aupro": _aupro_from_sorted(pos, weights, neg, fpr_limit),
    }


def ranking_metrics(scores: Any, labels: Any) -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) of binary labels ranked by scores; see the module notes on NaN."""
    scores = _as_scores(scores, "scores")
    labels = _as_labels(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores has {scores.size} values but labels has {labels.size}")
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    _reject_nan(pos, neg)
    return _ranking_from_sorted(pos, neg)


def aupro(anomaly_maps: Any, masks: Any, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """anomalib's normalised AUPRO of pooled maps (8-connected regions of the masks)."""
    pixels = _split_pixels(anomaly_maps, masks)
    pos, weights = pixels.sorted_positives()
    neg = np.sort(pixels.negatives())
    _reject_nan(pos, neg)
    return _aupro_from_sorted(pos, weights, neg, fpr_limit)


def _ranking_from_sorted(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, float]:
    """AUROC, AP and F1-max from ascending positive and negative scores."""
    n_pos, n_neg = pos.size, neg.size
    if n_pos == 0:
        return math.nan, math.nan, math.nan
    if n_neg == 0:
        return math.nan, 1.0, 1.0
    starts = _group_starts(pos)
    values = pos[starts]
    counts = np.diff(np.append(starts, n_pos))
    below = np.searchsorted(neg, values, side="left")  # negatives strictly below each positive value
    not_above = np.searchsorted(neg, values, side="right")
    auroc = float(np.dot(counts, below + not_above)) / (2.0 * n_pos * n_neg)
    tp = (n_pos - starts).astype(np.float64)  # positives >= value
    fp = (n_neg - below).astype(np.float64)  # negatives >= value
    ap = float(np.dot(counts / n_pos, tp / (tp + fp)))
    f1max = float(np.max(2.0 * tp / (tp + fp + n_pos)))
    return auroc, ap, f1max


def _aupro_from_sorted(pos: np.ndarray, weights: np.ndarray, neg: np.ndarray, fpr_limit: float) -> float:
    """Area under (global FPR, mean per-region TPR) up to ``fpr_limit``, divided by it.

    ``weights`` are the ascending positives' ``1 / (region size * regions)``. The curve is
    piecewise linear through the collapsed thresholds; only thresholds holding normal pixels move
    along the FPR axis, so the area is a sum over the distinct normal values from the top down
    to the one whose step crosses the limit (that step is cut by linear interpolation).
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    n_neg = neg.size
    if pos.size == 0 or n_neg == 0:
        return math.nan
    # suffix[i] = PRO of a threshold that keeps positives i.. (accumulated from the top, in float64)
    suffix = np.zeros(pos.size + 1)
    suffix[:-1] = np.cumsum(weights[::-1])[::-1]
    # the normal values needed: the top ceil(limit * n) + 1 cover the step that crosses the limit
    cut = n_neg - min(n_neg, math.ceil(fpr_limit * n_neg) + 1)
    tail = neg[cut:]
    starts = _group_starts(tail) + cut
    starts[0] = np.searchsorted(neg, tail[0], side="left")  # the cut may split a tie group
    ends = np.append(starts[1:], n_neg)
    values = neg[starts]
    fpr_high = (n_neg - ends) / n_neg  # FPR of the threshold just above the value
    fpr_low = (n_neg - starts) / n_neg  # FPR of the threshold at the value
    pro_high = suffix[np.searchsorted(pos, values, side="right")]
    pro_low = suffix[np.searchsorted(pos, values, side="left")]
    inside = fpr_low <= fpr_limit
    area = float(np.sum((fpr_low - fpr_high)[inside] * (pro_high + pro_low)[inside])) / 2.0
    crossing = np.flatnonzero(~inside)
    if crossing.size:
        j = crossing[-1]  # values ascend, so the lowest-FPR step past the limit is the last one
        f1, f2, p1, p2 = fpr_high[j], fpr_low[j], pro_high[j], pro_low[j]
        if f1 < fpr_limit:
            p_lim = p1 + (p2 - p1) * (fpr_limit - f1) / (f2 - f1)
            area += (fpr_limit - f1) * (p1 + p_lim) / 2.0
    return float(area / fpr_limit)


class _Pixels:
    """Per-image maps and masks, flattened into pooled positive and negative pixels."""

    def __init__(self, images: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.images = images

    def negatives(self) -> np.ndarray:
        return np.concatenate([m[~k] for m, k in self.images]) if self.images else np.zeros(0)

    def sorted_positives(self) -> tuple[np.ndarray, np.ndarray]:
        """Ascending positive values and their region weights ``1 / (size * regions)``."""
        values, sizes = [], []
        n_regions = 0  # regions of distinct masks are distinct, as in anomalib
        for amap, mask in self.images:
            if not mask.any():
                continue
            count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
            n_regions += count - 1
            sizes.append(stats[labels[mask], cv2.CC_STAT_AREA])
            values.append(amap[mask])
        if not values:
            return np.zeros(0), np.zeros(0)
        values_all = np.concatenate(values)
        weights = 1.0 / (np.concatenate(sizes).astype(np.float64) * n_regions)
        order = np.argsort(values_all, kind="stable")
        return values_all[order], weights[order]


def _split_pixels(anomaly_maps: Any, masks: Any) -> _Pixels:
    maps_list = _as_image_list(anomaly_maps, "anomaly_maps")
    masks_list = _as_image_list(masks, "masks")
    if len(maps_list) != len(masks_list):
        raise ValueError(f"{len(maps_list)} anomaly maps but {len(masks_list)} masks")
    images = []
    for i, (amap, mask) in enumerate(zip(maps_list, masks_list)):
        amap = _as_scores(amap, f"anomaly_maps[{i}]")
        mask = np.ascontiguousarray(mask if mask.dtype == bool else mask > 0)
        if amap.shape != mask.shape:
            raise ValueError(f"anomaly_maps[{i}] has shape {amap.shape} but masks[{i}] has {mask.shape}")
        images.append((amap, mask))
    return _Pixels(images)


def _as_image_list(value: Any, name: str) -> list[np.ndarray]:
    """(N, H, W), (N, 1, H, W) or a sequence of (H, W) / (1, H, W) arrays -> list of (H, W)."""
    if isinstance(value, Sequence) and not isinstance(value, np.ndarray):
        items = [_to_numpy(v) for v in value]
    else:
        array = _to_numpy(value)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3:
            raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W), got shape {array.shape}")
        items = list(array)
    out = []
    for i, item in enumerate(items):
        if item.ndim == 3 and item.shape[0] == 1:
            item = item[0]
        if item.ndim != 2:
            raise ValueError(f"{name}[{i}] must be a 2-D map, got shape {item.shape}")
        out.append(item)
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _as_scores(value: Any, name: str) -> np.ndarray:
    array = _to_numpy(value)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    if name in ("image_scores", "scores"):
        array = array.reshape(-1)
    return array


def _as_labels(value: Any, name: str) -> np.ndarray:
    array = _to_numpy(value).reshape(-1)
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be 0/1 or boolean")
        array = array.astype(bool)
    return array


def _group_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in a sorted array."""
    if sorted_values.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
    return np.concatenate(([0], change))


def _reject_nan(*sorted_arrays: np.ndarray) -> None:
    for array in sorted_arrays:
        if array.size and np.isnan(array[-1]):  # sorting puts NaN last
            raise ValueError("scores contain NaN")
