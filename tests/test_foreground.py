"""Foreground rule sets: RealNet's (cnulab/RealNet@5e89b3a) on hand-made images, its per-class table."""

from __future__ import annotations

import numpy as np
import pytest

from anobench.errors import AnobenchError
from anobench.generators.foreground import (MVTEC_TEXTURES, REALNET_RULES, REALNET_WHOLE, foreground_mask,
                                            realnet_rule)

MVTEC_CLASSES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                 "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
SIZE = 96
OBJECT = (slice(30, 60), slice(30, 60))  # a 30 px square part
HOLE = (slice(44, 46), slice(44, 46))  # a 2 px hole in it: the closings fill it
SPECK = (slice(4, 6), slice(84, 86))  # a 2 px speck of part colour far away: the openings remove it


def _image(background, part) -> np.ndarray:
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = background
    image[OBJECT] = part
    image[HOLE] = background
    image[SPECK] = part
    return image


def _square(speck: bool = False) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[OBJECT] = True
    if speck:
        mask[SPECK] = True
    return mask


BRIGHT_PART = _image((30, 30, 30), (200, 200, 200))
DARK_PART = _image((220, 220, 220), (40, 40, 40))


@pytest.mark.parametrize("dataset, category, image, speck", [
    ("mvtec_ad", "pill", BRIGHT_PART, False),  # Otsu, bright side, closing 6, opening 6
    ("mvtec_ad", "hazelnut", BRIGHT_PART, False),  # triangle, bright side
    ("mvtec_ad", "bottle", DARK_PART, False),  # Otsu, dark side
    ("mvtec_ad", "grid", DARK_PART, False),  # thresholded in RealNet (a texture in MemSeg)
    ("visa", "candle", BRIGHT_PART, False),  # Otsu grey, bright, closing 3, opening 3
    ("btad", "01", BRIGHT_PART, False),  # Otsu grey, bright, closing 15, opening 6
    ("mpdd", "metal_plate", DARK_PART, True),  # Otsu grey, dark, closing 6 and no opening: the speck stays
])
def test_realnet_rule_on_a_hand_made_part(dataset, category, image, speck):
    assert np.array_equal(foreground_mask(image, dataset, category, "realnet"), _square(speck))


def test_triangle_and_otsu_thresholds_differ_where_the_source_picks_them():
    """A faint grey region beside the part: Otsu (pill) leaves it out, the triangle (hazelnut) keeps it."""
    image = BRIGHT_PART.copy()
    image[70:90, 5:25] = 90
    faint = _square()
    faint[70:90, 5:25] = True
    assert np.array_equal(foreground_mask(image, "mvtec_ad", "pill", "realnet"), _square())
    assert np.array_equal(foreground_mask(image, "mvtec_ad", "hazelnut", "realnet"), faint)


def test_realnet_rules_threshold_their_own_channel():
    # grey says the part is brighter, green says it is darker: MPDD bracket_black keeps green's dark side
    green_dark = _image((20, 200, 20), (250, 60, 250))
    assert np.array_equal(foreground_mask(green_dark, "mpdd", "bracket_black", "realnet"), _square(speck=True))
    # grey says the part is darker, blue says brighter: MPDD tubes and VisA pcb keep blue's bright side
    blue_bright = _image((200, 200, 20), (30, 30, 230))
    assert np.array_equal(foreground_mask(blue_bright, "mpdd", "tubes", "realnet"), _square(speck=True))
    assert np.array_equal(foreground_mask(blue_bright, "visa", "pcb2", "realnet"), _square())  # closing 8, opening 3


def test_realnet_whole_image_classes_differ_from_memseg():
    for category in ("cable", "transistor", "carpet"):
        assert foreground_mask(BRIGHT_PART, "mvtec_ad", category, "realnet").all()
    assert not foreground_mask(BRIGHT_PART, "mvtec_ad", "cable").all()  # MemSeg thresholds cable (150, reverse)
    assert foreground_mask(DARK_PART, "mvtec_ad", "grid").all()  # MemSeg: grid is a texture
    assert foreground_mask(BRIGHT_PART, "visa", "capsules", "realnet").all()
    assert foreground_mask(BRIGHT_PART, "btad", "02", "realnet").all()
    assert foreground_mask(BRIGHT_PART, "magnetic_tile", "tile", "realnet").all()  # no RealNet table: texture


