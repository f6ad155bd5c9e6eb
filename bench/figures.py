"""The report's figures (matplotlib, Agg backend), each saved as PNG and PDF.

- :func:`category_bars`: per category, one bar per generator with its 95% bootstrap interval.
- :func:`cd_diagram`: Demsar's (2006) critical-difference diagram: generators on the mean-rank
  axis, a bar of one critical difference, thick lines joining generators not significantly apart.
- :func:`sweep_curves`: metric against a swept value (samples, synthetic fraction, mixture weight),
  one line per generator and category, with interval bands.
- :func:`quality_scatter`: a generation-quality metric against a detection metric, one point per
  (generator, category), with the rank correlations in the title.
- :func:`cost_scatter`: a detection metric against a cost (seconds per sample, training minutes).
- :func:`loss_curves`: training loss and validation score from each run's ``loss.csv``/``val.csv``.

Every function returns the written paths; :func:`anobench.report_stats.write_figures` draws every figure the data allows.
Generators appear by the display names the tables use (``crop_paste`` as ``Crop&Paste``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anobench.report_tables import METRIC_LABELS

FORMATS = ("png", "pdf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{name}.{ext}"
        # PDFs carry a creation date by default: leave it out so the same data gives the same bytes
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    _pyplot().close(fig)
    return paths


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _name(label: str) -> str:
    """A generator label as the tables print it: every generator name in it by its display name."""
    from anobench.generators.base import available_generators, display_name
    from anobench.report import _display

    return _display(str(label), set(available_generators()), display_name)


def category_bars(analysis, metric: str, out_dir: Path, group=None) -> list[Path]:
    """Bars of ``metric`` per category and generator, with bootstrap intervals over test images."""
    plt = _pyplot()
    group = group or analysis.groups()[0]
    cells = [c for c in analysis.in_group(group) if metric in c.full]
    categories = sorted({c.category for c in cells})
    generators = sorted({c.generator for c in cells})
    width = 0.8 / max(1, len(generators))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(categories) * max(1, len(generators)) / 2 + 2), 3.2))
    for j, g in enumerate(generators):
        xs, means, lows, highs = [], [], [], []
        for i, cat in enumerate(categories):
            cell = next((c for c in cells if c.category == cat and c.generator == g), None)
            if cell is None:
                continue
            low, high = cell.interval(metric)
            xs.append(i + (j - (len(generators) - 1) / 2) * width)
            means.append(100 * cell.mean(metric))
            lows.append(100 * (cell.mean(metric) - low) if not math.isnan(low) else 0)
            highs.append(100 * (high - cell.mean(metric)) if not math.isnan(high) else 0)
        ax.bar(xs, means, width * 0.95, yerr=[lows, highs], capsize=3, label=_name(g))
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylabel(f"{_label(metric)} (%)")
    over = "test images and seeds" if analysis.resample_seeds and max(len(c.seeds) for c in cells) > 1 else "test images"
    ax.set_title(f"{_label(metric)} with 95% bootstrap intervals over {over}", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_dir, f"bars_{metric}")


def cd_diagram(ranks, out_dir: Path, name: str | None = None) -> list[Path]:
    """Critical-difference diagram of a :class:`anobench.statistics.RankAnalysis`."""
    plt = _pyplot()
    k = len(ranks.generators)
    ordered = sorted(ranks.generators, key=lambda g: ranks.mean_ranks[g])
    cliques = ranks.cliques()
    half = (k + 1) // 2
    top_label = -0.35 - 0.2 * len(cliques)  # clique bars sit between the axis and the labels
    lowest = top_label - 0.35 * (max(half, k - half) - 1)
    fig, ax = plt.subplots(figsize=(6, 1.4 + 0.25 * (top_label - lowest) / 0.35 + 0.2 * len(cliques)))
    ax.set_xlim(k + 0.3, 0.7)  # rank 1 (best) on the right, as Demsar draws it
    ax.set_ylim(lowest - 0.3, 1.9)
    ax.axis("off")
    ax.hlines(0, 1, k, color="k", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.12, color="k", lw=1)
        ax.text(r, 0.2, str(r), ha="center", va="bottom", fontsize=8)
    for i, g in enumerate(ordered):
        rank = ranks.mean_ranks[g]
        left = i >= half  # the worse half is labelled on the left
        y = top_label - 0.35 * ((k - 1 - i) if left else i)
        end = k + 0.15 if left else 0.85
        ax.plot([rank, rank, end], [0, y, y], color="k", lw=0.8)
        ax.text(end, y, f"({rank:.2f}) {_name(g)} " if left else f" {_name(g)} ({rank:.2f})",
                ha="right" if left else "left", va="center", fontsize=8)
    cd = ranks.critical_difference
    if not math.isnan(cd):
        ax.plot([1, 1 + cd], [1.15, 1.15], color="k", lw=1.5)
        ax.vlines([1, 1 + cd], 1.08, 1.22, color="k", lw=1)
        ax.text(1 + cd / 2, 1.3, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for n, clique in enumerate(cliques):
        lo, hi = min(ranks.mean_ranks[g] for g in clique), max(ranks.mean_ranks[g] for g in clique)
        ax.plot([lo - 0.04, hi + 0.04], [-0.2 - 0.2 * n] * 2, color="k", lw=2.5, solid_capstyle="butt")
    p = ranks.friedman_p
    title = f"{_label(ranks.metric)}: mean ranks over {len(ranks.categories)} categories"
    if not math.isnan(p):
        title += f" (Friedman p = {p:.3g})"
    ax.set_title(title, fontsize=9)
    return _save(fig, out_dir, name or f"cd_{ranks.metric}")


def sweep_curves(points, out_dir: Path, metric: str, axis: str) -> list[Path]:
    """Metric against swept value: ``points`` has generator, category, value, mean, low, high."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for (generator, category), part in points.groupby(["generator", "category"], sort=True):
        part = part.sort_values("value")
        x = part["value"].to_numpy(float)
        ax.plot(x, 100 * part["mean"], marker="o", label=f"{_name(generator)} / {category}")
        ax.fill_between(x, 100 * part["low"], 100 * part["high"], alpha=0.2)
    ax.set_xlabel(axis.replace("_", " "))
    ax.set_ylabel(f"{_label(metric)} (%)")
    ax.set_title(f"{_label(metric)} against {axis.replace('_', ' ')} (95% intervals)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, f"sweep_{axis}_{metric}")


def quality_scatter(rows, quality: str, detection: str, out_dir: Path, correlations=None) -> list[Path]:
    """One point per (generator, category): quality metric against detection metric."""
    plt = _pyplot()
    q = rows[(rows["detector"] == "-") & (rows["metric"] == quality)].groupby(["category", "generator"])["value"].mean()
    d = rows[(rows["detector"] != "-") & (rows["metric"] == detection)].groupby(["category", "generator"])["value"].mean()
    joined = q.to_frame("q").join(d.to_frame("d"), how="inner").dropna()
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for generator, part in joined.groupby(level="generator"):
        ax.scatter(part["q"], 100 * part["d"], label=_name(generator))
    ax.set_xlabel(quality)
    ax.set_ylabel(f"{_label(detection)} (%)")
    title = f"{quality} vs {_label(detection)}"
    if correlations is not None:
        match = correlations[(correlations["quality"] == quality) & (correlations["detection"] == detection)]
        if len(match) and not math.isnan(match.iloc[0]["spearman"]):
            r = match.iloc[0]
            title += f"\nSpearman {r['spearman']:.2f} [{r['spearman_low']:.2f}, {r['spearman_high']:.2f}]"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, f"quality_{quality}_vs_{detection}")


