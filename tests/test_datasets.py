"""Readers of every layout, on small datasets made here; real data where it exists."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anobench.datasets import check_category, list_categories, load_category, natural_key
from anobench.errors import AnobenchError
from anobench.images import read_mask, read_rgb


def _img(path: Path, size=(32, 32), value=128, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]), value, np.uint8)
    Image.fromarray(arr).save(path)


def _mask(path: Path, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[4:10, 4:10] = 255
    Image.fromarray(arr).save(path)


def test_natural_sort_orders_integers():
    names = ["10.png", "2.png", "1.png", "exp_num_100.png", "exp_num_9.png"]
    assert sorted(names, key=natural_key) == ["1.png", "2.png", "10.png", "exp_num_9.png", "exp_num_100.png"]


def test_mvtec_reader_counts_and_masks(demo_root):
    data = load_category("mvtec_ad", demo_root, "disc")
    assert len(data.train) == 6 and len(data.test_normals) == 3 and len(data.test_anomalies) == 9
    assert data.defect_types == ["hole", "scratch", "stain"]
    image, mask = data.test_anomalies[0].image_and_mask(64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.dtype == bool and mask.any()
    assert list_categories("mvtec_ad", demo_root) == ["disc", "grain", "weave"]
    assert check_category(data) == ([], [])


def test_missing_mask_is_named(tmp_path, demo_root):
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    victim = root / "disc" / "ground_truth" / "hole" / "001_mask.png"
    victim.unlink()
    with pytest.raises(AnobenchError, match="001.png: missing mask"):
        load_category("mvtec_ad", root, "disc")


def test_check_reports_missized_and_unreadable(tmp_path, demo_root):
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    _mask(root / "disc" / "ground_truth" / "hole" / "000_mask.png", size=(40, 40))
    (root / "disc" / "train" / "good" / "002.png").write_bytes(b"not a png")
    problems, _ = check_category(load_category("mvtec_ad", root, "disc"))
    assert any("000_mask.png: mask is 40x40" in p for p in problems)
    assert any("002.png: unreadable image" in p for p in problems)


def test_root_category_and_empty_train_errors(tmp_path, demo_root):
    with pytest.raises(AnobenchError, match="does not exist"):
        load_category("mvtec_ad", tmp_path / "nope", "disc")
    with pytest.raises(AnobenchError, match="category 'nope' not found"):
        load_category("mvtec_ad", demo_root, "nope")
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    shutil.rmtree(root / "disc" / "train" / "good")
    (root / "disc" / "train" / "good").mkdir()
    with pytest.raises(AnobenchError, match="no training normal images"):
        load_category("mvtec_ad", root, "disc")


def test_grayscale_and_16bit_images_are_read_as_rgb(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(gray)
    assert (read_rgb(gray) == 77).all() and read_rgb(gray).shape == (8, 8, 3)
    deep = tmp_path / "d.png"
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(deep)
    assert (read_rgb(deep) == 40000 >> 8).all()
    mask16 = tmp_path / "m.png"
    arr = np.zeros((8, 8), np.uint16)
    arr[2, 3] = 1
    Image.fromarray(arr).save(mask16)
    assert read_mask(mask16).sum() == 1 and read_mask(mask16)[2, 3]


def test_mask_resize_is_nearest_and_binary(tmp_path):
    path = tmp_path / "m.png"
    arr = np.zeros((64, 64), np.uint8)
    arr[10:30, 10:30] = 1  # non-255 labels count as anomalous
    Image.fromarray(arr).save(path)
    mask = read_mask(path, 32)
    assert mask.dtype == bool and mask.sum() == 100


def test_loco_union_of_masks(tmp_path):
    base = tmp_path / "breakfast_box"
    _img(base / "train" / "good" / "000.png")
    _img(base / "test" / "good" / "000.png")
    _img(base / "test" / "logical_anomalies" / "000.png")
    a = np.zeros((32, 32), np.uint8); a[0:4, 0:4] = 255
    b = np.zeros((32, 32), np.uint8); b[20:24, 20:24] = 255
    (base / "ground_truth" / "logical_anomalies" / "000").mkdir(parents=True)
    Image.fromarray(a).save(base / "ground_truth" / "logical_anomalies" / "000" / "000.png")
    Image.fromarray(b).save(base / "ground_truth" / "logical_anomalies" / "000" / "001.png")
    data = load_category("mvtec_loco", tmp_path, "breakfast_box")
    assert data.test_anomalies[0].mask(32).sum() == 32


def test_visa_split_csv(tmp_path):
    cat = "candle"
    for i in range(3):
        _img(tmp_path / cat / "Data" / "Images" / "Normal" / f"{i:04d}.JPG")
    _img(tmp_path / cat / "Data" / "Images" / "Anomaly" / "0000.JPG")
    _mask(tmp_path / cat / "Data" / "Masks" / "Anomaly" / "0000.png")
    (tmp_path / "split_csv").mkdir()
    with open(tmp_path / "split_csv" / "1cls.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerow([cat, "train", "normal", f"{cat}/Data/Images/Normal/0000.JPG", ""])
        w.writerow([cat, "train", "normal", f"{cat}/Data/Images/Normal/0001.JPG", ""])
        w.writerow([cat, "test", "normal", f"{cat}/Data/Images/Normal/0002.JPG", ""])
        w.writerow([cat, "test", "anomaly", f"{cat}/Data/Images/Anomaly/0000.JPG", f"{cat}/Data/Masks/Anomaly/0000.png"])
    with open(tmp_path / cat / "image_anno.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["image", "label", "mask"])
        w.writerow([f"{cat}/Data/Images/Anomaly/0000.JPG", "wax melded out", ""])
    data = load_category("visa", tmp_path, cat)
    assert len(data.train) == 2 and len(data.test_normals) == 1
    assert data.test_anomalies[0].defect_type == "wax_melded_out"
    assert data.test_anomalies[0].mask(32).sum() == 36


def test_btad_and_folder_layouts(tmp_path):
    base = tmp_path / "btad" / "01"
    for i in range(2):
        _img(base / "train" / "ok" / f"{i:04d}.bmp")
    _img(base / "test" / "ok" / "0000.bmp")
    _img(base / "test" / "ko" / "0000.bmp")
    _mask(base / "ground_truth" / "ko" / "0000.png")
    data = load_category("btad", tmp_path / "btad", "01")
    assert len(data.train) == 2 and data.test_anomalies[0].defect_type == "ko"

    base = tmp_path / "plain" / "widget"
    for i in range(10):
        _img(base / "good" / f"{i}.png")
    _img(base / "dent" / "0.png")
    _mask(base / "masks" / "dent" / "0.png")
    data = load_category("folder", tmp_path / "plain", "widget")
    assert len(data.train) == 8 and len(data.test_normals) == 2
    assert data.test_anomalies[0].defect_type == "dent"


def test_real_bottle_and_tile(shared_data):
    bottle = load_category("mvtec_ad", shared_data / "mvtec_ad", "bottle")
    assert (len(bottle.train), len(bottle.test_normals), len(bottle.test_anomalies)) == (209, 20, 63)
    tile = load_category("mvtec_ad", shared_data / "magnetic_tile", "tile")
    assert (len(tile.train), len(tile.test_normals), len(tile.test_anomalies)) == (300, 191, 392)
    image, mask = tile.test_anomalies[0].image_and_mask(256)
    assert image.shape == (256, 256, 3) and mask.any()
    problems, warnings = check_category(tile)
    assert problems == [] and len(warnings) == 4 and all("empty mask" in w for w in warnings)
