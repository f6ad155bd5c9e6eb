"""Protocol presets: documented settings, epochs as steps, training/evaluation under a preset, runner keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from anobench.cli import cli
from anobench.errors import AnobenchError
from anobench.presets import PRESETS, get_preset, preset_config

TINY = {"image_size": 64, "steps": 2, "batch_size": 4, "val_every": 2, "checkpoint_every": 2,
        "max_val_samples": 4, "val_normals": 2, "channels_last": False}


def _tiny(**extra) -> dict[str, str]:
    return {k: str(v) for k, v in {**TINY, **extra}.items()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_documented_and_valid(name):
    from anobench.evaluation import TEST_SETS
    from anobench.metrics.variants import VARIANT_METRICS
    from anobench.protocol import LEAKY_PROTOCOLS, PROTOCOLS

    preset = get_preset(name)
    assert len(preset.sources) >= 4 and preset.deviations
    for what, where in preset.sources:  # every setting names a file and line (or a paper line)
        assert what and re.search(r"(\.py|\.md|\.txt)[: ]", where + " "), (what, where)
    assert preset.split is None or preset.split in PROTOCOLS
    assert preset.test_set in TEST_SETS and set(preset.metric_variants) <= set(VARIANT_METRICS)
    assert preset.leaky == (preset.split in LEAKY_PROTOCOLS)
    assert "test set" in preset.caption() and ("Leaky" in preset.caption()) == preset.leaky
    config = preset_config(name, 200)
    assert config.map_sigma == 0.0 and config.steps == preset.steps(200, config.batch_size)
    assert config.detector == "draem_disc" and config.encoder_weights == "none"


def test_epochs_become_steps_and_overrides_win():
    ad = preset_config("anomalydiffusion", 209)
    assert (ad.steps, ad.batch_size, ad.lr, ad.lr_milestones, ad.lr_gamma) == (200 * 63, 8, 1e-4, (0.8, 0.9), 0.2)
    draem = preset_config("draem", 209)  # an epoch is one pass over bottle's 209 normals: 27 batches
    assert draem.steps == 700 * 27 and draem.val_fraction == 0.0  # last-step checkpoint, as DRAEM
    assert preset_config("anomalydiffusion", 209, {"steps": "150"}).steps == 150
    assert preset_config("anomalydiffusion", 209, {"batch_size": "16"}).steps == 200 * 32
    with pytest.raises(AnobenchError, match="unknown --protocol-preset"):
        get_preset("nope")


def test_draem_disc_uses_draem_init():
    import torch
    from torch import nn

    from anobench.detectors.base import build_detector

    torch.manual_seed(0)
    model = build_detector("draem_disc", None, "none")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and norms
    for conv in convs:
        w = conv.weight.detach()
        if w.numel() >= 1000:
            assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    weights = torch.cat([n.weight.detach() for n in norms])
    assert all(float(n.bias.detach().abs().max()) == 0.0 for n in norms)
    assert abs(float(weights.mean()) - 1.0) < 0.005 and 0.015 < float(weights.std()) < 0.025


@pytest.fixture(scope="module")
def ad_generated(demo_root, tmp_path_factory):
    from anobench.generation import generate_dataset

    out = tmp_path_factory.mktemp("presetgen")
    ad = generate_dataset("crop_paste", "mvtec_ad", demo_root, "disc", 8, out / "ad", seed=0, image_size=64,
                          split="anomalydiffusion", progress=False)
    thirds = generate_dataset("crop_paste", "mvtec_ad", demo_root, "disc", 8, out / "thirds", seed=0, image_size=64,
                              progress=False)
    return ad.folder, thirds.folder


def test_train_and_evaluate_under_the_anomalydiffusion_preset(ad_generated, demo_root, tmp_path):
    from anobench.evaluation import evaluate
    from anobench.metrics.variants import VARIANT_METRICS
    from anobench.results import read_results

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train-detector", "--data-root", str(demo_root), "--category", "disc", "--generated", str(ad_generated[0]),
        "--out", str(run), "--protocol-preset", "anomalydiffusion", "-q",
        *[f"--set={k}={v}" for k, v in _tiny().items()]])
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "run.json").read_text())
    assert meta["protocol_preset"] == "anomalydiffusion" and meta["profile"] == "preset:anomalydiffusion"
    assert meta["detector"] == "draem_disc" and meta["config"]["lr"] == 1e-4 and meta["config"]["steps"] == 2
    scored = evaluate(run, heatmaps=0, progress=False)  # the preset's test set and variants, from run.json
    assert scored.protocol == "anomalydiffusion"
    df = read_results(run)
    assert set(VARIANT_METRICS) <= set(df["metric"]) and "aupro" in set(df["metric"])
    assert set(df["protocol"]) == {"anomalydiffusion"} and df["value"].between(0, 1).all()
    assert set(df["profile"]) == {"preset:anomalydiffusion"} and set(df["leaky"]) == {"true"}
    with pytest.raises(AnobenchError, match="trained under protocol preset 'anomalydiffusion', not 'dhdiff'"):
        evaluate(run, heatmaps=0, progress=False, protocol_preset="dhdiff")


def test_preset_refuses_a_set_generated_under_another_split(ad_generated, demo_root, tmp_path):
    result = CliRunner().invoke(cli, [
        "train-detector", "--data-root", str(demo_root), "--category", "disc", "--generated", str(ad_generated[1]),
        "--out", str(tmp_path / "r"), "--protocol-preset", "anomalydiffusion", "-q"])
    assert result.exit_code == 2 and "--split anomalydiffusion" in result.output
    result = CliRunner().invoke(cli, [
        "train-detector", "--data-root", str(demo_root), "--category", "disc", "--generated", str(ad_generated[1]),
        "--out", str(tmp_path / "r"), "--protocol-preset", "draem", "--profile", "quick", "-q"])
    assert result.exit_code == 2 and "not both" in result.output


def test_smoothed_maps_are_recorded_in_the_rows(ad_generated, demo_root, tmp_path):
    from anobench.detectors.train import train_detector
    from anobench.evaluation import evaluate
    from anobench.results import read_results

    run = tmp_path / "smooth"
    train_detector("mvtec_ad", demo_root, "disc", ad_generated[1], run, encoder_weights="none",
                   overrides=_tiny(map_sigma=2.0), progress=False)
    evaluate(run, heatmaps=0, progress=False)
    assert set(read_results(run)["map_sigma"]) == {"2"}


def test_quick_profile_scores_raw_maps():
    from anobench.detectors.train import PROFILES
    from anobench.runner import QUICKSTART

    assert all(p.map_sigma == 0.0 for p in PROFILES.values())
    assert "map_sigma" not in QUICKSTART["train"]["set"]


def test_run_config_takes_a_protocol_preset(tmp_path):
    from anobench.runner import load_run_config, parse_run_config

    base = {"data_root": "data", "categories": ["bottle"], "generators": ["crop_paste"]}
    config = parse_run_config(dict(base, protocol_preset="dhdiff"), tmp_path)
    assert (config.protocol, config.test_sets, config.protocol_preset) == ("dhdiff", ["protocol"], "dhdiff")
    config = parse_run_config(dict(base, protocol_preset="draem"), tmp_path)
    assert (config.protocol, config.test_sets) == ("thirds", ["all"])
    with pytest.raises(AnobenchError, match="contradicts protocol_preset"):
        parse_run_config(dict(base, protocol_preset="anomalydiffusion", protocol="thirds"), tmp_path)
    with pytest.raises(AnobenchError, match="not both"):
        parse_run_config(dict(base, protocol_preset="draem", train={"profile": "quick"}), tmp_path)
    path = tmp_path / "grid.yaml"
    path.write_text("data_root: data\ncategories: [bottle]\ngenerators: [crop_paste]\nprotocol: thirds\n"
                    "train: {profile: quick}\n")
    config = load_run_config(path, protocol_preset="anomalydiffusion")  # the CLI option replaces both
    assert (config.protocol, config.protocol_preset, "profile" in config.train) == \
        ("anomalydiffusion", "anomalydiffusion", False)


def test_published_rows_are_quoted_beside_measured_ones():
    import pandas as pd

    from anobench.published import load_published
    from anobench.report import render_report

    table = load_published("dhdiff")
    assert len(table) == 536 and table["value"].between(0, 1).all()
    bottle = table[(table["category"] == "bottle") & (table["method"] == "AnomalyDiffusion")]
    assert dict(zip(bottle["table"] + "/" + bottle["metric"], bottle["value"])) == {
        "II/image_auroc": 0.998, "II/pixel_auroc": 0.994, "IV/pixel_auroc": 0.993, "IV/pixel_ap": 0.941}
    rows = pd.DataFrame([{"dataset": "mvtec_ad", "category": "bottle", "generator": "draem", "detector": "unet",
                          "seed": 0, "protocol": "thirds", "metric": m, "value": v, "config_hash": "x", "version": "0"}
                         for m, v in (("image_auroc", 0.97), ("pixel_auroc", 0.95), ("pixel_ap", 0.5))])
    text = render_report(rows, "markdown", layout="table2", published=["dhdiff:AnomalyDiffusion"])
    header = next(line for line in text.splitlines() if line.startswith("| Category"))
    assert header.index("DRAEM") < header.index("AnomalyDiffusion [quoted: DH-Diff Table II]")
    body = [line for line in text.splitlines() if line.startswith("| bottle")]
    assert "(99.8, 99.4)" in body[0] and "**" not in body[0]  # quoted values are never bolded
    assert "copied from DH-Diff Table II, not measured" in text and "selects on the test set" in text
    with pytest.raises(AnobenchError, match="no published table"):
        load_published("nope")
    with pytest.raises(AnobenchError, match="no method"):
        load_published("dhdiff:Nobody")


def test_published_csv_matches_the_paper_text():
    """dhdiff.csv is what extract_dhdiff.py reads from the paper (when the paper text is present)."""
    import csv
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    paper = repo.parent / "shared" / "papers" / "dh-diff.txt"
    if not paper.is_file():
        paper = Path("/work/shared/papers/dh-diff.txt")
    if not paper.is_file():
        pytest.skip("DH-Diff paper text not found")
    spec = importlib.util.spec_from_file_location("extract", repo / "results" / "published" / "extract_dhdiff.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.extract(paper.read_text(encoding="utf-8").splitlines())
    with open(repo / "results" / "published" / "dhdiff.csv", encoding="utf-8") as handle:
        committed = list(csv.DictReader(handle))
    assert [{k: str(v) for k, v in r.items()} for r in rows] == committed
    assert np.isclose(float(committed[0]["value"]), 0.993)