def cost_scatter(points, detection: str, cost: str, out_dir: Path) -> list[Path]:
    """``points``: generator, category, cost, mean (detection), low, high."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for generator, part in points.groupby("generator", sort=True):
        mean = 100 * part["mean"].to_numpy(float)
        err = [mean - 100 * part["low"].to_numpy(float), 100 * part["high"].to_numpy(float) - mean]
        ax.errorbar(part["cost"], mean, yerr=np.nan_to_num(err), fmt="o", capsize=3, label=_name(generator))
    ax.set_xlabel(cost.replace("_", " "))
    ax.set_ylabel(f"{_label(detection)} (%)")
    ax.set_xscale("log")
    ax.set_title(f"{_label(detection)} against {cost.replace('_', ' ')}", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, f"cost_{cost}_{detection}")


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    out = {}
    for key in rows[0]:
        try:
            out[key] = np.array([float(r[key]) for r in rows])
        except (TypeError, ValueError):
            continue
    return out


def loss_curves(run_dirs: Sequence[Path], out_dir: Path, labels: Sequence[str] | None = None) -> list[Path]:
    """Training loss (left) and validation selection score (right) of each run."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.0))
    drawn = 0
    for i, run in enumerate(run_dirs):
        run = Path(run)
        label = _name(labels[i] if labels else run.name)
        if (run / "loss.csv").is_file():
            loss = _read_csv(run / "loss.csv")
            if "step" in loss and "loss" in loss:
                left.plot(loss["step"], loss["loss"], lw=0.8, label=label)
                drawn += 1
        if (run / "val.csv").is_file():
            val = _read_csv(run / "val.csv")
            if "step" in val and "score" in val:
                right.plot(val["step"], val["score"], marker=".", lw=0.8, label=label)
    if not drawn:
        plt.close(fig)
        return []
    left.set_yscale("log")
    left.set(xlabel="step", ylabel="focal loss", title="training loss")
    right.set(xlabel="step", ylabel="selection score", title="validation (synthetic held-out)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=6, frameon=False, ncol=1 if len(run_dirs) < 8 else 2)
    return _save(fig, out_dir, "loss_curves")
