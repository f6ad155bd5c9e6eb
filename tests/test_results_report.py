"""Results store (append/read, bad files) and reports (tables, formats, HTML images, CLI)."""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from anobench.cli import cli
from anobench.errors import AnobenchError
from anobench.report import build_tables, gallery, render_report, render_tables
from anobench.results import RESULT_COLUMNS, append_rows, read_results


HEADER = ",".join(RESULT_COLUMNS) + "\n"


def row(category="bottle", generator="draem", metric="image_auroc", value=0.9, seed=0, detector="unet", **kw):
    base = dict(dataset="mvtec_ad", category=category, generator=generator, detector=detector, seed=seed,
                protocol="thirds", metric=metric, value=value, config_hash="1234e5", version="0.1.0")
    base.update(kw)
    return base


def paper_rows():
    """Two categories x two generators, image/pixel AUROC and pixel AP, seed 0."""
    values = {
        ("bottle", "draem"): (0.993, 0.967, 0.50), ("bottle", "crop_paste"): (0.998, 0.994, 0.60),
        ("cable", "draem"): (0.721, 0.803, 0.30), ("cable", "crop_paste"): (0.959, 0.972, 0.20),
    }
    rows = []
    for (category, generator), (image, pixel, ap) in values.items():
        rows += [row(category, generator, "image_auroc", image), row(category, generator, "pixel_auroc", pixel),
                 row(category, generator, "pixel_ap", ap)]
    return rows


# ------------------------------------------------------------------------------------ results store

def test_append_and_read_round_trip(tmp_path):
    path = tmp_path / "run" / "results.csv"
    append_rows(path, [row(value=0.5), row(seed=1, value=float("nan"))])
    append_rows(path, pd.DataFrame([row(metric="pixel_ap", value=1 / 3)]))
    text = path.read_text()
    assert text.count("dataset,category") == 1  # one header
    df = read_results(path)
    assert tuple(df.columns) == RESULT_COLUMNS and len(df) == 3
    assert df["seed"].dtype == "int64" and df["value"].dtype == "float64"
    assert df["config_hash"].tolist() == ["h1234e5"] * 3  # text stays text, not 1.234e8, and says it is a hash
    assert np.isnan(df["value"][1]) and df["value"][2] == 1 / 3  # full float precision


def test_read_results_searches_run_folders(tmp_path):
    append_rows(tmp_path / "a" / "results.csv", [row()])
    append_rows(tmp_path / "b" / "deep" / "results.csv", [row(generator="crop_paste")])
    assert sorted(read_results(tmp_path)["generator"]) == ["crop_paste", "draem"]
    assert len(read_results([tmp_path / "a", tmp_path / "b" / "deep" / "results.csv"])) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnobenchError, match="no results.csv"):
        read_results(tmp_path / "empty")


