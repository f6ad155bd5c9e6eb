"""`anobench run --mlflow URI`: one MLflow run per cell, logged to a local file store."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from anobench.cli import cli

mlflow = pytest.importorskip("mlflow")

TINY = {"image_size": 64, "steps": 2, "batch_size": 4, "val_every": 2, "checkpoint_every": 2,
        "max_val_samples": 4, "channels_last": False}


def _run_with_mlflow(tmp_path, demo_root, generators, heatmaps):
    """Run a one-category demo grid of these generator entries, logged to a local MLflow store."""
    grid = {
        "out": str(tmp_path / "out"), "dataset": "mvtec_ad", "data_root": str(demo_root), "categories": ["disc"],
        "generators": generators,
        "train": {"profile": "quick", "encoder_weights": "none", "set": TINY},
        "evaluate": {"test_sets": ["protocol"], "heatmaps": heatmaps},
        "report": {"format": "markdown", "layout": "table2"},
    }
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    uri = (tmp_path / "mlruns").as_uri()
    return CliRunner().invoke(cli, ["run", str(config), "-q", "--mlflow", uri]), uri


def test_mlflow_logs_one_run_per_cell_with_setup_rows_and_artifacts(demo_root, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch

    from anobench.results import read_results

    out = tmp_path / "out"
    result, uri = _run_with_mlflow(tmp_path, demo_root, [{"name": "draem", "num": 6},
                                                         {"name": "crop_paste", "num": 6, "set": {"blend": "nope"}}], 2)
    assert result.exit_code == 2, result.output  # the crop_paste cell fails, the grid goes on
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("anobench-out")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"grid out", "draem/disc/seed0", "crop_paste/disc/seed0"}
    grid_run, cell, failed = by_name["grid out"], by_name["draem/disc/seed0"], by_name["crop_paste/disc/seed0"]
    assert cell.data.tags["mlflow.parentRunId"] == grid_run.info.run_id
    assert failed.info.status == "FAILED" and "blend" in failed.data.tags["anobench.error"]
    # the full setup as params
    params = cell.data.params
    assert params["device"] == "cpu" and params["train_device"] == "cpu" == params["detector.execution.device"]
    assert params["generator"] == "draem" and params["detector.config.steps"] == "2"
    assert params["generation.config_hash"] and params["generation.generator"] == "draem"
    assert grid_run.data.params["grid.categories"] == "[\"disc\"]"
    # the rows as metrics, value for value
    rows = read_results(out / "runs" / "draem" / "disc" / "seed0")
    for row in rows.itertuples():
        assert "=" not in str(row.metric)  # the device is a column, logged as a param
        assert cell.data.metrics[f"{row.protocol}/{row.metric}"] == pytest.approx(row.value)
    # artifacts: results, heat maps, the report on the grid's run
    names = {a.path for a in client.list_artifacts(cell.info.run_id)}
    assert {"results.csv", "run.json", "heatmaps", "generated"} <= names
    assert len(client.list_artifacts(cell.info.run_id, "heatmaps")) == 2
    assert "report.md" in {a.path for a in client.list_artifacts(grid_run.info.run_id)}
    # a re-run does not log the finished cell again
    CliRunner().invoke(cli, ["run", str(tmp_path / "grid.yaml"), "-q", "--mlflow", uri])
    names = [r.info.run_name for r in client.search_runs([experiment.experiment_id])]
    assert names.count("draem/disc/seed0") == 1 and names.count("grid out") == 2


def test_a_bad_tracking_uri_is_a_one_line_error(demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "o"), "data_root": str(demo_root),
                                      "categories": ["disc"], "generators": ["draem"]}))
    result = CliRunner().invoke(cli, ["run", str(config), "--mlflow", "nosuchscheme://x"])
    assert result.exit_code == 2 and result.output.startswith("error: --mlflow nosuchscheme://x: cannot open")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o" / "runs").exists()


def test_mlflow_names_a_labelled_entrys_runs_by_its_label(demo_root, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    result, uri = _run_with_mlflow(tmp_path, demo_root, [
        {"name": "draem", "num": 6}, {"name": "draem", "label": "draem_fg", "num": 6, "set": {"foreground": True}}], 1)
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("anobench-out").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"grid out", "draem/disc/seed0", "draem_fg/disc/seed0"}
    plain, fg = by_name["draem/disc/seed0"].data.params, by_name["draem_fg/disc/seed0"].data.params
    assert plain["generator"] == fg["generator"] == "draem"
    assert plain["label"] == "draem" and fg["label"] == "draem_fg"
    assert plain["generation.config.foreground"] == "False" and fg["generation.config.foreground"] == "True"
