"""Evaluation on the real held-out split, tidy rows, heat maps, and the `run` grid with skipping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from anobench.cli import cli
from anobench.errors import AnobenchError

TINY = {"image_size": 64, "steps": 3, "batch_size": 4, "val_every": 3, "checkpoint_every": 3,
        "max_val_samples": 4, "channels_last": False}


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory) -> Path:
    from anobench.detectors.train import train_detector
    from anobench.generation import generate_dataset

    out = tmp_path_factory.mktemp("evalrun")
    gen = generate_dataset("crop_paste", "mvtec_ad", demo_root, "disc", 8, out / "gen", seed=0, image_size=64,
                           progress=False)
    run = out / "run"
    train_detector("mvtec_ad", demo_root, "disc", gen.folder, run, encoder_weights="none",
                   overrides={k: str(v) for k, v in TINY.items()}, progress=False)
    return run


def test_evaluate_scores_the_protocol_test_split(trained_run, demo_root):
    from anobench.datasets import load_category
    from anobench.evaluation import evaluate, result_config_hash
    from anobench.protocol import split_category
    from anobench.results import RESULT_COLUMNS, read_results

    result = evaluate(trained_run, progress=False)
    data = load_category("mvtec_ad", demo_root, "disc")
    split = split_category(data, "thirds")
    # demo disc: 3 good + 3 types x 3 defects; thirds keeps 2 of each type for test
    assert result.n_images == len(split.test) == 3 + 3 * 2 and result.n_anomalous == 6
    scored = (trained_run / "scores-thirds.csv").read_text().splitlines()[1:]
    reference_files = {data.relpath(s.path) for s in split.references}
    assert len(scored) == len(split.test) and not reference_files & {line.split(",")[0] for line in scored}
    df = read_results(trained_run)
    assert tuple(df.columns) == RESULT_COLUMNS
    assert set(df["metric"]) == {"image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap",
                                 "pixel_f1max", "aupro"}  # the device is a setup column, not a metric
    assert set(df["device"]) == {"cpu"} and set(df["train_device"]) == {"cpu"}
    row = df.iloc[0]
    assert (row["dataset"], row["category"], row["generator"], row["detector"], row["seed"], row["protocol"]) == \
        ("mvtec_ad", "disc", "crop_paste", "unet", 0, "thirds")
    assert df["value"].between(0, 1).all()
    assert len(set(df["config_hash"])) == 1 and df["config_hash"].iloc[0] == "h" + result_config_hash(json.loads((trained_run / "run.json").read_text()))
    heatmaps = sorted((trained_run / "heatmaps").glob("*.png"))
    assert 1 <= len(heatmaps) <= 8 and any(p.name.startswith("good_") for p in heatmaps)
    # the values are detection_metrics of the saved scores: recompute image AUROC from them
    from sklearn.metrics import roc_auc_score

    labels = [int(line.split(",")[2]) for line in scored]
    scores = [float(line.split(",")[3]) for line in scored]
    assert result.metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_evaluate_all_test_images_and_cli(trained_run):
    result = CliRunner().invoke(cli, ["evaluate", str(trained_run), "--test-set", "all", "-q"])
    assert result.exit_code == 0, result.output
    assert "[all: 12 test images, 9 anomalous]" in result.output
    from anobench.results import read_results

    df = read_results(trained_run)
    assert set(df["protocol"]) >= {"all"}
    assert (df["protocol"] == "all").sum() == 7  # 7 metrics, no device fact row


def _run_record(**fields) -> dict:
    """A run.json as the trainer writes it (statuses given in their old or new spelling)."""
    from anobench.records import RunRecord

    record = RunRecord(dataset="mvtec_ad", category="disc", generator="draem", detector="unet", seed=0, config={},
                       data_root="data").to_dict()
    return {**record, **fields}


def test_evaluate_refuses_an_unfinished_run(tmp_path):
    from anobench.evaluation import evaluate

    (tmp_path / "run.json").write_text(json.dumps(_run_record(status="training")))  # the old name of running
    with pytest.raises(AnobenchError, match="training has not finished"):
        evaluate(tmp_path)


def _grid_config(demo_root: Path, out: Path) -> dict:
    return {
        "out": str(out), "dataset": "mvtec_ad", "data_root": str(demo_root), "categories": ["disc"], "seeds": [0],
        "generators": [{"name": "draem", "num": 6}, {"name": "crop_paste", "num": 6}],
        "train": {"profile": "quick", "encoder_weights": "none", "set": {**TINY, "steps": 2, "val_every": 2}},
        "evaluate": {"test_sets": ["protocol"], "heatmaps": 2},
        "report": {"format": "markdown", "layout": "table2"},
    }


def test_run_grid_reports_and_skips_finished_cells(demo_root, tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(_grid_config(demo_root, tmp_path / "out")))
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(config), "-q"])
    assert first.exit_code == 0, first.output
    assert "| disc" in first.output and "draem" in first.output and "crop_paste" in first.output
    assert (tmp_path / "out" / "report.md").exists()
    for generator in ("draem", "crop_paste"):
        run = tmp_path / "out" / "runs" / generator / "disc" / "seed0"
        assert (run / "results.csv").exists()
        assert (tmp_path / "out" / "generated" / "seed0" / generator / "disc" / "manifest.jsonl").exists()
    second = runner.invoke(cli, ["run", str(config), "-q"])
    assert second.exit_code == 0, second.output
    assert second.output.count("done, skipped") == 2
    assert first.output.split("grid of")[1].split("\n", 1)[1] == second.output.split("grid of")[1].split("\n", 1)[1]


def test_run_config_errors_are_one_line(tmp_path, demo_root):
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("generators: [draem]\ncategories: [disc]\ndata_root: x\nepochs: 3\n")
    result = runner.invoke(cli, ["run", str(bad)])
    assert result.exit_code != 0 and "unknown key(s) epochs" in result.output
    assert len(result.output.strip().splitlines()) == 1
    bad.write_text(": : :\n")
    result = runner.invoke(cli, ["run", str(bad)])
    assert result.exit_code != 0 and "not valid YAML" in result.output
    cfg = _grid_config(demo_root, tmp_path / "o")
    cfg["generators"] = ["no_such_generator"]
    bad.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(cli, ["run", str(bad)])
    assert result.exit_code != 0 and "unknown generator 'no_such_generator'" in result.output
    result = runner.invoke(cli, ["run"])
    assert result.exit_code != 0 and "--preset quickstart" in result.output


def test_quickstart_preset_is_a_valid_grid(tmp_path):
    from anobench.runner import load_run_config

    config = load_run_config(preset="quickstart", out=tmp_path / "qs")
    assert config.out == (tmp_path / "qs").resolve()
    assert config.data_root == (tmp_path / "qs" / "demo-data").resolve()
    assert {g.name for g in config.generators} == {"draem", "crop_paste"}
    assert len(config.cells()) == 6


def test_evaluation_and_metrics_do_not_import_the_trainer_or_the_stores():
    """Evaluation reads a run without the training loop; generation metrics stay pure functions."""
    import subprocess
    import sys

    code = ("import sys, anobench.evaluation, anobench.detectors.run, anobench.metrics.generation; "
            "bad = [m for m in ('anobench.detectors.train', 'anobench.store', 'anobench.datasets.load_category') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_result_rows_carry_the_setup(trained_run, tmp_path):
    from anobench.evaluation import evaluate
    from anobench.results import SETUP_COLUMNS, read_results

    evaluate(trained_run, results=tmp_path / "r.csv", heatmaps=0, progress=False)
    evaluate(trained_run, test_set="all", results=tmp_path / "r.csv", heatmaps=0, progress=False)
    df = read_results(tmp_path / "r.csv")
    run = json.loads((trained_run / "run.json").read_text())
    protocol = df[df["protocol"] == "thirds"].iloc[0]
    assert {c: protocol[c] for c in SETUP_COLUMNS} == {
        "generator_config_hash": "h" + run["generator_config_hash"], "n_generated": "8", "reference_anomalies": "true",
        "encoder": run["config"]["encoder"], "encoder_weights": "none", "profile": "quick", "steps": "3",
        "lr": "0.001", "image_size": "64", "map_sigma": "0", "n_test": "9", "n_test_anomalous": "6",
        "leaky": "false", "device": "cpu", "train_device": run["execution"]["device"]}
    # every test image includes the references crop_paste learnt from: flagged leaky
    everything = df[df["protocol"] == "all"].iloc[0]
    assert everything["leaky"] == "true" and everything["n_test"] == "12"


def test_finished_generate_keeps_its_recorded_cost(demo_root, tmp_path):
    from anobench.generation import generate_dataset

    generate_dataset("draem", "mvtec_ad", demo_root, "disc", 2, tmp_path, image_size=64, progress=False)
    path = tmp_path / "draem" / "disc" / "dataset.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "peak_memory_mb": 123456.0, "device": "cuda:0"}))
    summary = generate_dataset("draem", "mvtec_ad", demo_root, "disc", 2, tmp_path, image_size=64,
                               device="cpu", progress=False)
    again = json.loads(path.read_text())
    assert summary.generated == 0 and again["peak_memory_mb"] == 123456.0 and again["device"] == "cuda:0"


def test_a_grid_asking_for_another_sample_count_is_refused(tmp_path):
    from anobench.runner import _check_sample_count

    (tmp_path / "run.json").write_text(json.dumps(_run_record(generated_samples=60, status="trained")))
    _check_sample_count(tmp_path, 60)
    with pytest.raises(AnobenchError, match="trained on 60 generated samples, the config asks for 100"):
        _check_sample_count(tmp_path, 100)
