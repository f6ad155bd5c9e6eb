"""Labels a reader trusts: captions give each category's own test-set size, figures the tables' names."""

from __future__ import annotations

import pandas as pd
import pytest

from anobench.report import render_report


def _rows(sizes: dict[str, tuple[int, int]]):
    rows = []
    for category, (n_test, n_anomalous) in sizes.items():
        for generator, value in (("draem", 0.9), ("crop_paste", 0.8)):
            rows.append({"dataset": "mvtec_ad", "category": category, "generator": generator, "detector": "unet",
                         "seed": 0, "protocol": "thirds", "metric": "pixel_ap", "value": value,
                         "config_hash": "abc", "version": "0.1.0", "n_test": str(n_test),
                         "n_test_anomalous": str(n_anomalous)})
    return pd.DataFrame(rows)


def _caption(df) -> str:
    text = render_report(df, "markdown", layout="per-metric")
    return next(line for line in text.splitlines() if "pixel AP" in line and line.startswith("**"))


@pytest.mark.parametrize("sizes, expected", [
    ({"bottle": (22, 12)}, "22 test images (12 anomalous)"),
    ({"bottle": (22, 12), "cable": (22, 12)}, "22 test images (12 anomalous) per category"),
    ({"bottle": (22, 12), "cable": (30, 18), "screw": (25, 15)}, "22–30 test images (12–18 anomalous) per category"),
])
def test_caption_gives_per_category_test_set_sizes_never_a_sum(sizes, expected):
    caption = _caption(_rows(sizes))
    assert expected in caption
    total = sum(n for n, _ in sizes.values())
    if len(sizes) > 1:
        assert f"{total} test images" not in caption  # the table's rows do not rest on the sum


def _drawn(monkeypatch):
    """The figures a call draws, instead of saving them."""
    from anobench import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, name: drawn.append(fig) or [])
    return drawn


def _texts(fig) -> list[str]:
    texts = []
    for ax in fig.axes:
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend is not None else []
        texts += [t.get_text().strip() for t in ax.texts]
    return texts


def test_figures_name_generators_as_the_tables_do(monkeypatch, tmp_path):
    from anobench import figures
    from anobench.statistics import analyse, verdict
    from test_statistics import _grid

    analysis = analyse(_grid({"crop_paste": 3.0, "draem": 1.0, "weak": 0.3}), n_resamples=50)
    drawn = _drawn(monkeypatch)
    figures.category_bars(analysis, "pixel_ap", tmp_path)
    figures.cd_diagram(verdict(analysis, "pixel_ap").ranks, tmp_path)
    points = pd.DataFrame({"generator": ["crop_paste"] * 2, "category": ["c1"] * 2, "value": [10, 20],
                           "mean": [0.5, 0.6], "low": [0.4, 0.5], "high": [0.6, 0.7]})
    figures.sweep_curves(points, tmp_path, "pixel_ap", "num")
    figures.cost_scatter(points.assign(cost=[0.1, 0.2]), "pixel_ap", "seconds_per_sample", tmp_path)
    bars, cd, sweep, cost = (_texts(fig) for fig in drawn)
    assert bars == ["Crop&Paste", "DRAEM", "weak"]
    assert any(t.endswith("Crop&Paste (1.00)") for t in cd) and not any("crop_paste" in t for t in cd)
    assert sweep == ["Crop&Paste / c1"] and cost == ["Crop&Paste"]
