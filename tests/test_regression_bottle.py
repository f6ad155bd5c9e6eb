"""CI regression: draem and crop_paste on real MVTec AD bottle, quick profile, against baselines.

The grid (generation, training, evaluation on the thirds split and on all 83 test images) is
``results/baselines/bottle_quick.yaml``; the committed values and tolerances are in
``bottle_quick_values.yaml`` and are checked both ways: a value below ``baseline - tolerance`` is
a regression, one above ``baseline + tolerance`` means the baseline is stale (update it, with the
reason, in results/baselines/README.md). About 15 minutes per generator on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "results" / "baselines" / "bottle_quick.yaml"
BASELINE = REPO / "results" / "baselines" / "bottle_quick_values.yaml"
SHARED = REPO.parent / "shared" / "data"


def _baseline() -> dict:
    return yaml.safe_load(BASELINE.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["draem", "crop_paste"])
def test_bottle_quick_profile_matches_baseline(generator, tmp_path):
    if not (SHARED / "mvtec_ad" / "bottle").is_dir() or not (SHARED / "dtd" / "images").is_dir():
        pytest.skip(f"real data not found at {SHARED} (needs mvtec_ad/bottle and dtd/images)")
    import torch

    from anobench.results import read_results
    from anobench.runner import load_run_config, run_grid

    baseline = _baseline()
    config = load_run_config(GRID, out=tmp_path / "out")
    config.generators = [g for g in config.generators if g.name == generator]
    torch.set_num_threads(2)
    run_grid(config, progress=False, echo=print)
    df = read_results(config.run_dir(generator, "bottle", config.seeds[0]))
    failures = []
    for protocol, metrics in baseline["values"][generator].items():
        for metric, expected in metrics.items():
            got = df[(df["protocol"] == protocol) & (df["metric"] == metric)]["value"]
            assert len(got), f"no {protocol}/{metric} row"
            value = float(got.iloc[-1])
            tolerance = baseline["tolerance"][metric]
            print(f"{generator} {protocol} {metric}: {value:.4f} (baseline {expected:.4f} +- {tolerance})")
            if value < expected - tolerance:
                failures.append(f"{protocol}/{metric} regressed: {value:.4f} < {expected:.4f} - {tolerance}")
            elif value > expected + tolerance:
                failures.append(f"{protocol}/{metric} improved beyond tolerance: {value:.4f} > {expected:.4f} + "
                                f"{tolerance}; update {BASELINE.name}")
    assert not failures, "; ".join(failures)


def test_baseline_files_are_complete():
    """The committed baseline covers both generators of the grid, with a tolerance per metric."""
    from anobench.runner import load_run_config

    config = load_run_config(GRID, out=REPO / "runs" / "unused")
    assert [g.name for g in config.generators] == ["draem", "crop_paste"]
    assert config.train["profile"] == "quick" and set(config.test_sets) == {"protocol", "all"}
    baseline = _baseline()
    for generator in ("draem", "crop_paste"):
        for protocol in ("thirds", "all"):
            for metric, value in baseline["values"][generator][protocol].items():
                assert metric in baseline["tolerance"] and 0.0 <= value <= 1.0
