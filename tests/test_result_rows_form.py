"""The form of a result row: the device is a setup column, not a metric; hashes read back as text.

Stores written before (``device=<name>`` metric rows, headers without the newest columns, bare hex
hashes) must still read, append and report the same measurements.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from anobench.report import render_report, render_tables
from anobench.results import (
    BASE_COLUMNS,
    RESULT_COLUMNS,
    SETUP_COLUMNS,
    append_rows,
    hash_text,
    read_results,
)

# the layout main wrote before the device columns: base columns and thirteen setup columns
OLD_SETUP = SETUP_COLUMNS[:SETUP_COLUMNS.index("device")]
METRICS = ("image_auroc", "pixel_ap")


def _old_file(path, columns, cells, device="cpu", config_hash="1234e567890a"):
    """A results CSV as older anobench wrote it: the device as a metric row of value 1."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for generator, category in cells:
        base = {"dataset": "mvtec_ad", "category": category, "generator": generator, "detector": "unet",
                "seed": "0", "protocol": "thirds", "config_hash": config_hash, "version": "0.1.0",
                "n_test": "9", "steps": "3"}
        for i, metric in enumerate(METRICS):
            writer.writerow([{**base, "metric": metric, "value": str(0.5 + 0.1 * i)}.get(c, "") for c in columns])
        writer.writerow([{**base, "metric": f"device={device}", "value": "1.0"}.get(c, "") for c in columns])
    path.write_text(buffer.getvalue())
    return path


@pytest.mark.parametrize("columns", [BASE_COLUMNS, BASE_COLUMNS + OLD_SETUP], ids=["base", "thirteen-setup"])
def test_old_device_fact_rows_read_as_the_device_column(tmp_path, columns):
    path = _old_file(tmp_path / "results.csv", columns, [("draem", "disc"), ("crop_paste", "disc")])
    df = read_results(path)
    assert tuple(df.columns) == RESULT_COLUMNS
    assert sorted(df["metric"].unique()) == sorted(METRICS) and len(df) == 4  # no fact rows left
    assert set(df["device"]) == {"cpu"} and set(df["train_device"]) == {""}
    assert set(df["config_hash"]) == {"h1234e567890a"}  # the bare hex hash gains its prefix on read


def test_a_fact_row_names_the_device_of_its_own_cell_only(tmp_path):
    path = _old_file(tmp_path / "a.csv", BASE_COLUMNS, [("draem", "disc")], device="cuda:0 (H200)")
    _old_file(tmp_path / "b.csv", BASE_COLUMNS, [("draem", "weave")], device="cpu")
    df = read_results([path, tmp_path / "b.csv"])
    assert dict(zip(df["category"], df["device"])) == {"disc": "cuda:0 (H200)", "weave": "cpu"}


def test_appending_to_an_old_header_keeps_its_rows_and_moves_to_the_new_header(tmp_path):
    path = _old_file(tmp_path / "results.csv", BASE_COLUMNS + OLD_SETUP, [("draem", "disc")])
    new = {"dataset": "mvtec_ad", "category": "weave", "generator": "draem", "detector": "unet", "seed": 0,
           "protocol": "thirds", "metric": "image_auroc", "value": 0.75, "config_hash": "1234e567890a",
           "version": "0.1.0", "device": "cuda:0", "train_device": "cuda:1"}
    append_rows(path, [new])
    assert path.read_text().splitlines()[0] == ",".join(RESULT_COLUMNS)
    df = read_results(path)
    assert len(df) == 3 and not df["metric"].str.contains("=").any()
    assert dict(zip(df["category"] + df["metric"], df["device"])) == {
        "discimage_auroc": "cpu", "discpixel_ap": "cpu", "weaveimage_auroc": "cuda:0"}
    assert df.loc[df["category"] == "weave", "train_device"].item() == "cuda:1"
    assert df.loc[df["category"] == "disc", "steps"].tolist() == ["3", "3"]  # the old setup cells kept


def test_an_old_folder_store_part_reads_beside_a_new_one(tmp_path):
    store = tmp_path / "results.d"
    store.mkdir()
    _old_file(store / "part-00000000000000000001-h-1-a.csv", BASE_COLUMNS + OLD_SETUP, [("draem", "disc")])
    append_rows(store, [{"dataset": "mvtec_ad", "category": "weave", "generator": "draem", "detector": "unet",
                         "seed": 0, "protocol": "thirds", "metric": "pixel_ap", "value": 0.4,
                         "config_hash": "h1234e567890a", "version": "0.1.0", "device": "cpu"}])
    df = read_results(store)
    assert len(df) == 3 and set(df["device"]) == {"cpu"} and set(df["config_hash"]) == {"h1234e567890a"}


