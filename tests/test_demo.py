"""The procedural demo dataset: graded difficulty, and rewriting a folder as a whole (issue 10 item 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from anobench.cli import cli
from anobench.datasets import load_category
from anobench.demo import CATEGORIES, LEVELS, ORDER, _draw_defect, _normal, make_demo_dataset
from anobench.images import read_rgb


def _drawn(kind: str, difficulty: str, category: str = "grain"):
    image, region = _normal(category, np.random.default_rng(1), 128)
    out, mask = _draw_defect(image, region, kind, np.random.default_rng(7), difficulty)
    change = np.abs(out.astype(float) - image.astype(float)).sum(axis=-1)
    return change, mask


@pytest.mark.parametrize("kind", ["scratch", "hole", "stain"])
def test_levels_are_graded(kind):
    obvious_change, obvious_mask = _drawn(kind, "obvious")
    assert obvious_mask.any() and (obvious_change[~obvious_mask] == 0).all()  # changed only inside the mask
    faint_change, faint_mask = _drawn(kind, "faint")
    assert faint_change[faint_mask].mean() < 0.5 * obvious_change[obvious_mask].mean()
    _, small_mask = _drawn(kind, "small")
    assert 0 < small_mask.sum() < 0.5 * obvious_mask.sum()
    _, thin_mask = _drawn(kind, "thin")
    assert 0 < thin_mask.sum() < 0.8 * obvious_mask.sum()
    low_change, low_mask = _drawn(kind, "low-contrast")
    assert low_change[low_mask].mean() < 0.6 * obvious_change[obvious_mask].mean()


def test_every_level_reaches_the_default_test_split(tmp_path):
    summary = make_demo_dataset(tmp_path / "d", size=64, n_train=2, n_test_good=1, n_per_defect=6)
    info = json.loads((tmp_path / "d" / "anobench-demo.json").read_text())
    assert set(info["difficulty"].values()) == set(LEVELS)
    test_levels = {ORDER[i] for i in range(6 // 3, 6)}  # thirds: the first 2 are references
    assert {"obvious", "faint", "thin", "low-contrast"} <= test_levels
    data = load_category("mvtec_ad", tmp_path / "d", "disc")
    assert all(s.mask(64).any() for s in data.test_anomalies)  # no defect clipped to nothing
    assert summary.images == {c: 2 + 1 + 18 for c in CATEGORIES}


def test_rewrite_replaces_the_folder_and_counts_what_is_there(tmp_path):
    root = tmp_path / "demo"
    runner = CliRunner()
    first = runner.invoke(cli, ["demo-data", str(root), "--size", "96", "--train", "8"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, ["demo-data", str(root), "--size", "64", "--train", "3"])
    assert second.exit_code == 0, second.output
    for category in CATEGORIES:
        files = sorted((root / category).rglob("*.png"))
        assert {read_rgb(p).shape[0] for p in files if "ground_truth" not in p.parts} == {64}  # no old image left
        assert len(list((root / category / "train" / "good").glob("*.png"))) == 3
        n_images = sum(1 for p in files if "ground_truth" not in p.parts)
        assert f"{category} ({n_images} images, 18 masks)" in second.output
    assert "replaced" in second.output
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_a_folder_that_is_not_a_demo_is_refused_untouched(tmp_path):
    root = tmp_path / "mine"
    (root / "bottle" / "train" / "good").mkdir(parents=True)
    keep = root / "bottle" / "train" / "good" / "000.png"
    keep.write_bytes(b"not mine to delete")
    result = CliRunner().invoke(cli, ["demo-data", str(root)])
    assert result.exit_code == 2
    assert "not a demo dataset" in result.output
    assert keep.read_bytes() == b"not mine to delete" and not (root / "disc").exists()


def test_same_seed_same_bytes(tmp_path):
    make_demo_dataset(tmp_path / "a", size=64, n_train=2, n_test_good=1, n_per_defect=2)
    make_demo_dataset(tmp_path / "b", size=64, n_train=2, n_test_good=1, n_per_defect=2)
    for p in sorted((tmp_path / "a").rglob("*.png")):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
