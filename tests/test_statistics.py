"""Bootstrap intervals, paired tests, ranks and the verdict (issue 11), on simulated test sets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anobench import perimage
from anobench.bootstrap import bootstrap_metrics, resample_counts
from anobench.metrics.detection import DETECTION_METRICS, detection_metrics
from anobench.statistics import (
    analyse, compare_cells, critical_difference, holm, paired_bootstrap, quality_vs_detection, rank_analysis,
    seed_summary, verdict,
)


def category(n_anomalous, n_normal, size=24, seed=0, signal=1.0, shared=None):
    """Maps brighter inside square defects; ``shared`` fixes the masks (same test images)."""
    rng = np.random.default_rng(seed)
    n = n_anomalous + n_normal
    labels = np.arange(n) < n_anomalous
    if shared is None:
        masks = np.zeros((n, size, size), bool)
        for i in range(n_anomalous):
            for _ in range(rng.integers(1, 3)):
                y, x = rng.integers(0, size - 6, 2)
                masks[i, y:y + rng.integers(2, 7), x:x + rng.integers(2, 7)] = True
    else:
        masks = shared
    maps = rng.random((n, size, size)).astype(np.float32) * 0.7 + masks * rng.random((n, size, size)) * 0.5 * signal
    scores = maps.reshape(n, -1).max(1) + rng.normal(0, 0.05, n)
    return scores, labels, maps, masks


def record(scores, labels, maps=None, masks=None, generator="g", seed=0, category_name="c", max_codes=65536):
    meta = {"dataset": "d", "protocol": "thirds", "detector": "unet", "category": category_name,
            "generator": generator, "seed": seed}
    names = [f"img{i}" for i in range(len(scores))]
    return perimage.from_arrays(scores, labels, maps, masks, names=names, meta=meta, max_codes=max_codes)


def test_bootstrap_equals_exact_metrics_on_resamples():
    scores, labels, maps, masks = category(12, 8)
    data = record(scores, labels, maps, masks, max_codes=300)  # coarse codes: many ties across images
    counts = resample_counts(labels, 8, seed=3)
    result = bootstrap_metrics(data, counts=counts)
    coded = data.maps()
    exact_full = detection_metrics(scores, labels, coded, masks)
    for name in DETECTION_METRICS:
        assert result.metrics[name] == pytest.approx(exact_full[name], abs=1e-7), name
    for b in range(len(counts)):
        idx = np.repeat(np.arange(len(labels)), counts[b])
        exact = detection_metrics(scores[idx], labels[idx], coded[idx], masks[idx])
        for name in DETECTION_METRICS:
            assert result.samples[name][b] == pytest.approx(exact[name], abs=1e-7), (name, b)


def test_full_codes_are_close_to_float_maps():
    scores, labels, maps, masks = category(12, 8)
    result = bootstrap_metrics(record(scores, labels, maps, masks), n_resamples=2)
    exact = detection_metrics(scores, labels, maps, masks)
    for name in DETECTION_METRICS:
        assert result.metrics[name] == pytest.approx(exact[name], abs=1e-3), name


def test_resamples_are_stratified_and_seeded():
    labels = np.array([1] * 5 + [0] * 7, bool)
    counts = resample_counts(labels, 50, seed=1)
    assert (counts[:, labels].sum(1) == 5).all() and (counts[:, ~labels].sum(1) == 7).all()
    assert np.array_equal(counts, resample_counts(labels, 50, seed=1))
    assert not np.array_equal(counts, resample_counts(labels, 50, seed=2))


def test_storage_round_trip(tmp_path):
    scores, labels, maps, masks = category(5, 4, size=20)
    data = record(scores, labels, maps, masks)
    path = perimage.save(tmp_path / "maps-thirds.npz", data)
    back = perimage.load(path)
    assert np.array_equal(back.codes, data.codes) and np.array_equal(back.masks, masks)
    assert np.array_equal(back.scores, scores) and back.meta == data.meta and back.names == data.names
    # quantile codes keep the order of the values
    order = np.argsort(maps.reshape(-1), kind="stable")
    assert (np.diff(back.codes.reshape(-1)[order].astype(int)) >= 0).all()


def test_intervals_shrink_as_the_test_set_grows():
    pool = 160
    scores, labels, maps, masks = category(pool, pool, size=16, seed=0)
    scores = scores + np.random.default_rng(0).normal(0, 0.3, scores.size)  # imperfect image scores
    widths = []
    for n in (10, 40, 160):  # nested test sets drawn from one population
        idx = np.r_[np.arange(n), pool + np.arange(n)]
        result = bootstrap_metrics(record(scores[idx], labels[idx], maps[idx], masks[idx]), n_resamples=300)
        widths.append({m: np.subtract(*result.interval(m)[::-1]) for m in ("image_auroc", "pixel_ap", "aupro")})
    for metric in widths[0]:
        assert widths[0][metric] > 1.4 * widths[1][metric] > 1.4 ** 2 * widths[2][metric], (metric, widths)


def test_seed_summary_uses_the_t_interval():
    s = seed_summary([0.8, 0.9, 1.0])
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1)
    assert s.high - s.mean == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert math.isnan(seed_summary([0.7]).low)


def _paired_images(n, shift, seed):
    """Two detectors' image scores on the same test images; ``shift`` separates B's classes more."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) < n // 2
    latent = rng.normal(0, 1, n) + labels * 1.0
    a = latent + rng.normal(0, 1, n)
    b = latent + rng.normal(0, 1, n) + labels * shift
    return labels, a, b


