"""A newcomer's dataset folder: the expected layout is explained, in the README and by `datasets check`."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from anobench.cli import DATASETS, cli
from anobench.datasets import LAYOUTS, load_category

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_dataset_has_a_layout():
    assert set(LAYOUTS) == set(DATASETS)


def test_datasets_check_on_a_wrong_folder_explains_the_layout(tmp_path):
    (tmp_path / "bottle" / "images").mkdir(parents=True)  # not the folder layout: no good/
    result = CliRunner().invoke(cli, ["datasets", "check", str(tmp_path), "--dataset", "folder"])
    assert result.exit_code == 2
    assert "no folder categories found" in result.output
    assert "good/*.png" in result.output and "masks/<defect>/<stem>.png" in result.output


def test_the_readme_tree_is_the_layout_the_reader_reads(tmp_path):
    text = README.read_text()
    assert LAYOUTS["folder"] in text  # the README shows the same tree the code explains
    # and a folder built from that tree reads
    import numpy as np

    from anobench.images import atomic_write_bytes, png_bytes

    base = tmp_path / "widget"
    for i in range(5):
        atomic_write_bytes(base / "good" / f"{i}.png", png_bytes(np.full((32, 32, 3), 100, np.uint8)))
    mask = np.zeros((32, 32), np.uint8)
    mask[4:9, 4:9] = 255
    atomic_write_bytes(base / "dent" / "0.png", png_bytes(np.full((32, 32, 3), 90, np.uint8)))
    atomic_write_bytes(base / "masks" / "dent" / "0.png", png_bytes(mask))
    data = load_category("folder", tmp_path, "widget")
    assert len(data.train) == 4 and len(data.test_normals) == 1 and data.defect_types == ["dent"]
