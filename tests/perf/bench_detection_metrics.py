"""Benchmark: ``detection_metrics`` on one category's pixels against scikit-learn + anomalib.

Reference: ``roc_auc_score`` and ``average_precision_score`` on the pooled pixels plus anomalib's
``AUPRO`` (FPR limit 0.3) on the same 150 maps of 256x256. ``detection_metrics`` computes all of
those and, on top, image AUROC/AP/F1-max and pixel F1-max. The task asks for a ratio >= 3.

    python tests/perf/bench_detection_metrics.py [--maps 150] [--size 256] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import cv2
import numpy as np


def make_category(n_maps: int, size: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Detector-like data: blob masks on half the images, smooth sigmoid maps with many ties."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_maps, size, size), bool)
    for i in range(n_maps // 2):
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), size / 32)
        masks[i] = noise > np.quantile(noise, 0.97)
    logits = np.stack([cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), 2.0) * 8
                       for _ in range(n_maps)])
    logits += masks * 3.0 - 4.0
    maps = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)  # saturates to exact 0/1 ties
    scores = maps.reshape(n_maps, -1).max(1)
    return scores, masks.any(axis=(1, 2)), maps, masks


def reference(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    import torch
    from anomalib.metrics import AUPRO
    from sklearn.metrics import average_precision_score, roc_auc_score

    metric = AUPRO(fields=["anomaly_map", "gt_mask"], fpr_limit=0.3)
    metric.update(SimpleNamespace(anomaly_map=torch.from_numpy(maps), gt_mask=torch.from_numpy(masks)))
    return {
        "pixel_auroc": roc_auc_score(masks.ravel(), maps.ravel()),
        "pixel_ap": average_precision_score(masks.ravel(), maps.ravel()),
        "aupro": float(metric.compute()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=150)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for anomalib (numpy/sklearn: 1)")
    args = parser.parse_args()

    import torch

    from anobench.metrics import detection_metrics

    torch.set_num_threads(args.threads)  # default 1: both sides single-threaded, a fair count of the work
    scores, labels, maps, masks = make_category(args.maps, args.size)
    print(f"{args.maps} maps of {args.size}x{args.size}: {maps.size / 1e6:.1f}M pixels, "
          f"{len(np.unique(maps)) / 1e6:.2f}M distinct values, {masks.mean():.1%} anomalous")

    ours_t, ref_t = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = detection_metrics(scores, labels, maps, masks)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = reference(maps, masks)
        ref_t.append(time.perf_counter() - start)
    worst = max(abs(ours[k] - ref[k]) for k in ref)
    for key in ref:
        print(f"  {key:12s} anobench {ours[key]:.9f}  reference {ref[key]:.9f}")
    print(f"detection_metrics (all 7 metrics): {min(ours_t):.2f} s")
    print(f"sklearn AUROC + AP + anomalib AUPRO: {min(ref_t):.2f} s")
    print(f"speed ratio: {min(ref_t) / min(ours_t):.1f}x (target >= 3x); max |difference| {worst:.1e} (target <= 1e-6)")


if __name__ == "__main__":
    main()
