"""Reports: the papers' tables from tidy result rows, as LaTeX, Markdown, CSV or an HTML page.

Tables are built once, format-free (:mod:`anobench.report_tables`), then written by one function
per format (:mod:`anobench.report_writers`, :mod:`anobench.report_html`), so a new table kind
only has to produce a :class:`Table` (see :func:`build_tables`).
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from typing import Any


from anobench.errors import AnobenchError
from anobench.report_html import _html_page, gallery, heatmap_paths, outline, sample_tiles, write_html_tables  # noqa: F401
from anobench.report_tables import Table, build_tables  # noqa: F401
from anobench.report_writers import write_csv, write_latex, write_markdown  # noqa: F401

FORMATS = ("latex", "markdown", "csv", "html")
WRITERS: dict[str, Callable[[list[Table]], str]] = {
    "latex": write_latex, "markdown": write_markdown, "csv": write_csv, "html": write_html_tables,
}


DATASET_LABELS = {"mvtec_ad": "MVTec AD", "mpdd": "MPDD", "visa": "VisA", "btad": "BTAD",
                  "mvtec_loco": "MVTec LOCO", "folder": "folder dataset"}


# --------------------------------------------------------------------------- entry points

def render_report(df, fmt: str, metrics: Sequence[str] | None = None, layout: str | None = None, *,
                  samples: Mapping[str, Sequence[Any]] | None = None,
                  heatmaps: Mapping[str, Sequence[Any]] | None = None,
                  title: str = "anobench report", verdict: bool = False, primary: str | None = None,
                  context=None, judge=None, standalone: bool = False, page: Mapping[str, Any] | None = None) -> str:
    """The report as text in ``fmt`` (latex, markdown, csv or html).

    Args:
        df: tidy result rows (see :func:`anobench.results.read_results`).
        metrics: metrics to show (detection ones go to the detection tables, generation-quality
            ones to the quality table); None shows all.
        layout: detection layout: ``per-metric`` (the default: one table per metric, the best
            generator of each category in bold), ``paper`` (Table II and Table IV pairs),
            ``table2``, ``table4`` or ``pair`` (cells ``(a, b)`` of exactly two ``metrics``).
        verdict: open with the verdict (ranking on ``primary``, default pixel AP), the test set
            per category and the cost table (:mod:`anobench.report_verdict`); ``context`` is
            what :func:`anobench.report_context.gather_context` read beside the results; ``judge``
            the statistics module's verdict (:func:`anobench.report_verdict.statistics_judge`).
        standalone: LaTeX only: a whole document that compiles alone.
        samples / heatmaps: HTML only; per generator, images to show (paths or uint8 arrays),
            e.g. from :func:`sample_tiles` and :func:`heatmap_paths`; ``page``: the category
            sections and figures of :mod:`anobench.report_page`.

    ``csv`` is the tidy rows themselves (one file ``pandas.read_csv`` reads back as they are), not
    a rendering of the tables: :func:`render_tables` gives those.
    """
    fmt = _check_format(fmt)
    if fmt == "csv":
        return tidy_csv(df, metrics)
    tables = report_tables(df, metrics, layout, verdict=verdict, primary=primary, context=context, judge=judge)
    if fmt == "html":
        if page is not None:
            from anobench.report_page import html_page

            return html_page(tables, title, samples or {}, **page)
        return _html_page(tables, title, samples or {}, heatmaps or {})
    if fmt == "latex":
        return write_latex(tables, standalone=standalone)
    return markdown_with_lead(tables) if verdict else WRITERS[fmt](tables)


def report_tables(df, metrics: Sequence[str] | None = None, layout: str | None = None, *, verdict: bool = False,
                  primary: str | None = None, context=None, judge=None) -> list[Table]:
    """The verdict tables (when asked) then every table of :func:`build_tables`, with display names."""
    from anobench.generators.base import display_name

    tables = build_tables(df, metrics, layout)
    if verdict:
        from anobench.report_verdict import verdict_tables

        tables = verdict_tables(df, context, primary, names=display_name, judge=judge) + tables
    return name_tables(tables, df, context)


def name_tables(tables: list[Table], df, context=None) -> list[Table]:
    """Generators by display name in columns and row labels; datasets by name (the demo data as such)."""
    from anobench.generators.base import display_name

    demo = context is not None and len(context) and bool(context["demo_data"].fillna(False).astype(bool).all())
    generators = set(df["generator"])
    for t in tables:
        t.columns = [_display(c, generators, display_name) for c in t.columns]
        for row in t.rows:
            row.label = [_display(x, generators, display_name) for x in row.label]
        dataset, sep, rest = t.title.partition(": ")
        if sep and dataset in DATASET_LABELS:
            label = f"anobench demo data ({DATASET_LABELS[dataset]} layout)" if demo else DATASET_LABELS[dataset]
            t.title = f"{label}: {rest}"
    return tables


def _display(text: str, generators: set[str], display_name) -> str:
    """A label with every generator name in it (a column ``draem (steps=30)``, a pair
    ``draem − crop_paste``, a sweep ``draem[num=100]``) shown by its display name."""
    import re

    if not generators:
        return text
    names = "|".join(re.escape(g) for g in sorted(generators, key=len, reverse=True))
    return re.sub(rf"(?<![A-Za-z0-9_])({names})(?![A-Za-z0-9_])", lambda m: display_name(m.group(1)), str(text))


def tidy_csv(df, metrics: Sequence[str] | None = None) -> str:
    """The result rows as CSV: a re-evaluated measurement keeps its last value; ``metrics`` filters."""
    from anobench.report_tables import _latest

    rows = _latest(df)
    if metrics is not None:
        wanted = [m.strip() for m in metrics if m.strip()]
        unknown = sorted(set(wanted) - set(rows["metric"]))
        if unknown:
            raise AnobenchError(f"--metrics: no results for {', '.join(unknown)} "
                                f"(available: {', '.join(sorted(set(rows['metric'])))})")
        rows = rows[rows["metric"].isin(wanted)]
    return rows.to_csv(index=False, lineterminator="\n")


def markdown_with_lead(tables: list[Table]) -> str:
    """Markdown that opens with the verdict sentence(s), taken out of the verdict tables' notes."""
    lead = []
    for t in tables:
        lead += [n for n in t.notes if n.startswith("Verdict: ")]
        t.notes = [n for n in t.notes if not n.startswith("Verdict: ")]
    text = write_markdown(tables)
    return "".join(f"**{line}**\n\n" for line in lead) + text


