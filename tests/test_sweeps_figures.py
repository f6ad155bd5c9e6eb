"""Sweep axes in `anobench run`, mixtures, the report's statistics and figures (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from anobench.cli import cli
from anobench.errors import AnobenchError

TINY = {"image_size": 64, "steps": 2, "batch_size": 4, "val_every": 2, "checkpoint_every": 2,
        "max_val_samples": 4, "channels_last": False}


def _specs():
    from anobench.runner import GeneratorSpec

    return [GeneratorSpec("draem", num=6), GeneratorSpec("crop_paste", num=4)]


def test_parse_sweep_labels_every_axis():
    from anobench.sweeps import mixture_counts, parse_sweep

    variants = parse_sweep({"num": [3], "synthetic_fraction": [0.25], "mix": [{"draem": 0.75, "crop_paste": 0.25}]},
                           _specs())
    by = {v.label: v for v in variants}
    assert set(by) == {"draem", "crop_paste", "draem[num=3]", "crop_paste[num=3]", "draem[synthetic_fraction=0.25]",
                       "crop_paste[synthetic_fraction=0.25]", "mix[draem=0.75,crop_paste=0.25]"}
    assert by["draem[num=3]"].num == 3 and by["draem[num=3]"].sweep == {"num": 3.0}
    assert by["crop_paste[synthetic_fraction=0.25]"].train_overrides == {"synthetic_fraction": "0.25"}
    mix = by["mix[draem=0.75,crop_paste=0.25]"]
    assert mix.num == 6 and mix.sweep == {"mix_weight": 0.75}
    assert mixture_counts(mix.components, 6) == {"draem": 4, "crop_paste": 2}


@pytest.mark.parametrize("sweep, message", [
    ({"epochs": [1]}, "unknown axis epochs"),
    ({"num": [0]}, "positive integers"),
    ({"synthetic_fraction": [1.5]}, r"in \(0, 1\)"),
    ({"mix": [{"draem": 0.5, "nope": 0.5}]}, "nope not in generators"),
    ({"mix": [{"draem": 0.5, "crop_paste": 0.6}]}, "sum to 1"),
])
def test_parse_sweep_errors(sweep, message):
    from anobench.sweeps import parse_sweep

    with pytest.raises(AnobenchError, match=message):
        parse_sweep(sweep, _specs())


def test_run_grid_with_sweeps_records_them_and_reports_intervals(demo_root, tmp_path):
    from anobench import perimage
    from anobench.results import read_results
    from anobench.store import GeneratedSet

    config = {
        "out": str(tmp_path / "out"), "dataset": "mvtec_ad", "data_root": str(demo_root), "categories": ["disc"],
        "seeds": [0], "generators": [{"name": "draem", "num": 6}, {"name": "crop_paste", "num": 6}],
        "train": {"profile": "quick", "encoder_weights": "none", "set": TINY},
        "evaluate": {"test_sets": ["protocol"], "heatmaps": 1},
        "report": {"format": "markdown", "layout": "table2", "resamples": 50, "primary": "image_auroc"},
        "sweep": {"synthetic_fraction": [0.25], "mix": [{"draem": 0.5, "crop_paste": 0.5}]},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = CliRunner().invoke(cli, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    rows = read_results(out / "runs")
    labels = {"draem", "crop_paste", "draem[synthetic_fraction=0.25]", "crop_paste[synthetic_fraction=0.25]",
              "mix[draem=0.5,crop_paste=0.5]"}
    assert set(rows["generator"]) == labels
    swept = json.loads((out / "runs" / "draem[synthetic_fraction=0.25]" / "disc" / "seed0" / "run.json").read_text())
    assert swept["config"]["synthetic_fraction"] == 0.25
    stored = perimage.load(out / "runs" / "draem[synthetic_fraction=0.25]" / "disc" / "seed0" / "maps-thirds.npz")
    assert stored.meta["sweep"] == {"synthetic_fraction": 0.25} and stored.meta["base_generator"] == "draem"
    # the per-image record holds the run's setup, as its result rows do (statistics label setups by it)
    swept_rows = rows[rows["generator"] == "draem[synthetic_fraction=0.25]"].iloc[0]
    assert {f: stored.meta[f] for f in ("n_generated", "steps", "image_size", "map_sigma")} == \
        {f: swept_rows[f] for f in ("n_generated", "steps", "image_size", "map_sigma")}
    mixed = GeneratedSet.open(out / "generated" / "seed0" / "mix[draem=0.5,crop_paste=0.5]" / "disc")
    sources = [r["source_generator"] for r in mixed.rows]
    assert sources.count("draem") == 3 and sources.count("crop_paste") == 3
    # sample i of the mixture is sample i of its source set (same seed), byte for byte
    draem = GeneratedSet.open(out / "generated" / "seed0" / "draem" / "disc")
    assert np.array_equal(mixed.load(0)[0], draem.load(0)[0])
    report = (out / "report.md").read_text()
    assert report.startswith(("**Verdict: Best on image AUROC", "**Verdict: No significant difference on image AUROC"))
    assert "with 95% intervals" in report and "paired differences" in report
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"bars_image_auroc.png", "bars_image_auroc.pdf", "loss_curves.png"} <= figures
    assert any(name.startswith("cost_") for name in figures)
    # the base cells (fraction 0.5) and the swept ones (0.25) make one curve per generator
    assert "sweep_synthetic_fraction_image_auroc.png" in figures and "sweep_mix_weight_image_auroc.png" not in figures


def test_cd_diagram_and_figures_for_three_generators_on_three_categories(tmp_path):
    import pandas as pd

    from anobench import figures
    from anobench.report_stats import build_statistics
    from anobench.statistics import analyse, verdict
    from test_statistics import _grid

    analysis = analyse(_grid({"strong": 3.0, "mid": 1.0, "weak": 0.3}), n_resamples=100)
    v = verdict(analysis, "pixel_ap")
    assert v.ranks.generators == ["mid", "strong", "weak"] and len(v.ranks.categories) == 3
    paths = figures.cd_diagram(v.ranks, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    # the same data, twice: the same bytes (PDF without a creation date)
    again = figures.cd_diagram(v.ranks, tmp_path / "again")
    assert paths[1].read_bytes() == again[1].read_bytes()
    assert v.ranks.cliques()  # 3 categories are too few for Nemenyi to split all three
    bars = figures.category_bars(analysis, "pixel_ap", tmp_path)
    assert bars[0].exists()
    points = pd.DataFrame({"generator": ["g"] * 3, "category": ["x"] * 3, "value": [10, 20, 40],
                           "mean": [0.5, 0.6, 0.7], "low": [0.4, 0.5, 0.6], "high": [0.6, 0.7, 0.8]})
    assert figures.sweep_curves(points, tmp_path, "image_auroc", "num")[0].exists()


def test_report_statistics_from_stored_per_image_files(tmp_path):
    from anobench import perimage
    from anobench.report import report_files
    from anobench.results import append_rows
    from test_statistics import _grid

    for record in _grid({"strong": 3.0, "weak": 0.3, "mid": 1.0}, seeds=(0, 1)):
        m = record.meta
        run = tmp_path / "runs" / m["generator"] / m["category"] / f"seed{m['seed']}"
        perimage.save(run / "maps-thirds.npz", record)
        from anobench.bootstrap import bootstrap_metrics

        values = bootstrap_metrics(record, n_resamples=1).metrics
        append_rows(run / "results.csv", [{"dataset": m["dataset"], "category": m["category"],
                                           "generator": m["generator"], "detector": m["detector"], "seed": m["seed"],
                                           "protocol": m["protocol"], "metric": k, "value": v, "config_hash": "x",
                                           "version": "0"} for k, v in values.items()])
    text = report_files([tmp_path / "runs"], "markdown", primary="pixel_ap", resamples=100,
                        figures_dir=tmp_path / "figures")
    assert text.startswith("**Verdict: Best on pixel AP: strong")
    assert "mean rank over 3 categories" in text and "Friedman p" in text
    assert (tmp_path / "figures" / "cd_pixel_ap.png").exists()
    html = report_files([tmp_path / "runs"], "html", primary="pixel_ap", resamples=100, figures_dir=tmp_path / "f2")
    assert "Best on pixel AP: strong" in html and html.count('alt="figure ') >= 3
