"""AnomalyDiffusion's metric variants equal a plain reimplementation of its reference code.

``reference_au_pro`` and ``reference_f1_grid`` below follow sjtuplayer/anomalydiffusion's
``unet_utils/au_pro_util.py`` (4e6c1cb) and ``test-localization.py`` lines 97-112 (b6d805d) step by
step, loops and all (written for these tests, not copied): per-region sorted scores with a moving
pointer, thresholds at ``linspace`` positions of the sorted normal scores, a ``bisect``-cut
trapezoid; and a loop over the 0.05 grid with its epsilons.
"""

from __future__ import annotations

from bisect import bisect

import numpy as np
import pytest
from scipy.ndimage import label

from anobench.metrics.detection import detection_metrics
from anobench.metrics.variants import VARIANT_METRICS, aupro_thr100, pixel_f1max_grid005, variant_metrics


def reference_au_pro(gts, predictions, integration_limit=0.3, num_thresholds=100):
    regions = []  # [sorted scores, pointer]
    ok_scores = []
    for gt, pred in zip(gts, predictions):
        labelled, n = label(gt, np.ones((3, 3), dtype=int))
        ok_scores.append(pred[labelled == 0].astype(np.float64))
        for k in range(1, n + 1):
            regions.append([np.sort(pred[labelled == k].astype(np.float64)), 0])
    ok = np.sort(np.concatenate(ok_scores))
    fprs, pros = [1.0], [1.0]
    for position in np.linspace(0, len(ok) - 1, num=num_thresholds, dtype=int):
        threshold = ok[position]
        overlap = 0.0
        for region in regions:
            scores = region[0]
            while region[1] < len(scores) and scores[region[1]] <= threshold:
                region[1] += 1
            overlap += 1.0 - region[1] / len(scores)
        fprs.append(1.0 - (position + 1) / len(ok))
        pros.append(overlap / len(regions))
    x, y = np.array(fprs[::-1]), np.array(pros[::-1])
    correction = 0.0
    if integration_limit not in x:
        ins = bisect(x, integration_limit)
        assert 0 < ins < len(x)
        y_at = y[ins - 1] + (y[ins] - y[ins - 1]) * (integration_limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_at + y[ins - 1]) * (integration_limit - x[ins - 1])
    keep = x <= integration_limit
    x, y = x[keep], y[keep]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / integration_limit


def reference_f1_grid(gts, predictions):
    gt = np.concatenate([g.ravel() for g in gts]).astype(np.uint8).astype(np.bool_)
    scores = np.concatenate([p.ravel() for p in predictions]).astype(np.float64)
    best, eps = -99, 1e-8
    for threshold in np.arange(0.0, 1.0 + 1e-3, 0.05):
        predicted = scores > threshold
        intersect = np.logical_and(gt, predicted).sum()
        precision = intersect / (predicted.sum() + eps)
        recall = intersect / (gt.sum() + eps)
        best = max(best, 2 * precision * recall / (precision + recall + eps))
    return best


def _case(seed: int, n: int = 6, size: int = 48, levels: int | None = None):
    """Maps with blob-shaped anomalies, some normal images, optional quantised (tied) scores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks, maps = [], []
    for i in range(n):
        mask = np.zeros((size, size), dtype=np.uint8)
        if i % 3 != 2:  # every third image is normal
            for _ in range(rng.integers(1, 4)):
                cy, cx, r = rng.integers(6, size - 6, 2).tolist() + [int(rng.integers(2, 7))]
                mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        amap = np.clip(0.35 * rng.random((size, size)) + 0.5 * mask * rng.random((size, size)), 0, 1)
        if levels:
            amap = np.round(amap * levels) / levels  # ties, and scores exactly on the 0.05 grid
        masks.append(mask)
        maps.append(amap.astype(np.float32))
    return maps, masks


@pytest.mark.parametrize("seed,levels", [(0, None), (1, None), (2, 20), (3, 7), (4, 40)])
def test_variants_equal_reference_code(seed, levels):
    maps, masks = _case(seed, levels=levels)
    assert aupro_thr100(maps, masks) == pytest.approx(reference_au_pro(masks, maps), abs=1e-12)
    assert pixel_f1max_grid005(maps, masks) == pytest.approx(reference_f1_grid(masks, maps), abs=1e-12)
    both = variant_metrics(VARIANT_METRICS, np.stack(maps), np.stack(masks))
    assert both == {"aupro_thr100": aupro_thr100(maps, masks), "pixel_f1max_grid005": pixel_f1max_grid005(maps, masks)}


def test_scores_on_a_grid_threshold_count_as_normal():
    """A pixel scoring exactly a grid value is below that threshold (strict ``>``), as in the reference."""
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:8, 4:8] = 1
    amap = np.full((16, 16), 0.47, dtype=np.float32)
    amap[mask == 1] = 0.5
    amap[10:14, 2:10] = 0.5  # normal pixels tied with the anomaly at a grid value
    maps, masks = [amap, np.full((16, 16), 0.1, np.float32)], [mask, np.zeros_like(mask)]
    assert pixel_f1max_grid005(maps, masks) == pytest.approx(reference_f1_grid(masks, maps), abs=1e-12)
    assert aupro_thr100(maps, masks) == pytest.approx(reference_au_pro(masks, maps), abs=1e-12)


def test_variants_differ_from_the_exact_metrics():
    """The point of naming them: on a realistic map they are not the exact AUPRO / F1-max."""
    maps, masks = _case(5, n=9, size=64)
    maps = [0.9 * m + 0.02 for m in maps]  # the best threshold now falls between grid points
    exact = detection_metrics(np.zeros(9), np.zeros(9), np.stack(maps), np.stack(masks))
    assert aupro_thr100(maps, masks) != pytest.approx(exact["aupro"], abs=1e-4)
    assert pixel_f1max_grid005(maps, masks) <= exact["pixel_f1max"] + 1e-9
    assert pixel_f1max_grid005(maps, masks) != pytest.approx(exact["pixel_f1max"], abs=1e-4)


def test_unknown_variant_is_refused():
    maps, masks = _case(0, n=3)
    with pytest.raises(ValueError, match="unknown metric variant"):
        variant_metrics(["aupro_thr1000"], maps, masks)
