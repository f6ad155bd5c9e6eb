"""The results store: tidy rows, one measured value per row, in CSV (or parquet) files.

One row says: on this dataset/category, the detector trained on this generator's data with this
seed and protocol measured ``metric = value``. Generation-quality rows (issue 6) use the same
columns with ``detector = "-"``. Tidy rows from many runs concatenate into one table, which is
all the report needs; the ``config_hash`` and ``version`` columns say which settings and code
made the number.

Appends never corrupt what is already stored: under an exclusive lock, the whole file is
rewritten to a temp file and renamed over the old one, so a crash leaves either the old or
the new file, and parallel evaluators never lose each other's rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes

BASE_COLUMNS = ("dataset", "category", "generator", "detector", "seed", "protocol", "metric", "value",
                "config_hash", "version")
# the setup behind a number (text cells; empty where it does not apply, e.g. generation rows, or
# in files written before these columns existed, which still read)
SETUP_COLUMNS = ("generator_config_hash", "n_generated", "reference_anomalies", "encoder", "encoder_weights",
                 "profile", "steps", "lr", "image_size", "map_sigma", "n_test", "n_test_anomalous", "leaky")
RESULT_COLUMNS = BASE_COLUMNS + SETUP_COLUMNS
TEXT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in ("seed", "value"))
# what one measurement is about; a later row with the same key replaces an earlier one in reports.
# ``config_hash`` (generator config + detector config) is in it: two setups never merge.
KEY_COLUMNS = ("dataset", "category", "generator", "detector", "seed", "protocol", "config_hash", "metric")
# Names a run folder uses: the evaluator writes RUN/results.csv and RUN/heatmaps/*.png
RESULTS_FILENAME = "results.csv"
RESULTS_FILENAMES = ("results.csv", "results.parquet")
HEATMAP_DIR = "heatmaps"
# rows with this detector hold generation-quality values, not detection values
NO_DETECTOR = "-"


def append_rows(path: str | os.PathLike, rows: Any) -> Path:
    """Append tidy rows (dicts or a DataFrame with exactly :data:`RESULT_COLUMNS`) to a results file.

    ``.parquet`` paths need pyarrow; every other path is CSV. The header of an existing file
    must match, else nothing is written.
    """
    import pandas as pd

    path = Path(path)
    new = _rows_frame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    parquet = path.suffix.lower() == ".parquet"
    if parquet:
        _require_parquet(path)
    with _locked(path):
        exists = path.exists() and path.stat().st_size > 0
        if parquet:
            frame = pd.concat([_read_one(path), new], ignore_index=True) if exists else new
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(path, buffer.getvalue(), durable=True)
        else:
            old = b""
            legacy = False
            if exists:
                legacy = _read_one(path, rows=False).attrs.get("legacy", False)  # header check
                if legacy:  # an older file without the setup columns: rewrite it with them
                    exists = False
                    new = pd.concat([_read_one(path), new], ignore_index=True)
                else:
                    old = path.read_bytes()
                    if not old.endswith(b"\n"):
                        old += b"\n"
            body = new.to_csv(index=False, header=not exists, lineterminator="\n")
            atomic_write_bytes(path, old + body.encode("utf-8"), durable=True)
    return path


def read_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> "pd.DataFrame":  # noqa: F821
    """All rows of the given results files (or run folders, searched for results.csv/.parquet).

    Columns are exactly :data:`RESULT_COLUMNS`; ``seed`` is an int, ``value`` a float (NaN for
    values that could not be computed), the rest text. A file with other columns, a value that
    is not a number, or a missing path is an :class:`AnobenchError` naming it.
    """
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        files.extend(find_results_files(entry))
    if not files:
        raise AnobenchError("no results files given")
    frames = [_read_one(f) for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def find_results_files(path: str | os.PathLike) -> list[Path]:
    """The path itself if it is a file, else every results.csv / results.parquet below it."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for name in RESULTS_FILENAMES for p in path.rglob(name) if p.is_file())
        if not found:
            raise AnobenchError(f"{path}: no {' or '.join(RESULTS_FILENAMES)} found in this folder")
        return found
    raise AnobenchError(f"{path}: results file not found")


def _read_one(path: Path, rows: bool = True) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        _require_parquet(path)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise AnobenchError(f"{path}: unreadable parquet file ({exc.__class__.__name__})") from None
        return _typed(path, _with_setup(path, frame))
    try:
        if path.stat().st_size == 0:
            raise AnobenchError(f"{path}: empty file, not a results file (expected a header row)")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=None if rows else 0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AnobenchError(f"{path}: not a results CSV ({exc.__class__.__name__})") from None
    return _typed(path, _with_setup(path, frame))


