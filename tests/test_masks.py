"""The one mask rule (label > 0, alpha never a label, 16-bit raw, palette by colour), for every mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anobench.cli import cli
from anobench.images import mask_labels, mask_warnings, read_mask

RNG = np.random.default_rng(0)
LABEL = np.zeros((32, 40), bool)
LABEL[5:14, 8:20] = True
LABEL[20:24, 30:36] = True


def _palette(colours: list[tuple[int, int, int]]) -> list[int]:
    flat = [c for colour in colours for c in colour]
    return flat + [0] * (768 - len(flat))


def _encode(kind: str) -> tuple[Image.Image, str]:
    """An image of LABEL in one mode, as a dataset might ship it, and the file suffix to save it with."""
    lab = LABEL.astype(np.uint8)
    if kind == "L":
        return Image.fromarray(lab * 255), ".png"
    if kind == "1":
        return Image.fromarray(LABEL), ".png"
    if kind == "LA-opaque":  # the case: alpha 255 everywhere
        return Image.fromarray(np.dstack([lab * 255, np.full_like(lab, 255)]), "LA"), ".png"
    if kind == "LA-noisy-alpha":
        return Image.fromarray(np.dstack([lab * 255, RNG.integers(1, 256, lab.shape).astype(np.uint8)]), "LA"), ".png"
    if kind == "RGBA-opaque":
        rgb = np.repeat(lab[..., None] * 255, 3, axis=2)
        return Image.fromarray(np.dstack([rgb, np.full_like(lab, 255)]), "RGBA"), ".png"
    if kind == "RGBA-transparent-background":
        rgb = np.repeat(lab[..., None] * 255, 3, axis=2)
        return Image.fromarray(np.dstack([rgb, lab * 255]), "RGBA"), ".png"
    if kind == "RGBA-red-labels":
        rgb = np.zeros((*lab.shape, 3), np.uint8)
        rgb[..., 0] = lab * 200
        return Image.fromarray(np.dstack([rgb, np.full_like(lab, 255)]), "RGBA"), ".png"
    if kind == "RGB-colour-labels":
        rgb = np.zeros((*lab.shape, 3), np.uint8)
        rgb[..., 2] = lab * 3  # a dark blue label is still a label
        return Image.fromarray(rgb), ".png"
    if kind == "P":
        image = Image.fromarray(lab, "P")
        image.putpalette(_palette([(0, 0, 0), (255, 0, 0)]))
        return image, ".png"
    if kind == "P-inverted-palette":  # index 0 painted white is the defect, index 1 black is background
        image = Image.fromarray((1 - lab).astype(np.uint8), "P")
        image.putpalette(_palette([(255, 255, 255), (0, 0, 0)]))
        return image, ".png"
    if kind == "P-transparency":
        image = Image.fromarray(lab, "P")
        image.putpalette(_palette([(0, 0, 0), (0, 255, 0)]))
        image.info["transparency"] = 0
        return image, ".png"
    if kind == "PA":
        image = Image.fromarray(lab, "P").convert("PA")
        image.putpalette(_palette([(0, 0, 0), (255, 255, 0)]))
        return image, None  # no file format writes PA: read in memory
    if kind == "I;16-labels-0-1":  # raw labels, never rescaled to 8 bits (that would make every 1 a 0)
        return Image.fromarray(lab.astype(np.uint16)), ".png"
    if kind == "I;16-0-65535":
        return Image.fromarray(lab.astype(np.uint16) * 65535), ".png"
    if kind == "I-32bit":
        return Image.fromarray(lab.astype(np.int32), "I"), ".tif"
    if kind == "F-float":
        return Image.fromarray(lab.astype(np.float32), "F"), ".tif"
    if kind == "CMYK":
        return Image.fromarray(lab * 255).convert("RGB").convert("CMYK"), ".tif"
    raise KeyError(kind)


KINDS = ["L", "1", "LA-opaque", "LA-noisy-alpha", "RGBA-opaque", "RGBA-transparent-background", "RGBA-red-labels",
         "RGB-colour-labels", "P", "P-inverted-palette", "P-transparency", "PA", "I;16-labels-0-1", "I;16-0-65535",
         "I-32bit", "F-float", "CMYK"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_mode_reads_the_same_label(kind, tmp_path):
    image, suffix = _encode(kind)
    if suffix is None:
        np.testing.assert_array_equal(mask_labels(image) > 0, LABEL)
        return
    path = tmp_path / f"mask{suffix}"
    image.save(path)
    assert Image.open(path).mode == image.mode
    np.testing.assert_array_equal(read_mask(path), LABEL)
    resized = read_mask(path, 64)
    assert resized.shape == (64, 64) and abs(resized.mean() - LABEL.mean()) < 0.02


def test_alpha_only_labels_are_flagged(tmp_path):
    """Labels drawn only in alpha read as empty under the rule, and the check says why."""
    black = np.zeros(LABEL.shape, np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([black, LABEL.astype(np.uint8) * 255]), "LA").save(path)
    assert not read_mask(path).any()
    assert any("alpha is not a label" in w for w in mask_warnings(path))


def test_full_and_clean_masks(tmp_path):
    full = tmp_path / "full.png"
    Image.fromarray(np.full(LABEL.shape, 255, np.uint8)).save(full)
    assert any("100% of the image" in w for w in mask_warnings(full))
    clean = tmp_path / "clean.png"
    _encode("RGBA-opaque")[0].save(clean)
    assert mask_warnings(clean) == []


def _to_mode(root: Path, mode: str, alpha_only: bool = False) -> None:
    for path in sorted((root / "disc" / "ground_truth").rglob("*.png")):
        lab = np.asarray(Image.open(path)) > 0
        if alpha_only:
            arr = np.dstack([np.zeros(lab.shape, np.uint8), lab.astype(np.uint8) * 255])
        else:
            arr = np.dstack([lab.astype(np.uint8) * 255, np.full(lab.shape, 255, np.uint8)])
        if mode == "RGBA":
            arr = np.dstack([arr[..., :1]] * 3 + [arr[..., 1:]])
        Image.fromarray(arr, mode).save(path)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_masks_give_the_same_ground_truth_as_grey_ones(mode, demo_root, tmp_path):
    """The issue's reproducer: RGBA/LA ground truth read all-anomalous; now the same pixels as the L masks."""
    from anobench.datasets import load_category

    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    _to_mode(root, mode)
    grey, alpha = load_category("mvtec_ad", demo_root, "disc"), load_category("mvtec_ad", root, "disc")
    for a, b in zip(grey.test_anomalies, alpha.test_anomalies):
        assert Image.open(b.mask_paths[0]).mode == mode
        np.testing.assert_array_equal(a.mask(64), b.mask(64))
    result = CliRunner().invoke(cli, ["datasets", "check", str(root), "--category", "disc"])
    assert result.exit_code == 0 and "no problems found" in result.output and "warning" not in result.output


def test_datasets_check_warns_about_alpha_only_masks(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    _to_mode(root, "LA", alpha_only=True)
    result = CliRunner().invoke(cli, ["datasets", "check", str(root), "--category", "disc"])
    assert "alpha is not a label" in result.output
    assert "empty mask" in result.output
    assert "warning(s)" in result.output
