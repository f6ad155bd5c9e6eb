"""Published numbers, quoted beside measured ones: ``anobench report --with-published NAME``.

``results/published/NAME.csv`` holds a paper's per-category table as tidy rows (dataset,
category, method, metric, value as a fraction, paper, table, source_line, protocol); see
``results/published/README.md`` for what each file quotes and what is not available. A report
with ``--with-published dhdiff`` adds one column per quoted method to every detection table of
the same dataset, for the categories measured there; ``dhdiff:AnomalyDiffusion,DH-Diff`` keeps
only those methods. Quoted columns are labelled ``[quoted: paper table]``, never bolded against
measured ones, and each table says where they come from and under which protocol.
"""

from __future__ import annotations

import os
from pathlib import Path

from anobench.errors import AnobenchError

PUBLISHED_COLUMNS = ("dataset", "category", "method", "metric", "value", "paper", "table", "source_line", "protocol")
QUOTED_MARK = "[quoted"


def published_dir() -> Path:
    """``results/published`` of this checkout (``ANOBENCH_PUBLISHED`` points elsewhere)."""
    env = os.environ.get("ANOBENCH_PUBLISHED")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "results" / "published"


def available() -> list[str]:
    folder = published_dir()
    return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []


def load_published(spec: str) -> "pd.DataFrame":  # noqa: F821
    """Rows of ``NAME`` or ``NAME:method,method`` (a path to a CSV works as NAME too)."""
    import pandas as pd

    name, _, methods = spec.partition(":")
    path = Path(name) if name.endswith(".csv") else published_dir() / f"{name}.csv"
    if not path.is_file():
        raise AnobenchError(f"--with-published: no published table {name!r} (available: {', '.join(available()) or 'none'})")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise AnobenchError(f"{path}: not a published table (missing columns {', '.join(missing)})")
    frame["value"] = pd.to_numeric(frame["value"], errors="raise")
    if methods:
        wanted = [m.strip() for m in methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in set(frame["method"])]
        if unknown:
            raise AnobenchError(f"--with-published {name}: no method {', '.join(unknown)} "
                                f"(available: {', '.join(sorted(set(frame['method'])))})")
        frame = frame[frame["method"].isin(wanted)]
    return frame.reset_index(drop=True)


def quoted_label(row) -> str:
    return f"{row['method']} {QUOTED_MARK}: {row['paper']} {_table_name(row['table'])}]"


def _table_name(table: str) -> str:
    return f"Table {table}" if len(str(table)) <= 4 else str(table)


def beside(measured, published) -> tuple["pd.DataFrame", dict[tuple[str, str, str], list[str]]]:  # noqa: F821
    """``measured`` plus quoted rows for every (dataset, protocol, detector) table it makes.

    Returns the combined rows and, per table key, the notes that say what is quoted.
    """
    import pandas as pd

    from anobench.results import NO_DETECTOR

    detection = measured[measured["detector"] != NO_DETECTOR]
    extra, notes = [], {}
    for (dataset, protocol, detector), part in detection.groupby(["dataset", "protocol", "detector"], sort=True):
        quoted = published[(published["dataset"] == dataset) & published["category"].isin(set(part["category"]))
                           & published["metric"].isin(set(part["metric"]))]
        if not len(quoted):
            continue
        rows = pd.DataFrame({
            "dataset": dataset, "category": quoted["category"], "generator": quoted.apply(quoted_label, axis=1),
            "detector": detector, "seed": 0, "protocol": protocol, "metric": quoted["metric"],
            "value": quoted["value"].astype(float), "config_hash": "quoted", "version": "",
        })
        for column in measured.columns:  # setup columns (profile, leaky, ...) stay empty
            if column not in rows.columns:
                rows[column] = ""
        extra.append(rows)
        sources = sorted({(r["paper"], _table_name(r["table"]), r["protocol"]) for _, r in quoted.iterrows()})
        notes[(dataset, protocol, detector)] = [
            f"Columns marked [quoted] are copied from {paper} {table}, not measured by anobench "
            f"(their protocol: {proto}); they are not ranked." for paper, table, proto in sources]
    if not extra:
        return measured, notes
    return pd.concat([measured] + extra, ignore_index=True), notes
