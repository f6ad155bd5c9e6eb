"""AnomalyDiffusion's approximate pixel metrics, beside the exact ones of :mod:`.detection`.

AnomalyDiffusion (sjtuplayer/anomalydiffusion, the detector protocol that DualAnoDiff and DH-Diff
compare against) reports two pixel metrics that are not the exact curve values:

- ``aupro_thr100``: its ``calculate_au_pro`` (``unet_utils/au_pro_util.py`` at 4e6c1cb, called at
  ``test-localization.py`` line 95 at b6d805d) samples the PRO curve at only 100 thresholds, taken
  at equidistant positions of the sorted normal-pixel scores (``np.linspace(0, n - 1, 100,
  dtype=int)``, function ``compute_pro``), adds the point (1, 1), and integrates with the
  trapezoidal rule up to FPR 0.3 (the value at 0.3 interpolated between its neighbours, function
  ``trapezoid``), divided by 0.3. A point's FPR is ``1 - (position + 1) / n``; its PRO is the
  mean over 8-connected ground-truth regions of the share of region pixels scoring above the
  threshold. The coarse curve reads lower than the exact area.
- ``pixel_f1max_grid005``: the maximum pixel F1 over the thresholds ``np.arange(0, 1 + 1e-3,
  0.05)`` only (``test-localization.py`` lines 97-112), a pixel counting as anomalous when its
  score is strictly above the threshold, with ``precision = TP / (P + 1e-8)``, ``recall = TP /
  (G + 1e-8)`` and ``F1 = 2 p r / (p + r + 1e-8)``. It assumes scores in [0, 1] and misses the
  best threshold between grid points, so it reads up to a few points lower than F1-max.

Both are computed here from one sort of the pooled pixels (as :mod:`.detection` does) instead of
a Python loop over regions and thresholds; ``tests/test_metric_variants.py`` checks them equal to
a line-by-line reimplementation of the reference code. Ground truth is binary here (any non-zero
pixel); the reference reads its masks resized bilinearly, which only differs at mask sizes other
than the image size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from anobench.metrics.detection import AUPRO_FPR_LIMIT, _reject_nan, _split_pixels

VARIANT_METRICS = ("aupro_thr100", "pixel_f1max_grid005")
PRO_THRESHOLDS = 100
F1_GRID_STEP = 0.05
_EPS = 1e-8


def variant_metrics(names: Any, anomaly_maps: Any, masks: Any) -> dict[str, float]:
    """The named variants (a subset of :data:`VARIANT_METRICS`) of one category's maps."""
    names = tuple(names)
    unknown = [n for n in names if n not in VARIANT_METRICS]
    if unknown:
        raise ValueError(f"unknown metric variant(s) {', '.join(unknown)} (known: {', '.join(VARIANT_METRICS)})")
    if not names:
        return {}
    pixels = _split_pixels(anomaly_maps, masks)
    pos, weights = pixels.sorted_positives()
    neg = np.sort(pixels.negatives())
    _reject_nan(pos, neg)
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    out = {}
    if "aupro_thr100" in names:
        out["aupro_thr100"] = _aupro_sampled(pos, weights, neg)
    if "pixel_f1max_grid005" in names:
        out["pixel_f1max_grid005"] = _f1max_grid(pos, neg)
    return out


def aupro_thr100(anomaly_maps: Any, masks: Any, fpr_limit: float = AUPRO_FPR_LIMIT,
                 num_thresholds: int = PRO_THRESHOLDS) -> float:
    """AnomalyDiffusion's ``calculate_au_pro``: PRO sampled at ``num_thresholds`` normal scores."""
    pixels = _split_pixels(anomaly_maps, masks)
    pos, weights = pixels.sorted_positives()
    neg = np.sort(pixels.negatives())
    _reject_nan(pos, neg)
    return _aupro_sampled(pos.astype(np.float64), weights, neg.astype(np.float64), fpr_limit, num_thresholds)


def pixel_f1max_grid005(anomaly_maps: Any, masks: Any) -> float:
    """AnomalyDiffusion's pixel F1-max over the thresholds 0, 0.05, ..., 1."""
    pixels = _split_pixels(anomaly_maps, masks)
    pos, _ = pixels.sorted_positives()
    neg = np.sort(pixels.negatives())
    _reject_nan(pos, neg)
    return _f1max_grid(pos.astype(np.float64), neg.astype(np.float64))


def _aupro_sampled(pos: np.ndarray, weights: np.ndarray, neg: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT,
                   num_thresholds: int = PRO_THRESHOLDS) -> float:
    n_neg = neg.size
    if pos.size == 0 or n_neg == 0:
        return math.nan
    # PRO of a threshold t = sum of the region weights of the positives scoring above t
    suffix = np.zeros(pos.size + 1)
    suffix[:-1] = np.cumsum(weights[::-1])[::-1]
    positions = np.linspace(0, n_neg - 1, num=num_thresholds, dtype=int)
    thresholds = neg[positions]
    fpr = np.concatenate(([1.0], 1.0 - (positions + 1) / n_neg))[::-1]
    pro = np.concatenate(([1.0], suffix[np.searchsorted(pos, thresholds, side="right")]))[::-1]
    return _trapezoid_to(fpr, pro, fpr_limit) / fpr_limit


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area up to ``x_max``; the segment across it is cut at the interpolated y."""
    correction = 0.0
    if not np.any(x == x_max):
        ins = int(np.searchsorted(x, x_max, side="right"))  # bisect.bisect
        if not 0 < ins < x.size:
            return math.nan  # the reference asserts here; the curve always spans [0, 1]
        y_at = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_at + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def _f1max_grid(pos: np.ndarray, neg: np.ndarray) -> float:
    if pos.size == 0:
        return math.nan
    grid = np.arange(0.0, 1.0 + 1e-3, F1_GRID_STEP)
    tp = (pos.size - np.searchsorted(pos, grid, side="right")).astype(np.float64)
    fp = (neg.size - np.searchsorted(neg, grid, side="right")).astype(np.float64)
    precision = tp / (tp + fp + _EPS)
    recall = tp / (pos.size + _EPS)
    f1 = 2 * precision * recall / (precision + recall + _EPS)
    return float(max(-99.0, f1.max()))
