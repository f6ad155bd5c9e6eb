"""Protocol splits: counts per rule, integer-stem order, and the leakage guard."""

from __future__ import annotations

import shutil

import pytest

from anobench.datasets import load_category
from anobench.errors import AnobenchError
from anobench.protocol import PROTOCOLS, split_category


@pytest.mark.parametrize("n,expected", [
    (10, {"thirds": (3, 3), "half": (5, 5), "anomalydiffusion": (4, 3), "dualanodiff": (3, 3), "dhdiff": (5, 0)}),
    (13, {"thirds": (4, 4), "half": (6, 6), "anomalydiffusion": (5, 4), "dualanodiff": (5, 4), "dhdiff": (6, 0)}),
    (22, {"thirds": (7, 7), "half": (11, 11), "anomalydiffusion": (8, 7), "dualanodiff": (8, 7), "dhdiff": (11, 0)}),
    # MVTec bottle's three defect types: DualAnoDiff tests from n//3 whatever it trained on
    (20, {"thirds": (6, 6), "half": (10, 10), "anomalydiffusion": (7, 6), "dualanodiff": (6, 6), "dhdiff": (10, 0)}),
    (21, {"thirds": (7, 7), "half": (10, 10), "anomalydiffusion": (8, 7), "dualanodiff": (8, 7), "dhdiff": (10, 0)}),
])
def test_rules(n, expected):
    for name, rule in PROTOCOLS.items():
        assert rule(n) == expected[name], name


def _many(tmp_path, demo_root, n=10):
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    src_img = root / "disc" / "test" / "hole" / "000.png"
    src_mask = root / "disc" / "ground_truth" / "hole" / "000_mask.png"
    for i in range(3, n):  # files 3..n-1 differ by content: copy and change one byte of pixel data
        from PIL import Image
        import numpy as np
        arr = np.asarray(Image.open(src_img)).copy()
        arr[0, 0, 0] = i
        Image.fromarray(arr).save(root / "disc" / "test" / "hole" / f"{i:03d}.png")
        shutil.copy(src_mask, root / "disc" / "ground_truth" / "hole" / f"{i:03d}_mask.png")
    return root


def test_thirds_split_sorted_by_integer_stem_no_overlap(tmp_path, demo_root):
    root = _many(tmp_path, demo_root, n=12)
    data = load_category("mvtec_ad", root, "disc")
    split = split_category(data, "thirds")
    holes_ref = [s.path.name for s in split.references if s.defect_type == "hole"]
    holes_test = [s.path.name for s in split.test if s.defect_type == "hole"]
    assert holes_ref == ["000.png", "001.png", "002.png", "003.png"]
    assert holes_test[0] == "004.png" and len(holes_test) == 8
    assert not set(map(str, (s.path for s in split.references))) & set(map(str, (s.path for s in split.test)))
    assert len(split.test) - sum(s.label for s in split.test) == len(data.test_normals)
    summary = split.summary(data)
    assert summary["per_defect_type"]["hole"] == {"reference": 4, "test": 8}
    assert summary["leaky"] is False


def test_anomalydiffusion_is_leaky_and_flagged(tmp_path, demo_root):
    data = load_category("mvtec_ad", _many(tmp_path, demo_root, n=12), "disc")
    split = split_category(data, "anomalydiffusion")
    refs = {s.path for s in split.references}
    shared = [s for s in split.test if s.path in refs]
    assert split.leaky and len(shared) == 3  # index n//3 of each of the 3 defect types
    assert split.summary(data)["leaky"] is True


def test_leakage_guard_refuses_duplicate_content(tmp_path, demo_root):
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    # a test image that is a byte copy of a reference image
    shutil.copy(root / "disc" / "test" / "hole" / "000.png", root / "disc" / "test" / "hole" / "002.png")
    with pytest.raises(AnobenchError, match="byte-identical"):
        split_category(load_category("mvtec_ad", root, "disc"), "thirds")


def test_unknown_protocol(demo_root):
    with pytest.raises(AnobenchError, match="unknown protocol"):
        split_category(load_category("mvtec_ad", demo_root, "disc"), "quarters")


def test_dualanodiff_tests_from_a_third_and_is_flagged(tmp_path, demo_root):
    """DualAnoDiff's evaluation loader starts the test set at n//3 even when it trained on n//3 + 1."""
    data = load_category("mvtec_ad", _many(tmp_path, demo_root, n=13), "disc")
    split = split_category(data, "dualanodiff")
    holes_ref = [s.path.name for s in split.references if s.defect_type == "hole"]
    holes_test = [s.path.name for s in split.test if s.defect_type == "hole"]
    assert len(holes_ref) == 5 and holes_test[0] == "004.png" and len(holes_test) == 9
    assert split.leaky and "004.png" in holes_ref


def test_dhdiff_tests_every_image_and_is_flagged(tmp_path, demo_root):
    data = load_category("mvtec_ad", _many(tmp_path, demo_root, n=12), "disc")
    split = split_category(data, "dhdiff")
    assert {s.path for s in split.test} == {s.path for s in data.test}
    assert len([s for s in split.references if s.defect_type == "hole"]) == 6
    assert split.leaky and split.summary(data)["leaky"] is True
