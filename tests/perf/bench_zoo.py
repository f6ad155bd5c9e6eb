"""Procedural generator throughput and mask checks on real data, one core.

For each procedural generator: ``generate_dataset`` on MVTec AD bottle (and Magnetic-tile) at
256 px with PNG writing (manifest, hashes, atomic renames included), torch/cv2/BLAS on one
thread; prints images/s of wall time and of this process's CPU time (the one-core rate, which a
shared machine's load does not inflate; target >= 20), the mask area (fraction of the image: mean, min, max)
and how many changed pixels lie outside the written masks (must be 0 except where a
generator's docstring says otherwise). Then times NSA's Poisson call, ``cv2.seamlessClone`` with
the patch-sized source as NSA makes it, against the naive call on whole images (a full-size
source canvas and mask), and prints the ratio (>= 1 means the way anobench calls it is faster).

    python tests/perf/bench_zoo.py [--num 100] [--data ../shared/data] [--generators a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from anobench.generation import generate_dataset  # noqa: E402
from anobench.images import read_mask, read_rgb  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("ANOBENCH_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) / "data"
PROCEDURAL = ("cutpaste", "cutpaste_scar", "cutpaste_3way", "cutout", "nsa", "fpi", "fractal", "memseg", "destseg",
              "glass_las", "draem", "mix")
TARGETS = {"bottle": ("mvtec_ad", "mvtec_ad", "bottle"), "tile": ("magnetic_tile", "mvtec_ad", "tile")}


def check_set(folder: Path, data_root: Path) -> dict:
    areas, outside, covered = [], 0, []
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        image = read_rgb(folder / row["files"]["image"])
        mask = read_mask(folder / row["files"]["mask"])
        source = read_rgb(data_root / row["source"], image.shape[0])
        changed = (image != source).any(axis=2)
        areas.append(mask.mean())
        outside += int((changed & ~mask).sum())
        covered.append(changed[mask].mean())
    return {"area_mean": float(np.mean(areas)), "area_min": float(np.min(areas)), "area_max": float(np.max(areas)),
            "changed_outside": outside, "changed_inside": float(np.mean(covered))}


def bench_generators(data: Path, names: list[str], num: int, target: str) -> None:
    folder_name, dataset, category = TARGETS[target]
    root = data / folder_name
    dtd = data / "dtd" / "images"
    tmp = Path(tempfile.mkdtemp())
    print(f"\n{dataset}/{category}: {num} images at 256 px, one thread")
    print(f"{'generator':14s} {'img/s':>7s} {'cpu':>6s} {'mask area mean [min, max]':>28s} {'changed outside':>16s} {'inside changed':>15s}")
    try:
        for name in names:  # a 2-image warm-up run first: imports and caches out of the timing
            generate_dataset(name, dataset, root, category, 2, tmp / "warmup", anomaly_source=dtd, progress=False)
            start, cpu = time.perf_counter(), time.process_time()
            summary = generate_dataset(name, dataset, root, category, num, tmp, anomaly_source=dtd, progress=False)
            rate = num / (time.perf_counter() - start)
            cpu_rate = num / (time.process_time() - cpu)
            stats = check_set(summary.folder, root / category)
            flag = "" if cpu_rate >= 20 else "  (< 20 img/s)"
            print(f"{name:14s} {rate:7.1f} {cpu_rate:6.1f} {stats['area_mean']:10.4f} [{stats['area_min']:.4f}, {stats['area_max']:.4f}]"
                  f" {stats['changed_outside']:16d} {stats['changed_inside']:15.3f}{flag}")
    finally:
        shutil.rmtree(tmp)


def bench_poisson(data: Path, repeats: int = 100) -> None:
    paths = sorted((data / "mvtec_ad" / "bottle" / "train" / "good").glob("*.png"))
    dest, other = read_rgb(paths[0], 256), read_rgb(paths[1], 256)
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(repeats):
        h, w = (int(v) for v in rng.integers(16, 100, 2))
        y, x = int(rng.integers(0, 256 - h)), int(rng.integers(0, 256 - w))
        cy, cx = int(rng.integers(h // 2 + 1, 256 - h // 2 - 1)), int(rng.integers(w // 2 + 1, 256 - w // 2 - 1))
        cases.append((h, w, y, x, cy, cx))

    def patch_call():
        for h, w, y, x, cy, cx in cases:
            mask = np.full((h, w), 255, np.uint8)
            mask[0], mask[-1], mask[:, 0], mask[:, -1] = 0, 0, 0, 0
            cv2.seamlessClone(np.ascontiguousarray(other[y:y + h, x:x + w]), dest, mask, (cx, cy), cv2.NORMAL_CLONE)

    def whole_call():
        for h, w, y, x, cy, cx in cases:
            canvas = np.zeros_like(dest)
            mask = np.zeros(dest.shape[:2], np.uint8)
            y0, x0 = cy - h // 2, cx - w // 2
            canvas[y0:y0 + h, x0:x0 + w] = other[y:y + h, x:x + w]
            mask[y0 + 1:y0 + h - 1, x0 + 1:x0 + w - 1] = 255
            cv2.seamlessClone(canvas, dest, mask, (dest.shape[1] // 2, dest.shape[0] // 2), cv2.NORMAL_CLONE)

    times = {}
    for label, fn in (("patch", patch_call), ("whole", whole_call)):
        fn()  # warm up
        start = time.perf_counter()
        fn()
        times[label] = (time.perf_counter() - start) / repeats
    print(f"\nPoisson blend (NSA's NORMAL_CLONE), {repeats} patches 16-100 px at 256 px:")
    print(f"patch-sized source (as nsa calls it): {times['patch'] * 1e3:.2f} ms/clone")
    print(f"whole-image source and mask (naive):  {times['whole'] * 1e3:.2f} ms/clone")
    print(f"ratio naive/anobench: {times['whole'] / times['patch']:.2f}x (>= 1: anobench's call is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--generators", default=",".join(PROCEDURAL))
    parser.add_argument("--targets", default="bottle,tile")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    names = [n for n in args.generators.split(",") if n]
    for target in args.targets.split(","):
        bench_generators(args.data, names, args.num, target)
    if "nsa" in names:
        bench_poisson(args.data)


if __name__ == "__main__":
    main()