def _p_value(labels, a, b, n_resamples, seed):
    counts = resample_counts(labels, n_resamples, seed)
    ra = bootstrap_metrics(record(a, labels), counts=counts)
    rb = bootstrap_metrics(record(b, labels), counts=counts)
    return paired_bootstrap(rb.metrics["image_auroc"], ra.metrics["image_auroc"],
                            rb.samples["image_auroc"], ra.samples["image_auroc"])[3]


def test_paired_test_detects_a_planted_difference_and_holds_its_level():
    sims, alpha = 200, 0.05
    null = [_p_value(*_paired_images(60, 0.0, s), 200, s) < alpha for s in range(sims)]
    planted = [_p_value(*_paired_images(60, 1.5, s), 200, s) < alpha for s in range(60)]
    null_rate = float(np.mean(null))
    # nominal 5%: with 200 simulations a calibrated test lands in ~[0.02, 0.09]
    assert 0.01 <= null_rate <= 0.10, null_rate
    assert np.mean(planted) >= 0.8, np.mean(planted)


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_critical_difference_matches_demsar_table():
    # Demsar (2006) Table 5(a): q_0.05 = 2.343 for k = 3, 2.569 for k = 4
    assert critical_difference(3, 10) == pytest.approx(2.343 * math.sqrt(3 * 4 / 60), rel=1e-3)
    assert critical_difference(4, 5) == pytest.approx(2.569 * math.sqrt(4 * 5 / 30), rel=1e-3)


def test_rank_analysis_orders_a_consistent_winner():
    table = pd.DataFrame({"a": [0.9, 0.8, 0.95, 0.7, 0.85], "b": [0.8, 0.7, 0.9, 0.6, 0.8],
                          "c": [0.7, 0.6, 0.5, 0.5, 0.6]}, index=list("vwxyz"))
    r = rank_analysis(table)
    assert r.mean_ranks == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert r.friedman_p < 0.01 and r.nemenyi_p.loc["a", "c"] < 0.05
    assert r.mean_ranks["c"] - r.mean_ranks["a"] > r.critical_difference


def _grid(signals, categories=("c1", "c2", "c3"), seeds=(0, 1), n=(14, 10)):
    records = []
    for ci, cat in enumerate(categories):
        _, _, _, masks = category(*n, seed=100 + ci)
        for g, signal in signals.items():
            for s in seeds:
                scores, labels, maps, _ = category(*n, seed=1000 * ci + 10 * s + len(g), signal=signal, shared=masks)
                records.append(record(scores, labels, maps, masks, generator=g, seed=s, category_name=cat))
    return records


def test_verdict_names_a_clearly_better_generator():
    analysis = analyse(_grid({"strong": 3.0, "weak": 0.3, "mid": 1.0}), n_resamples=200)
    v = verdict(analysis, "pixel_ap")
    assert v.best == "strong" and v.significant
    assert {t.b for t in v.tests} == {"weak", "mid"} and all(t.delta > 0 for t in v.tests)
    assert v.ranks.mean_ranks["strong"] == 1.0
    assert "Best on pixel AP: strong" in v.text()
    # every p at the bootstrap's floor: the sentence names the closest rival, not an arbitrary one
    for t in v.tests:
        t.p_value, t.p_adjusted = 0.001, 0.002
    assert "ahead of mid by" in v.text()
    v.tests.reverse()
    assert "ahead of mid by" in v.text()
    cell = analysis.cells[("d", "thirds", "unet", "c1", "strong")]
    assert cell.seeds == [0, 1]
    test = compare_cells(cell, analysis.cells[("d", "thirds", "unet", "c1", "weak")], "pixel_ap")
    assert test.delta > 0 and test.low > 0 and test.p_value < 0.05


