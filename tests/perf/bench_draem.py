"""DRAEM generation throughput: `anobench` draem vs anomalib's PerlinAnomalyGenerator, one process each.

Both read 256 px bottle normals from disk, synthesise a DTD-textured Perlin anomaly with
anomalib's blend rule (beta in [0.1, 1.0]) and write the image and mask PNGs with the same encoder.
anobench also writes its manifest, hashes and atomic renames. Prints images/s and the ratio
(anobench / anomalib; >= 1 means anobench is at least as fast).

    python tests/perf/bench_draem.py [--num 200] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anobench.datasets import load_category
from anobench.generation import generate_dataset
from anobench.images import png_bytes, read_rgb

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def run_anomalib(data_root: Path, dtd: Path, num: int, out: Path) -> float:
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    torch.manual_seed(0)
    normals = load_category("mvtec_ad", data_root, "bottle").train
    generator = PerlinAnomalyGenerator(anomaly_source_path=dtd, probability=1.0, blend_factor=(0.1, 1.0))
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i in range(num):
        image = torch.from_numpy(read_rgb(normals[i % len(normals)].path, 256)).permute(2, 0, 1).float() / 255
        augmented, mask = generator(image)
        array = (augmented.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        (out / f"{i:05d}.png").write_bytes(png_bytes(array))
        (out / f"{i:05d}_mask.png").write_bytes(png_bytes(mask[0].numpy() > 0.5))
    return num / (time.perf_counter() - start)


def run_anobench(data_root: Path, dtd: Path, num: int, out: Path) -> float:
    start = time.perf_counter()
    generate_dataset("draem", "mvtec_ad", data_root, "bottle", num, out, anomaly_source=dtd,
                     overrides={"variant": "anomalib"}, progress=False)
    return num / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_root, dtd = args.data / "mvtec_ad", args.data / "dtd" / "images"
    tmp = Path(tempfile.mkdtemp())
    try:
        ref = run_anomalib(data_root, dtd, args.num, tmp / "anomalib")
        ours = run_anobench(data_root, dtd, args.num, tmp / "anobench")
    finally:
        shutil.rmtree(tmp)
    print(f"anomalib PerlinAnomalyGenerator: {ref:.2f} images/s")
    print(f"anobench draem:                  {ours:.2f} images/s")
    print(f"ratio anobench/anomalib: {ours / ref:.2f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
