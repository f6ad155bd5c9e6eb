"""Reports: the papers' tables from tidy result rows, as LaTeX, Markdown, CSV or an HTML page.

Tables are built once, format-free (:mod:`anobench.report_tables`), then written by one function
per format (:mod:`anobench.report_writers`, :mod:`anobench.report_html`), so a new table kind
only has to produce a :class:`Table` (see :func:`build_tables`).
"""

from __future__ import annotations

import os
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
    return WRITERS[fmt](tables)


def report_tables(df, metrics: Sequence[str] | None = None, layout: str | None = None, *, verdict: bool = False,
                  primary: str | None = None, context=None, judge=None) -> list[Table]:
    """The verdict tables (when asked) then every table of :func:`build_tables`, with display names."""
    from anobench.generators.base import display_name

    tables = build_tables(df, metrics, layout)
    if verdict:
        from anobench.report_verdict import verdict_tables

        tables = verdict_tables(df, context, primary, names=display_name, judge=judge) + tables
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
    """A generator's display name for a column or row label that is (or starts with) its name."""
    head, sep, tail = str(text).partition(" ")
    if head in generators:
        return display_name(head) + sep + tail
    return text


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


def render_tables(df, fmt: str, metrics: Sequence[str] | None = None, layout: str | None = None) -> str:
    """Only the tables, in ``fmt`` (HTML: the tables without page or images; CSV: table blocks)."""
    fmt = _check_format(fmt)
    return WRITERS[fmt](report_tables(df, metrics, layout))


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AnobenchError(f"--format: unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def report_files(results: Sequence[str | os.PathLike], fmt: str, metrics: Sequence[str] | None = None,
                 layout: str | None = None, generated: Sequence[str | os.PathLike] = (), images: int = 8, *,
                 primary: str | None = None, standalone: bool = False, out: str | os.PathLike | None = None) -> str:
    """``anobench report``: read results files or run folders, render with the verdict first.

    The context (test-set sizes, references, cost) comes from the run folders beside the results;
    HTML adds the category sections, samples and the figure files found beside ``out``.
    """
    from anobench.report_context import gather_context
    from anobench.results import read_results

    fmt = _check_format(fmt)
    df = read_results(list(results))
    if fmt == "csv":
        return tidy_csv(df, metrics)
    from anobench.report_verdict import statistics_judge

    context = gather_context(results)
    options = dict(verdict=True, primary=primary, context=context, judge=statistics_judge(results, df))
    if fmt != "html":
        return render_report(df, fmt, metrics, layout, standalone=standalone, **options)
    from anobench.report_page import page_parts

    samples, _ = gallery([], generated, limit=images)
    page = page_parts(results, images=images, out=out)
    return render_report(df, fmt, metrics, layout, samples=samples, page=page, **options)
