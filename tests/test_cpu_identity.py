"""CPU detector training and evaluation give today's exact bytes (pinned before the device work).

The digests were recorded with main's training loop (before ``--device``, AMP and DataLoader
workers existed), on one torch thread (the thread count changes CPU float reduction order and so
the bytes). Any change of the CPU path that moves a single bit fails here. They hold for
torch 2.14.1 on x86-64; another torch or CPU may need them recorded anew (see the test body).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

TINY = {"image_size": "64", "steps": "4", "batch_size": "4", "val_every": "2", "checkpoint_every": "1",
        "max_val_samples": "4"}

PINNED = {
    "false": {
        "weights": "7c73296feca057fcf434ad4d0ef452138299b975dacc6233feb61831e8b2e926",
        "losses": ["0.108894", "0.0835039", "0.0685668", "0.0636788"],
        "val": ["2,1,0.0300801,0.51504", "4,1,0.123671,0.561836"],
        "image_ap": 0.7166666666666667, "pixel_auroc": 0.7801708935771555, "aupro": 0.3412840608639716,
    },
    "true": {
        "weights": "318411b8ffc0d63da10c809e8fd64cc9db0830063da8b7be6536efcee8c69173",
        "losses": ["0.108894", "0.0837512", "0.0691783", "0.0633938"],
        "val": ["2,0,0.0311939,0.0155969", "4,1,0.118812,0.559406"],
        "image_ap": 0.8218253968253968, "pixel_auroc": 0.7805056947700185, "aupro": 0.34177059452894976,
    },
}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """12 fixed 64 px samples written directly (a generator's later changes cannot move the pin)."""
    from anobench.store import DatasetWriter

    folder = tmp_path_factory.mktemp("gen") / "fixed" / "disc"
    writer = DatasetWriter(folder, {"generator": "fixed", "dataset": "mvtec_ad", "category": "disc"})
    rng = np.random.default_rng(0)
    for index in range(12):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), bool)
        y, x = rng.integers(4, 44, 2)
        mask[y:y + 16, x:x + 16] = True
        image[mask] = 255 - image[mask]
        writer.add(index, image, mask, {})
    writer.write_meta(status="done")
    return folder


@pytest.mark.parametrize("channels_last", ["false", "true"])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_cpu_training_and_evaluation_bytes_are_pinned(demo_root, generated, tmp_path, one_thread, channels_last,
                                                      device):
    from anobench.detectors.train import train_detector
    from anobench.evaluation import evaluate

    kwargs = {} if device is None else {"device": device}
    out = tmp_path / "run"
    train_detector("mvtec_ad", demo_root, "disc", generated, out, overrides={**TINY, "channels_last": channels_last},
                   encoder_weights="none", progress=False, **kwargs)
    pinned = PINNED[channels_last]
    losses = [line.split(",")[1] for line in (out / "loss.csv").read_text().splitlines()[1:]]
    assert losses == pinned["losses"]
    assert (out / "val.csv").read_text().splitlines()[1:] == pinned["val"]
    assert state_digest(torch.load(out / "last.pt", weights_only=False)["model"]) == pinned["weights"]
    metrics = evaluate(out, progress=False, heatmaps=0, **kwargs).metrics
    for name in ("image_ap", "pixel_auroc", "aupro"):
        assert metrics[name] == pinned[name], name
