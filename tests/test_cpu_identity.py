"""CPU detector training and evaluation give today's exact bytes (pinned before the device work).

The digests were recorded with main's training loop (after the Split: commit, before ``--device``, AMP and DataLoader
workers existed), on one torch thread (the thread count changes CPU float reduction order and so
the bytes). The validation rows and evaluation values were re-recorded twice, with training bytes
unchanged: when the demo test defects became graded, and when raw maps became the default
(map_sigma 0; validation scores the map too). Any change of the CPU path that moves a single bit fails here. They hold for
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
        "weights": "882d8b526890ca84bdec851b185e010ad11fe2111a97b30f2cea12c03b8bff3d",
        "losses": ["0.135586", "0.111219", "0.0921028", "0.0813604"],
        "val": ["2,0,0.0283589,0.0141795", "4,0,0.0335823,0.0167911"],
        "image_ap": 0.9484126984126983, "pixel_auroc": 0.5804523520609056, "aupro": 0.24040098104726265,
    },
    "true": {
        "weights": "660748be9ab32767dfab5c7066e055c16b8b572ebfe350d5ff801444d4ab6acb",
        "losses": ["0.135585", "0.111095", "0.0961679", "0.0816097"],
        "val": ["2,0,0.0277823,0.0138911", "4,0,0.0315484,0.0157742"],
        "image_ap": 0.9583333333333331, "pixel_auroc": 0.5995147116571796, "aupro": 0.21679811494235351,
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
    writer.write_meta(status="complete")
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
