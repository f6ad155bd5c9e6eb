"""The results store: tidy rows, one measured value per row, in CSV (or parquet) files.

One row says: on this dataset/category, the detector trained on this generator's data with this
seed and protocol measured ``metric = value``. Generation-quality rows (issue 6) use the same
columns with ``detector = "-"``. Tidy rows from many runs concatenate into one table, which is
all the report needs; the ``config_hash`` and ``version`` columns say which settings and code
made the number, the setup columns (:data:`SETUP_COLUMNS`) under which conditions, ``device``
included. Hashes are written ``h<hex>`` so that a plain ``pandas.read_csv`` never reads one as
a number (names that are numbers, e.g. BTAD's category ``01``, still need ``dtype=str``).

The API is two calls, :func:`append_rows` (``store, rows``) and :func:`read_rows` (``store``). A
store is one of:

* a file, ``results.csv`` (or ``.parquet``): appends run under an exclusive lock on a sibling
  ``.results.csv.lock``, so parallel writers on one machine never lose each other's rows. CSV
  rows are appended in place (one ``write`` per call, fsynced): a symlink is written through and
  the file keeps its mode and owner. A last line without its line end is a torn write (a kill
  or a full disk mid-append): it is never read as data, and the next append cuts it off before
  writing. Parquet is rewritten to a temp file and renamed (through symlinks, mode kept).
* a folder whose name ends in ``.d`` (e.g. ``results.d``): every append writes a new part file
  ``part-<time>-<host>-<pid>-<random>.csv`` by temp file + rename, and reads merge the parts in
  name (time) order. No lock and no shared file, so many processes on many hosts (Ray workers on
  a shared filesystem, NFS included) append without loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import errno
import fcntl
import importlib.util
import io
import math
import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from anobench.errors import AnobenchError, AnobenchWarning
from anobench.images import atomic_write_bytes

BASE_COLUMNS = ("dataset", "category", "generator", "detector", "seed", "protocol", "metric", "value",
                "config_hash", "version")
# the setup behind a number (text cells; empty where it does not apply, e.g. generation rows, or
# in files written before these columns existed, which still read)
# ``device``: where the row was measured (detection: the evaluation device; generation quality: the
# device the set was generated on, which its cost figures are about); ``train_device``: where the
# detector trained (from run.json). Older stores held the device as a ``device=<name>`` metric row
# of value 1: reads turn such rows into this column and drop them.
SETUP_COLUMNS = ("generator_config_hash", "n_generated", "reference_anomalies", "encoder", "encoder_weights",
                 "profile", "steps", "lr", "image_size", "map_sigma", "n_test", "n_test_anomalous", "leaky",
                 "device", "train_device")
RESULT_COLUMNS = BASE_COLUMNS + SETUP_COLUMNS
TEXT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in ("seed", "value"))
# what one measurement is about; a later row with the same key replaces an earlier one in reports.
# ``config_hash`` (generator config + detector config) is in it: two setups never merge.
KEY_COLUMNS = ("dataset", "category", "generator", "detector", "seed", "protocol", "config_hash", "metric")
# Config hashes are hex digests; as text they start with HASH_PREFIX so no CSV reader takes one for
# a number ("1234e567" is 1.234e570, "123456789012" an integer). Older rows without it gain it on
# read, so old and new rows of one setup keep one key.
HASH_COLUMNS = ("config_hash", "generator_config_hash")
HASH_PREFIX = "h"
_HEX = "[0-9a-fA-F]+"
LEGACY_DEVICE_PREFIX = "device="  # older stores: the device as metric "device=<name>", value 1
# Names a run folder uses: the evaluator writes RUN/results.csv and RUN/heatmaps/*.png
RESULTS_FILENAME = "results.csv"
RESULTS_FILENAMES = ("results.csv", "results.parquet")
# a folder store (one part file per append) has a name ending in this suffix, e.g. results.d
STORE_SUFFIX = ".d"
STORE_DIRNAME = "results.d"
HEATMAP_DIR = "heatmaps"
# rows with this detector hold generation-quality values, not detection values
NO_DETECTOR = "-"
_HEADER = (",".join(RESULT_COLUMNS) + "\n").encode()


def is_folder_store(path: str | os.PathLike) -> bool:
    """True for a folder store (a path whose name ends in ``.d``), existing or not."""
    return Path(path).name.endswith(STORE_SUFFIX) and not Path(path).is_file()


def append_rows(store: str | os.PathLike, rows: Any) -> Path:
    """Append tidy rows (dicts or a DataFrame with exactly :data:`RESULT_COLUMNS`) to a store.

    ``store`` is a results file (``.parquet`` needs pyarrow; anything else is CSV) or a folder
    store ``*.d``. The header of an existing file must match, else nothing is written. Returns
    the store's path (for a folder store, the folder).
    """
    import pandas as pd

    store = Path(store)
    new = _rows_frame(rows)
    if is_folder_store(store):
        _append_part(store, new)
        return store
    if store.is_dir():
        raise AnobenchError(f"{store}: is a folder; give a results file (.csv, .parquet) or a folder store "
                            f"named *{STORE_SUFFIX}")
    target = Path(os.path.realpath(store))  # through symlinks: the link's target gets the rows
    parquet = target.suffix.lower() == ".parquet"
    if parquet:
        _require_parquet(store)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from anobench.safety import os_error

        raise os_error(exc, target.parent) from None
    with _locked(target):
        exists = target.exists() and target.stat().st_size > 0
        if parquet:
            frame = pd.concat([_read_one(target), new], ignore_index=True) if exists else new
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(target, buffer.getvalue(), durable=True)
        else:
            _append_csv(target, new)
    return store


def check_appendable(store: str | os.PathLike, option: str = "--results") -> None:
    """Cheap checks that an append to ``store`` would succeed, for callers with expensive work first.

    Refuses a folder that is not a folder store, an existing file with another header, and a
    place that cannot be written (read-only disk, no permission), naming the path.
    """
    from anobench.safety import check_writable

    store = Path(store)
    if is_folder_store(store):
        check_writable(store, option)
        return
    if store.is_dir():
        raise AnobenchError(f"{option} {store}: is a folder; give a results file (.csv, .parquet) or a folder "
                            f"store named *{STORE_SUFFIX}")
    target = Path(os.path.realpath(store))
    if target.suffix.lower() == ".parquet":
        _require_parquet(target)
    if target.exists() and target.stat().st_size:
        if target.suffix.lower() == ".parquet":
            _read_one(target)
        else:
            with open(target, "rb") as handle:
                first = handle.readline()
            if first.endswith(b"\n"):
                _check_header(target, first[:-1])
    check_writable(target, option)


def _append_csv(path: Path, new: "pd.DataFrame") -> None:  # noqa: F821
    """Append rows in place under the caller's lock; a torn last line is cut off first."""
    from anobench.safety import os_error

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        size = os.fstat(fd).st_size
        keep = size
        if size:
            old = _pread_all(fd, size)
            keep = old.rfind(b"\n") + 1  # whole lines only: drop a torn last line
            if keep and _check_header(path, old[:old.index(b"\n")]):
                # an older file without the setup columns: rewrite it whole with them (atomic, mode kept)
                import pandas as pd

                frame = pd.concat([_read_one(path), new], ignore_index=True)
                atomic_write_bytes(path, frame.to_csv(index=False, lineterminator="\n").encode("utf-8"),
                                   durable=True)
                return
        body = new.to_csv(index=False, header=False, lineterminator="\n").encode("utf-8")
        data = (b"" if keep else _HEADER) + body
        try:
            if keep != size:
                os.ftruncate(fd, keep)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, keep)  # a partial append (disk full) leaves no torn row behind
            raise os_error(exc, path) from None
    finally:
        os.close(fd)


