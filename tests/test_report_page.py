"""Reports of a real grid (issue 15): the HTML page in a headless browser, tidy CSV, standalone LaTeX.

Marked slow (``pytest -m slow``; .ci/run runs it). The page is made by ``anobench report`` from a tiny real grid (demo data, two generators, two
categories, a few training steps) and opened in Debian's ``chromium`` (installed by .ci/run);
without a browser the browser checks skip with the reason.
"""

from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anobench.cli import cli
from anobench.report_page import _badness, outline_outside
from anobench.report_tables import QUALITY_STYLE
from anobench.results import append_rows

CATEGORIES = ("disc", "weave")
GENERATORS = ("crop_paste", "draem")
IMAGES = 4  # per category: 2 false alarms, 2 misses
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    from anobench.runner import parse_run_config, run_grid

    out = tmp_path_factory.mktemp("grid")
    config = parse_run_config({
        "out": str(out), "dataset": "mvtec_ad", "data_root": str(out / "demo"), "demo_data": {"size": 64, "train": 8},
        "categories": list(CATEGORIES), "generators": [{"name": g, "num": 8} for g in GENERATORS],
        "train": {"encoder_weights": "none", "set": {"image_size": 64, "steps": 3, "batch_size": 4, "val_every": 3,
                                                      "checkpoint_every": 3, "max_val_samples": 4, "val_normals": 2}},
        "evaluate": {"heatmaps": 2},
    }, out)
    run_grid(config, progress=False, echo=lambda *a, **k: None)
    return out


@pytest.fixture(scope="module")
def page(grid) -> Path:
    out = grid
    quality = [dict(dataset="mvtec_ad", category="disc", generator=g, detector="-", seed=0, protocol="thirds",
                    metric=m, value=0.5 + i, config_hash="ab12cd34ef56", version="0.1.0")
               for i, g in enumerate(GENERATORS) for m in QUALITY_STYLE]
    append_rows(out / "quality" / "results.csv", quality)
    figure = np.zeros((40, 120, 3), np.uint8)
    figure[:, :60] = (200, 30, 30)
    (out / "figures").mkdir(exist_ok=True)
    Image.fromarray(figure).save(out / "figures" / "critical_difference.png")
    report = out / "report.html"
    result = CliRunner().invoke(cli, ["report", str(out / "runs"), str(out / "quality"), "--format", "html",
                                      "--images", str(IMAGES),
                                      "--generated", str(out / "generated"), "--out", str(report)])
    assert result.exit_code == 0, result.output
    return report


class Outline(html.parser.HTMLParser):
    """The parts of the page the test checks: sections, case grids, figures with captions."""

    def __init__(self):
        super().__init__()
        self.sections: list[dict] = []
        self.imgs: list[dict] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.h3 = None
        self.in_caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "category" in (attrs.get("class") or ""):
            self.sections.append({"id": attrs.get("id"), "h3": [], "alts": [], "captions": [], "colorbar": False})
        if tag == "img":
            self.imgs.append(attrs)
            if self.sections and self.stack and "category" in self.stack[0]:
                pass
        if self.sections and tag == "img" and "colour bar" in (attrs.get("alt") or ""):
            self.sections[-1]["colorbar"] = True
        elif self.sections and tag == "img" and self._in_category():
            self.sections[-1]["alts"].append(attrs.get("alt") or "")
        if tag == "figcaption":
            self.in_caption, self.text = True, []
        if tag == "h3":
            self.h3, self.text = True, []
        self.stack.append(tag + ("." + attrs.get("class", "") if attrs.get("class") else ""))

    def _in_category(self):
        return any(s.startswith("section.category") for s in self.stack)

    def handle_endtag(self, tag):
        if tag == "figcaption" and self.in_caption:
            self.in_caption = False
            if self.sections and self._in_category():
                self.sections[-1]["captions"].append(" ".join("".join(self.text).split()))
        if tag == "h3" and self.h3:
            self.h3 = None
            if self.sections and self._in_category():
                self.sections[-1]["h3"].append("".join(self.text).strip())
        while self.stack:
            if self.stack.pop().split(".")[0] == tag:
                break

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Outline:
    outline = Outline()
    outline.feed(text)
    return outline


@pytest.mark.slow  # a real grid, then bootstrap and a browser: ~1 min on 2 idle cores
def test_page_structure(page):
    text = page.read_text()
    outline = parse(text)
    assert [s["id"] for s in outline.sections] == [f"category-{c}" for c in CATEGORIES]
    assert all(img.get("alt") for img in outline.imgs)  # every image is labelled
    assert "Verdict:" in text and "ranked by pixel AP" in text and "(zero-shot)" in text
    assert "real reference defects" in text and "generation s/sample" in text and "test images" in text
    assert 'id="figures"' in text and "critical difference" in text  # the statistics figures are embedded
    for section in outline.sections:
        assert section["colorbar"]
        assert section["h3"] == ["Normal images scored highest (false alarms first)",
                                 "Anomalies scored lowest (misses first)"]
        # rows of [test image, crop_paste, draem]: every generator on the SAME test image
        alts = section["alts"]
        assert len(alts) == IMAGES * (1 + len(GENERATORS))
        for start in range(0, len(alts), 1 + len(GENERATORS)):
            name = alts[start].split()[2].rstrip(",")
            assert all(f" of {name}," in alt for alt in alts[start + 1:start + 1 + len(GENERATORS)])
        captions = [c for c in section["captions"] if "score" in c]
        assert len(captions) == IMAGES * len(GENERATORS)
        assert all(("normal" in c) != ("anomalous (" in c) for c in captions)  # label, and defect type
        assert sum("anomalous (" in c for c in captions) == IMAGES // 2 * len(GENERATORS)


