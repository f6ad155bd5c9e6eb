"""Protocol splits: counts per rule, integer-stem order, the pixel leakage guard, the frozen split."""

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
    """The demo disc with ``n`` distinct hole images named 0.png ... n-1.png (no zero padding)."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    holes, masks = root / "disc" / "test" / "hole", root / "disc" / "ground_truth" / "hole"
    src_img, src_mask = np.asarray(Image.open(holes / "000.png")).copy(), masks / "000_mask.png"
    for old in [*holes.glob("*.png"), *masks.glob("*.png")]:
        if old != src_mask:
            old.unlink()
    for i in range(n):  # distinct pixels: one changed value each
        arr = src_img.copy()
        arr[0, 0, 0] = i
        Image.fromarray(arr).save(holes / f"{i}.png")
        shutil.copy(src_mask, masks / f"{i}_mask.png")
    src_mask.unlink()
    return root


def test_thirds_split_sorted_by_integer_stem_no_overlap(tmp_path, demo_root):
    root = _many(tmp_path, demo_root, n=12)
    data = load_category("mvtec_ad", root, "disc")
    split = split_category(data, "thirds")
    holes_ref = [s.path.name for s in split.references if s.defect_type == "hole"]
    holes_test = [s.path.name for s in split.test if s.defect_type == "hole"]
    # integer order: 10.png and 11.png come last (lexical order would put them after 1.png)
    assert holes_ref == ["0.png", "1.png", "2.png", "3.png"]
    assert holes_test == [f"{i}.png" for i in range(4, 12)]
    assert not set(map(str, (s.path for s in split.references))) & set(map(str, (s.path for s in split.test)))
    assert len(split.test) - sum(s.label for s in split.test) == len(data.test_normals)
    summary = split.summary(data)
    assert summary["per_defect_type"]["hole"] == {"reference": 4, "test": 8}
    assert summary["leaky"] is False
    assert set(summary["sha256"]) == set(summary["references"]) | set(summary["test"])


def test_anomalydiffusion_is_leaky_and_flagged(tmp_path, demo_root):
    data = load_category("mvtec_ad", _many(tmp_path, demo_root, n=12), "disc")
    split = split_category(data, "anomalydiffusion")
    refs = {s.path for s in split.references}
    shared = [s for s in split.test if s.path in refs]
    assert split.leaky and len(shared) == 3  # index n//3 of each of the 3 defect types
    assert split.summary(data)["leaky"] is True


def _recompressed_duplicate(tmp_path, demo_root):
    """A test image with a reference's pixels, saved with other compression (other file bytes)."""
    from PIL import Image

    root = _many(tmp_path, demo_root, n=6)
    holes = root / "disc" / "test" / "hole"
    Image.open(holes / "0.png").save(holes / "4.png", compress_level=0)
    assert (holes / "0.png").read_bytes() != (holes / "4.png").read_bytes()
    return root


def test_leakage_guard_compares_decoded_pixels(tmp_path, demo_root):
    root = _recompressed_duplicate(tmp_path, demo_root)
    with pytest.raises(AnobenchError, match=r"4\.png: test image has the same pixels as reference test/hole/0\.png.*--drop-duplicates"):
        split_category(load_category("mvtec_ad", root, "disc"), "thirds")


def test_drop_duplicates_records_what_it_left_out(tmp_path, demo_root):
    from anobench.protocol import find_duplicates

    data = load_category("mvtec_ad", _recompressed_duplicate(tmp_path, demo_root), "disc")
    split = split_category(data, "thirds", drop_duplicates=True)
    names = [data.relpath(s.path) for s in split.test]
    assert "test/hole/4.png" not in names and "test/hole/5.png" in names
    assert split.summary(data)["dropped"] == [{"test": "test/hole/4.png", "duplicate_of": "test/hole/0.png"}]
    assert ["test/hole/0.png", "test/hole/4.png"] in find_duplicates(data)


def test_frozen_split_reads_back_and_refuses_changed_pixels(tmp_path, demo_root):
    import numpy as np
    from PIL import Image

    from anobench.protocol import frozen_split

    root = _many(tmp_path, demo_root, n=6)
    data = load_category("mvtec_ad", root, "disc")
    record = split_category(data, "thirds").summary(data)
    again = frozen_split(data, record, "x")
    assert [data.relpath(s.path) for s in again.test] == record["test"]
    path = root / "disc" / "test" / "hole" / "5.png"
    arr = np.asarray(Image.open(path)).copy()
    arr[1, 1] ^= 1
    Image.fromarray(arr).save(path)
    with pytest.raises(AnobenchError, match=r"5\.png: pixels differ"):
        frozen_split(data, record, "x")


def test_unknown_protocol(demo_root):
    with pytest.raises(AnobenchError, match="unknown protocol"):
        split_category(load_category("mvtec_ad", demo_root, "disc"), "quarters")


def test_dualanodiff_tests_from_a_third_and_is_flagged(tmp_path, demo_root):
    """DualAnoDiff's evaluation loader starts the test set at n//3 even when it trained on n//3 + 1."""
    data = load_category("mvtec_ad", _many(tmp_path, demo_root, n=13), "disc")
    split = split_category(data, "dualanodiff")
    holes_ref = [s.path.name for s in split.references if s.defect_type == "hole"]
    holes_test = [s.path.name for s in split.test if s.defect_type == "hole"]
    assert len(holes_ref) == 5 and holes_test[0] == "4.png" and len(holes_test) == 9
    assert split.leaky and "4.png" in holes_ref


def test_dhdiff_tests_every_image_and_is_flagged(tmp_path, demo_root):
    data = load_category("mvtec_ad", _many(tmp_path, demo_root, n=12), "disc")
    split = split_category(data, "dhdiff")
    assert {s.path for s in split.test} == {s.path for s in data.test}
    assert len([s for s in split.references if s.defect_type == "hole"]) == 6
    assert split.leaky and split.summary(data)["leaky"] is True