def _pread_all(fd: int, size: int) -> bytes:
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _check_header(path: Path, line: bytes) -> bool:
    """Refuse a foreign header; True for the older layout without the setup columns."""
    import csv as _csv

    try:
        header = next(_csv.reader([line.decode("utf-8").rstrip("\r")]))
    except (UnicodeDecodeError, StopIteration):
        raise AnobenchError(f"{path}: not a results CSV (unreadable header)") from None
    if _older_layout(header):
        return True
    _check_columns(path, header)
    return False


def _older_layout(columns: Sequence[str]) -> bool:
    """A header of an older layout: the base columns and the setup columns of its day, in order."""
    columns = tuple(columns)
    return len(BASE_COLUMNS) <= len(columns) < len(RESULT_COLUMNS) and columns == RESULT_COLUMNS[:len(columns)]


def _append_part(folder: Path, new: "pd.DataFrame") -> Path:  # noqa: F821
    """One new part file per append: unique name, temp file + rename, so no writer waits or loses."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"
    name = f"part-{time.time_ns():020d}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.csv"
    body = _HEADER + new.to_csv(index=False, header=False, lineterminator="\n").encode("utf-8")
    path = folder / name
    atomic_write_bytes(path, body, durable=True)
    return path


def read_rows(store: str | os.PathLike | Iterable[str | os.PathLike]) -> "pd.DataFrame":  # noqa: F821
    """All rows of a store (file or ``*.d`` folder), or of several; see :func:`read_results`."""
    return read_results(store)


def read_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> "pd.DataFrame":  # noqa: F821
    """All rows of the given results files (or run folders, searched for results.csv/.parquet).

    Columns are exactly :data:`RESULT_COLUMNS`; ``seed`` is an int, ``value`` a float (NaN for
    values that could not be computed), the rest text. A file with other columns, a value that
    is not a number, or a missing path is an :class:`AnobenchError` naming it. A folder store
    with no parts yet is an empty table.
    """
    import pandas as pd

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    stores = 0
    for entry in paths:
        stores += is_folder_store(entry) and Path(entry).is_dir()
        files.extend(find_results_files(entry))
    if not files:
        if stores:
            return _typed(Path("."), pd.DataFrame({c: [] for c in RESULT_COLUMNS}, dtype=str))
        raise AnobenchError("no results files given")
    frames = [_read_one(f) for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def store_parts(folder: str | os.PathLike) -> list[Path]:
    """The part files of a folder store, oldest first (temp files of unfinished appends skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("part-*.csv") if p.is_file())