def render_tables(df, fmt: str, metrics: Sequence[str] | None = None, layout: str | None = None) -> str:
    """Only the tables, in ``fmt`` (HTML: the tables without page or images; CSV: table blocks)."""
    fmt = _check_format(fmt)
    return WRITERS[fmt](report_tables(df, metrics, layout))


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AnobenchError(f"--format: unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def report_files(results: Sequence[str | os.PathLike], fmt: str, metrics: Sequence[str] | None = None,
                 layout: str | None = None, generated: Sequence[str | os.PathLike] = (), images: int = 8,
                 statistics: bool = True, resamples: int = 1000, stats_seed: int = 0, primary: str | None = None,
                 figures_dir: str | os.PathLike | None = None, *, standalone: bool = False,
                 out: str | os.PathLike | None = None) -> str:
    """``anobench report``: read results files or run folders, render with the verdict first.

    The context (test-set sizes, references, cost) comes from the run folders beside the results.
    With ``statistics`` the verdict's sentence and intervals come from the stored per-image
    evidence (:mod:`anobench.report_stats`), whose interval, paired-test, rank and correlation
    tables follow the metric tables; ``figures_dir`` also writes the figures there. HTML adds the
    category sections, samples and every figure (those written and those in ``figures/`` beside
    ``out``).
    """
    from anobench.report_context import gather_context
    from anobench.report_verdict import pick_primary
    from anobench.results import read_results

    fmt = _check_format(fmt)
    df = read_results(list(results))
    if fmt == "csv":
        return tidy_csv(df, metrics)
    context = gather_context(results)
    judge, extra, figures = None, [], []
    if statistics:
        from anobench.report_stats import build_statistics

        report_tables(df, metrics, layout, verdict=True, primary=primary, context=context)  # cheap checks first
        metric = pick_primary(df, primary)[0] or primary
        stats = build_statistics(list(results), df, metric, resamples, stats_seed,
                                 None if figures_dir is None else Path(figures_dir))
        judged = {(tuple(v.group), v.metric): v for v in stats.verdicts}
        judge = lambda group, name: judged.get((tuple(group), name))  # noqa: E731
        extra = stats.tables
        figures = [f for f in stats.figures if Path(f).suffix.lower() in (".png", ".svg")]
    tables = report_tables(df, metrics, layout, verdict=True, primary=primary, context=context, judge=judge)
    tables += name_tables(extra, df, context)
    if fmt == "markdown":
        return markdown_with_lead(tables)
    if fmt == "latex":
        return write_latex(tables, standalone=standalone)
    from anobench.report_page import html_page, page_parts

    samples, _ = gallery([], generated, limit=images)
    page = page_parts(results, images=images, out=out)
    seen = {Path(f).resolve() for f in figures}
    figures += [f for f in page["figures"] if f.resolve() not in seen]
    return html_page(tables, "anobench report", samples, sections=page["sections"], figures=figures)