def test_realnet_table_covers_every_mvtec_class_as_the_source_lists_them():
    """realnet_dataset.py lines 263-276: each MVTec AD class is whole or has exactly one rule."""
    whole = set(REALNET_WHOLE["mvtec_ad"])
    ruled = set(REALNET_RULES["mvtec_ad"])
    assert whole | ruled == set(MVTEC_CLASSES) and not whole & ruled and "*" not in ruled
    assert whole == set(MVTEC_TEXTURES) - {"grid"} | {"cable", "transistor"}
    table = {c: (realnet_rule("mvtec_ad", c).method, realnet_rule("mvtec_ad", c).bright) for c in ruled}
    assert table == {"pill": ("otsu", True), "hazelnut": ("triangle", True), "metal_nut": ("triangle", True),
                     "toothbrush": ("triangle", True), "bottle": ("otsu", False), "capsule": ("otsu", False),
                     "grid": ("otsu", False), "screw": ("otsu", False), "zipper": ("otsu", False)}
    assert {(r.close, r.open, r.channel) for r in REALNET_RULES["mvtec_ad"].values()} == {(6, 6, "grey")}
    rules = {(d, c): (r.method, r.bright, r.close, r.open, r.channel)
             for d, table in REALNET_RULES.items() if d != "mvtec_ad" for c, r in table.items()}
    assert rules == {
        **{("visa", f"pcb{i}"): ("triangle", True, 8, 3, "blue") for i in range(1, 5)},
        ("visa", "*"): ("otsu", True, 3, 3, "grey"),
        ("mpdd", "bracket_black"): ("otsu", False, 6, 0, "green"), ("mpdd", "bracket_brown"): ("otsu", False, 6, 0, "green"),
        ("mpdd", "connector"): ("otsu", False, 6, 0, "green"), ("mpdd", "bracket_white"): ("otsu", True, 6, 0, "blue"),
        ("mpdd", "tubes"): ("otsu", True, 6, 0, "blue"), ("mpdd", "*"): ("otsu", False, 6, 0, "grey"),
        ("btad", "*"): ("otsu", True, 15, 6, "grey"),
    }


def test_unknown_rule_set_is_refused():
    with pytest.raises(AnobenchError, match="unknown foreground rules 'otsu'"):
        foreground_mask(BRIGHT_PART, "mvtec_ad", "pill", "otsu")


@pytest.mark.parametrize("name", ["memseg", "glass_las"])
def test_generators_select_the_realnet_rules(demo_root, name):
    """foreground=realnet on cable (whole image in RealNet, MemSeg's threshold 150) paints off MemSeg's region."""
    from anobench.datasets import load_category
    from anobench.generation import build_generator
    from anobench.generators import GenerationContext, SampleRequest

    data = load_category("mvtec_ad", demo_root, "disc")
    size = 64
    requests = [SampleRequest(i, 7919 * i + 3, data.train[i % len(data.train)].image(size),
                              data.relpath(data.train[i % len(data.train)].path)) for i in range(8)]
    outside = {}
    for rules in ("class", "realnet"):
        gen = build_generator(name, {"foreground": rules})
        gen.setup(GenerationContext("mvtec_ad", "cable", size, [s.path for s in data.train], [], data.defect_types))
        outside[rules] = sum(int((s.mask & ~foreground_mask(r.source, "mvtec_ad", "cable")).sum())
                             for r, s in zip(requests, gen.generate(requests)))
    assert outside["class"] == 0 and outside["realnet"] > 0


def test_realnet_bottle_foreground_on_real_data(shared_data):
    """Real MVTec AD bottle: the Otsu dark side is the bottle (centre in, corners out), close to MemSeg's."""
    from anobench.datasets import load_category

    data = load_category("mvtec_ad", shared_data / "mvtec_ad", "bottle")
    for sample in data.train[:3]:
        image = sample.image(256)
        realnet, memseg = (foreground_mask(image, "mvtec_ad", "bottle", r) for r in ("realnet", "memseg"))
        assert realnet[118:138, 118:138].all() and not realnet[:10, :10].any()
        assert 0.5 < realnet.mean() < 0.75 and (realnet & memseg).sum() / (realnet | memseg).sum() > 0.9