def find_results_files(path: str | os.PathLike) -> list[Path]:
    """The path itself if it is a file, a folder store's parts, else every results file below it."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        if is_folder_store(path):
            return store_parts(path)
        found = sorted(p for name in RESULTS_FILENAMES for p in path.rglob(name) if p.is_file())
        for store in sorted(path.rglob(f"*{STORE_SUFFIX}")):
            if store.is_dir():
                found.extend(store_parts(store))
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
        data = path.read_bytes()
    except OSError as exc:
        from anobench.safety import os_error

        raise os_error(exc, path) from None
    if not data:
        raise AnobenchError(f"{path}: empty file, not a results file (expected a header row)")
    if not data.endswith(b"\n"):
        whole = data.rfind(b"\n") + 1
        if whole:
            line = data[:whole].count(b"\n") + 1
            warnings.warn(f"{path}: line {line} has no line end (a torn write), ignored", AnobenchWarning,
                          stacklevel=2)
            data = data[:whole]
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, nrows=None if rows else 0,
                            encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AnobenchError(f"{path}: not a results CSV ({exc.__class__.__name__})") from None
    return _typed(path, _with_setup(path, frame))


def _with_setup(path: Path, frame: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """The frame in :data:`RESULT_COLUMNS`; a file of an older layout gets empty cells for the newer columns."""
    legacy = _older_layout(frame.columns)
    if legacy:
        frame = frame.assign(**{c: "" for c in RESULT_COLUMNS if c not in frame.columns})
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
    frame = canonical_rows(frame).reset_index(drop=True)
    frame.attrs["legacy"] = legacy
    return frame


def canonical_rows(frame: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """Rows in today's form: hashes as :func:`hash_text`, ``device=<name>`` fact rows as the device column.

    Takes a frame with every result column (text columns as str); fact rows fill the empty
    ``device`` cells of their cell (same key but the metric) and are dropped.
    """
    import pandas as pd

    for column in HASH_COLUMNS:
        bare = frame[column].str.fullmatch(_HEX)
        frame[column] = frame[column].where(~bare, HASH_PREFIX + frame[column])
    facts = frame["metric"].str.startswith(LEGACY_DEVICE_PREFIX)
    if not facts.any():
        return frame
    cell = ["dataset", "category", "generator", "detector", "seed", "protocol", "config_hash"]
    named = frame[facts].assign(device=frame.loc[facts, "metric"].str[len(LEGACY_DEVICE_PREFIX):])
    devices = named.drop_duplicates(cell, keep="last").set_index(cell)["device"]
    frame = frame[~facts].copy()
    found = devices.reindex(pd.MultiIndex.from_frame(frame[cell])).fillna("").to_numpy()
    frame["device"] = frame["device"].where(frame["device"] != "", found)
    return frame


# the setup fields a label names when two setups of one generator sit side by side in a report
SETUP_LABEL_FIELDS = ("n_generated", "reference_anomalies", "encoder", "encoder_weights", "profile", "steps", "lr",
                      "image_size", "map_sigma", "generator_config_hash")


def setup_labels(generator: str, setups: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Column labels for several setups of one generator, keyed by config hash.

    ``setups`` maps each config hash (row form or bare digest) to one row or record of that setup.
    A label is ``name (field=value, ...)`` over the :data:`SETUP_LABEL_FIELDS` that differ, and
    ``name #digest`` when none does (or the fields alone would give two setups one label). A
    field some setup does not record (an older file) is left out of the comparison.
    """
    def field(setup, name):
        value = setup.get(name, "") if hasattr(setup, "get") else ""
        value = "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
        return hash_digest(value) if name == "generator_config_hash" else str(value)

    short = {h: hash_digest(h)[:6] for h in setups}
    known = [f for f in SETUP_LABEL_FIELDS if all(field(r, f) != "" for r in setups.values())]
    differ = [f for f in known if len({field(r, f) for r in setups.values()}) > 1]
    labels = {h: f"{generator} ({', '.join(f'{f}={field(r, f)}' for f in differ)})" if differ
              else f"{generator} #{short[h]}" for h, r in setups.items()}
    if len(set(labels.values())) < len(labels):
        labels = {h: f"{label} #{short[h]}" for h, label in labels.items()}
    return labels


