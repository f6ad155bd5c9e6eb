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


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AnobenchError(f"--format: unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt



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
