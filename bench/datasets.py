"""Readers for real inspection datasets: MVTec AD, MPDD, VisA, BTAD, MVTec LOCO and plain folders.

Every reader turns one category into :class:`CategoryData`: the training normals and the test
samples (image path, mask path(s), label, defect type). Pixels are read lazily and resized on
request; masks are binarised (> 0) and resized nearest. Problems a user can fix (missing root,
missing mask, empty ``train/good``) raise :class:`AnobenchError` naming the path;
:func:`check_category` opens every file and lists every problem instead of stopping at the first.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from anobench.errors import AnobenchError
from anobench.images import IMAGE_SUFFIXES, image_size, mask_warnings, read_mask, read_rgb
from anobench.safety import check_category_name

NORMAL = "good"


def natural_key(path: str | Path) -> tuple:
    """Sort key by integer runs in the file stem: 2.png < 10.png, exp1_num_9 < exp1_num_10."""
    stem = Path(path).stem
    return tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.findall(r"\d+|\D+", stem))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, natural-sorted; hidden files skipped."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=natural_key)


@dataclass(frozen=True)
class Sample:
    """One real image: where it is, its label, its defect type and its mask file(s)."""

    path: Path
    label: int
    defect_type: str
    mask_paths: tuple[Path, ...] = ()

    def image(self, size: int | None = 256) -> np.ndarray:
        return read_rgb(self.path, size)

    def mask(self, size: int | None = 256) -> np.ndarray:
        """Binary mask; the union of all mask files (MVTec LOCO); all-false for normals."""
        if not self.mask_paths:
            if size is None:
                w, h = image_size(self.path)
                return np.zeros((h, w), dtype=bool)
            return np.zeros((size, size), dtype=bool)
        mask = read_mask(self.mask_paths[0], size)
        for extra in self.mask_paths[1:]:
            mask = mask | read_mask(extra, size)
        return mask

    def image_and_mask(self, size: int | None = 256) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask, refusing a mask whose size differs from its image's."""
        image_wh = image_size(self.path)
        for mask_path in self.mask_paths:
            mask_wh = image_size(mask_path)
            if mask_wh != image_wh:
                raise AnobenchError(
                    f"{mask_path}: mask is {mask_wh[0]}x{mask_wh[1]} but its image is {image_wh[0]}x{image_wh[1]}"
                )
        return self.image(size), self.mask(size)


@dataclass
class CategoryData:
    """Everything the benchmark needs from one real category."""

    dataset: str
    category: str
    root: Path
    train: list[Sample]
    test: list[Sample]
    notes: list[str] = field(default_factory=list)

    @property
    def test_anomalies(self) -> list[Sample]:
        return [s for s in self.test if s.label == 1]

    @property
    def test_normals(self) -> list[Sample]:
        return [s for s in self.test if s.label == 0]

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test_anomalies})

    def relpath(self, path: Path) -> str:
        """Path relative to the category folder, as recorded in manifests and results."""
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)


# --------------------------------------------------------------------------- layouts


def _mvtec_mask(gt_dir: Path, image: Path) -> Path | None:
    for candidate in (gt_dir / f"{image.stem}_mask.png", gt_dir / f"{image.stem}.png"):
        if candidate.exists():
            return candidate
    return None


def _read_mvtec(root: Path, category: str, dataset: str = "mvtec_ad") -> CategoryData:
    base = root / category
    train = [Sample(p, 0, NORMAL) for p in list_images(base / "train" / NORMAL)]
    test: list[Sample] = []
    test_dir = base / "test"
    if not test_dir.is_dir():
        raise AnobenchError(f"{test_dir}: missing test folder ({dataset} layout needs test/<type>/)")
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for img in list_images(type_dir):
            if type_dir.name == NORMAL:
                test.append(Sample(img, 0, NORMAL))
                continue
            mask = _mvtec_mask(base / "ground_truth" / type_dir.name, img)
            if mask is None:
                raise AnobenchError(
                    f"{img}: missing mask (expected {base / 'ground_truth' / type_dir.name / (img.stem + '_mask.png')})"
                )
            test.append(Sample(img, 1, type_dir.name, (mask,)))
    return CategoryData(dataset, category, base, train, test)


def _read_loco(root: Path, category: str) -> CategoryData:
    base = root / category
    train = [Sample(p, 0, NORMAL) for p in list_images(base / "train" / NORMAL)]
    test: list[Sample] = []
    for type_dir in sorted(p for p in (base / "test").iterdir() if p.is_dir()) if (base / "test").is_dir() else []:
        for img in list_images(type_dir):
            if type_dir.name == NORMAL:
                test.append(Sample(img, 0, NORMAL))
                continue
            mask_dir = base / "ground_truth" / type_dir.name / img.stem
            masks = tuple(list_images(mask_dir))
            if not masks:
                raise AnobenchError(f"{img}: missing masks (expected PNG files in {mask_dir})")
            test.append(Sample(img, 1, type_dir.name, masks))
    if not test:
        raise AnobenchError(f"{base / 'test'}: no test images (MVTec LOCO layout needs test/<type>/)")
    return CategoryData("mvtec_loco", category, base, train, test)


