"""Report tables, format-free: detection tables (the papers' layouts) and the quality table.

Detection tables read like DH-Diff's Tables II and IV: categories as rows, generators as
columns, a mean row, values in percent with one decimal, the best value of each row in bold, and
``(a, b)`` cells for the paired layouts. With several seeds a value is ``mean ± std`` (sample
std over seeds; the mean row's std is over the seeds' category means). Rows with detector ``-``
hold generation-quality values and form their own table: generators as rows, metrics as
columns, best per column in bold. A :class:`Table` is written by :mod:`anobench.report_writers`
or :mod:`anobench.report_html`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from anobench.errors import AnobenchError
from anobench.results import (BASE_COLUMNS, KEY_COLUMNS, NO_DETECTOR, SETUP_COLUMNS, SETUP_LABEL_FIELDS,  # noqa: F401
                              TEXT_COLUMNS, canonical_rows, hash_digest, setup_labels)

PAIRS = {
    "table2": ("image_auroc", "pixel_auroc"),  # DH-Diff Table II: (image AUROC, pixel AUROC)
    "table4": ("pixel_auroc", "pixel_ap"),  # DH-Diff Table IV: (pixel AUROC, pixel AP)
}
LAYOUTS = ("paper", "table2", "table4", "pair", "per-metric")
METRIC_LABELS = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "image_f1max": "image F1-max",
    "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "pixel_f1max": "pixel F1-max",
    "aupro": "AUPRO@0.3",
    # AnomalyDiffusion's approximations (anobench.metrics.variants), named as what they are
    "aupro_thr100": "AUPRO@0.3 (100 thresholds, AnomalyDiffusion)",
    "pixel_f1max_grid005": "pixel F1-max (0.05 grid, AnomalyDiffusion)",
}
DETECTION_ORDER = tuple(METRIC_LABELS)
# Generation-quality metrics (issue 6): header label, number format, higher is better (None: no bold)
QUALITY_STYLE: dict[str, tuple[str, str, bool | None]] = {
    "n_samples": ("samples", "{:.0f}", None),
    "ic_lpips": ("IC-LPIPS", "{:.3f}", True),
    "ic_lpips_dualanodiff": ("IC-LPIPS (DualAnoDiff)", "{:.3f}", True),
    "ic_lpips_dfmgan": ("IC-LPIPS (DFMGAN)", "{:.3f}", True),
    "is": ("IS", "{:.2f}", True), "is_std": ("IS std", "{:.2f}", None),
    "kid": ("KID", "{:.4f}", False), "kid_std": ("KID std", "{:.4f}", None), "fid": ("FID", "{:.1f}", False),
    "mask_change_inside": ("change inside mask", "{:.3f}", True),
    "mask_changed": ("mask area changed", "{:.3f}", True),
    "mask_area": ("mask area", "{:.4f}", None), "mask_area_real": ("real mask area", "{:.4f}", None),
    "mask_area_w1": ("mask area W1", "{:.4f}", False),
    "mask_components": ("components", "{:.2f}", None), "mask_components_real": ("real components", "{:.2f}", None),
    "mask_components_w1": ("components W1", "{:.2f}", False),
    "seconds_per_sample": ("s/sample", "{:.3g}", False), "peak_memory_mb": ("peak MiB", "{:.0f}", False),
}
LEAKY_MARK = "†"  # a cell measured on a test set that shares images with the generator's references
# setup fields that tell two setups of one generator apart in a column label (test-set facts excluded)
MISSING = "–"


@dataclass
class Value:
    """One number of a cell: mean over seeds, std (None with one seed), and its display format."""

    mean: float
    std: float | None = None
    fmt: Callable[[float], str] = lambda v: f"{100 * v:.1f}"
    bold: bool = False
    comparable: bool = True  # False: left out of the bold ranking (e.g. a mean over fewer categories)

    @property
    def missing(self) -> bool:
        return self.mean is None or (isinstance(self.mean, float) and math.isnan(self.mean))

    def text(self, pm: str = " ± ") -> str:
        if self.missing:
            return MISSING
        return self.fmt(self.mean) + (pm + self.fmt(self.std) if self.std is not None else "")


@dataclass
class Cell:
    """A table cell: one value, a ``(a, b)`` pair of values, or plain text."""

    values: list[Value] = field(default_factory=list)
    text: str | None = None
    mark: str = ""  # appended in every text format, e.g. LEAKY_MARK

    @property
    def missing(self) -> bool:
        return self.text is None and all(v.missing for v in self.values)


@dataclass
class Row:
    label: list[str]
    cells: list[Cell]
    rule_above: bool = False  # a \midrule before the mean row


@dataclass
class Table:
    """A format-free table; ``parts`` names the values inside each cell (for CSV columns)."""

    title: str
    row_header: list[str]
    columns: list[str]
    parts: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def build_tables(df, metrics: Sequence[str] | None = None, layout: str | None = None,
                 published: Sequence[str] = ()) -> list[Table]:
    """Every table of a report: detection tables, then the generation-quality table.

    ``published`` names published tables (:mod:`anobench.published`) quoted beside the measured columns.
    """
    df = _latest(df)
    quoted_notes: dict = {}
    if published:
        import pandas as pd

        from anobench.published import beside, load_published

        df, quoted_notes = beside(df, pd.concat([load_published(spec) for spec in published], ignore_index=True))
    detection = df[df["detector"] != NO_DETECTOR]
    quality = df[df["detector"] == NO_DETECTOR]
    det_names = _ordered(set(detection["metric"]), DETECTION_ORDER)
    qual_names = _ordered(set(quality["metric"]), tuple(QUALITY_STYLE))
    if metrics is not None:
        metrics = [m.strip() for m in metrics if m.strip()]
        unknown = [m for m in metrics if m not in det_names and m not in qual_names]
        if unknown:
            available = ", ".join(det_names + qual_names) or "none"
            raise AnobenchError(f"--metrics: no results for {', '.join(unknown)} (available: {available})")
    groups = _layout_groups(layout, metrics, det_names)
    tables = detection_tables(detection, groups, quoted_notes) if groups else []
    tables += quality_tables(quality, None if metrics is None else [m for m in metrics if m in qual_names])
    if not tables:
        raise AnobenchError("nothing to report: no result rows match")
    return tables


# --------------------------------------------------------------------------- detection tables

def detection_tables(df, groups: list[tuple[str, ...]], quoted_notes: Mapping | None = None) -> list[Table]:
    """One table per (dataset, protocol, detector) and metric group; categories x generators."""
    tables = []
    for (dataset, protocol, detector), part in df.groupby(["dataset", "protocol", "detector"], sort=True):
        for group in groups:
            if not part["metric"].isin(group).any():
                continue
            table = _detection_table(part, group, dataset, protocol, detector)
            table.notes += list((quoted_notes or {}).get((dataset, protocol, detector), ()))
            tables.append(table)
    return tables


def _detection_table(df, group: tuple[str, ...], dataset: str, protocol: str, detector: str) -> Table:
    from anobench.presets import SELECTION_NOTE
    from anobench.published import QUOTED_MARK

    generators = sorted(df["generator"].unique(), key=lambda g: (QUOTED_MARK in g, g))  # measured first
    categories = sorted(df["category"].unique())
    df = df[df["metric"].isin(group)]
    values = {key: grp["value"].to_numpy(dtype=float) for key, grp in df.groupby(["category", "generator", "metric"])}
    per_seed = df.groupby(["generator", "metric", "seed"])
    leaky = {key for key, grp in df.groupby(["category", "generator"])
             if grp["leaky"].astype(str).str.lower().isin(("true", "1")).any()}
    rows = []
    for category in categories:
        cells = [Cell([_value(values.get((category, g, m))) for m in group],
                      mark=LEAKY_MARK if (category, g) in leaky else "") for g in generators]
        rows.append(Row([category], cells))
    # mean row: mean over categories; std over the seeds' category means
    mean_cells, incomplete = [], []
    for g in generators:
        parts = []
        for m in group:
            cat_means = [_nanmean(values.get((c, g, m))) for c in categories]
            present = [v for v in cat_means if not math.isnan(v)]
            complete = len(present) == len(categories)
            if present and not complete:
                incomplete.append(g)
            seed_means = [grp["value"].mean() for (gg, mm, _), grp in per_seed if gg == g and mm == m]
            seed_means = [v for v in seed_means if not math.isnan(v)]
            std = float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None
            parts.append(Value(float(np.mean(present)) if present else math.nan, std, comparable=complete))
        mean_cells.append(Cell(parts))
    rows.append(Row(["Mean"], mean_cells, rule_above=True))
    for row in rows:
        for g, cell in zip(generators, row.cells):
            if QUOTED_MARK in g:  # quoted numbers are shown, never ranked against measured ones
                for v in cell.values:
                    v.comparable = False
        _bold_best(row.cells, higher_is_better=[True] * len(group))
    labels = [METRIC_LABELS.get(m, m) for m in group]
    what = f"({', '.join(labels)})" if len(group) > 1 else labels[0]
    notes = []
    if incomplete:
        notes.append("Mean over fewer categories (not ranked) for: " + ", ".join(sorted(set(incomplete))) + ".")
    n_seeds = df.groupby(["category", "generator"])["seed"].nunique()
    if len(n_seeds) and n_seeds.max() > 1:
        notes.append(f"Mean ± std over {int(n_seeds.min())}-{int(n_seeds.max())} seeds."
                     if n_seeds.min() != n_seeds.max() else f"Mean ± std over {int(n_seeds.max())} seeds.")
    leaky_generators = {g for _, g in leaky}
    if leaky_generators:
        notes.append(f"{LEAKY_MARK} leaky: the test set shares images with the reference anomalies this "
                     "generator saw.")
    notes.append(SELECTION_NOTE)
    title = f"{dataset}: {what} in %, detector {detector}, protocol {protocol}{_setup_caption(df)}"
    columns = [f"{g} {LEAKY_MARK}" if g in leaky_generators else g for g in generators]
    return Table(title, ["Category"], columns, labels, rows, notes)


def _setup_caption(df) -> str:
    """Profile and test-set size for a caption: each category's own count, as a range when they differ.

    The counts are per category (what each row of the table rests on), never a sum over categories.
    """
    def joined(column: str) -> str:
        values = sorted({str(v) for v in df[column] if str(v)})
        return "/".join(values)

    def span(values: list[int]) -> str:
        return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"

    parts = []
    if joined("profile"):
        parts.append(f"profile {joined('profile')}")
    sized = df[df["n_test"].astype(str) != ""]
    try:
        n_test = [int(float(v)) for v in sized["n_test"]]
        n_anom = [int(float(v)) for v in sized["n_test_anomalous"] if str(v)]
    except ValueError:
        n_test = []
    if n_test:
        anomalous = f" ({span(n_anom)} anomalous)" if n_anom else ""
        each = " per category" if sized["category"].nunique() > 1 else ""
        parts.append(f"{span(n_test)} test images{anomalous}{each}")
    return (", " + ", ".join(parts)) if parts else ""


def _layout_groups(layout: str | None, metrics: list[str] | None, det_names: list[str]) -> list[tuple[str, ...]]:
    det_metrics = None if metrics is None else [m for m in metrics if m in det_names]
    if layout is None:  # one table per stored metric; bold marks the best generator of each category
        layout = "per-metric"
    if layout not in LAYOUTS:
        raise AnobenchError(f"--layout: unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if layout in ("paper", "table2", "table4"):
        if det_metrics:
            raise AnobenchError(f"--layout {layout} fixes its metrics; use --layout pair or per-metric with --metrics")
        pairs = [PAIRS["table2"], PAIRS["table4"]] if layout == "paper" else [PAIRS[layout]]
        pairs = [p for p in pairs if any(m in det_names for m in p)]
        if pairs or metrics is not None:
            return pairs
        return [(m,) for m in det_names]  # no paper metrics at all: show what there is
    if layout == "pair":
        if not det_metrics or len(det_metrics) != 2:
            raise AnobenchError("--layout pair needs exactly two detection metrics in --metrics, "
                                "e.g. image_auroc,pixel_auroc")
        return [tuple(det_metrics)]
    return [(m,) for m in (det_names if det_metrics is None else det_metrics)]


# --------------------------------------------------------------------------- generation-quality table

def quality_tables(df, metrics: list[str] | None = None) -> list[Table]:
    """Generation quality (rows with detector ``-``): one table per dataset, generators as rows.

    Values are means over seeds and categories (the categories are named in the title).
    """
    if df is None or len(df) == 0:
        return []
    tables = []
    for dataset, part in df.groupby("dataset", sort=True):
        devices = part[part["device"] != ""]
        names = _ordered(set(part["metric"]), tuple(QUALITY_STYLE))
        if metrics is not None:
            names = [m for m in names if m in metrics]
        generators = sorted(part["generator"].unique())
        rows = []
        for g in generators:
            cells = []
            for m in names:
                v = part[(part["generator"] == g) & (part["metric"] == m)]["value"].to_numpy(dtype=float)
                fmt_text = QUALITY_STYLE.get(m, (m, "{:.4g}", None))[1]
                cells.append(Cell([_value(v, fmt=fmt_text.format, std=False)]))
            if len(devices):
                dev = devices.loc[devices["generator"] == g, "device"]
                cells.append(Cell(text=", ".join(sorted(set(dev))) or MISSING))
            rows.append(Row([g], cells))
        for j, m in enumerate(names):
            column = [row.cells[j] for row in rows]
            direction = QUALITY_STYLE.get(m, (m, "", None))[2]
            if direction is not None:
                _bold_best(column, [direction])
        columns = [_quality_label(m) for m in names] + (["device"] if len(devices) else [])
        categories = ", ".join(sorted(part["category"].unique()))
        title = f"{dataset}: generation quality (mean over seeds and categories: {categories})"
        tables.append(Table(title, ["Generator"], columns, [""], rows))
    return tables


def _quality_label(metric: str) -> str:
    label, _, direction = QUALITY_STYLE.get(metric, (metric, "", None))
    return label + {True: " ↑", False: " ↓", None: ""}[direction]


# --------------------------------------------------------------------------- shared helpers

def _latest(df):
    """Rows in result columns; a re-evaluated measurement (same key) keeps its last value."""
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise AnobenchError(f"result rows lack columns {', '.join(missing)}")
    if len(df) == 0:
        raise AnobenchError("nothing to report: the results are empty")
    df = df.assign(**{c: "" for c in SETUP_COLUMNS if c not in df.columns})  # rows of the older layout
    df = df.assign(**{c: df[c].where(df[c].notna(), "").astype(str) for c in TEXT_COLUMNS})
    df = canonical_rows(df)  # device facts as the device column, hashes as text
    return label_setups(df.drop_duplicates(subset=list(KEY_COLUMNS), keep="last"))


def label_setups(df):
    """Give each setup of one generator its own column label, so two setups never merge.

    Labels come from :func:`anobench.results.setup_labels`, the one labeller the statistics
    tables use too, so a setup has the same name in every table of a report.
    """
    df = df.copy()
    for (dataset, detector, generator), part in df.groupby(["dataset", "detector", "generator"], sort=False):
        hashes = sorted(part["config_hash"].unique())
        if len(hashes) < 2:
            continue
        labels = setup_labels(generator, {h: part[part["config_hash"] == h].iloc[0] for h in hashes})
        where = (df["dataset"] == dataset) & (df["detector"] == detector) & (df["generator"] == generator)
        df.loc[where, "generator"] = df.loc[where, "config_hash"].map(labels)
    return df


def _ordered(names: set[str], order: tuple[str, ...]) -> list[str]:
    rank = {m: i for i, m in enumerate(order)}
    return sorted(names, key=lambda m: (rank.get(m, len(rank)), m))


def _nanmean(values: np.ndarray | None) -> float:
    if values is None:
        return math.nan
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _value(values: np.ndarray | None, fmt: Callable[[float], str] | None = None, std: bool = True) -> Value:
    mean = _nanmean(values)
    ok = values[~np.isnan(values)] if values is not None else np.zeros(0)
    spread = float(np.std(ok, ddof=1)) if std and ok.size > 1 else None
    return Value(mean, spread) if fmt is None else Value(mean, spread, fmt)


def _bold_best(cells: list[Cell], higher_is_better: list[bool]) -> None:
    """Bold the best displayed value of each part; only when two or more cells have one."""
    n_parts = max((len(c.values) for c in cells), default=0)
    for k in range(n_parts):
        shown = [(c.values[k], c.values[k].fmt(c.values[k].mean)) for c in cells
                 if len(c.values) > k and not c.values[k].missing and c.values[k].comparable]
        if len(shown) < 2:
            continue
        numbers = [float(text) for _, text in shown]
        up = higher_is_better[k] if k < len(higher_is_better) else True
        best = max(numbers) if up else min(numbers)
        for (value, _), number in zip(shown, numbers):
            value.bold = number == best

