"""1000 stratified resamples of every pixel metric for a 100-image 256-px category, on one core.

Target: within 10 s, and within 1e-3 of the exact values on each resample's float maps
(``anobench.metrics.detection.detection_metrics``, itself checked against scikit-learn and
anomalib). The exact values are recomputed for ``--check`` resamples only (each takes a full
sort of 6.5M pixels), and their time per resample gives the ratio against the reference.

    OMP_NUM_THREADS=1 python tests/perf/bench_bootstrap.py
    python tests/perf/bench_bootstrap.py --images 100 --size 256 --resamples 1000 --check 10

The maps are smooth random fields, higher inside blob-shaped defects (so values crowd near 0
and 1 as sigmoid maps do), with half the images anomalous.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from anobench import perimage  # noqa: E402
from anobench.bootstrap import bootstrap_metrics, resample_counts  # noqa: E402
from anobench.metrics.detection import detection_metrics  # noqa: E402


def category(n_images: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) < n_images // 2
    masks = np.zeros((n_images, size, size), bool)
    maps = np.empty((n_images, size, size), np.float32)
    for i in range(n_images):
        if labels[i]:
            for _ in range(rng.integers(1, 4)):
                blob = np.zeros((size, size), np.uint8)
                centre = tuple(int(v) for v in rng.integers(size // 8, size - size // 8, 2))
                axes = tuple(int(v) for v in rng.integers(2, size // 10, 2))
                cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
                masks[i] |= blob > 0
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 3) * 6
        logit = noise - 5 + 7 * cv2.GaussianBlur(masks[i].astype(np.float32), (0, 0), 2) * rng.uniform(0.3, 1.2)
        maps[i] = 1 / (1 + np.exp(-logit))
    scores = maps.reshape(n_images, -1).max(1) + rng.normal(0, 0.02, n_images)
    return scores, labels, maps, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--check", type=int, default=10, help="resamples recomputed exactly")
    args = parser.parse_args()

    scores, labels, maps, masks = category(args.images, args.size)
    started = time.perf_counter()
    stored = perimage.from_arrays(scores, labels, maps, masks)  # what evaluation writes
    quantise_s = time.perf_counter() - started
    counts = resample_counts(labels, args.resamples, seed=0)
    started = time.perf_counter()
    result = bootstrap_metrics(stored, counts=counts)
    boot_s = time.perf_counter() - started

    errors: dict[str, float] = {}
    started = time.perf_counter()
    for b in range(min(args.check, args.resamples)):
        idx = np.repeat(np.arange(args.images), counts[b])
        exact = detection_metrics(scores[idx], labels[idx], maps[idx], masks[idx])
        for name, value in exact.items():
            errors[name] = max(errors.get(name, 0.0), abs(float(result.samples[name][b]) - value))
    exact_s = (time.perf_counter() - started) / max(1, min(args.check, args.resamples))

    print(f"{args.images} images of {args.size} px, {args.resamples} resamples, "
          f"{stored.edges.size} codes, one core")
    print(f"quantise (evaluation time): {quantise_s:.2f} s")
    print(f"bootstrap of all metrics:   {boot_s:.2f} s  (target <= 10 s)")
    print(f"exact detection_metrics:    {exact_s:.2f} s per resample -> "
          f"{exact_s * args.resamples:.0f} s for {args.resamples}; ratio {exact_s * args.resamples / boot_s:.0f}x")
    for name, error in errors.items():
        print(f"  max |bootstrap - exact| {name:12s} {error:.2e}")
    worst = max(errors.values()) if errors else float("nan")
    print(f"max error over {min(args.check, args.resamples)} checked resamples: {worst:.2e} (target <= 1e-3)")


if __name__ == "__main__":
    main()