def test_verdict_says_no_difference_between_equal_generators():
    analysis = analyse(_grid({"x": 1.0, "y": 1.0}, categories=("c1",), seeds=(0,)), n_resamples=200)
    v = verdict(analysis, "image_auroc")
    assert v.best is None and v.leader in ("x", "y")
    assert v.text().startswith("No significant difference on image AUROC")


def test_verdict_from_rows_without_maps():
    rows = []
    for cat in ("c1", "c2"):
        for seed in range(3):
            for g, value in (("a", 0.9), ("b", 0.7)):
                rows.append({"dataset": "d", "category": cat, "generator": g, "detector": "unet", "seed": seed,
                             "protocol": "thirds", "metric": "image_auroc", "value": value + 0.01 * seed * (cat == "c1"),
                             "config_hash": "x", "version": "0"})
    frame = pd.DataFrame(rows)
    frame["value"] += np.random.default_rng(0).normal(0, 0.01, len(frame))
    v = verdict(frame, "image_auroc")
    assert v.leader == "a" and v.best == "a" and "t-test" in v.method


def test_runs_on_different_test_images_cannot_be_paired():
    scores, labels, maps, masks = category(6, 4)
    a = record(scores, labels, maps, masks, generator="a")
    b = record(scores, labels, maps, masks, generator="b")
    b.names = list(reversed(b.names))
    with pytest.raises(Exception, match="different test images"):
        analyse([a, b], n_resamples=5)


def test_quality_vs_detection_correlations():
    rows = []
    rng = np.random.default_rng(0)
    for g in range(6):
        for cat in ("c1", "c2"):
            kid = 0.1 * g + rng.normal(0, 0.01)
            base = {"dataset": "d", "category": cat, "generator": f"g{g}", "seed": 0, "protocol": "thirds",
                    "config_hash": "x", "version": "0"}
            rows.append({**base, "detector": "-", "metric": "kid", "value": kid})
            rows.append({**base, "detector": "unet", "metric": "image_auroc", "value": 1 - kid})
    table = quality_vs_detection(pd.DataFrame(rows), n_resamples=200)
    row = table[(table["quality"] == "kid") & (table["detection"] == "image_auroc")].iloc[0]
    assert row["n"] == 12 and row["spearman"] == pytest.approx(-1.0) and row["kendall"] == pytest.approx(-1.0)
    assert row["spearman_low"] <= row["spearman"] <= row["spearman_high"]


def test_two_setups_of_one_generator_stay_apart():
    scores, labels, maps, masks = category(5, 4)
    runs = []
    for generator, config_hash in (("g", "aaaaaa11"), ("g", "bbbbbb22"), ("h", "c")):
        runs.append(record(scores, labels, maps, masks, generator=generator))
        runs[-1].meta["config_hash"] = config_hash
    cells = analyse(runs, n_resamples=5).cells
    assert sorted(k[-1] for k in cells) == ["g #aaaaaa", "g #bbbbbb", "h"]


def test_statistics_and_tables_name_a_setup_alike():
    """Two setups of one generator carry one label in the statistics and in the metric tables."""
    from anobench.report_tables import label_setups

    scores, labels, maps, masks = category(5, 4)
    runs, rows = [], []
    for config_hash, n_generated in (("aaaaaa11", "60"), ("bbbbbb22", "100")):
        runs.append(record(scores, labels, maps, masks, generator="g"))
        runs[-1].meta.update(config_hash=config_hash, n_generated=n_generated, steps="25")
        rows.append({"dataset": runs[-1].meta["dataset"], "detector": runs[-1].meta["detector"], "generator": "g",
                     "config_hash": "h" + config_hash, "n_generated": n_generated, "steps": "25"})
    stats_names = sorted(k[-1] for k in analyse(runs, n_resamples=5).cells)
    table_names = sorted(label_setups(pd.DataFrame(rows))["generator"])
    assert stats_names == table_names == ["g (n_generated=100)", "g (n_generated=60)"]


def test_resampling_seeds_widens_intervals_when_seeds_disagree():
    _, _, _, masks = category(14, 10, seed=5)
    runs = []
    for seed, signal in ((0, 0.4), (1, 3.0), (2, 1.0)):  # trainings of very different quality
        scores, labels, maps, _ = category(14, 10, seed=50 + seed, signal=signal, shared=masks)
        runs.append(record(scores, labels, maps, masks, generator="g", seed=seed))
    fixed = analyse(runs, n_resamples=300, resample_seeds=False).cells[("d", "thirds", "unet", "c", "g")]
    both = analyse(runs, n_resamples=300).cells[("d", "thirds", "unet", "c", "g")]
    width = lambda cell: np.subtract(*cell.interval("pixel_ap")[::-1])  # noqa: E731
    assert width(both) > 1.5 * width(fixed)
    assert fixed.mean("pixel_ap") == both.mean("pixel_ap")
