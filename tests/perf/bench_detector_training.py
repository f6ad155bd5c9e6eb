"""Detector training throughput: the real training loop against a bare forward/backward loop.

The training loop (``anobench.detectors.train.train_detector``: batches drawn from disk through
the decode cache and prefetch thread, focal loss, Adam, LR schedule, loss log, periodic atomic
checkpoints) is timed from its own ``loss.csv`` clock; the bare loop runs the same model, batch
size, loss and optimiser on tensors already in memory. Target: data loading and bookkeeping add
at most 10% (ratio <= 1.10).

    python tests/perf/bench_detector_training.py [--steps 24] [--size 256] [--threads 2]

Uses ../shared/data/mvtec_ad/bottle when present (real PNG sizes), else the demo dataset.
Warm-up steps (the first 2) are excluded from both timings.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WARMUP = 2


def bare_loop(steps: int, size: int, batch: int, encoder_weights: str) -> float:
    """Seconds for steps WARMUP+1..steps of forward/backward/Adam on in-memory tensors."""
    from torchvision.ops import sigmoid_focal_loss

    from anobench.detectors.base import build_detector

    torch.manual_seed(0)
    model = build_detector("unet", None, encoder_weights).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size) > 0.9).float()
    elapsed = 0.0
    for step in range(steps):
        t0 = time.perf_counter()
        loss = sigmoid_focal_loss(model(x), y, alpha=-1, gamma=2, reduction="mean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= WARMUP:
            elapsed += time.perf_counter() - t0
    return elapsed


def training_loop(steps: int, size: int, batch: int, encoder_weights: str, work: Path) -> float:
    """Seconds for steps WARMUP+1..steps of the real loop, from its loss.csv clock."""
    from anobench.detectors.train import train_detector
    from anobench.generation import generate_dataset

    if (SHARED / "mvtec_ad" / "bottle").is_dir():
        root, category, source = SHARED / "mvtec_ad", "bottle", SHARED / "dtd" / "images"
    else:
        from anobench.demo import make_demo_dataset

        root, category, source = work / "demo", "disc", None
        make_demo_dataset(root, seed=0, size=size, n_train=40)
    gen = generate_dataset("draem", "mvtec_ad", root, category, 4 * steps, work / "gen", seed=0,
                           anomaly_source=source, image_size=size, progress=False)
    run = work / "run"
    overrides = {"steps": str(steps), "image_size": str(size), "batch_size": str(batch), "val_fraction": "0"}
    train_detector("mvtec_ad", root, category, gen.folder, run, encoder_weights=encoder_weights,
                   overrides=overrides, progress=False)
    with open(run / "loss.csv") as handle:
        seconds = {int(r["step"]): float(r["seconds"]) for r in csv.DictReader(handle)}
    return seconds[steps] - seconds[WARMUP]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder-weights", default="imagenet")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timed = args.steps - WARMUP
    with tempfile.TemporaryDirectory() as tmp:
        bare_a = bare_loop(args.steps, args.size, args.batch, args.encoder_weights)
        loop = training_loop(args.steps, args.size, args.batch, args.encoder_weights, Path(tmp))
        bare_b = bare_loop(args.steps, args.size, args.batch, args.encoder_weights)
    bare = (bare_a + bare_b) / 2  # before and after: halves the effect of load drifting on a shared machine
    samples = timed * args.batch
    ratio = loop / bare
    print(f"bare forward/backward : {samples / bare:7.2f} samples/s  ({bare / timed:.3f} s/step; runs {bare_a:.1f} s, {bare_b:.1f} s)")
    print(f"training loop         : {samples / loop:7.2f} samples/s  ({loop / timed:.3f} s/step)")
    print(f"overhead ratio        : {ratio:.3f}  (loop time / bare time; target <= 1.10) "
          f"-> {'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")


if __name__ == "__main__":
    main()
