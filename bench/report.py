"""Reports: the papers' tables from tidy result rows, as LaTeX, Markdown, CSV or an HTML page.

Detection tables read like DH-Diff's Tables II and IV: categories as rows, generators as
columns, a mean row, values in percent with one decimal, the best value of each row in bold, and
``(a, b)`` cells for the paired layouts. With several seeds a value is ``mean ± std`` (sample
std over seeds; the mean row's std is over the seeds' category means). Rows with detector ``-``
hold generation-quality values (issue 6) and form their own table: generators as rows, metrics
as columns, best per column in bold.

Tables are built once, format-free (:class:`Table`), then written by one function per format,
so a new table kind only has to produce a :class:`Table` (see :func:`build_tables`).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.results import HEATMAP_DIR, KEY_COLUMNS, NO_DETECTOR, RESULT_COLUMNS, find_results_files

FORMATS = ("latex", "markdown", "csv", "html")
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
DEVICE_PREFIX = "device="  # issue 6 stores the device as metric "device=<name>", value 1
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


# --------------------------------------------------------------------------- entry points

def render_report(df, fmt: str, metrics: Sequence[str] | None = None, layout: str | None = None, *,
                  samples: Mapping[str, Sequence[Any]] | None = None,
                  heatmaps: Mapping[str, Sequence[Any]] | None = None,
                  title: str = "anobench report", published: Sequence[str] = ()) -> str:
    """The report as text in ``fmt`` (latex, markdown, csv or html).

    Args:
        df: tidy result rows (see :func:`anobench.results.read_results`).
        metrics: metrics to show (detection ones go to the detection tables, generation-quality
            ones to the quality table); None shows all.
        layout: detection layout: ``paper`` (Table II and Table IV pairs), ``table2``,
            ``table4``, ``pair`` (cells ``(a, b)`` of exactly two ``metrics``) or ``per-metric``.
            Default: ``paper``, or ``per-metric`` when ``metrics`` are given.
        samples / heatmaps: HTML only; per generator, images to show (paths or uint8 arrays),
            e.g. from :func:`sample_tiles` and :func:`heatmap_paths`.
        published: published tables to quote beside the measured columns (:mod:`anobench.published`).
    """
    fmt = _check_format(fmt)
    tables = build_tables(df, metrics, layout, published=published)
    if fmt == "html":
        return _html_page(tables, title, samples or {}, heatmaps or {})
    return WRITERS[fmt](tables)


def render_tables(df, fmt: str, metrics: Sequence[str] | None = None, layout: str | None = None) -> str:
    """Only the tables, in ``fmt`` (HTML: the tables without page or images)."""
    fmt = _check_format(fmt)
    return WRITERS[fmt](build_tables(df, metrics, layout))


def build_tables(df, metrics: Sequence[str] | None = None, layout: str | None = None,
                 published: Sequence[str] = ()) -> list[Table]:
    """Every table of a report: detection tables, then the generation-quality table."""
    df = _latest(df)
    quoted_notes: dict = {}
    if published:
        import pandas as pd

        from anobench.published import beside, load_published

        df, quoted_notes = beside(df, pd.concat([load_published(spec) for spec in published], ignore_index=True))
    detection = df[df["detector"] != NO_DETECTOR]
    quality = df[df["detector"] == NO_DETECTOR]
    det_names = _ordered(set(detection["metric"]), DETECTION_ORDER)
    qual_names = [m for m in _ordered(set(quality["metric"]), tuple(QUALITY_STYLE)) if not m.startswith(DEVICE_PREFIX)]
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
    from anobench.protocol import LEAKY_PROTOCOLS
    from anobench.published import QUOTED_MARK

    generators = sorted(df["generator"].unique(), key=lambda g: (QUOTED_MARK in g, g))  # measured first
    categories = sorted(df["category"].unique())
    df = df[df["metric"].isin(group)]
    values = {key: grp["value"].to_numpy(dtype=float) for key, grp in df.groupby(["category", "generator", "metric"])}
    per_seed = df.groupby(["generator", "metric", "seed"])
    rows = []
    for category in categories:
        cells = [Cell([_value(values.get((category, g, m))) for m in group]) for g in generators]
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
    leaky = " (leaky: its test set holds reference anomalies)" if protocol in LEAKY_PROTOCOLS else ""
    title = f"{dataset}: {what} in %, detector {detector}, protocol {protocol}{leaky}"
    notes.append(SELECTION_NOTE)
    return Table(title, ["Category"], generators, labels, rows, notes)


def _layout_groups(layout: str | None, metrics: list[str] | None, det_names: list[str]) -> list[tuple[str, ...]]:
    det_metrics = None if metrics is None else [m for m in metrics if m in det_names]
    if layout is None:
        layout = "paper" if metrics is None else "per-metric"
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
        devices = part[part["metric"].str.startswith(DEVICE_PREFIX)]
        numeric = part[~part["metric"].str.startswith(DEVICE_PREFIX)]
        names = _ordered(set(numeric["metric"]), tuple(QUALITY_STYLE))
        if metrics is not None:
            names = [m for m in names if m in metrics]
        generators = sorted(part["generator"].unique())
        rows = []
        for g in generators:
            cells = []
            for m in names:
                v = numeric[(numeric["generator"] == g) & (numeric["metric"] == m)]["value"].to_numpy(dtype=float)
                fmt_text = QUALITY_STYLE.get(m, (m, "{:.4g}", None))[1]
                cells.append(Cell([_value(v, fmt=fmt_text.format, std=False)]))
            if len(devices):
                dev = devices[devices["generator"] == g]["metric"].str[len(DEVICE_PREFIX):]
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
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise AnobenchError(f"result rows lack columns {', '.join(missing)}")
    if len(df) == 0:
        raise AnobenchError("nothing to report: the results are empty")
    return df.drop_duplicates(subset=list(KEY_COLUMNS), keep="last")


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


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AnobenchError(f"--format: unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


# --------------------------------------------------------------------------- writers

def _cell_text(cell: Cell, bold: Callable[[str], str], pm: str = " ± ", escape: Callable[[str], str] = str,
               missing: str = MISSING) -> str:
    if cell.text is not None:
        return escape(cell.text)
    texts = [missing if v.missing else bold(v.text(pm)) if v.bold else v.text(pm) for v in cell.values]
    return texts[0] if len(texts) == 1 else "(" + ", ".join(texts) + ")"


def _latex_escape(text: str) -> str:
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
             "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", MISSING: "--"}
    return "".join(table.get(ch, ch) for ch in str(text))


def write_latex(tables: list[Table]) -> str:
    """booktabs tables (``\\usepackage{booktabs}``), one ``table`` float each."""
    out = ["% anobench report: needs \\usepackage{booktabs}"]
    for t in tables:
        spec = "l" * len(t.row_header) + "c" * len(t.columns)
        out += ["\\begin{table}[t]", "\\centering", f"\\caption{{{_latex_escape(t.title)}}}",
                f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                " & ".join(_latex_escape(h) for h in t.row_header + t.columns) + " \\\\", "\\midrule"]
        for row in t.rows:
            if row.rule_above:
                out.append("\\midrule")
            cells = [_cell_text(c, lambda s: f"\\textbf{{{s}}}", pm=" $\\pm$ ", escape=_latex_escape, missing="--")
                     for c in row.cells]
            out.append(" & ".join([_latex_escape(x) for x in row.label] + cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        for note in t.notes:
            out.append(f"\\par\\smallskip{{\\footnotesize {_latex_escape(note)}}}")
        out += ["\\end{table}", ""]
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def write_markdown(tables: list[Table]) -> str:
    out = []
    for t in tables:
        header = t.row_header + t.columns
        out += [f"**{_md_escape(t.title)}**", "",
                "| " + " | ".join(_md_escape(h) for h in header) + " |",
                "|" + "|".join([":---"] * len(t.row_header) + [":---:"] * len(t.columns)) + "|"]
        for row in t.rows:
            cells = [_cell_text(c, lambda s: f"**{s}**", escape=_md_escape) for c in row.cells]
            out.append("| " + " | ".join([_md_escape(x) for x in row.label] + cells) + " |")
        out += [""] + [f"_{_md_escape(n)}_" for n in t.notes] + ([""] if t.notes else [])
    return "\n".join(out)


def write_csv(tables: list[Table]) -> str:
    """The table as CSV; several tables become blocks, each after a title line and an empty line.

    Pairs are split into one column per metric.

    Numbers keep the report's rounding (percent, one decimal); with several seeds a ``std``
    column follows each value. Blocks are separated by an empty line.
    """
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for number, t in enumerate(tables):
        if len(tables) > 1:  # a lone table stays plain CSV that pandas reads as it is
            if number:
                writer.writerow([])
            writer.writerow([t.title])
        with_std = any(v.std is not None for row in t.rows for c in row.cells for v in c.values)
        header = list(t.row_header) + _csv_columns(t, with_std)
        writer.writerow(header)
        for row in t.rows:
            line = list(row.label)
            for cell in row.cells:
                if cell.text is not None:
                    line.append(cell.text)
                    continue
                for v in cell.values:
                    line.append("" if v.missing else v.fmt(v.mean))
                    if with_std:
                        line.append("" if v.std is None else v.fmt(v.std))
            writer.writerow(line)
    return buffer.getvalue()


def _csv_columns(t: Table, with_std: bool) -> list[str]:
    names = []
    for j, column in enumerate(t.columns):
        if any(row.cells[j].text is not None for row in t.rows):
            names.append(column)
            continue
        for part in t.parts:
            name = f"{column} {part}".strip()
            names.append(name)
            if with_std:
                names.append(f"{name} std")
    return names


def write_html_tables(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out.append(f"<table>\n<caption>{html.escape(t.title)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.row_header + t.columns)
                   + "</tr></thead>\n<tbody>")
        for row in t.rows:
            cls = ' class="mean"' if row.rule_above else ""
            cells = [_cell_text(c, lambda s: f"<b>{s}</b>", escape=html.escape) for c in row.cells]
            out.append(f"<tr{cls}>" + "".join(f"<th>{html.escape(x)}</th>" for x in row.label)
                       + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</tbody></table>")
        out += [f'<p class="note">{html.escape(n)}</p>' for n in t.notes]
    return "\n".join(out)


WRITERS: dict[str, Callable[[list[Table]], str]] = {
    "latex": write_latex, "markdown": write_markdown, "csv": write_csv, "html": write_html_tables,
}

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1.5em 0}caption{font-weight:600;text-align:left;padding:.4em 0}
th,td{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:center}th{text-align:left}
thead th{border-bottom:2px solid #222}tr.mean th,tr.mean td{border-top:2px solid #222}
.note{font-size:.85em;color:#555}.grid{display:flex;flex-wrap:wrap;gap:6px}
.grid img{height:160px;width:auto;image-rendering:pixelated;border:1px solid #ccc}"""