def _read_btad(root: Path, category: str) -> CategoryData:
    base = root / category
    train = [Sample(p, 0, NORMAL) for p in list_images(base / "train" / "ok")]
    test = [Sample(p, 0, NORMAL) for p in list_images(base / "test" / "ok")]
    for img in list_images(base / "test" / "ko"):
        gt = base / "ground_truth" / "ko"
        mask = next((c for c in (gt / f"{img.stem}.png", gt / f"{img.stem}.bmp", gt / f"{img.stem}_mask.png") if c.exists()), None)
        if mask is None:
            raise AnobenchError(f"{img}: missing mask (expected {gt / (img.stem + '.png')})")
        test.append(Sample(img, 1, "ko", (mask,)))
    return CategoryData("btad", category, base, train, test)


def _csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a dataset CSV file; bad encoding, bad quoting or missing columns name the file."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except UnicodeDecodeError as exc:
        raise AnobenchError(f"{path}: not UTF-8 text; re-save the file as UTF-8") from None
    except csv.Error as exc:
        raise AnobenchError(f"{path}: not a valid CSV file ({exc})") from None
    except OSError as exc:
        from anobench.safety import os_error

        raise os_error(exc, path) from None
    missing = [c for c in required if c not in columns]
    if missing:
        raise AnobenchError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(map(str, columns)) or 'none'})")
    return rows


def _read_visa(root: Path, category: str) -> CategoryData:
    split_csv = root / "split_csv" / "1cls.csv"
    if not split_csv.exists():
        raise AnobenchError(f"{split_csv}: missing VisA split file (VisA layout needs split_csv/1cls.csv)")
    defect_names: dict[str, str] = {}
    anno = root / category / "image_anno.csv"
    if anno.exists():
        for row in _csv_rows(anno, ()):
            name = (row.get("label") or "").strip()
            if name and name != "normal":
                defect_names[Path(row.get("image") or "").name] = name.replace(" ", "_").replace(",", "+")
    train: list[Sample] = []
    test: list[Sample] = []
    for row in _csv_rows(split_csv, ("object", "split", "label", "image")):
        if row.get("object") != category:
            continue
        if not row.get("image"):
            raise AnobenchError(f"{split_csv}: a row of category {category!r} has no image")
        img = root / row["image"]
        anomalous = (row.get("label") or "").strip().lower() == "anomaly"
        if not anomalous:
            (train if row.get("split") == "train" else test).append(Sample(img, 0, NORMAL))
            continue
        if not row.get("mask"):
            raise AnobenchError(f"{img}: missing mask in {split_csv}")
        sample = Sample(img, 1, defect_names.get(img.name, "anomaly"), (root / row["mask"],))
        (train if row.get("split") == "train" else test).append(sample)
    if not train and not test:
        raise AnobenchError(f"{split_csv}: no rows for category {category!r}")
    # VisA's 1cls split has no anomalies in train; keep only normals there.
    train = [s for s in train if s.label == 0]
    train.sort(key=lambda s: natural_key(s.path))
    test.sort(key=lambda s: (s.defect_type, natural_key(s.path)))
    return CategoryData("visa", category, root / category, train, test)


def _read_folder(root: Path, category: str) -> CategoryData:
    """Plain layout: ``good/`` normals, one folder per defect type, ``masks/<type>/<stem>[_mask].png``.

    Every fifth good image (natural order, starting with the fifth) is held out as a test normal.
    """
    base = root / category
    goods = list_images(base / NORMAL)
    train = [Sample(p, 0, NORMAL) for i, p in enumerate(goods) if i % 5 != 4]
    test = [Sample(p, 0, NORMAL) for i, p in enumerate(goods) if i % 5 == 4]
    for type_dir in sorted(p for p in base.iterdir() if p.is_dir() and p.name not in (NORMAL, "masks")):
        for img in list_images(type_dir):
            mask = _mvtec_mask(base / "masks" / type_dir.name, img)
            if mask is None:
                raise AnobenchError(f"{img}: missing mask (expected {base / 'masks' / type_dir.name / (img.stem + '.png')})")
            test.append(Sample(img, 1, type_dir.name, (mask,)))
    return CategoryData("folder", category, base, train, test, notes=["test normals: every 5th good image"])


def _categories_with(root: Path, marker: Callable[[Path], bool]) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and marker(p))


