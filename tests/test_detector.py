"""The detectors and their training: scoring rule, offline weights, resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from anobench.cli import cli
from anobench.detectors.base import build_detector, draem_image_scores
from anobench.errors import AnobenchError

TINY = {"image_size": "64", "steps": "4", "batch_size": "4", "val_every": "2", "checkpoint_every": "1",
        "max_val_samples": "4", "channels_last": "false"}


# ----------------------------------------------------------------------------- scoring


def test_image_score_is_max_of_21x21_mean():
    maps = torch.zeros(3, 1, 64, 64)
    maps[0, 0, 30, 30] = 1.0  # one hot pixel: diluted over the 21x21 window
    maps[1] = 0.25  # flat map: its value (the window fits inside the image)
    maps[2, 0, 10:31, 20:41] = 0.8  # a 21x21 blob: the window that covers it exactly
    scores = draem_image_scores(maps)
    assert scores[0].item() == pytest.approx(1 / 441, abs=1e-6)
    assert scores[1].item() == pytest.approx(0.25, abs=1e-6)
    assert scores[2].item() == pytest.approx(0.8, abs=1e-5)
    # the pooled maximum is never above the plain maximum
    rand = torch.rand(4, 1, 32, 32)
    assert torch.all(draem_image_scores(rand) <= rand.flatten(1).amax(1) + 1e-7)
    # reference: scipy's 21x21 mean filter with zero padding (DRAEM pools with count_include_pad)
    from scipy.ndimage import uniform_filter

    reference = [uniform_filter(m.numpy().astype(np.float64), size=21, mode="constant", cval=0.0).max()
                 for m in rand[:, 0]]
    np.testing.assert_allclose(draem_image_scores(rand[:, 0]).numpy(), reference, rtol=1e-5)


# ----------------------------------------------------------------------------- models


def test_unet_imagenet_weights_come_from_the_offline_package():
    from anobench.weights import efficientnet_lite0_state_dict

    torch.manual_seed(0)
    model = build_detector("unet", None, "imagenet")
    reference = efficientnet_lite0_state_dict(head=False)
    encoder = model.net.encoder.model.state_dict()
    assert set(encoder) <= set(reference)
    for key in ("conv_stem.weight", "blocks.3.0.conv_pw.weight", "blocks.6.0.bn3.running_var"):
        assert torch.equal(encoder[key], reference[key])
    random_model = build_detector("unet", None, "none")
    assert not torch.equal(random_model.net.encoder.model.state_dict()["conv_stem.weight"], reference["conv_stem.weight"])
    x = torch.rand(2, 3, 64, 64)
    assert model(x).shape == (2, 1, 64, 64)
    maps, scores = model.predict(x)
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_map_smoothing_changes_pixel_maps_not_image_scores():
    from anobench.detectors.base import smooth_maps

    torch.manual_seed(0)
    model = build_detector("unet", None, "none").eval()
    x = torch.rand(2, 3, 64, 64)
    raw_maps, raw_scores = model.predict(x)
    maps, scores = model.predict(x, map_sigma=4.0)
    assert torch.equal(raw_scores, scores)
    assert maps.shape == raw_maps.shape and float(maps.std()) < float(raw_maps.std())
    flat = torch.full((1, 1, 32, 32), 0.3)
    assert torch.allclose(smooth_maps(flat, 4.0), flat)  # a Gaussian keeps a constant map
    impulse = torch.zeros(1, 1, 65, 65)
    impulse[0, 0, 32, 32] = 1.0
    blurred = smooth_maps(impulse, 2.0)[0, 0]
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(blurred[32, 34] / blurred[32, 32]) == pytest.approx(np.exp(-4 / 8), rel=1e-3)


def test_bad_detector_options_are_one_line_errors():
    with pytest.raises(AnobenchError, match="--encoder 'no-such-encoder'"):
        build_detector("unet", "no-such-encoder", "none")
    with pytest.raises(AnobenchError, match="encoder-weights"):
        build_detector("unet", None, "random")
    with pytest.raises(AnobenchError, match="unknown detector"):
        build_detector("resnet", None, "none")
    with pytest.raises(AnobenchError, match="no pretrained weights"):
        build_detector("draem_disc", None, "imagenet")


def test_draem_disc_logit_is_the_two_class_softmax():
    torch.manual_seed(0)
    model = build_detector("draem_disc", None, "none").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        two = model.net(x)
        maps, _ = model.predict(x)
    assert two.shape == (2, 2, 64, 64)
    assert torch.allclose(maps, torch.softmax(two, dim=1)[:, 1], atol=1e-6)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def generated(demo_root, tmp_path_factory) -> Path:
    from anobench.generation import generate_dataset

    out = tmp_path_factory.mktemp("gen")
    return generate_dataset("draem", "mvtec_ad", demo_root, "disc", 12, out, seed=0, image_size=64,
                            progress=False).folder


def _train(demo_root, generated, out, **kwargs):
    from anobench.detectors.train import train_detector

    kwargs.setdefault("encoder_weights", "none")
    return train_detector("mvtec_ad", demo_root, "disc", generated, out, overrides=dict(TINY), progress=False,
                          **kwargs)


@pytest.fixture(scope="module")
def full_run(demo_root, generated, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return out, _train(demo_root, generated, out)


def test_training_writes_run_logs_and_selects_on_synthetic_validation(full_run):
    folder, summary = full_run
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "complete" and run["category"] == "disc" and run["generator"] == "draem"
    assert run["protocol"] == "thirds" and run["config"]["steps"] == 4
    # 12 samples: 1 held out (10%), the rest trains; 6 normals: 1 held out for validation
    assert run["split"] == {"train_normals": 5, "train_synthetic": 11, "val_normals": 1, "val_synthetic": 1}
    losses = (folder / "loss.csv").read_text().splitlines()
    assert losses[0] == "step,loss,lr,seconds" and len(losses) == 5
    vals = (folder / "val.csv").read_text().splitlines()
    assert [v.split(",")[0] for v in vals[1:]] == ["2", "4"]
    # the chosen checkpoint is the argmax of the validation score (first of ties)
    scores = [(int(v.split(",")[0]), float(v.split(",")[3])) for v in vals[1:]]
    best_step = max(scores, key=lambda item: (item[1], -item[0]))[0]
    assert summary.best_step == best_step == run["best"]["step"]
    best = torch.load(folder / "best.pt", weights_only=False)
    assert best["step"] == best_step and best["score"] == pytest.approx(dict(scores)[best_step], rel=1e-5)


def test_resume_continues_the_same_run(demo_root, generated, full_run, tmp_path):
    _train(demo_root, generated, tmp_path / "killed", max_steps=2)  # stops as if killed after step 2
    state = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    assert state["step"] == 2
    assert json.loads((tmp_path / "killed" / "run.json").read_text())["status"] == "running"
    summary = _train(demo_root, generated, tmp_path / "killed")
    assert summary.resumed_from == 2
    full = (full_run[0] / "loss.csv").read_text().splitlines()
    resumed = (tmp_path / "killed" / "loss.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in resumed] == [r.split(",")[:2] for r in full]
    a = torch.load(full_run[0] / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    # a finished run is not retrained
    again = _train(demo_root, generated, tmp_path / "killed")
    assert again.steps == 4 and (tmp_path / "killed" / "loss.csv").read_text().splitlines() == resumed


@pytest.mark.slow
def test_resume_after_kill_9(demo_root, generated, tmp_path):
    args = [sys.executable, "-m", "anobench.cli", "train-detector", "--data-root", str(demo_root), "--category",
            "disc", "--generated", str(generated), "--out", str(tmp_path / "run"), "--encoder-weights", "none",
            "-q", *[f"--set={k}={v}" for k, v in {**TINY, "steps": "40"}.items()]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        log = tmp_path / "run" / "loss.csv"
        if log.exists() and len(log.read_text().splitlines()) > 6:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"]
    assert 0 < done < 40
    finished = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f"resumed from step {done}" in finished.stdout
    steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 41))


# ----------------------------------------------------------------------------- bad input


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def test_bad_generated_sets_and_runs_are_one_line_errors(demo_root, generated, tmp_path):
    import shutil

    base = ["train-detector", "--data-root", demo_root, "--category", "disc", "--encoder-weights", "none",
            *[f"--set={k}={v}" for k, v in TINY.items()]]
    broken = tmp_path / "broken" / "draem" / "disc"
    shutil.copytree(generated, broken)
    with open(broken / "manifest.jsonl", "a") as handle:
        handle.write("{not json\n")
    code, out = _cli(*base, "--generated", broken, "--out", tmp_path / "r1")
    assert code != 0 and out.strip().startswith("error:") and "broken manifest row" in out
    assert len(out.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _cli(*base, "--generated", empty, "--out", tmp_path / "r2")
    assert code != 0 and "not a generated set" in out and len(out.strip().splitlines()) == 1
    code, out = _cli(*base, "--generated", generated, "--out", tmp_path / "r3", "--category", "weave")
    assert code != 0 and "generated set is for category 'disc'" in out
    # a 64-px set with a detector at 128 px (issue 15): refused, naming both sizes and the fixes
    code, out = _cli(*base, "--set=image_size=128", "--generated", generated, "--out", tmp_path / "r4")
    assert code == 2 and "generated set is 64 px but the detector trains at 128 px" in out
    assert "--set image_size=64" in out and not (tmp_path / "r4" / "run.json").exists()
    # a run folder of another category
    run = tmp_path / "run"
    run.mkdir()
    from anobench.records import RunRecord

    (run / "run.json").write_text(json.dumps(RunRecord(
        dataset="mvtec_ad", category="weave", generator="draem", detector="unet", seed=0, config={},
        data_root="data", status="running").to_dict()))
    code, out = _cli(*base, "--generated", generated, "--out", run)
    assert code != 0 and "holds a detector run made with other settings (category," in out
    assert len(out.strip().splitlines()) == 1
    code, out = _cli("evaluate", tmp_path / "nothing-here")
    assert code != 0 and "not a detector run" in out


# ----------------------------------------------------------------------------- the run as an artifact


def test_train_detector_takes_the_generated_set_alone(generated, tmp_path):
    """Dataset, category and data root come from dataset.json (--data-root only for moved data)."""
    code, out = _cli("train-detector", "--generated", generated, "--out", tmp_path / "run", "--encoder-weights",
                     "none", "-q", *[f"--set={k}={v}" for k, v in TINY.items()])
    assert code == 0, out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dataset"] == "mvtec_ad" and run["category"] == "disc" and run["status"] == "complete"
    assert run["protocol_split"]["test"] and run["generated_samples"] == 12


def test_resume_after_the_set_grew_keeps_the_frozen_split(demo_root, generated, tmp_path):
    import shutil

    from anobench.generation import generate_dataset

    gen = tmp_path / "gen" / "draem" / "disc"
    shutil.copytree(generated, gen)
    _train(demo_root, gen, tmp_path / "run", max_steps=2)
    frozen = json.loads((tmp_path / "run" / "run.json").read_text())["training_split"]
    generate_dataset("draem", "mvtec_ad", demo_root, "disc", 40, tmp_path / "gen", seed=0, image_size=64,
                     progress=False)
    _train(demo_root, gen, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["training_split"] == frozen and run["generated_samples"] == 12
    assert run["split"] == {"train_normals": 5, "train_synthetic": 11, "val_normals": 1, "val_synthetic": 1}


def test_a_moved_grid_resumes(demo_root, generated, tmp_path):
    """No absolute path in the identity: a copied grid (data, set and run together) resumes."""
    import shutil

    grid = tmp_path / "grid"
    shutil.copytree(demo_root, grid / "data")
    gen = grid / "gen" / "draem" / "disc"
    shutil.copytree(generated, gen)
    (gen / "dataset.json").write_text(json.dumps({**json.loads((gen / "dataset.json").read_text()),
                                                  "data_root": "../../../data", "data_root_abs": "/nowhere"}))
    from anobench.detectors.train import train_detector

    train_detector(None, None, None, gen, grid / "run", overrides=dict(TINY), encoder_weights="none",
                   progress=False, max_steps=2)
    moved = tmp_path / "moved"
    shutil.move(grid, moved)
    summary = train_detector(None, None, None, moved / "gen" / "draem" / "disc", moved / "run",
                             overrides=dict(TINY), encoder_weights="none", progress=False)
    assert summary.resumed_from == 2 and summary.steps == 4


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_command(generated, tmp_path):
    base = ["train-detector", "--generated", generated, "--out", tmp_path / "run", "-q",
            *[f"--set={k}={v}" for k, v in TINY.items()]]
    code, out = _cli(*base, "--encoder", "no-such-encoder", "--encoder-weights", "none")
    assert code == 2 and "no-such-encoder" in out
    code, out = _cli(*base, "--encoder-weights", "none")
    assert code == 0, out


# ----------------------------------------------------------------------------- the registry


def test_the_registry_is_the_one_source_of_detector_names(monkeypatch, generated, tmp_path):
    """A plug-in from the entry-point group is registered under its entry-point name and trains."""
    from importlib.metadata import EntryPoint

    import anobench.detectors.base as base
    from anobench.detectors.base import Detector, available_detectors

    class Tiny(Detector):
        name = "tiny_plugin"

        def __init__(self, encoder=None, encoder_weights="none"):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    class Nameless(Detector):
        def forward(self, x):
            return x[:, :1]

    module = type(sys)("_anobench_test_plugins")
    module.Tiny, module.Nameless = Tiny, Nameless
    monkeypatch.setitem(sys.modules, module.__name__, module)
    eps = [EntryPoint("tiny_plugin", "_anobench_test_plugins:Tiny", base.ENTRY_POINT_GROUP)]
    builtin = dict(base._REGISTRY) if available_detectors() else {}
    monkeypatch.setattr(base, "entry_points", lambda group: eps if group == base.ENTRY_POINT_GROUP else [])
    base._load_all.cache_clear()
    monkeypatch.setattr(base, "_REGISTRY", dict(builtin))
    assert available_detectors() == ["draem_disc", "tiny_plugin", "unet"]
    code, out = _cli("train-detector", "--generated", generated, "--out", tmp_path / "run", "--detector",
                     "tiny_plugin", "-q", *[f"--set={k}={v}" for k, v in TINY.items()])
    assert code == 0, out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["detector"] == "tiny_plugin"
    code, out = _cli("train-detector", "--generated", generated, "--out", tmp_path / "r2", "--detector", "nosuch")
    assert code == 2 and "unknown detector 'nosuch' (available: draem_disc, tiny_plugin, unet)" in out
    eps[:] = [EntryPoint("nameless", "_anobench_test_plugins:Nameless", base.ENTRY_POINT_GROUP)]
    base._load_all.cache_clear()
    monkeypatch.setattr(base, "_REGISTRY", dict(builtin))
    with pytest.raises(AnobenchError, match="class .*Nameless has no name; set name = 'nameless'"):
        available_detectors()
