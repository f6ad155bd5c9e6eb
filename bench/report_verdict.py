"""The verdict that opens a report, and the tables that say what it rests on and what it costs.

Which generator's data made the best detector? The verdict ranks generators by the mean over
categories of one primary metric (``--primary``), with 95% bootstrap intervals where the
statistics module provides them, and counts the categories each generator wins. Then: the test
set each category's numbers rest on, each generator's real reference defects (or zero-shot), the
cost (seconds per generated sample, peak memory, training minutes), and a warning for every
category whose numbers rest on fewer than 5 test anomalies or 3 reference defects.

Why pixel AP is the default primary metric: the question is whether synthetic defects teach a
detector to find real ones where they are. Pixel AUROC saturates (defect pixels are ~1% of a
test set, so ranking the 99% normal pixels well is enough: 97-99 for every generator in the
papers); AUPRO to FPR 0.3 weights each defect region equally but forgives false-positive area up
to 30% of the normal pixels, so broad blobs score well; image AUROC says nothing about location.
Pixel AP is threshold-free and falls with every false-positive pixel on any test image, so it
separates generators most (DRAEM, AnomalyDiffusion and DH-Diff all report it). On the demo data
it is also the metric whose ranking the per-category tables disagree with least often.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.report_context import MIN_REFERENCES, MIN_TEST_ANOMALIES
from anobench.report_tables import METRIC_LABELS, Cell, Row, Table, Value
from anobench.results import NO_DETECTOR

DEFAULT_PRIMARY = "pixel_ap"
# when the primary metric is not stored: the next one of these that is
PRIMARY_FALLBACK = ("pixel_ap", "aupro", "pixel_f1max", "image_ap", "image_auroc", "pixel_auroc", "image_f1max")

# Hook for the statistics module: (rows of one comparison, metric) -> {generator: (low, high)}.
IntervalFn = Callable[[Any, str], Mapping[str, tuple[float, float]]]
# The statistics module's judgement: ((dataset, protocol, detector), metric) -> anobench.statistics.Verdict
JudgeFn = Callable[[tuple[str, str, str], str], Any]


def pick_primary(df, primary: str | None) -> tuple[str | None, str | None]:
    """(metric used, note when it is not the one asked for)."""
    stored = set(df.loc[df["detector"] != NO_DETECTOR, "metric"])
    wanted = primary or DEFAULT_PRIMARY
    if wanted in stored:
        return wanted, None
    for metric in PRIMARY_FALLBACK:
        if metric in stored:
            return metric, f"{METRIC_LABELS.get(wanted, wanted)} is not stored; ranked by {METRIC_LABELS.get(metric, metric)}."
    return None, None


def verdict_tables(df, context, primary: str | None = None, names: Callable[[str], str] = str,
                   intervals: IntervalFn | None = None, judge: JudgeFn | None = None) -> list[Table]:
    """The verdict, test-set and cost tables for every (dataset, protocol, detector) comparison."""
    from anobench.report_tables import _latest

    if primary is not None and primary not in METRIC_LABELS:
        raise AnobenchError(f"--primary: unknown detection metric {primary!r} (choose from {', '.join(METRIC_LABELS)})")
    df = _latest(df.assign(registered=df["generator"]))
    context = label_context(context, df)
    df = df.drop(columns="registered")
    detection = df[df["detector"] != NO_DETECTOR]
    if len(detection) == 0:
        return []
    metric, fallback_note = pick_primary(detection, primary)
    if metric is None:
        return []
    tables = []
    for (dataset, protocol, detector), part in detection.groupby(["dataset", "protocol", "detector"], sort=True):
        ctx = _context_for(context, dataset, protocol)
        judged = _judged(judge, (dataset, protocol, detector), metric)
        found = intervals if intervals is not None else (
            (lambda _part, _metric, v=judged: v.intervals) if judged is not None else None)
        table = _verdict(part, metric, dataset, protocol, detector, ctx, names, found, fallback_note)
        if judged is not None:
            _add_judgement(table, judged, names)
        tables.append(table)
        tables.append(_test_sets(part, dataset, protocol, ctx, names))
    cost = _cost(detection, context, names)
    if cost is not None:
        tables.append(cost)
    return tables


def label_context(context, df):
    """Context rows named as the result rows name their setup (two setups of one generator stay apart).

    ``df`` holds the labelled rows with their registered generator name in ``registered``.
    """
    from anobench.results import hash_text

    if context is None or len(context) == 0 or "config_hash" not in context.columns:
        return context
    pairs = df[["registered", "config_hash", "generator"]].drop_duplicates()
    labels = {(r, h): g for r, h, g in zip(pairs["registered"], pairs["config_hash"], pairs["generator"])}
    context = context.copy()
    context["generator"] = [labels.get((g, hash_text(h)), g) for g, h in zip(context["generator"], context["config_hash"])]
    return context


def _judged(judge: JudgeFn | None, group: tuple[str, str, str], metric: str):
    if judge is None:
        return None
    try:
        return judge(group, metric)
    except Exception:  # noqa: BLE001 - the ranking stands without the statistics
        return None


def _add_judgement(table: Table, judged, names: Callable[[str], str]) -> None:
    """The statistics module's sentence (significant winner, or no significant difference) first."""
    text = judged.text()
    for name in sorted(judged.means, key=len, reverse=True):
        text = text.replace(f" {name} ", f" {names(name)} ").replace(f" {name},", f" {names(name)},")
    table.notes = [("Ranking: " + n[len("Verdict: "):]) if n.startswith("Verdict: ") else n
                   for n in table.notes if not n.startswith("No intervals")]
    table.notes.insert(0, "Verdict: " + text)
    table.notes += [f"Statistics: {n}." for n in getattr(judged, "notes", [])]