def result_config_hash(meta: Mapping[str, Any]) -> str:
    """One hash for the settings behind a number: generator config + detector training config (of run.json)."""
    blob = json.dumps({"generator": meta.get("generator_config_hash"), "detector": meta.get("config_hash")},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def hash_text(value: str) -> str:
    """A config hash as result rows hold it: ``h`` + the hex digest (idempotent; other text unchanged)."""
    value = str(value)
    return HASH_PREFIX + value if re.fullmatch(_HEX, value) else value


def hash_digest(text: str) -> str:
    """The hex digest of a row's hash text (the inverse of :func:`hash_text`; other text unchanged)."""
    text = str(text)
    bare = text[len(HASH_PREFIX):]
    return bare if text.startswith(HASH_PREFIX) and re.fullmatch(_HEX, bare) else text


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
    return canonical_rows(frame).reset_index(drop=True)


def _require_parquet(path: Path) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise AnobenchError(f"{path}: parquet needs pyarrow (pip install pyarrow), or use a .csv results file")


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock on a sibling lock file: concurrent appends queue instead of losing rows."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        handle = open(lock, "a")
    except OSError as exc:
        from anobench.safety import os_error

        raise os_error(exc, lock) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # a filesystem without locks: say so, and name the safe alternative
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            raise AnobenchError(f"{path}: this filesystem cannot lock files; append to a folder store "
                                f"(a path ending in {STORE_SUFFIX}) instead") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