@pytest.mark.slow  # a real grid, then bootstrap and a browser: ~1 min on 2 idle cores
def test_worst_cases_come_first(page):
    """The first normal shown is the one the detectors scored highest, by mean rank."""
    import csv

    runs = page.parent / "runs"
    section = parse(page.read_text()).sections[0]
    first_normal = section["alts"][0].split()[2].rstrip(",")
    badness = []
    for g in GENERATORS:
        with open(runs / g / CATEGORIES[0] / "seed0" / "scores-thirds.csv") as handle:
            badness.append(_badness(list(csv.DictReader(handle))))
    normals = [n for n in badness[0] if n.startswith("test/good/")]
    worst = max(normals, key=lambda n: (np.mean([b[n] for b in badness]), -normals.index(n)))
    assert np.isclose(np.mean([b[first_normal] for b in badness]), np.mean([b[worst] for b in badness]))


def test_outline_never_covers_the_defect():
    image = np.full((32, 32, 3), 90, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[10:22, 15] = True  # a 1-px scratch
    drawn = outline_outside(image, mask)
    changed = (drawn != image).any(axis=-1)
    assert changed.any() and not (changed & mask).any()
    assert changed.sum() >= 2 * 12  # both sides of the scratch


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("no headless browser: apt-get install chromium (.ci/run installs it)")
    return found


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a real grid, then bootstrap and a browser: ~1 min on 2 idle cores
def test_browser_renders_the_page_and_it_fits(page, tmp_path):
    probe = tmp_path / "probe.html"  # the page plus a line of script that reports its width
    probe.write_text(page.read_text().replace(
        "</body>", "<script>document.title='width='+document.documentElement.scrollWidth;</script></body>"))
    done = _browser(tmp_path, "--window-size=1400,1000", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = parse(done.stdout)
    assert [s["id"] for s in dom.sections] == [f"category-{c}" for c in CATEGORIES]
    assert len(dom.sections[0]["alts"]) == IMAGES * (1 + len(GENERATORS))
    width = int(done.stdout.split("<title>width=")[1].split("<")[0])
    assert width <= 1400  # the wide quality table scrolls inside its box, the page does not


@pytest.mark.slow  # a real grid, then bootstrap and a browser: ~1 min on 2 idle cores
def test_browser_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "shot.png"
    done = _browser(tmp_path, "--window-size=1400,2600", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert pixels.shape[:2] == (2600, 1400)
    not_white = (pixels < 235).any(axis=-1).mean()
    assert not_white > 0.05 and pixels.std() > 20  # text, tables and heat maps, not an empty page
    shutil.copy(shot, page.parent / "screenshot.png")
    # the category sections alone (tables and figures hidden): heat-map colours reach the screen
    probe = tmp_path / "sections.html"
    probe.write_text(page.read_text().replace("</head>", "<style>#tables,#figures{display:none}</style></head>"))
    section = tmp_path / "section.png"
    done = _browser(tmp_path, "--window-size=1400,1200", f"--screenshot={section}", probe.as_uri())
    assert done.returncode == 0 and section.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(section).convert("RGB")).astype(float)
    colourful = (pixels.max(axis=-1) - pixels.min(axis=-1) > 80).mean()
    assert colourful > 0.02
    shutil.copy(section, page.parent / "screenshot-section.png")


# ------------------------------------------------------------------------------------ CSV and LaTeX

@pytest.mark.slow  # a real grid, then bootstrap and a browser: ~1 min on 2 idle cores
def test_csv_is_the_tidy_rows_pandas_reads_back_unchanged(grid, tmp_path):
    import pandas as pd

    from anobench.results import read_results

    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(cli, ["report", str(grid / "runs"), "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    stored = read_results(grid / "runs").reset_index(drop=True)
    assert len(stored) == len(CATEGORIES) * len(GENERATORS) * 7  # seven detection metrics per cell
    pd.testing.assert_frame_equal(read_results(out), stored)  # anobench's reader: exactly the stored rows
    back = pd.read_csv(out)  # plain pandas: one table, every column in its natural dtype, hashes as text
    from test_result_rows_form import _natural

    pd.testing.assert_frame_equal(back, _natural(stored))
    assert back["config_hash"].str.startswith("h").all()
    assert set(back["metric"]) >= {"pixel_ap", "aupro", "image_ap", "pixel_f1max"}


@pytest.mark.slow  # a real grid, then bootstrap and a browser: ~1 min on 2 idle cores
def test_latex_standalone_compiles_alone_with_labels_and_display_names(grid, tmp_path):
    out = tmp_path / "report.tex"
    result = CliRunner().invoke(cli, ["report", str(grid / "runs"), "--format", "latex", "--standalone",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("\\documentclass") and text.rstrip().endswith("\\end{document}")
    assert text.count("\\label{tab:anobench-") == text.count("\\begin{table}") >= 3
    assert "Crop\\&Paste" in text and "DRAEM (zero-shot)" in text and "crop\\_paste" not in text
    assert "anobench demo data (MVTec AD layout)" in text and "mvtec\\_ad" not in text
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", out.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1000