def _html_page(tables: list[Table], title: str, samples: Mapping[str, Sequence[Any]],
               heatmaps: Mapping[str, Sequence[Any]]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", write_html_tables(tables)]
    for generator in sorted(set(samples) | set(heatmaps)):
        body.append(f"<h2>{html.escape(generator)}</h2>")
        for caption, images in (("Generated samples (mask outline in red)", samples.get(generator, ())),
                                ("Detector heat maps on real test images", heatmaps.get(generator, ()))):
            if not images:
                continue
            tags = "".join(f'<img alt="" src="data:image/png;base64,{_png_base64(im)}">' for im in images)
            body.append(f"<h3>{caption}</h3>\n<div class=\"grid\">{tags}</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- images for the HTML page

def _png_base64(image: Any) -> str:
    """A path (PNG bytes embedded as they are) or a uint8 array, as base64 PNG."""
    from anobench.images import png_bytes, read_rgb

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data = path.read_bytes() if path.suffix.lower() == ".png" and path.is_file() else png_bytes(read_rgb(path))
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8 and array.dtype != bool:
            array = np.clip(np.asarray(array, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
        data = png_bytes(array)
    return base64.b64encode(data).decode("ascii")


def outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """The image with the mask's boundary drawn in ``color`` (1 px)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def sample_tiles(folder: str | os.PathLike, limit: int = 8, size: int = 160) -> tuple[str, list[np.ndarray]]:
    """(generator name, up to ``limit`` evenly spaced samples with mask outlines) of a generated set."""
    from anobench.store import GeneratedSet

    generated = GeneratedSet.open(folder)
    n = len(generated.rows)
    picks = sorted(set(np.linspace(0, n - 1, num=min(limit, n)).round().astype(int).tolist())) if n else []
    tiles = []
    for i in picks:
        image, mask = generated.load(i, size)
        tiles.append(outline(image, mask))
    return generated.generator, tiles


def gallery(results: Sequence[str | os.PathLike], generated: Sequence[str | os.PathLike] = (),
            limit: int = 8) -> tuple[dict[str, list[Any]], dict[str, list[Path]]]:
    """Images for the HTML page: samples from generated sets, heat maps from run folders.

    ``generated``: generated-set folders or roots holding them (any folder with a dataset.json
    below). Heat maps: ``heatmaps/*.png`` beside each results file, credited to the generators
    whose rows that file holds.
    """
    from anobench.results import read_results

    samples: dict[str, list[Any]] = {}
    for root in generated:
        root = Path(root)
        if not root.exists():
            raise AnobenchError(f"{root}: generated folder not found")
        sets = [root] if (root / "dataset.json").is_file() else sorted(p.parent for p in root.rglob("dataset.json"))
        if not sets:
            raise AnobenchError(f"{root}: no generated set (dataset.json) found")
        for folder in sets:
            name, tiles = sample_tiles(folder, limit=limit)
            samples.setdefault(name, []).extend(tiles)
    heatmaps: dict[str, list[Path]] = {}
    for entry in results:
        for path in find_results_files(entry):
            pngs = sorted((path.parent / HEATMAP_DIR).glob("*.png"))[:limit]
            if not pngs:
                continue
            rows = read_results(path)
            for generator in sorted(set(rows.loc[rows["detector"] != NO_DETECTOR, "generator"])):
                heatmaps.setdefault(generator, []).extend(pngs)
    return samples, heatmaps


def heatmap_paths(run: str | os.PathLike, limit: int = 8) -> list[Path]:
    """The first ``limit`` heat-map PNGs an evaluated run saved under ``RUN/heatmaps``."""
    return sorted((Path(run) / HEATMAP_DIR).glob("*.png"))[:limit]


def report_files(results: Sequence[str | os.PathLike], fmt: str, metrics: Sequence[str] | None = None,
                 layout: str | None = None, generated: Sequence[str | os.PathLike] = (), images: int = 8,
                 published: Sequence[str] = ()) -> str:
    """``anobench report``: read results files or run folders, render; HTML adds the images."""
    from anobench.results import read_results

    fmt = _check_format(fmt)
    df = read_results(list(results))
    if fmt != "html":
        return render_report(df, fmt, metrics, layout, published=published)
    samples, heatmaps = gallery(results, generated, limit=images)
    return render_report(df, fmt, metrics, layout, samples=samples, heatmaps=heatmaps, published=published)
