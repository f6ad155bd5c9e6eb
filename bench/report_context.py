"""What a number rests on, read from the artifacts beside each results file (issue 15).

A result row says what was measured; the run folder it came from says on how many test images,
with how many real reference defects, and at what cost. :func:`gather_context` reads, for every
results file that sits in a detector run folder (``run.json`` beside it):

- ``scores-<protocol>.csv``: the test set (images, anomalies, normals);
- ``run.json``: training time, detector image size, the generated set's folder and data root;
- the generated set's ``dataset.json``: seconds per sample, peak memory, device, sample count,
  and the protocol's reference defects; the generator class says whether it uses them
  (``needs.reference_anomalies``) or is zero-shot.

Results files outside a run folder (a merged ``results.csv``) add no context; the report then
says so instead of guessing.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CONTEXT_COLUMNS = ("dataset", "category", "generator", "config_hash", "seed", "protocol", "n_test", "n_anomalies", "n_normals",
                   "references", "zero_shot", "seconds_per_sample", "peak_memory_mb", "device", "train_minutes",
                   "n_samples", "demo_data")
DEMO_MARKER = "anobench-demo.json"  # anobench.demo.MARKER; read here without importing cv2
# Warn when a number rests on fewer than this many test anomalies / real reference defects.
MIN_TEST_ANOMALIES = 5
MIN_REFERENCES = 3


def _record(cls, folder: Path):
    """A stage record of ``folder``, or None when it is missing or malformed (context is best effort)."""
    from anobench.errors import AnobenchError

    try:
        return cls.read(folder)
    except AnobenchError:
        return None


def _test_counts(run_dir: Path, protocol: str) -> tuple[int, int] | None:
    """(test images, anomalies) from the evaluator's per-image scores."""
    try:
        with open(run_dir / f"scores-{protocol}.csv", newline="", encoding="utf-8") as handle:
            labels = [row.get("label") for row in csv.DictReader(handle)]
    except OSError:
        return None
    return len(labels), sum(1 for v in labels if str(v).strip() in ("1", "True", "true"))


def _uses_references(generator: str) -> bool | None:
    try:
        from anobench.generators.base import available_generators

        cls = available_generators().get(generator)
    except Exception:  # noqa: BLE001 - a broken plug-in must not stop a report
        return None
    return None if cls is None else bool(cls.needs.reference_anomalies)


def run_context(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Context rows of one detector run folder: one per protocol it was evaluated under."""
    from anobench.artifacts import resolve_stored_path
    from anobench.records import DatasetRecord, RunRecord
    from anobench.results import hash_text, result_config_hash

    run_dir = Path(run_dir)
    run = _record(RunRecord, run_dir)
    if run is None:
        return []
    meta = run.to_dict()
    generated_dir = resolve_stored_path(run_dir, run, "generated")  # relative to the run, then absolute
    record = _record(DatasetRecord, generated_dir) if generated_dir is not None else None
    generated = record.to_dict() if record is not None else {}
    protocol_info = generated.get("protocol") or {}
    uses = _uses_references(str(meta.get("generator")))
    n_refs = len(protocol_info.get("references") or [])
    data_root = resolve_stored_path(run_dir, meta, "data_root") or Path(str(meta.get("data_root", "")))
    rows = []
    protocols = sorted(p.name[len("scores-"):-len(".csv")] for p in run_dir.glob("scores-*.csv"))
    for protocol in protocols or [str(meta.get("protocol", "thirds"))]:
        counts = _test_counts(run_dir, protocol)
        train_seconds = meta.get("train_seconds")
        rows.append({
            "dataset": meta.get("dataset"), "category": meta.get("category"), "generator": meta.get("generator"),
            "config_hash": hash_text(result_config_hash(meta)),  # the setup, as its result rows key it
            "seed": int(meta.get("seed", 0)), "protocol": protocol,
            "n_test": counts[0] if counts else None, "n_anomalies": counts[1] if counts else None,
            "n_normals": counts[0] - counts[1] if counts else None,
            "references": None if uses is None else (n_refs if uses else 0), "zero_shot": None if uses is None else not uses,
            "seconds_per_sample": generated.get("seconds_per_sample"), "peak_memory_mb": generated.get("peak_memory_mb"),
            "device": generated.get("device"),
            "train_minutes": None if train_seconds is None else float(train_seconds) / 60.0,
            "n_samples": meta.get("generated_samples"), "demo_data": (data_root / DEMO_MARKER).is_file(),
        })
    return rows


def gather_context(results: Iterable[str | os.PathLike]) -> "pd.DataFrame":  # noqa: F821
    """Context rows (:data:`CONTEXT_COLUMNS`) for every run folder holding one of ``results``."""
    import pandas as pd

    from anobench.results import find_results_files

    rows, seen = [], set()
    for entry in results:
        try:
            files = find_results_files(entry)
        except Exception:  # noqa: BLE001 - read_results names the bad path; context is best effort
            continue
        for path in files:
            folder = path.parent.resolve()
            if folder not in seen:
                seen.add(folder)
                rows.extend(run_context(folder))
    return pd.DataFrame(rows, columns=list(CONTEXT_COLUMNS))