def test_unknown_and_missing_columns_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{**row(), "loss": 1.0}]).drop(columns=["version"]).to_csv(bad, index=False)
    with pytest.raises(AnobenchError) as info:
        read_results(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message
    assert "unknown columns loss" in message and "missing columns version" in message


@pytest.mark.parametrize("content,match", [
    ("", "empty file"),
    (HEADER + "mvtec_ad,bottle,draem,unet,0,thirds,image_auroc,high,h,0.1\n", "line 2: value 'high'"),
    (HEADER + "mvtec_ad,bottle,draem,unet,x,thirds,image_auroc,0.5,h,0.1\n", "seed 'x'"),
])
def test_bad_cells_name_file_and_line(tmp_path, content, match):
    path = tmp_path / "results.csv"
    path.write_text(content)
    with pytest.raises(AnobenchError, match=match):
        read_results(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(AnobenchError, match="not found"):
        read_results(tmp_path / "nope.csv")


def test_append_refuses_a_foreign_file_and_leaves_it_alone(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(AnobenchError, match="unknown columns a, b"):
        append_rows(path, [row()])
    assert path.read_text() == "a,b\n1,2\n"


def test_append_refuses_rows_with_other_keys(tmp_path):
    with pytest.raises(AnobenchError, match="unknown columns \\['loss'\\]"):
        append_rows(tmp_path / "r.csv", [{**row(), "loss": 1}])
    with pytest.raises(AnobenchError, match="seed"):
        append_rows(tmp_path / "r.csv", [row(seed=1.5)])
    assert not (tmp_path / "r.csv").exists()


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "results.csv"
    append_rows(path, [row()])
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up in the middle of the append
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(AnobenchError, match="results.csv: no space left"):
        append_rows(path, [row(seed=3)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _append_many(path, worker):
    for i in range(15):
        append_rows(path, [row(seed=worker * 100 + i)])


def test_concurrent_appends_lose_no_rows(tmp_path):
    path = tmp_path / "results.csv"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(read_results(path)["seed"]) == sorted(w * 100 + i for w in range(4) for i in range(15))


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(AnobenchError, match="pyarrow"):
        append_rows(tmp_path / "results.parquet", [row()])


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "results.parquet"
    append_rows(path, [row()])
    append_rows(path, [row(seed=1, value=0.25)])
    df = read_results(path)
    assert len(df) == 2 and df["value"].tolist() == [0.9, 0.25]


# ------------------------------------------------------------------------------------ report tables

def markdown_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_table2_layout_like_the_paper():
    text = render_report(pd.DataFrame(paper_rows()), "markdown", layout="table2")
    assert "(image AUROC, pixel AUROC)" in text
    rows = markdown_rows(text)
    assert rows[0] == ["Category", "Crop&Paste", "DRAEM"]  # generators as columns, by display name
    assert rows[1] == ["bottle", "(**99.8**, **99.4**)", "(99.3, 96.7)"]
    assert rows[2] == ["cable", "(**95.9**, **97.2**)", "(72.1, 80.3)"]
    assert rows[3] == ["Mean", "(**97.8**, **98.3**)", "(85.7, 88.5)"]  # (99.8+95.9)/2 = 97.85 -> 97.8


def test_table4_layout_and_per_metric_default():
    df = pd.DataFrame(paper_rows())
    rows = markdown_rows(render_report(df, "markdown", layout="table4"))
    assert rows[1] == ["bottle", "(**99.4**, **60.0**)", "(96.7, 50.0)"]
    assert rows[2] == ["cable", "(**97.2**, 20.0)", "(80.3, **30.0**)"]  # best per metric, per row
    paper = render_report(df, "markdown", layout="paper")
    assert "(image AUROC, pixel AUROC)" in paper and "(pixel AUROC, pixel AP)" in paper
    # the default: one table per stored metric, the best generator of each category in bold
    default = render_report(df, "markdown")
    for label in ("image AUROC in %", "pixel AUROC in %", "pixel AP in %"):
        assert f"MVTec AD: {label}" in default
    rows = markdown_rows(default)
    assert sum(r[0] == "cable" for r in rows) == 3
    assert all(sum("**" in c for c in r[1:]) == 1 for r in rows if r[0] in ("bottle", "cable"))  # one winner per category


def test_mean_and_std_over_seeds():
    rows = [row(value=0.90, seed=0), row(value=0.94, seed=1), row(generator="b", value=0.5, seed=0)]
    text = render_report(pd.DataFrame(rows), "markdown", metrics=["image_auroc"])
    table = markdown_rows(text)
    assert table[1] == ["bottle", "50.0", "**92.0 ± 2.8**"]  # std with ddof=1: 0.0283
    assert "std over 1-2 seeds" in text


def test_re_evaluated_rows_keep_the_last_value_and_missing_cells_show_a_dash():
    rows = [row(value=0.1), row(value=0.8), row("cable", "crop_paste", value=0.7)]
    table = markdown_rows(render_report(pd.DataFrame(rows), "markdown", layout="per-metric"))
    assert table[1] == ["bottle", "–", "80.0"]
    assert table[2] == ["cable", "70.0", "–"]


def test_pair_and_per_metric_layouts():
    df = pd.DataFrame(paper_rows())
    pair = render_report(df, "markdown", metrics=["pixel_ap", "image_auroc"], layout="pair")
    assert "(pixel AP, image AUROC)" in pair
    tables = build_tables(df, metrics=["pixel_ap", "image_auroc"])
    assert [t.parts for t in tables] == [["pixel AP"], ["image AUROC"]]


@pytest.mark.parametrize("kwargs,match", [
    (dict(fmt="pdf"), "unknown report format 'pdf'"),
    (dict(layout="wide"), "unknown layout 'wide'"),
    (dict(layout="pair", metrics=["image_auroc"]), "exactly two"),
    (dict(metrics=["nope"]), "no results for nope"),
    (dict(layout="table2", metrics=["pixel_ap"]), "fixes its metrics"),
])
def test_bad_report_options(kwargs, match):
    args = dict(fmt="markdown")
    args.update(kwargs)
    with pytest.raises(AnobenchError, match=match):
        render_report(pd.DataFrame(paper_rows()), args.pop("fmt"), **args)


def test_generation_quality_rows_form_their_own_table():
    rows = [row(generator="draem", detector="-", metric="fid", value=40.0, device="cpu"),
            row(generator="crop_paste", detector="-", metric="fid", value=55.0),
            row(generator="draem", detector="-", metric="ic_lpips_dualanodiff", value=0.2, device="cpu"),
            row(generator="crop_paste", detector="-", metric="ic_lpips_dualanodiff", value=0.3)]
    text = render_tables(pd.DataFrame(rows + paper_rows()), "markdown")
    quality = text[text.index("generation quality"):]
    table = markdown_rows(quality)
    assert table[0] == ["Generator", "IC-LPIPS (DualAnoDiff) ↑", "FID ↓", "device"]  # metrics as columns
    assert table[1] == ["Crop&Paste", "**0.300**", "55.0", "–"]
    assert table[2] == ["DRAEM", "0.200", "**40.0**", "cpu"]  # lower FID is better


def test_latex_is_booktabs_with_escaped_names():
    text = render_report(pd.DataFrame(paper_rows()), "latex", layout="table2")
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{lcc}", "Crop\\&Paste",
                  "(\\textbf{99.8}, \\textbf{99.4})"):
        assert token in text
    seeds = render_report(pd.DataFrame([row(seed=0), row(seed=1, value=0.8)]), "latex", metrics=["image_auroc"])
    assert "85.0 $\\pm$ 7.1" in seeds and "±" not in seeds


def test_latex_compiles_with_pdflatex(tmp_path):
    if shutil.which("pdflatex") is None or shutil.which("kpsewhich") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    if not subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True).stdout.strip():
        pytest.skip("booktabs.sty not installed (texlive-latex-recommended)")
    rows = paper_rows() + [row("metal_nut", "draem", seed=1, value=0.5), row("metal_nut", "draem", seed=2),
                           row(generator="x_y", detector="-", metric="fid", value=3.0)]
    body = render_report(pd.DataFrame(rows), "latex")
    (tmp_path / "t.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                    + body + "\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_csv_single_table_reads_back_with_pandas():
    text = render_tables(pd.DataFrame(paper_rows()), "csv", layout="table2")
    df = pd.read_csv(io.StringIO(text))
    assert list(df.columns) == ["Category", "Crop&Paste image AUROC", "Crop&Paste pixel AUROC",
                                "DRAEM image AUROC", "DRAEM pixel AUROC"]
    assert df.iloc[0].tolist() == ["bottle", 99.8, 99.4, 99.3, 96.7]
    assert df.iloc[-1]["Category"] == "Mean"
    several = render_tables(pd.DataFrame(paper_rows()), "csv", layout="paper")
    assert several.count("\n\n") == 1 and "(pixel AUROC, pixel AP)" in several


def make_generated_set(folder, generator="draem", n=3):
    from anobench.store import DatasetWriter

    writer = DatasetWriter(folder, {"generator": generator, "category": "bottle", "seed": 0})
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((32, 32), bool)
        mask[8:16, 8 + i:20] = True
        writer.add(i, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), mask, {"defect_type": "x"})


def decode_images(page: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in re.findall(r"base64,([^\"]+)", page)]


def test_html_page_embeds_samples_with_outlines_and_heatmaps(tmp_path):
    make_generated_set(tmp_path / "gen" / "draem" / "bottle")
    run = tmp_path / "run"
    append_rows(run / "results.csv", paper_rows())
    (run / "heatmaps").mkdir()
    heat = np.zeros((16, 48, 3), np.uint8)
    heat[:, 16:32, 0] = 200
    Image.fromarray(heat).save(run / "heatmaps" / "000.png")
    samples, heatmaps = gallery([run], [tmp_path / "gen"], limit=2)
    assert list(samples) == ["draem"] and len(samples["draem"]) == 2
    assert sorted(heatmaps) == ["crop_paste", "draem"]
    page = render_report(read_results(run), "html", layout="paper", samples=samples, heatmaps=heatmaps)
    assert page.startswith("<!DOCTYPE html>") and page.count("<table>") == 2 and "<b>99.8</b>" in page
    images = decode_images(page)
    assert len(images) == 2 + 2  # two samples for draem, the heat map once per generator
    tiles = [im for im in images if im.shape == (160, 160, 3)]
    assert len(tiles) == 2
    red = (tiles[0][..., 0] == 255) & (tiles[0][..., 1] == 0) & (tiles[0][..., 2] == 0)
    assert red.sum() > 20  # the mask outline is drawn
    assert any(im.shape == heat.shape and (im == heat).all() for im in images)


# ------------------------------------------------------------------------------------ CLI

def test_cli_report_formats_and_out(tmp_path):
    append_rows(tmp_path / "run" / "results.csv", paper_rows())
    runner = CliRunner()
    done = runner.invoke(cli, ["report", str(tmp_path / "run"), "--format", "markdown", "--layout", "table2"])
    assert done.exit_code == 0, done.output
    assert "| bottle | (**99.8**, **99.4**) | (99.3, 96.7) |" in done.output
    out = tmp_path / "t.tex"
    done = runner.invoke(cli, ["report", str(tmp_path / "run" / "results.csv"), "--format", "latex",
                               "--metrics", "image_auroc,pixel_ap", "--layout", "pair", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "(image AUROC, pixel AP)" in out.read_text()


@pytest.mark.parametrize("case", ["format", "columns", "missing", "metric"])
def test_cli_report_bad_input_is_one_line(tmp_path, case):
    good = tmp_path / "results.csv"
    append_rows(good, paper_rows())
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,category,score\nx,y,1\n")
    args = {
        "format": [str(good), "--format", "docx"],
        "columns": [str(bad)],
        "missing": [str(tmp_path / "nothing.csv")],
        "metric": [str(good), "--metrics", "accuracy"],
    }[case]
    done = CliRunner().invoke(cli, ["report", *args])
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.output
    if case == "columns":
        assert str(bad) in lines[0] and "unknown columns score" in lines[0]


# ------------------------------------------------------------------------------------ setups and leaks

def test_two_setups_of_one_generator_are_separate_labelled_columns_in_any_order():
    a = [row(value=0.6, config_hash="aaaaaa111111", n_generated="60", steps="25"),
         row("cable", value=0.5, config_hash="aaaaaa111111", n_generated="60", steps="25")]
    b = [row(value=0.9, config_hash="bbbbbb222222", n_generated="100", steps="30"),
         row("cable", value=0.8, config_hash="bbbbbb222222", n_generated="100", steps="30")]
    for rows in (a + b, b + a):
        table = markdown_rows(render_report(pd.DataFrame(rows), "markdown", layout="per-metric"))
        header = table[0]
        assert "DRAEM (n_generated=100, steps=30)" in header and "DRAEM (n_generated=60, steps=25)" in header
        column = {name: i for i, name in enumerate(header)}
        bottle = dict(zip(header, table[1]))
        assert bottle["DRAEM (n_generated=60, steps=25)"] == "60.0"
        assert "90.0" in bottle["DRAEM (n_generated=100, steps=30)"] and len(column) == 3


def test_leaky_cells_are_marked_in_every_format_and_captions_carry_the_setup():
    rows = [row(value=0.9, leaky="true", profile="quick", n_test="9", n_test_anomalous="6"),
            row(generator="crop_paste", value=0.8, leaky="false", profile="quick", n_test="9", n_test_anomalous="6")]
    df = pd.DataFrame(rows)
    md = render_report(df, "markdown", layout="per-metric")
    cells = dict(zip(markdown_rows(md)[0], markdown_rows(md)[1]))
    assert cells["DRAEM †"] == "**90.0**†" and cells["Crop&Paste"] == "80.0" and "† leaky" in md
    assert "detector unet" in md and "profile quick" in md and "9 test images (6 anomalous)" in md
    assert "$^\\dagger$" in render_report(df, "latex", layout="per-metric")
    assert "DRAEM †" in render_tables(df, "csv", layout="per-metric").splitlines()[0]
    assert "leaky" in render_report(df, "csv").splitlines()[0]  # the tidy rows keep the flag as a column
    assert "†" in render_report(df, "html", layout="per-metric")
