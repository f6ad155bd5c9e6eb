"""The statistics part of a report: verdict, interval tables, paired tests, ranks, sweeps, figures.

Computed from stored evaluations only (``maps-*.npz`` beside each results file, tidy rows
otherwise); see :mod:`anobench.statistics`. The tables are :class:`anobench.report_tables.Table`
objects, so every report format writes them; the figures (:mod:`anobench.figures`) go to a
folder beside the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anobench.bootstrap import DEFAULT_RESAMPLES
from anobench.metrics.detection import DETECTION_METRICS
from anobench.report_tables import METRIC_LABELS, Cell, Row, Table
from anobench.statistics import (
    Analysis, Verdict, compare_cells, load_analysis, quality_vs_detection, rank_analysis, category_table, verdict,
)

DEFAULT_PRIMARY = "image_auroc"
SWEEP_AXES = ("num", "synthetic_fraction", "mix_weight")


@dataclass
class StatsReport:
    verdicts: list[Verdict]
    tables: list[Table]
    figures: list[Path] = field(default_factory=list)
    analysis: Analysis | None = None
    correlations: object = None  # DataFrame or None

    def lead(self) -> str:
        """The opening lines: one verdict per (dataset, protocol, detector)."""
        return "\n".join(v.text() for v in self.verdicts)


def build_statistics(results: Sequence, rows, primary: str | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0, figures_dir: Path | None = None) -> StatsReport:
    """Verdicts, interval/test/rank tables and (with ``figures_dir``) figures for a report."""
    primary = primary or DEFAULT_PRIMARY
    analysis = load_analysis(results, n_resamples, seed)
    verdicts, tables = [], []
    detection = rows[rows["detector"] != "-"]
    if analysis is not None and analysis.cells:
        for group in analysis.groups():
            metrics = [m for m in DETECTION_METRICS if any(m in c.full for c in analysis.in_group(group))]
            if primary in metrics:
                verdicts.append(verdict(analysis, primary, group))
            tables.append(interval_table(analysis, group, metrics))
            tables.extend(paired_tables(analysis, group, primary))
    elif len(detection) and primary in set(detection["metric"]):
        verdicts.append(verdict(rows, primary))
    for v in verdicts:
        if v.ranks is not None and len(v.ranks.categories) >= 2:
            tables.append(rank_table(analysis, rows, v.group))
    correlations = None
    quality = rows[rows["detector"] == "-"]
    if len(quality) and len(detection):
        correlations = quality_vs_detection(rows, n_resamples=n_resamples, seed=seed)
        correlations = correlations[correlations["n"] >= 3] if len(correlations) else correlations
        if len(correlations):
            tables.append(correlation_table(correlations))
    report = StatsReport(verdicts, tables, [], analysis, correlations)
    if figures_dir is not None:
        report.figures = write_figures(figures_dir, report, rows, results, primary)
    return report


# --------------------------------------------------------------------------- tables

def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _interval_text(mean: float, low: float, high: float) -> str:
    if math.isnan(low):
        return _pct(mean)
    return f"{_pct(mean)} [{_pct(low)}, {_pct(high)}]"


def interval_table(analysis: Analysis, group, metrics: list[str]) -> Table:
    """Rows (category, generator), columns metrics: ``mean [low, high]`` (bootstrap over images)."""
    rows = []
    cells = sorted(analysis.in_group(group), key=lambda c: (c.category, c.generator))
    for cell in cells:
        texts = []
        for m in metrics:
            if m not in cell.full:
                texts.append(Cell(text="–"))
                continue
            low, high = cell.interval(m)
            texts.append(Cell(text=_interval_text(cell.mean(m), low, high)))
        rows.append(Row([cell.category, cell.generator], texts))
    seeds = sorted({len(c.seeds) for c in cells})
    over = "the test images and the seeds" if analysis.resample_seeds and max(seeds) > 1 else "the test images"
    notes = [f"95% stratified bootstrap intervals over {over} ({analysis.n_resamples} resamples, "
             f"seed {analysis.seed}); each value is the mean over {'/'.join(map(str, seeds))} seed(s)."]
    seed_notes = []
    for cell in cells:
        if len(cell.seeds) > 1 and DEFAULT_PRIMARY in cell.full:
            s = cell.over_seeds(DEFAULT_PRIMARY)
            seed_notes.append(f"{cell.category}/{cell.generator} {_pct(s.mean)} ± {_pct(s.std)} "
                              f"(t interval {_pct(s.low)} to {_pct(s.high)})")
    if seed_notes:
        notes.append(f"Over seeds, {METRIC_LABELS[DEFAULT_PRIMARY]} mean ± std: " + "; ".join(seed_notes) + ".")
    title = f"{group[0]}: detection metrics in % with 95% intervals, detector {group[2]}, protocol {group[1]}"
    return Table(title, ["Category", "Generator"], [METRIC_LABELS.get(m, m) for m in metrics], [""], rows, notes)


def paired_tables(analysis: Analysis, group, metric: str) -> list[Table]:
    """Every pair of generators per category on ``metric``: difference, interval, p-value."""
    cells = analysis.in_group(group)
    rows = []
    for category in sorted({c.category for c in cells}):
        here = sorted((c for c in cells if c.category == category and metric in c.full), key=lambda c: -c.mean(metric))
        for i, a in enumerate(here):
            for b in here[i + 1:]:
                t = compare_cells(a, b, metric)
                rows.append(Row([category, f"{a.generator} vs {b.generator}"], [
                    Cell(text=_interval_text(t.delta, t.low, t.high)), Cell(text=_p_text(t.p_value))]))
    if not rows:
        return []
    title = f"{group[0]}: paired differences in {METRIC_LABELS.get(metric, metric)} (points), protocol {group[1]}"
    notes = ["Paired bootstrap on identical resamples of the same test images (seeds redrawn per resample); "
             "two-sided p, not adjusted."]
    return [Table(title, ["Category", "Pair"], ["difference [95% CI]", "p"], [""], rows, notes)]


def _p_text(p: float) -> str:
    return "–" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")


def rank_table(analysis: Analysis | None, rows, group) -> Table:
    """Mean rank of each generator per detection metric, with the Friedman p and Nemenyi CD."""
    from anobench.statistics import rows_table

    metrics = [m for m in DETECTION_METRICS if m in set(rows["metric"])]
    results = {}
    for m in metrics:
        if analysis is not None:
            table = category_table(analysis.in_group(group), m)
        else:
            table = rows_table(rows, m, group)
        if table.shape[1] >= 2 and len(table.dropna()) >= 2:
            results[m] = rank_analysis(table, m)
    generators = sorted({g for r in results.values() for g in r.generators})
    out_rows = [Row([g], [Cell(text=f"{results[m].mean_ranks[g]:.2f}" if g in results[m].mean_ranks else "–")
                          for m in results]) for g in generators]
    out_rows.append(Row(["Friedman p"], [Cell(text=_p_text(results[m].friedman_p)) for m in results], rule_above=True))
    out_rows.append(Row(["Nemenyi CD"], [Cell(text=f"{results[m].critical_difference:.2f}") for m in results]))
    n = max((len(r.categories) for r in results.values()), default=0)
    title = f"{group[0]}: mean rank over {n} categories (1 = best), protocol {group[1]}"
    notes = ["Friedman test needs 3+ generators; two generators whose mean ranks differ by more than CD "
             "differ significantly (Nemenyi, alpha 0.05, Demsar 2006)."]
    return Table(title, ["Generator"], [METRIC_LABELS.get(m, m) for m in results], [""], out_rows, notes)


def correlation_table(correlations) -> Table:
    rows = []
    for r in correlations.itertuples(index=False):
        rows.append(Row([r.quality, METRIC_LABELS.get(r.detection, r.detection)], [
            Cell(text=f"{r.spearman:.2f} [{r.spearman_low:.2f}, {r.spearman_high:.2f}]" if not math.isnan(r.spearman) else "–"),
            Cell(text=f"{r.kendall:.2f} [{r.kendall_low:.2f}, {r.kendall_high:.2f}]" if not math.isnan(r.kendall) else "–"),
            Cell(text=str(int(r.n)))]))
    notes = ["Rank correlation over (generator, category) points; 95% bootstrap intervals over the points."]
    return Table("Generation quality vs detection", ["Quality", "Detection"], ["Spearman", "Kendall", "points"],
                 [""], rows, notes)


# --------------------------------------------------------------------------- sweeps

BASE_VALUE = {"num": "generated_samples", "synthetic_fraction": "synthetic_fraction"}


def sweep_points(analysis: Analysis, metric: str, axis: str):
    """Curve data for one swept axis: generator (base name), category, value, mean, low, high.

    The unswept cells of a swept generator join its curve at their own value (their sample count
    or synthetic fraction, as stored).
    """
    import pandas as pd

    swept = [c for c in analysis.cells.values() if axis in (c.setup.get("sweep") or {}) and metric in c.full]
    bases = {c.setup.get("base_generator", c.generator) for c in swept}
    points = []
    for cell in analysis.cells.values():
        if metric not in cell.full:
            continue
        sweep = cell.setup.get("sweep") or {}
        if axis in sweep:
            value = sweep[axis]
        elif (not sweep and cell.setup.get("base_generator", cell.generator) in bases
              and cell.setup.get(BASE_VALUE.get(axis, "")) is not None):
            value = cell.setup[BASE_VALUE[axis]]
        else:
            continue
        low, high = cell.interval(metric)
        points.append({"generator": cell.setup.get("base_generator", cell.generator), "category": cell.category,
                       "value": float(value), "mean": cell.mean(metric), "low": low, "high": high})
    return pd.DataFrame(points)


def cost_points(analysis: Analysis, metric: str, cost: str):
    import pandas as pd

    points = []
    for cell in analysis.cells.values():
        value = cell.setup.get(cost)
        if value is None or metric not in cell.full or not value or (isinstance(value, float) and math.isnan(value)):
            continue
        low, high = cell.interval(metric)
        points.append({"generator": cell.generator, "category": cell.category, "cost": float(value),
                       "mean": cell.mean(metric), "low": low, "high": high})
    return pd.DataFrame(points)


# --------------------------------------------------------------------------- figures

def write_figures(out_dir: Path, report: StatsReport, rows, results: Sequence, primary: str) -> list[Path]:
    from anobench import figures
    from anobench.statistics import find_runs

    out_dir = Path(out_dir)
    written: list[Path] = []
    analysis = report.analysis
    if analysis is not None and analysis.cells:
        for group in analysis.groups():
            for metric in dict.fromkeys([primary, "image_auroc", "pixel_auroc", "pixel_ap", "aupro"]):
                if any(metric in c.full for c in analysis.in_group(group)):
                    written += figures.category_bars(analysis, metric, out_dir, group)
        for axis in SWEEP_AXES:
            points = sweep_points(analysis, primary, axis)
            if len(points) and points["value"].nunique() > 1:
                written += figures.sweep_curves(points, out_dir, primary, axis)
        for cost in ("seconds_per_sample", "train_minutes"):
            points = cost_points(analysis, primary, cost)
            if len(points):
                written += figures.cost_scatter(points, primary, cost, out_dir)
    for v in report.verdicts:
        if v.ranks is not None and len(v.ranks.generators) >= 2 and len(v.ranks.categories) >= 2:
            written += figures.cd_diagram(v.ranks, out_dir)
    if report.correlations is not None and len(report.correlations):
        for r in report.correlations.itertuples(index=False):
            if r.detection == primary:
                written += figures.quality_scatter(rows, r.quality, r.detection, out_dir, report.correlations)
    runs = find_runs(results)
    if runs:
        labels = ["/".join(p.parts[-3:]) for p in runs]
        written += figures.loss_curves(runs, out_dir, labels)
    return written


def figures_markdown(paths: Sequence[Path], relative_to: Path) -> str:
    pngs = [p for p in paths if p.suffix == ".png"]
    lines = []
    for p in pngs:
        try:
            rel = p.relative_to(relative_to)
        except ValueError:
            rel = p
        lines.append(f"![{p.stem}]({rel.as_posix()})")
    return "\n\n".join(lines)