def _with_setup(path: Path, frame: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """The frame in :data:`RESULT_COLUMNS`; a file of the older layout gets empty setup cells."""
    legacy = tuple(frame.columns) == BASE_COLUMNS
    if legacy:
        frame = frame.assign(**{c: "" for c in SETUP_COLUMNS})
    else:
        _check_columns(path, list(frame.columns))
    frame = frame[list(RESULT_COLUMNS)]
    frame.attrs["legacy"] = legacy
    return frame


def _check_columns(path: Path, columns: Sequence[str]) -> None:
    if tuple(columns) == RESULT_COLUMNS:
        return
    unknown = [c for c in columns if c not in RESULT_COLUMNS]
    missing = [c for c in RESULT_COLUMNS if c not in columns]
    parts = []
    if unknown:
        parts.append("unknown columns " + ", ".join(map(str, unknown)))
    if missing:
        parts.append("missing columns " + ", ".join(missing))
    if not parts:
        parts.append(f"columns in another order (expected {', '.join(RESULT_COLUMNS)})")
    raise AnobenchError(f"{path}: not a results file: {'; '.join(parts)}")


def _typed(path: Path, frame: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """Seed as int, value as float, text columns as str; bad cells name the file and line."""
    import pandas as pd

    legacy = frame.attrs.get("legacy", False)
    frame = frame.copy()
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].astype(str)
    value = pd.to_numeric(frame["value"].replace({"": "nan"}), errors="coerce")
    bad = value.isna() & ~frame["value"].astype(str).str.lower().isin(("", "nan", "none"))
    if bad.any():
        _bad_cell(path, frame, bad, "value", "a number")
    seed = pd.to_numeric(frame["seed"], errors="coerce")
    bad = seed.isna() | (seed != seed.round())
    if bad.any():
        _bad_cell(path, frame, bad, "seed", "an integer")
    frame["value"] = value.astype("float64")
    frame["seed"] = seed.astype("int64")
    frame = frame.reset_index(drop=True)
    frame.attrs["legacy"] = legacy
    return frame


def _bad_cell(path: Path, frame, bad, column: str, expected: str) -> None:
    index = int(bad.to_numpy().nonzero()[0][0])
    where = f"line {index + 2}" if path.suffix.lower() != ".parquet" else f"row {index + 1}"
    raise AnobenchError(f"{path}: {where}: {column} {frame[column].iloc[index]!r} is not {expected}")


def _rows_frame(rows: Any) -> "pd.DataFrame":  # noqa: F821
    """Rows as a DataFrame with exactly the result columns, typed like :func:`read_results`."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        frame = rows.copy()
    else:
        rows = list(rows)
        for number, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise AnobenchError(f"result row {number} is a {type(row).__name__}, not a mapping")
        frame = pd.DataFrame(rows, columns=None if rows else list(RESULT_COLUMNS))
    for column in SETUP_COLUMNS:  # setup cells are optional (empty where they do not apply)
        if column not in frame.columns:
            frame[column] = ""
    columns = list(frame.columns)
    if set(columns) != set(RESULT_COLUMNS):
        unknown = [c for c in columns if c not in RESULT_COLUMNS]
        missing = [c for c in RESULT_COLUMNS if c not in columns]
        raise AnobenchError(f"result rows: unknown columns {unknown or 'none'}, missing columns {missing or 'none'}")
    frame = frame[list(RESULT_COLUMNS)]
    for column in TEXT_COLUMNS:
        empty = frame[column].isna() | (frame[column].astype(str) == "")
        if empty.any() and column in KEY_COLUMNS:
            raise AnobenchError(f"result rows: empty {column}")
        frame[column] = frame[column].where(~frame[column].isna(), "").astype(str)
    try:
        seeds = [int(s) for s in frame["seed"]]
        values = [float(v) if v is not None else math.nan for v in frame["value"]]
    except (TypeError, ValueError) as exc:
        raise AnobenchError(f"result rows: bad seed or value ({exc})") from None
    if any(s != float(f) for s, f in zip(seeds, frame["seed"])):
        raise AnobenchError("result rows: seed must be an integer")
    frame["seed"] = pd.Series(seeds, index=frame.index, dtype="int64")
    frame["value"] = pd.Series(values, index=frame.index, dtype="float64")
    return frame.reset_index(drop=True)


def _require_parquet(path: Path) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise AnobenchError(f"{path}: parquet needs pyarrow (pip install pyarrow), or use a .csv results file")


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock on a sibling lock file: concurrent appends queue instead of losing rows."""
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
