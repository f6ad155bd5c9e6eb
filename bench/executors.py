"""Executors for ``anobench run``: the grid's cells in one process (``local``) or as Ray tasks (``ray``).

A cell (generator, category, seed) is three stages, each a plain function here:
:func:`generate_stage` writes the generated set, :func:`train_stage` trains the detector on it,
:func:`evaluate_stage` scores the run and writes the cell's ``RUN/results.csv``. Every stage
resumes from what is on disk (atomic writes, checkpoints), so a cell is idempotent: re-running
it after a crash, a killed worker or a preempted node only does what is missing, and a finished
cell is skipped before any task starts.

Both executors report to one :class:`GridProgress` on the driver (cells done / running /
failed / total, seconds per cell), and a :class:`Heartbeat` prints the counts every minute
(``--heartbeat``) between finished cells. A failing cell does not stop the others; its one-line error
is collected and listed at the end. Results are written per cell as each evaluation finishes
(one ``results.csv`` per run folder, merged on read), so ``anobench report OUT/runs`` works
while the grid still runs.

The Ray executor submits each stage as a task with a resource request (one GPU when the stage
runs on CUDA, ``task_cpus`` CPUs otherwise), chained by object references so Ray runs them in
dependency order. A generated set is keyed by its folder (:func:`anobench.runner.set_keys`), so
a set shared by several cells (a ``synthetic_fraction`` sweep trains several detectors on the
listed generator's set; a mixture composes listed generators' sets) is one generate task that
every training needing it depends on, under both executors made once. Tasks whose worker dies
(killed, out of memory, node lost) are retried ``retries`` times by Ray and resume from the
stage's checkpoints; an exception raised by the stage is a cell failure, not retried (it would
fail the same way). Every worker must see ``OUT`` and the data at the same paths: a shared
filesystem, checked on each node before the first task.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from anobench.errors import AnobenchError

if TYPE_CHECKING:
    from anobench.runner import RunConfig

EXECUTORS = ("local", "ray")
Cell = tuple  # (generator, category, seed), as RunConfig.cells() yields them


def cell_label(cell: Cell) -> str:
    name, category, seed = cell
    return f"{name}/{category}/seed{seed}"


# --- the three stages of a cell (run in the driver or in a Ray worker) ---

def _wanted_protocols(config: "RunConfig") -> list[str]:
    from anobench.evaluation import ALL_TEST_IMAGES

    return [ALL_TEST_IMAGES if t == ALL_TEST_IMAGES else config.protocol for t in config.test_sets]


def cell_finished(config: "RunConfig", cell: Cell) -> bool:
    """True when the cell's detector is trained and every wanted test set is scored.

    A run trained on another sample count than the config asks for is an :class:`AnobenchError`
    (the cell fails; its old results would be confused with the new setup's).
    """
    from anobench.runner import _check_sample_count, _evaluated, _trained

    run_dir = config.run_dir(*cell)
    _check_sample_count(run_dir, config.variant(cell[0]).num)
    return _trained(run_dir) and all(_evaluated(run_dir, p) for p in _wanted_protocols(config))


def _sort_out(config: "RunConfig", cells: list[Cell], tracker: "GridProgress") -> list[Cell]:
    """The cells still to run; finished ones are reported skipped, refused ones failed."""
    todo = []
    for cell in cells:
        try:
            finished = cell_finished(config, cell)
        except AnobenchError as exc:
            tracker.finish(CellOutcome(cell, "failed", 0.0, one_line_error(exc)), started=False)
            continue
        if finished:
            tracker.finish(CellOutcome(cell, "skipped"))
        else:
            todo.append(cell)
    return todo


def set_label(key: tuple) -> str:
    name, category, seed, num = key
    return f"{name}/{category}/seed{seed}/num{num}"


def generate_stage(config: "RunConfig", key: tuple, progress: bool = False) -> dict[str, Any]:
    """Write (or complete) one plain generated set (a :func:`anobench.runner.set_keys` key).

    ``generations`` holds one id per execution of this stage: cells sharing the set carry the
    same id when it was made once.
    """
    from anobench.runner import generate_set

    started = time.perf_counter()
    summary = generate_set(config, key, progress)
    return {"folder": str(summary.folder), "samples": min(summary.total, key[3]), "made": summary.generated,
            "generate_seconds": time.perf_counter() - started, "generations": [uuid.uuid4().hex]}


def compose_stage(config: "RunConfig", cell: Cell, *parts: dict[str, Any]) -> dict[str, Any]:
    """A mixture cell's set from its component sets (the results of their generate stages)."""
    from anobench.runner import compose_cell_set

    started = time.perf_counter()
    folder = compose_cell_set(config, cell)
    return {"folder": str(folder), "samples": config.variant(cell[0]).num,
            "made": sum(p["made"] for p in parts), "generations": [g for p in parts for g in p["generations"]],
            "generate_seconds": sum(p["generate_seconds"] for p in parts) + time.perf_counter() - started}


def cell_set(config: "RunConfig", cell: Cell, made: dict[Path, Any], generate: Callable[[tuple], Any],
             compose: Callable[[Cell, list], Any]) -> Any:
    """The cell's generated set from ``generate(key)`` / ``compose(cell, parts)``, each set made once.

    ``made`` maps a set's folder to what ``generate`` returned for it (a result dict locally, an
    object reference under Ray): a set shared by several cells is generated by the first of
    them and every later one reuses it (under Ray: its task depends on the same reference).
    """
    from anobench.runner import set_dir, set_keys

    parts = []
    for key in set_keys(config, cell):
        folder = set_dir(config, key)
        if folder not in made:
            made[folder] = generate(key)
        parts.append(made[folder])
    return compose(cell, parts) if config.variant(cell[0]).components is not None else parts[0]


def train_stage(config: "RunConfig", cell: Cell, generated: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Train (or resume) the cell's detector on its generated set."""
    from anobench.detectors.train import train_detector

    name, category, seed = cell
    train = config.train
    started = time.perf_counter()
    trained = train_detector(
        config.dataset, config.data_root, category, Path(generated["folder"]), config.run_dir(*cell),
        profile=train.get("profile", "quick"), seed=seed, detector=train.get("detector"),
        encoder=train.get("encoder"), encoder_weights=train.get("encoder_weights"),
        overrides={**(train.get("set") or {}), **config.variant(name).train_overrides}, progress=progress,
        protocol_preset=config.protocol_preset, num=config.variant(name).num,
    )
    return {**generated, "steps": trained.steps, "train_seconds": time.perf_counter() - started}


def evaluate_stage(config: "RunConfig", cell: Cell, trained: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Score the trained run on every wanted test set not scored yet; appends its result rows."""
    from anobench.evaluation import evaluate
    from anobench.runner import _evaluated

    run_dir = config.run_dir(*cell)
    started = time.perf_counter()
    lines = []
    for test_set, protocol in zip(config.test_sets, _wanted_protocols(config)):
        if _evaluated(run_dir, protocol):
            continue
        result = evaluate(run_dir, test_set=test_set, heatmaps=config.heatmaps, progress=progress,
                          setup=config.variant(cell[0]).setup() if config.variants else None)
        lines.append(f"{protocol}: image AUROC {result.metrics['image_auroc']:.3f}, "
                     f"pixel AUROC {result.metrics['pixel_auroc']:.3f}, pixel AP {result.metrics['pixel_ap']:.3f}")
    return {**trained, "lines": lines, "evaluate_seconds": time.perf_counter() - started}


def _spec(config: "RunConfig", name: str):
    """The listed generator behind a cell (a sweep cell's base, a mixture's first component)."""
    variant = config.variant(name)
    base = next(iter(variant.components)) if variant.components else variant.generator
    return config.spec(base)


def _summary_text(result: dict[str, Any]) -> str:
    return (f"{result['samples']} samples, {result['steps']} steps; "
            f"{'; '.join(result['lines']) or 'evaluated before'}")


def one_line_error(exc: BaseException) -> str:
    """The first line of an error, with its class unless it is a user error."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, AnobenchError):
        return message
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__


# --- progress on the driver ---

@dataclass
class CellOutcome:
    cell: Cell
    status: str  # done | skipped | failed
    seconds: float = 0.0
    text: str = ""
    stages: dict[str, Any] = field(default_factory=dict)  # what the stages returned (folder, generations, ...)


@dataclass
class GridProgress:
    """Counts cells done / running / failed of the total and prints one line per finished cell.

    "running" counts cells started and not finished: under Ray, cells submitted whose tasks may
    still wait for a free worker (cap them with ``--max-parallel``). Skipped cells count as done.
    """

    total: int
    echo: Callable[[str], None]
    listeners: list[Callable[[CellOutcome], None]] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    running: int = 0
    outcomes: list[CellOutcome] = field(default_factory=list)

    def counts(self) -> str:
        return f"[{self.done}/{self.total} done, {self.running} running, {self.failed} failed]"

    def started(self, cell: Cell) -> None:
        self.running += 1

    def finish(self, outcome: CellOutcome, started: bool = True) -> None:
        if outcome.status != "skipped" and started:
            self.running -= 1
        if outcome.status == "failed":
            self.failed += 1
        else:
            self.done += 1
        self.outcomes.append(outcome)
        label = cell_label(outcome.cell)
        if outcome.status == "skipped":
            self.echo(f"{self.counts()} {label}: done, skipped")
        elif outcome.status == "failed":
            self.echo(f"{self.counts()} {label}: FAILED after {outcome.seconds:.0f} s: {outcome.text}")
        else:
            self.echo(f"{self.counts()} {label}: {outcome.text} ({outcome.seconds:.0f} s)")
        for listener in self.listeners:
            listener(outcome)

    @property
    def failures(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


class Heartbeat:
    """Print the counts every ``interval`` seconds while the grid runs, so a long grid is never silent.

    Cells finish minutes apart (under Ray the driver only wakes when one does); a daemon thread
    prints one plain line (no carriage return, fit for a log) with the counts and the elapsed
    time. ``interval`` <= 0 turns it off. Used as a context manager around an executor.
    """

    def __init__(self, tracker: GridProgress, interval: float, started: float | None = None):
        import threading

        self.tracker, self.interval = tracker, float(interval)
        self.started = time.perf_counter() if started is None else started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="anobench-heartbeat", daemon=True)

    def line(self) -> str:
        seconds = time.perf_counter() - self.started
        elapsed = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        return f"heartbeat {self.tracker.counts()} of {self.tracker.total} cells, {elapsed} elapsed"

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.tracker.echo(self.line())

    def __enter__(self) -> "Heartbeat":
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# --- local: one cell after another in this process ---

def run_local(config: "RunConfig", cells: list[Cell], tracker: GridProgress, progress: bool = True) -> None:
    """Run the missing cells one after another; a failing cell is recorded and the next one starts."""
    made: dict[Path, dict[str, Any]] = {}  # a set shared by several cells is made once

    def generate(key: tuple) -> dict[str, Any]:
        return generate_stage(config, key, progress)

    def compose(cell: Cell, parts: list) -> dict[str, Any]:
        return compose_stage(config, cell, *parts)

    for cell in _sort_out(config, cells, tracker):
        tracker.started(cell)
        started = time.perf_counter()
        try:
            generated = cell_set(config, cell, made, generate, compose)
            result = evaluate_stage(config, cell, train_stage(config, cell, generated, progress), progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the grid
            if os.environ.get("ANOBENCH_DEBUG"):
                raise
            tracker.finish(CellOutcome(cell, "failed", time.perf_counter() - started, one_line_error(exc)))
            continue
        tracker.finish(CellOutcome(cell, "done", time.perf_counter() - started, _summary_text(result), result))


# --- ray: stages as tasks with resource requests ---

def _in_task(stage: Callable, threads: int, *args):
    """Run a stage in a Ray worker with ``threads`` torch threads (Ray's own default is one)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    return stage(*args)


def _check_file(path: str, token: str) -> tuple[str, bool]:
    import socket

    try:
        return socket.gethostname(), Path(path).read_text() == token
    except OSError:
        return socket.gethostname(), False


def _wants_gpu(device: str | None, auto_uses_gpu: bool, cluster_gpus: float) -> bool:
    device = (device or "auto").lower()
    return device.startswith("cuda") or (device == "auto" and auto_uses_gpu and cluster_gpus > 0)


def stage_resources(config: "RunConfig", cell: Cell, stage: str, task_cpus: int, cluster_gpus: float) -> dict:
    """Ray resources for one stage: a GPU where the stage runs on CUDA, else ``task_cpus`` CPUs.

    Generation asks for a GPU for generators that run a network (pretrained weights or a
    training stage: the diffusion generators) when their device is cuda, or auto on a cluster
    with GPUs; procedural generators never do. Training asks for one when ``train.set.device``
    is cuda (or auto, once the detector config has a device field). Evaluation runs on CPUs.
    """
    gpu = False
    if stage == "generate":
        from anobench.generators.base import get_generator_class

        needs = get_generator_class(_spec(config, cell[0]).name).needs
        network = needs.pretrained_weights or needs.training_stage
        gpu = network and _wants_gpu(_spec(config, cell[0]).device, True, cluster_gpus)
    elif stage == "train":
        from anobench.detectors.train import TrainConfig

        has_device = any(f.name == "device" for f in fields(TrainConfig))
        gpu = _wants_gpu((config.train.get("set") or {}).get("device"), has_device, cluster_gpus)
    return {"num_cpus": task_cpus, "num_gpus": 1 if gpu else 0}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise AnobenchError("--executor ray needs Ray: pip install 'anobench[ray]'") from None
    return ray


def check_shared_filesystem(ray, out: Path) -> None:
    """Refuse to start unless every alive Ray node reads a file the driver just wrote under ``out``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe = out / f".anobench-shared-check-{token}"
    probe.write_text(token)
    try:
        check = ray.remote(num_cpus=0)(_check_file)
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(str(probe), token) for node in ray.nodes() if node.get("Alive")]
        blind = sorted(host for host, ok in ray.get(refs) if not ok)
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise AnobenchError(f"{out} is not visible on Ray node(s) {', '.join(blind)}: the run folder must be on a shared "
                            f"filesystem every worker sees at the same path (see README, 'Run the grid on Ray')")


def _ray_error_line(ray, exc: BaseException, retries: int) -> str:
    """The stage's own error (Ray wraps it); for a dead worker, say it was retried."""
    cause = getattr(exc, "cause", None)
    error = cause if isinstance(cause, BaseException) else exc
    if isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                          ray.exceptions.OutOfMemoryError)):
        return (f"{error.__class__.__name__}: the worker died on each of {retries + 1} tries "
                f"(killed, out of memory or node lost)")
    return one_line_error(error)


def run_ray(config: "RunConfig", cells: list[Cell], tracker: GridProgress, address: str | None = None,
            max_parallel: int | None = None, task_cpus: int = 1, retries: int = 2) -> None:
    """Run the missing cells as Ray tasks; connect to ``address`` (or start a local instance).

    When Ray is already initialised in this process (a test, a notebook), that instance is used
    and left running; one started here is shut down at the end.
    """
    ray = _import_ray()
    own = not ray.is_initialized()
    if own:
        try:
            ray.init(address=address, **({} if address else {"include_dashboard": False}),
                     log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise AnobenchError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                                f"{one_line_error(exc)}") from None
    try:
        check_shared_filesystem(ray, config.out)
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        config_ref = ray.put(config)
        remote = ray.remote(_in_task)
        todo = _sort_out(config, cells, tracker)

        def task(stage: str, cell: tuple, function: Callable, *args):
            resources = stage_resources(config, cell, stage, task_cpus, cluster_gpus)
            label = set_label(cell) if stage == "generate" else cell_label(cell)
            return remote.options(name=f"{stage} {label}", max_retries=retries, retry_exceptions=False,
                                  **resources).remote(function, task_cpus, config_ref, cell, *args)

        def generate(key: tuple):
            return task("generate", key, generate_stage)

        def compose(cell: Cell, parts: list):
            return task("compose", cell, compose_stage, *parts)  # top-level refs: Ray waits for them

        made: dict[Path, Any] = {}
        in_flight: dict[Any, tuple[Cell, float]] = {}
        limit = max_parallel or max(1, len(todo))
        try:
            while todo or in_flight:
                while todo and len(in_flight) < limit:
                    cell = todo.pop(0)
                    try:
                        generated = cell_set(config, cell, made, generate, compose)
                    except AnobenchError as exc:  # a refused cell (resources, config) fails alone
                        tracker.finish(CellOutcome(cell, "failed", 0.0, one_line_error(exc)), started=False)
                        continue
                    trained = task("train", cell, train_stage, generated)
                    in_flight[task("evaluate", cell, evaluate_stage, trained)] = (cell, time.perf_counter())
                    tracker.started(cell)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    cell, started = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed cell is reported, the grid goes on
                        tracker.finish(CellOutcome(cell, "failed", time.perf_counter() - started,
                                                   _ray_error_line(ray, exc, retries)))
                        continue
                    seconds = result["generate_seconds"] + result["train_seconds"] + result["evaluate_seconds"]
                    tracker.finish(CellOutcome(cell, "done", seconds, _summary_text(result), result))
        except KeyboardInterrupt:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
    finally:
        if own:
            ray.shutdown()