def _context_for(context, dataset: str, protocol: str):
    if context is None or len(context) == 0:
        return None
    part = context[(context["dataset"] == dataset) & (context["protocol"] == protocol)]
    return part if len(part) else None


def reference_label(ctx, generator: str) -> str:
    """``zero-shot``, ``N real reference defects`` (per category: a range), or ``''`` when unknown."""
    if ctx is None:
        return ""
    rows = ctx[ctx["generator"] == generator]
    if not len(rows) or rows["zero_shot"].isna().all():
        return ""
    if bool(rows["zero_shot"].dropna().all()):
        return "zero-shot"
    refs = sorted({int(v) for v in rows["references"].dropna()})
    if not refs:
        return ""
    count = str(refs[0]) if len(refs) == 1 else f"{refs[0]}-{refs[-1]}"
    return f"{count} real reference defect{'s' if refs[-1] != 1 else ''}" + (" per category" if len(set(rows["category"])) > 1 else "")


def _verdict(df, metric: str, dataset: str, protocol: str, detector: str, ctx, names, intervals,
             fallback_note: str | None) -> Table:
    part = df[df["metric"] == metric]
    per_cell = part.groupby(["category", "generator"])["value"].mean()  # mean over seeds
    table = per_cell.unstack("generator")
    categories = list(table.index)
    generators = list(table.columns)
    complete = [g for g in generators if table[g].notna().all()]
    means = {g: float(table[g].mean()) for g in generators}
    ranks = table[complete].rank(axis=1, ascending=False, method="average") if complete else None
    best = table[complete].max(axis=1) if complete else None
    wins = {g: int(((table[g] == best) & table[g].notna()).sum()) if g in complete else 0 for g in generators}
    found = {}
    if intervals is not None:
        try:
            found = dict(intervals(part, metric) or {})
        except Exception:  # noqa: BLE001 - the verdict stands without intervals
            found = {}
    order = sorted(generators, key=lambda g: (g not in complete, -means[g] if not math.isnan(means[g]) else math.inf, g))
    rows = []
    for rank, g in enumerate(order, 1):
        label = names(g) + (f" ({reference_label(ctx, g)})" if reference_label(ctx, g) else "")
        lo_hi = found.get(g)
        finite = lo_hi is not None and not any(math.isnan(float(v)) for v in lo_hi)
        interval = Cell(text=f"{100 * lo_hi[0]:.1f} to {100 * lo_hi[1]:.1f}") if finite else Cell(text="–")
        mean_rank = Cell(text=f"{ranks[g].mean():.2f}") if ranks is not None and g in complete else Cell(text="–")
        rows.append(Row([str(rank) if g in complete else "–", label],
                        [Cell([Value(means[g], comparable=g in complete)]), interval,
                         Cell(text=f"{wins[g]} of {len(categories)}"), mean_rank]))
    if rows and complete:
        rows[0].cells[0].values[0].bold = True
    label = METRIC_LABELS.get(metric, metric)
    notes = []
    if len(complete) >= 2:
        first, second = order[0], order[1]
        gap = 100 * (means[first] - means[second])
        notes.append(f"Verdict: {names(first)} ranks first on {label} (mean {100 * means[first]:.1f} over "
                     f"{len(categories)} categor{'y' if len(categories) == 1 else 'ies'}, {gap:.1f} points ahead of "
                     f"{names(second)}); it is best in {wins[first]} of {len(categories)}.")
        if not any(v is not None and not any(math.isnan(float(x)) for x in v) for v in found.values()):
            notes.append("No intervals: the statistics module (bootstrap over test images) did not provide any, "
                         "so a gap this size may be noise.")
    elif len(generators) == 1:
        notes.append(f"Only {names(generators[0])} was evaluated: nothing to rank it against.")
    incomplete = [g for g in generators if g not in complete]
    if incomplete:
        notes.append("Not ranked (missing categories): " + ", ".join(names(g) for g in incomplete) + ".")
    if fallback_note:
        notes.append(fallback_note)
    notes += warnings(ctx, names)
    title = f"{dataset}: verdict, generators ranked by {label} in %, detector {detector}, protocol {protocol}"
    return Table(title, ["Rank", "Generator"], [f"mean {label}", "95% interval", "categories best", "mean rank"],
                 [""], rows, notes)