def test_old_and_new_rows_of_one_setup_share_one_key(tmp_path):
    """A re-evaluation written today replaces the old row in reports: the hash forms agree."""
    path = _old_file(tmp_path / "results.csv", BASE_COLUMNS, [("draem", "disc")])
    append_rows(path, [{"dataset": "mvtec_ad", "category": "disc", "generator": "draem", "detector": "unet",
                        "seed": 0, "protocol": "thirds", "metric": "image_auroc", "value": 0.95,
                        "config_hash": hash_text("1234e567890a"), "version": "0.1.0", "device": "cpu"}])
    tidy = pd.read_csv(io.StringIO(render_report(read_results(path), "csv")))
    assert len(tidy) == 2 and tidy.loc[tidy["metric"] == "image_auroc", "value"].item() == 0.95
    assert "#" not in "".join(render_tables(read_results(path), "markdown").splitlines()[:3])  # one setup


def test_hash_text_is_idempotent_and_never_numeric():
    for digest in ("1234e567890a", "123456789012", "000000000000", "1e5", "deadbeefcafe"):
        text = hash_text(digest)
        assert text == "h" + digest and hash_text(text) == text
        assert pd.read_csv(io.StringIO(f"h\n{text}\n"))["h"].tolist() == [text]
    assert hash_text("quoted") == "quoted" and hash_text("") == ""


def test_quality_table_shows_the_device_column(tmp_path):
    rows = [{"dataset": "mvtec_ad", "category": "disc", "generator": g, "detector": "-", "seed": 0,
             "protocol": "thirds", "metric": "fid", "value": v, "config_hash": "abc", "version": "0.1.0",
             "device": d} for g, v, d in (("draem", 40.0, "cuda:0"), ("crop_paste", 50.0, ""))]
    append_rows(tmp_path / "r.csv", rows)
    text = render_tables(read_results(tmp_path / "r.csv"), "markdown")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].endswith("| device |") and lines[-1].endswith("| cuda:0 |") and "| – |" in lines[-2]


# ------------------------------------------------------------------------------------ --format csv

def _natural(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with each column in its natural dtype: numbers numeric, flags bool, text (hashes too) text."""
    out = frame.replace({"": np.nan})
    for column in out.columns:
        if column in ("reference_anomalies", "leaky"):
            out[column] = out[column].map({"true": True, "false": False})
        elif column not in ("config_hash", "generator_config_hash"):
            numeric = pd.to_numeric(out[column], errors="coerce")
            if numeric.notna().sum() == out[column].notna().sum():
                out[column] = numeric
    return out


def _numeric_hash_rows():
    """Detection rows whose hashes look like numbers to a CSV reader (an exponent, all digits)."""
    rows = []
    for i, (digest, generator_digest) in enumerate((("1234e5678901", "123456789012"),
                                                     ("000000000e12", "9e99")), 1):
        for metric, value in (("image_auroc", 0.9), ("pixel_ap", 1 / 3)):
            rows.append({"dataset": "mvtec_ad", "category": "disc", "generator": f"g{i}", "detector": "unet",
                         "seed": 0, "protocol": "thirds", "metric": metric, "value": value / i,
                         "config_hash": digest, "version": "0.1.0", "generator_config_hash": generator_digest,
                         "n_generated": "8", "reference_anomalies": "true", "encoder": "resnet18",
                         "encoder_weights": "none", "profile": "quick", "steps": "3", "lr": "0.001",
                         "image_size": "64", "map_sigma": "0", "n_test": "9", "n_test_anomalous": "6",
                         "leaky": "false", "device": "cpu", "train_device": "cuda:0"})
    return rows


def test_report_csv_reads_back_with_plain_pandas_unchanged(tmp_path):
    from click.testing import CliRunner

    from anobench.cli import cli

    append_rows(tmp_path / "results.csv", _numeric_hash_rows())
    out = tmp_path / "tidy.csv"
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "results.csv"), "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = read_results(tmp_path / "results.csv")  # the frame anobench writes
    back = pd.read_csv(out)  # no dtype arguments
    pd.testing.assert_frame_equal(back, _natural(written))
    assert back["config_hash"][0] == "h1234e5678901" and back["generator_config_hash"][0] == "h123456789012"


def test_two_setups_told_apart_by_hash_show_the_digest_as_run_json_has_it():
    rows = [{"dataset": "mvtec_ad", "category": "disc", "generator": "draem", "detector": "unet", "seed": 0,
             "protocol": "thirds", "metric": "pixel_ap", "value": v, "config_hash": h, "version": "0.1.0"}
            for h, v in (("1234e5678901", 0.5), ("h abc", 0.6))]
    header = render_tables(pd.DataFrame(rows), "markdown").splitlines()[2]
    assert "DRAEM #1234e5" in header and "DRAEM #h abc" in header and "#h1234" not in header
