"""IC-LPIPS over 200 generated images: features computed once vs the naive pairwise evaluation.

The naive loop is the published one (DFMGAN ``metrics/lpips.py``): every generated image is run
through LPIPS against every reference (one batched call per image), then LPIPS is called on every
pair inside each cluster, so the network sees each image once per pair. anobench runs the network
once per image and takes every distance from the features. Both must give the same value.

Generated images are 200 augmented copies (flip, shift, colour, noise) of real bottle anomalies
from ``../shared/data`` (procedural images when the data is absent); references are the bottle
few-shot references of the ``thirds`` protocol. Target: at least 5x.

    python tests/perf/bench_iclpips.py [--n 200] [--net alex] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from anobench.metrics.generation import ICLPIPSConfig, ic_lpips
from anobench.metrics.lpips import get_lpips_model, to_lpips_tensor

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mvtec_ad"


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image[:, ::-1] if rng.random() < 0.5 else image
    out = np.roll(out, tuple(rng.integers(-12, 13, 2)), axis=(0, 1))
    out = out.astype(np.float32) * rng.uniform(0.85, 1.15, 3) + rng.normal(0, 4, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def load_sets(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if (SHARED / "bottle").is_dir():
        from anobench.datasets import load_category
        from anobench.protocol import split_category

        data = load_category("mvtec_ad", SHARED, "bottle")
        split = split_category(data, "thirds")
        refs = [s.image(256) for s in split.references]
        pool = [s.image(256) for s in split.test if s.label == 1]
        source = "real bottle anomalies"
    else:
        base = [np.asarray(rng.integers(0, 256, (8, 8, 3)), dtype=np.uint8).repeat(32, 0).repeat(32, 1) for _ in range(30)]
        refs, pool = base[:10], base[10:]
        source = "procedural images (shared data not found)"
    generated = [_augment(pool[i % len(pool)], rng) for i in range(n)]
    return generated, refs, source


@torch.no_grad()
def naive_ic_lpips(generated, references, config: ICLPIPSConfig, batch: int = 8) -> float:
    """The published loop (DFMGAN): LPIPS called per (image, reference) and per cluster pair."""
    lpips = get_lpips_model(config.net).model
    refs = to_lpips_tensor(references)
    clusters = [[] for _ in references]
    for image in generated:
        scores = lpips(to_lpips_tensor([image]).repeat(len(references), 1, 1, 1), refs).flatten()
        clusters[int(scores.argmin())].append(image)
    values = []
    for members in clusters:
        members = members[:config.cap] if config.cap else members
        if len(members) < 2:
            if config.empty == "zero":
                values.append(0.0)
            continue
        pairs = [(i, j) for i in range(len(members)) for j in range(i + 1, len(members))]
        total = 0.0
        for start in range(0, len(pairs), batch):
            chunk = pairs[start:start + batch]
            a = to_lpips_tensor([members[i] for i, _ in chunk])
            b = to_lpips_tensor([members[j] for _, j in chunk])
            total += float(lpips(a, b).sum())
        values.append(total / len(pairs))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--net", default="alex", choices=["alex", "vgg"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generated, refs, source = load_sets(args.n)
    config = ICLPIPSConfig(net=args.net, image_size=256, cap=200, cap_rule="first", empty="zero", ties="first")
    get_lpips_model(args.net)  # weights loaded outside both timings
    print(f"IC-LPIPS ({args.net}, DFMGAN rules): {len(generated)} generated, {len(refs)} references, {source}")

    t0 = time.perf_counter()
    fast = ic_lpips(generated, refs, config).value
    t_fast = time.perf_counter() - t0
    print(f"  features once (anobench): {t_fast:8.1f} s   IC-LPIPS {fast:.6f}")

    t0 = time.perf_counter()
    slow = naive_ic_lpips(generated, refs, config)
    t_slow = time.perf_counter() - t0
    print(f"  naive pairwise          : {t_slow:8.1f} s   IC-LPIPS {slow:.6f}")
    print(f"  |difference| = {abs(fast - slow):.2e}")
    ratio = t_slow / t_fast
    print(f"  speed-up: {ratio:.1f}x (target >= 5x) -> {'PASS' if ratio >= 5 and abs(fast - slow) < 1e-5 else 'FAIL'}")


if __name__ == "__main__":
    main()
