"""Experiment tracking: ``anobench run ... --mlflow URI`` logs the grid where researchers look.

One MLflow run for the grid (the run config as params, the report and figures as artifacts at
the end) and one nested run per finished cell, named by the cell (its generator entry's label,
category, seed; params ``generator``, the registered name, and ``label``): the cell's full setup
as params (the detector's ``run.json`` and the generated set's ``dataset.json``, flattened to
dotted keys, and the rows' ``device`` and ``train_device``), its result rows as metrics named
``<protocol>/<metric>``, and its results file, scores, run metadata and heat maps as artifacts.
A failed cell gets a run with status FAILED and its one-line error as a tag. Re-running a grid
does not log a cell twice: a cell already logged with the same results file (by content hash) is
skipped. Logging happens on the driver, so it works with every executor. Needs
``pip install 'anobench[mlflow]'``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anobench.errors import AnobenchError

if TYPE_CHECKING:
    from anobench.executors import CellOutcome
    from anobench.runner import RunConfig

MAX_PARAM_LENGTH = 6000  # MLflow's limit for one param value
CELL_TAG = "anobench.cell"
RESULTS_TAG = "anobench.results_sha256"


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings as ``{"a.b.c": "value"}``; lists and other values as text (JSON for lists)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(data, sort_keys=True, default=str) if isinstance(data, (list, tuple)) else str(data)
    return {prefix.rstrip("."): text[:MAX_PARAM_LENGTH]}


def _read_record(cls, folder: Path) -> dict:
    """A stage record as a dict for logging; {} when it is missing or malformed (logging is best effort)."""
    try:
        return cls.read(folder).to_dict()
    except AnobenchError:
        return {}


class MlflowLogger:
    """A listener for :func:`anobench.runner.run_grid`: called with each cell's outcome, then ``close()``."""

    def __init__(self, uri: str, config: "RunConfig", experiment: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise AnobenchError("--mlflow needs MLflow: pip install 'anobench[mlflow]'") from None
        self.config = config
        name = experiment or f"anobench-{config.out.name}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(name)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI
            raise AnobenchError(f"--mlflow {uri}: cannot open the tracking store ({exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        self.parent = self.client.create_run(self.experiment_id, run_name=f"grid {config.out.name}",
                                             tags={"anobench.out": str(config.out)})
        self._params(self.parent.info.run_id, flatten(_config_dict(config), "grid."))

    def _params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[start:start + 100])

    def _logged(self, label: str, digest: str) -> bool:
        runs = self.client.search_runs([self.experiment_id], filter_string=(
            f"tags.`{CELL_TAG}` = '{label}' and tags.`{RESULTS_TAG}` = '{digest}'"), max_results=1)
        return bool(runs)

    def __call__(self, outcome: "CellOutcome") -> None:
        from mlflow.entities import Metric

        from anobench.executors import cell_label
        from anobench.results import RESULTS_FILENAME, read_results

        label = cell_label(outcome.cell)
        run_dir = self.config.run_dir(*outcome.cell)
        results = run_dir / RESULTS_FILENAME
        tags = {CELL_TAG: label, "mlflow.parentRunId": self.parent.info.run_id}
        if outcome.status == "failed":
            run = self.client.create_run(self.experiment_id, run_name=label, tags={**tags, "anobench.error": outcome.text})
            self.client.set_terminated(run.info.run_id, status="FAILED")
            return
        if not results.exists():
            return
        digest = hashlib.sha256(results.read_bytes()).hexdigest()
        if self._logged(label, digest):
            return
        run = self.client.create_run(self.experiment_id, run_name=label, tags={**tags, RESULTS_TAG: digest})
        run_id = run.info.run_id
        from anobench.runner import cell_set_dir

        generated = cell_set_dir(self.config, outcome.cell)  # a swept cell trains on its base set
        label, category, seed = outcome.cell
        variant = self.config.variant(label)
        name = variant.generator if variant.components else self.config.spec(variant.generator).name  # mix
        params = {"generator": name, "label": label, "category": category, "seed": str(seed), "dataset": self.config.dataset,
                  "protocol": self.config.protocol}
        from anobench.records import DatasetRecord, RunRecord

        params.update(flatten(_read_record(RunRecord, run_dir), "detector."))
        params.update(flatten(_read_record(DatasetRecord, generated), "generation."))
        self._params(run_id, params)
        rows = read_results(results)
        devices = {column: ", ".join(sorted({str(v) for v in rows[column] if str(v)}))
                   for column in ("device", "train_device")}  # where the cell was evaluated / trained
        self._params(run_id, {k: v for k, v in devices.items() if v})
        metrics = [Metric(f"{row.protocol}/{row.metric}", float(row.value), 0, 0)
                   for row in rows.itertuples() if math.isfinite(float(row.value))]
        if outcome.seconds:
            metrics.append(Metric("cell_seconds", float(outcome.seconds), 0, 0))
        self.client.log_batch(run_id, metrics=metrics)
        for path in sorted(run_dir.iterdir()):
            if path.is_file() and path.suffix in (".csv", ".json"):
                self.client.log_artifact(run_id, str(path))
            elif path.is_dir() and path.name == "heatmaps":
                self.client.log_artifacts(run_id, str(path), "heatmaps")
        if (generated / "dataset.json").exists():
            self.client.log_artifact(run_id, str(generated / "dataset.json"), "generated")
        self.client.set_terminated(run_id)

    def close(self) -> None:
        """Log the report and any figures of the grid to the grid's run, and end it."""
        out = self.config.out
        for path in sorted(out.glob("report.*")):
            self.client.log_artifact(self.parent.info.run_id, str(path))
        for folder in ("figures",):
            if (out / folder).is_dir():
                self.client.log_artifacts(self.parent.info.run_id, str(out / folder), folder)
        for path in sorted(out.glob("*.png")) + sorted(out.glob("*.svg")):
            self.client.log_artifact(self.parent.info.run_id, str(path), "figures")
        self.client.set_terminated(self.parent.info.run_id)


def _config_dict(config: "RunConfig") -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(config), default=str))
