"""--device resolution and refusal, precision choice, and the device code paths run on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from anobench.cli import cli
from anobench.devices import Execution, Precision, autocast, resolve_device, resolve_precision
from anobench.errors import AnobenchError

NO_CUDA = not torch.cuda.is_available()


def test_cpu_and_auto_resolve_without_a_gpu():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    expected = "cpu" if NO_CUDA and not torch.backends.mps.is_available() else resolve_device("auto")
    assert resolve_device("auto") == expected and resolve_device(None) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "mps:1", "cuda:-1", "", "tpu"])
def test_malformed_devices_are_refused(spec):
    if spec == "":
        assert resolve_device(spec) == resolve_device("auto")  # empty means the default
        return
    with pytest.raises(AnobenchError, match="unknown --device"):
        resolve_device(spec)


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_refused_not_recorded(spec):
    with pytest.raises(AnobenchError, match="no CUDA device"):
        resolve_device(spec)


def test_precision_follows_the_device():
    assert resolve_precision("cpu") == Precision(None, False)
    assert resolve_precision("cpu", "bf16") == Precision(torch.bfloat16, False)
    with pytest.raises(AnobenchError, match="fp16 needs a GPU"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(AnobenchError, match="unknown precision"):
        resolve_precision("cpu", "int8")
    if not NO_CUDA:
        assert resolve_precision("cuda:0").dtype in (torch.bfloat16, torch.float16)


def test_autocast_is_a_no_op_in_fp32_and_casts_in_bf16():
    a, b = torch.rand(4, 4), torch.rand(4, 4)
    with autocast("cpu", Precision(None, False)):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", Precision(torch.bfloat16, False)):
        assert (a @ b).dtype == torch.bfloat16


def test_execution_record_and_defaults():
    e = Execution.resolve("cpu")
    assert e.workers == 0 and not e.pin_memory
    assert e.record() == {"device": "cpu", "precision": "fp32", "workers": 0, "deterministic": False}
    with pytest.raises(AnobenchError, match="workers"):
        Execution.resolve("cpu", workers=-1)


@pytest.mark.parametrize("command", [
    ["generate", "-g", "draem", "--category", "disc", "-n", "1", "-o", "OUT"],
    ["train-generator", "-g", "dhdiff", "--category", "disc", "-o", "OUT"],
    ["train-detector", "--category", "disc", "--generated", "OUT", "-o", "OUT/run"],
    ["evaluate", "OUT/run"],
    ["score-generation", "OUT", "--category", "disc"],
])
def test_every_model_command_refuses_a_bad_device_in_one_line(command, demo_root, tmp_path):
    args = [str(tmp_path) if a == "OUT" else str(tmp_path / "run") if a == "OUT/run" else a for a in command]
    if command[0] != "evaluate":
        args += ["--data-root", str(demo_root)]
    result = CliRunner().invoke(cli, [*args, "--device", "gpu0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: unknown --device 'gpu0'")
    assert len(result.output.strip().splitlines()) == 1
    if NO_CUDA:
        result = CliRunner().invoke(cli, [*args, "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA device" in result.output
        assert not (tmp_path / "draem").exists() and not (tmp_path / "run" / "run.json").exists()


# ----------------------------------------------------------------------------- the device paths on CPU


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from test_cpu_identity import generated as fixed

    return fixed.__wrapped__(tmp_path_factory)


TINY = {"image_size": "64", "steps": "3", "batch_size": "4", "val_every": "3", "checkpoint_every": "1",
        "max_val_samples": "4"}


def test_loader_workers_give_the_same_batches_as_the_thread(demo_root, generated):
    from anobench.datasets import load_category
    from anobench.detectors.data import TrainingData, step_batches
    from anobench.detectors.profiles import profile_config
    from anobench.store import GeneratedSet

    config = profile_config("quick", {**TINY, "hflip": "true"}, encoder_weights="none")
    data = load_category("mvtec_ad", demo_root, "disc")
    split = TrainingData.split([s.path for s in data.train], GeneratedSet.open(generated), config, 0)
    threaded = list(step_batches(split, config, 0, 2, 6))
    for workers, pin in ((2, False), (0, True)):
        loaded = list(step_batches(split, config, 0, 2, 6, workers=workers, pin_memory=pin and not NO_CUDA))
        assert len(loaded) == 4
        for (x, y), (x2, y2) in zip(threaded, loaded):
            assert torch.equal(x, x2) and torch.equal(y, y2)


def test_bf16_training_and_evaluation_run_and_are_recorded(demo_root, generated, tmp_path):
    """The mixed-precision path (autocast, fp32 loss, workers) on the CPU: bf16 autocast there."""
    from anobench.detectors.train import train_detector
    from anobench.evaluation import evaluate

    out = tmp_path / "run"
    train_detector("mvtec_ad", demo_root, "disc", generated, out, overrides=TINY, encoder_weights="none",
                   progress=False, device="cpu", precision="bf16", workers=1)
    run = json.loads((out / "run.json").read_text())
    assert run["execution"] == {"device": "cpu", "precision": "bf16", "workers": 1, "deterministic": False}
    losses = [float(r.split(",")[1]) for r in (out / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and all(np.isfinite(losses))
    fp32 = tmp_path / "fp32"
    train_detector("mvtec_ad", demo_root, "disc", generated, fp32, overrides=TINY, encoder_weights="none",
                   progress=False, device="cpu")
    fp32_losses = [float(r.split(",")[1]) for r in (fp32 / "loss.csv").read_text().splitlines()[1:]]
    assert losses[0] != fp32_losses[0] and losses[0] == pytest.approx(fp32_losses[0], rel=0.05)  # bf16 ran
    result = evaluate(out, progress=False, heatmaps=0, device="cpu", precision="bf16")
    assert {r["device"] for r in result.rows} == {"cpu"} and not any("=" in r["metric"] for r in result.rows)
    assert 0 <= result.metrics["image_auroc"] <= 1