def warnings(ctx, names: Callable[[str], str] = str) -> list[str]:
    """One line per category whose numbers rest on too few test anomalies or reference defects."""
    if ctx is None:
        return []
    out = []
    for category, rows in ctx.groupby("category", sort=True):
        anomalies = rows["n_anomalies"].dropna()
        if len(anomalies) and int(anomalies.min()) < MIN_TEST_ANOMALIES:
            out.append(f"Warning: {category} has only {int(anomalies.min())} test anomalies "
                       f"(fewer than {MIN_TEST_ANOMALIES}); its numbers move by whole steps per image.")
        few = rows[(rows["zero_shot"] == False) & rows["references"].notna()]  # noqa: E712 - pandas mask
        few = few[few["references"] < MIN_REFERENCES]
        for generator in sorted(set(few["generator"])):
            n = int(few[few["generator"] == generator]["references"].min())
            out.append(f"Warning: {category}: {names(generator)} learnt from only {n} real reference "
                       f"defect{'s' if n != 1 else ''} (fewer than {MIN_REFERENCES}).")
    return out


def _test_sets(df, dataset: str, protocol: str, ctx, names) -> Table:
    categories = sorted(df["category"].unique())
    generators = sorted(df["generator"].unique())
    ref_users = [] if ctx is None else [g for g in generators if reference_label(ctx, g) not in ("", "zero-shot")]
    rows = []
    for category in categories:
        cells = []
        c = None if ctx is None else ctx[ctx["category"] == category]
        for column in ("n_test", "n_anomalies", "n_normals"):
            values = [] if c is None else sorted({int(v) for v in c[column].dropna()})
            cells.append(Cell(text="/".join(map(str, values)) if values else "not recorded"))
        for g in ref_users:
            refs = sorted({int(v) for v in c[c["generator"] == g]["references"].dropna()}) if c is not None else []
            cells.append(Cell(text="/".join(map(str, refs)) if refs else "–"))
        rows.append(Row([category], cells))
    zero = [] if ctx is None else [g for g in generators if reference_label(ctx, g) == "zero-shot"]
    notes = [f"Zero-shot (no real defect seen): {', '.join(names(g) for g in zero)}."] if zero else []
    if ctx is None:
        notes.append("Test-set sizes are read from the run folders beside the results files; none were found.")
    title = f"{dataset}: test set per category (protocol {protocol}; the same images for every generator)"
    return Table(title, ["Category"], ["test images", "anomalies", "normals"] + [f"{names(g)} references" for g in ref_users],
                 [""], rows, notes)


def _cost(df, context, names) -> Table | None:
    """Generation and training cost per generator: means over the cells found."""
    if context is None or len(context) == 0:
        return None
    generators = sorted(set(df["generator"]) & set(context["generator"]))
    if not generators:
        return None
    rows = []
    for g in generators:
        part = context[context["generator"] == g]

        def mean(column: str, fmt: str) -> Cell:
            values = part[column].dropna().astype(float)
            return Cell(text=fmt.format(float(np.mean(values))) if len(values) else "–")

        devices = sorted({str(d) for d in part["device"].dropna()})
        rows.append(Row([names(g)], [mean("seconds_per_sample", "{:.3g}"), mean("peak_memory_mb", "{:.0f}"),
                                     Cell(text=", ".join(devices) or "–"), mean("train_minutes", "{:.2g}"),
                                     mean("n_samples", "{:.0f}")]))
    return Table("cost per generator (mean over its cells)", ["Generator"],
                 ["generation s/sample", "generation peak MiB", "device", "training min", "samples"], [""], rows,
                 ["Generation cost from each generated set's dataset.json; training minutes from run.json."])
