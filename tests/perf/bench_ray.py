"""The Ray executor against the local one: wall time of a 4-cell grid, and Ray's cost per task.

The grid is 2 generators (draem, crop_paste) x 2 categories (disc, weave) of the demo dataset
at 64 px with a short U-Net training per cell. ``local`` runs the cells one after another with
1 torch thread; ``ray`` runs them on a local Ray instance with 2 CPUs (2 workers, 1 thread each,
one CPU per stage task). Target: local wall / Ray wall >= 1.7. Ray's start-up (``ray.init``) is
timed apart: a cluster is started once and serves many grids. The Ray grid runs twice, in two
output folders: first on new workers (each imports torch and the models on its first task),
then on the same, warm workers, as every later grid on a running cluster does.

Ray's cost per task: 200 empty tasks through the same ``.options(...)`` path, minus nothing
(the tasks do no work), divided by their count; and the round trip of one task.

    python tests/perf/bench_ray.py [--steps 30] [--size 64] [--num 16]

The machine's load (``os.getloadavg``) is printed with the result: on a shared machine the
ratio is only as good as the two CPUs are free.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def _config(root: Path, out: Path, steps: int, size: int, num: int):
    from anobench.runner import parse_run_config

    return parse_run_config({
        "out": str(out), "dataset": "mvtec_ad", "data_root": str(root), "categories": ["disc", "weave"],
        "seeds": [0], "generators": [{"name": "draem", "num": num}, {"name": "crop_paste", "num": num}],
        "train": {"profile": "quick", "encoder_weights": "none",
                  "set": {"image_size": size, "steps": steps, "batch_size": 4, "val_every": steps,
                          "checkpoint_every": steps, "max_val_samples": 4, "channels_last": False}},
        "evaluate": {"test_sets": ["protocol"], "heatmaps": 0},
        "report": {"format": "markdown", "layout": "table2"},
    }, out.parent)


def _noop(_config, _cell):
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num", type=int, default=16)
    args = parser.parse_args()

    import ray
    import torch

    from anobench.demo import make_demo_dataset
    from anobench.runner import run_grid

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "demo"
        make_demo_dataset(root, seed=0, size=args.size, n_train=12)
        quiet = lambda line: print(line) if "FAILED" in line else None  # noqa: E731

        torch.set_num_threads(1)
        t0 = time.perf_counter()
        run_grid(_config(root, tmp / "local", args.steps, args.size, args.num), progress=False, echo=quiet)
        local = time.perf_counter() - t0

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        try:
            walls = []
            for name in ("ray-cold", "ray-warm"):  # workers import torch & co on their first task only
                t0 = time.perf_counter()
                run_grid(_config(root, tmp / name, args.steps, args.size, args.num), progress=False, echo=quiet,
                         executor="ray", task_cpus=1)
                walls.append(time.perf_counter() - t0)
            cold, distributed = walls

            from anobench.executors import _in_task

            remote = ray.remote(_in_task)
            ray.get([remote.options(num_cpus=1).remote(_noop, 1, None, None) for _ in range(20)])  # warm workers
            t0 = time.perf_counter()
            for _ in range(20):
                ray.get(remote.options(num_cpus=1).remote(_noop, 1, None, None))
            round_trip = (time.perf_counter() - t0) / 20
            t0 = time.perf_counter()
            ray.get([remote.options(num_cpus=1, name="noop").remote(_noop, 1, None, None) for _ in range(200)])
            per_task = (time.perf_counter() - t0) / 200
        finally:
            ray.shutdown()
    load_after = os.getloadavg()
    print(f"4-cell grid ({args.num} samples, {args.steps} steps at {args.size} px per cell)")
    print(f"local, 1 thread:           {local:7.1f} s")
    print(f"ray, 2 workers x 1 thread: {distributed:7.1f} s warm workers, {cold:.1f} s on new workers "
          f"(+ {startup:.1f} s ray.init, once per cluster)")
    print(f"ratio local / ray: {local / distributed:.2f}x warm (target >= 1.7); {local / cold:.2f}x on new "
          f"workers; {local / (cold + startup):.2f}x counting ray.init")
    print(f"ray per task: {per_task * 1e3:.1f} ms in a batch of 200 empty tasks, "
          f"{round_trip * 1e3:.1f} ms round trip of one; a cell is 3 tasks")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