READERS: dict[str, Callable[[Path, str], CategoryData]] = {
    "mvtec_ad": _read_mvtec,
    "mpdd": lambda root, cat: _read_mvtec(root, cat, "mpdd"),
    "visa": _read_visa,
    "btad": _read_btad,
    "mvtec_loco": _read_loco,
    "folder": _read_folder,
}


# The folder tree each reader expects, for messages when a root holds no category (and the README).
LAYOUTS: dict[str, str] = {
    "mvtec_ad": """ROOT/<category>/
    train/good/*.png                  normal training images
    test/good/*.png                   normal test images
    test/<defect>/*.png               anomalous test images, one folder per defect type
    ground_truth/<defect>/<stem>_mask.png   one mask per anomalous image (> 0 = defect)""",
    "mvtec_loco": """ROOT/<category>/
    train/good/*.png, test/good/*.png, test/<defect>/*.png
    ground_truth/<defect>/<stem>/*.png   one or more masks per image (their union is the defect)""",
    "btad": """ROOT/<category>/
    train/ok/*.png, test/ok/*.png, test/ko/*.png
    ground_truth/ko/<stem>.png""",
    "visa": """ROOT/split_csv/1cls.csv             columns object, split, label, image, mask
ROOT/<category>/Data/Images/..., Data/Masks/...   (paths as in the csv)""",
    "folder": """ROOT/<category>/
    good/*.png                        normal images (every 5th is held out as a test normal)
    <defect>/*.png                    anomalous images, one folder per defect type
    masks/<defect>/<stem>.png         one mask per anomalous image (or <stem>_mask.png; > 0 = defect)""",
}
LAYOUTS["mpdd"] = LAYOUTS["mvtec_ad"]


def list_categories(dataset: str, root: str | Path) -> list[str]:
    """Category names found under ``root`` for a dataset layout."""
    root = _check_root(dataset, root)
    if dataset == "visa":
        split_csv = root / "split_csv" / "1cls.csv"
        if not split_csv.exists():
            raise AnobenchError(f"{split_csv}: missing VisA split file")
        return sorted({row["object"] for row in _csv_rows(split_csv, ("object",)) if row["object"]})
    if dataset == "btad":
        return _categories_with(root, lambda p: (p / "train" / "ok").is_dir())
    if dataset == "folder":
        return _categories_with(root, lambda p: (p / NORMAL).is_dir())
    return _categories_with(root, lambda p: (p / "train").is_dir() or (p / "test").is_dir())


def _check_root(dataset: str, root: str | Path) -> Path:
    if dataset not in READERS:
        raise AnobenchError(f"unknown dataset {dataset!r} (known: {', '.join(READERS)})")
    root = Path(root)
    if not root.is_dir():
        raise AnobenchError(f"{root}: data root does not exist or is not a folder")
    return root


def load_category(dataset: str, root: str | Path, category: str) -> CategoryData:
    """Read one category's file lists (no pixels yet), with one-line errors on a broken layout."""
    root = _check_root(dataset, root)
    check_category_name(category)
    if dataset != "visa" and not (root / category).is_dir():
        found = ", ".join(list_categories(dataset, root)) or "none"
        raise AnobenchError(f"{root / category}: category {category!r} not found (found: {found})")
    data = READERS[dataset](root, category)
    if not data.train:
        where = {"btad": "train/ok", "folder": "good", "visa": "split_csv train rows"}.get(dataset, "train/good")
        raise AnobenchError(f"{data.root / where}: no training normal images")
    return data


def check_category(data: CategoryData, size: int | None = None) -> tuple[list[str], list[str]]:
    """Open every file of a category: (problems, warnings), one line each.

    Problems (unreadable file, mask of another size) make a category unusable; an anomalous
    image with an empty mask is a warning: it still counts for image-level metrics.
    """
    problems: list[str] = []
    warnings: list[str] = []
    for sample in data.train + data.test:
        try:
            w, h = image_size(sample.path)
        except AnobenchError as exc:
            problems.append(str(exc))
            continue
        for mask_path in sample.mask_paths:
            try:
                mw, mh = image_size(mask_path)
            except AnobenchError as exc:
                problems.append(str(exc))
                continue
            if (mw, mh) != (w, h):
                problems.append(f"{mask_path}: mask is {mw}x{mh} but its image {sample.path.name} is {w}x{h}")
        try:
            sample.image(size)
            if sample.mask_paths:
                for mask_path in sample.mask_paths:
                    warnings.extend(mask_warnings(mask_path))
                if not sample.mask(size).any():
                    warnings.append(f"{sample.mask_paths[0]}: empty mask for an anomalous image")
        except AnobenchError as exc:
            problems.append(str(exc))
    return problems, warnings
