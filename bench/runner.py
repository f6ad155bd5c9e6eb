"""``anobench run``: the grid generators x categories x seeds -> generate -> train -> evaluate -> report.

A run config is a YAML file (keys below); ``--preset quickstart`` is a built-in one on the
procedural demo dataset, sized to finish in minutes on a 2-core CPU. Every stage resumes: a
finished generated set, a trained run and an evaluated run are skipped, so re-running a killed
or extended grid only does the missing cells.

Config keys (relative paths are relative to the config file's folder)::

    out: runs/bottle                # everything is written below this folder
    dataset: mvtec_ad
    data_root: ../shared/data/mvtec_ad
    categories: [bottle]
    seeds: [0]                      # one cell per seed: seeds generation and training
    protocol: thirds
    generators:                     # name, or a mapping with generate options
      - name: draem
        num: 600
        anomaly_source: ../shared/data/dtd/images
        set: {variant: anomalib}    # generator config overrides
      - {name: draem, label: draem_fg, set: {foreground: true}}
                                    # label: names the entry's folders and cells (default: the
                                    # name); two entries of one generator need distinct labels
      - crop_paste                  # num defaults to 300
    train: {profile: quick, detector: unet, set: {steps: 300}}
    evaluate: {test_sets: [protocol]}   # add ``all`` to also score every test image
    report: {format: markdown, layout: paper, primary: image_auroc, resamples: 1000}
                                    # primary: the verdict's metric; figures go to OUT/figures/
    sweep: {num: [100, 300], synthetic_fraction: [0.25, 0.75], mix: [{draem: 0.5, crop_paste: 0.5}]}
                                    # optional one-axis sweeps (anobench.sweeps): extra cells labelled
                                    # draem[num=100], mix[draem=0.5,crop_paste=0.5], ...
    protocol_preset: anomalydiffusion   # optional: a paper's protocol (anobench.presets) instead
                                        # of train.profile; sets the split and the test set too

Cells run through an executor (:mod:`anobench.executors`): ``local``, one after another in this
process, or ``ray``, each stage a Ray task; a failing cell is listed at the end, the others finish.

Layout (``<generator>``: the entry's label, by default its name): ``OUT/generated/seed<S>/<generator>/<category>/`` (a swept ``num`` under ``seed<S>/num<N>/``,
a mixture under its label; cells differing only in training settings share one set: :func:`set_keys`),
``OUT/runs/<generator>/<category>/seed<S>/``
(each with ``results.csv`` and ``heatmaps/``), ``OUT/report.<ext>``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from anobench.errors import AnobenchError
from anobench.safety import check_category_name

RUN_KEYS = {"out", "dataset", "data_root", "categories", "seeds", "protocol", "generators", "train", "evaluate",
            "report", "demo_data", "sweep", "protocol_preset"}
GENERATOR_KEYS = {"name", "label", "num", "anomaly_source", "model", "checkpoint", "batch_size", "set", "device"}
TRAIN_KEYS = {"profile", "detector", "encoder", "encoder_weights", "set"}
EVALUATE_KEYS = {"test_sets", "heatmaps"}
REPORT_KEYS = {"format", "layout", "metrics", "primary", "resamples"}
REPORT_SUFFIX = {"markdown": "md", "latex": "tex", "csv": "csv", "html": "html"}
DEFAULT_NUM = 300

# The quickstart: the procedural demo dataset at 128 px, DRAEM (noise textures, no DTD needed)
# and Crop&Paste on its three categories, a short U-Net training per cell.
QUICKSTART: dict[str, Any] = {
    "out": "anobench-quickstart",
    "demo_data": {"size": 128, "train": 30},
    "dataset": "mvtec_ad",
    "data_root": "demo-data",  # relative to ``out`` for the preset
    "categories": ["weave", "grain", "disc"],
    "seeds": [0],
    "protocol": "thirds",
    "generators": [
        {"name": "draem", "num": 160, "set": {"variant": "anomalib"}},
        {"name": "crop_paste", "num": 160},
    ],
    "train": {"profile": "quick", "detector": "unet",
              "set": {"image_size": 128, "steps": 120, "val_every": 40, "checkpoint_every": 40,
                      "max_val_samples": 16, "val_normals": 6}},
    "evaluate": {"test_sets": ["protocol"], "heatmaps": 6},
    "report": {"format": "markdown"},
}


LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # one folder name, none of a sweep label's []=,


@dataclass
class GeneratorSpec:
    """One listed generator: ``name`` is the registered generator, ``label`` names its folders and cells."""

    name: str
    num: int = DEFAULT_NUM
    anomaly_source: Path | None = None
    model: str | None = None
    checkpoint: Path | None = None
    batch_size: int = 8
    device: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)
    label: str = ""  # empty: the name

    def __post_init__(self) -> None:
        self.label = self.label or self.name


@dataclass
class RunConfig:
    out: Path
    dataset: str
    data_root: Path
    categories: list[str]
    seeds: list[int]
    protocol: str
    generators: list[GeneratorSpec]
    train: dict[str, Any]
    test_sets: list[str]
    heatmaps: int
    report: dict[str, Any]
    demo_data: dict[str, Any] | None = None
    variants: list = field(default_factory=list)  # anobench.sweeps.Variant; empty: the generators as listed
    protocol_preset: str | None = None

    def cells(self) -> list[tuple[str, str, int]]:
        labels = [v.label for v in self.variants] or [g.label for g in self.generators]
        return [(g, c, s) for s in self.seeds for c in self.categories for g in labels]

    def variant(self, label: str):
        from anobench.sweeps import Variant

        found = next((v for v in self.variants if v.label == label), None)
        if found is None:
            spec = self.spec(label)
            found = Variant(spec.label, spec.label, spec.num, registered=spec.name)
        return found

    def spec(self, label: str) -> GeneratorSpec:
        """The listed generator labelled ``label`` (its name unless the entry gives a label)."""
        return next(g for g in self.generators if g.label == label)

    def generated_dir(self, generator: str, category: str, seed: int) -> Path:
        return self.out / "generated" / f"seed{seed}" / generator / category

    def run_dir(self, generator: str, category: str, seed: int) -> Path:
        return self.out / "runs" / generator / category / f"seed{seed}"


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise AnobenchError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise AnobenchError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")


def _as_list(value: Any, where: str) -> list:
    if value is None:
        raise AnobenchError(f"{where} is required")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise AnobenchError(f"{where} is empty")
    return items


def _overrides(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AnobenchError(f"{where}.set must be a mapping of key: value")
    return {str(k): _scalar_text(v) for k, v in value.items()}


def _scalar_text(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return "none" if value is None else str(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AnobenchError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _section(data: dict, key: str, source: str) -> dict:
    """An optional mapping section (``train:``, ``evaluate:``, ``report:``); a list or scalar is refused."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AnobenchError(f"{source}: {key} must be a mapping of key: value, got {type(value).__name__}")
    return dict(value)


def parse_run_config(data: dict[str, Any], base: Path, source: str = "config") -> RunConfig:
    """Validate a run config mapping; relative paths resolve against ``base``."""
    _check_keys(source, data, RUN_KEYS)

    def path(value: Any) -> Path | None:
        if value is None:
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else base / p

    out = path(data.get("out")) or base / "anobench-run"
    generators = []
    for i, entry in enumerate(_as_list(data.get("generators"), f"{source}: generators")):
        if isinstance(entry, str):
            entry = {"name": entry}
        _check_keys(f"{source}: generators[{i}]", entry, GENERATOR_KEYS)
        if "name" not in entry:
            raise AnobenchError(f"{source}: generators[{i}] has no name")
        try:
            num = int(entry.get("num", DEFAULT_NUM))
            batch = int(entry.get("batch_size", 8))
        except (TypeError, ValueError, OverflowError):
            raise AnobenchError(f"{source}: generators[{i}]: num and batch_size must be integers") from None
        if num < 1 or batch < 1:
            raise AnobenchError(f"{source}: generators[{i}]: num and batch_size must be at least 1")
        label = str(entry.get("label") or entry["name"])
        if not LABEL_PATTERN.fullmatch(label) or re.fullmatch(r"num\d+", label):
            raise AnobenchError(f"{source}: generators[{i}]: label {label!r} must be one folder name of letters, "
                                "digits and _ . + - (not num<N>)")
        generators.append(GeneratorSpec(
            name=str(entry["name"]), label=label, num=num, anomaly_source=path(entry.get("anomaly_source")),
            model=entry.get("model"), checkpoint=path(entry.get("checkpoint")), batch_size=batch,
            device=str(entry.get("device", "auto")), overrides=_overrides(entry.get("set"), f"generators[{i}]"),
        ))
    labels = [g.label for g in generators]
    for label in dict.fromkeys(x for x in labels if labels.count(x) > 1):
        names = sorted({g.name for g in generators if g.label == label})
        raise AnobenchError(f"{source}: generators: {label} is listed twice; give each entry of "
                            f"{' and '.join(names)} its own `label:` (it names the entry's folders and cells)")
    from anobench.generators.base import get_generator_class
    from anobench.sweeps import parse_sweep

    for name in dict.fromkeys(g.name for g in generators):
        get_generator_class(name)
    train = _section(data, "train", source)
    _check_keys(f"{source}: train", train, TRAIN_KEYS)
    train["set"] = _overrides(train.get("set"), "train")
    evaluate = _section(data, "evaluate", source)
    _check_keys(f"{source}: evaluate", evaluate, EVALUATE_KEYS)
    from anobench.evaluation import TEST_SETS

    test_sets = [str(t) for t in _as_list(evaluate.get("test_sets", ["protocol"]), f"{source}: evaluate.test_sets")]
    bad = [t for t in test_sets if t not in TEST_SETS]
    if bad:
        raise AnobenchError(f"{source}: evaluate.test_sets: unknown {', '.join(bad)} (known: {', '.join(TEST_SETS)})")
    protocol, preset = str(data.get("protocol", "thirds")), data.get("protocol_preset")
    if preset is not None:
        protocol, test_sets = _apply_preset(str(preset), data, train, evaluate, protocol, test_sets, source)
    report = _section(data, "report", source)
    _check_keys(f"{source}: report", report, REPORT_KEYS)
    if report.get("format", "markdown") not in REPORT_SUFFIX:
        raise AnobenchError(f"{source}: report.format must be one of {', '.join(REPORT_SUFFIX)}")
    seeds = _as_list(data.get("seeds", [0]), f"{source}: seeds")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise AnobenchError(f"{source}: seeds must be non-negative integers, got {seeds!r}")
    if data.get("data_root") is None:
        raise AnobenchError(f"{source}: data_root is required")
    return RunConfig(
        out=out,
        dataset=str(data.get("dataset", "mvtec_ad")),
        data_root=path(data["data_root"]),
        categories=[check_category_name(str(c), f"{source}: categories:")
                    for c in _as_list(data.get("categories"), f"{source}: categories")],
        seeds=seeds,
        protocol=protocol,
        generators=generators,
        train=train,
        test_sets=test_sets,
        heatmaps=_count(evaluate.get("heatmaps", 8), f"{source}: evaluate.heatmaps"),
        report=report,
        demo_data=None if data.get("demo_data") is None else _section(data, "demo_data", source),
        variants=parse_sweep(data.get("sweep"), generators, source) if data.get("sweep") is not None else [],
        protocol_preset=None if preset is None else str(preset),
    )


def _apply_preset(name: str, data: dict, train: dict, evaluate: dict, protocol: str, test_sets: list[str],
                  source: str) -> tuple[str, list[str]]:
    """A protocol preset fixes the split and the default test set; it excludes ``train.profile``."""
    from anobench.presets import get_preset

    preset = get_preset(name)
    if "profile" in train:
        raise AnobenchError(f"{source}: give train.profile or protocol_preset, not both")
    if preset.split is not None:
        if "protocol" in data and protocol != preset.split:
            raise AnobenchError(f"{source}: protocol {protocol!r} contradicts protocol_preset {name} "
                                f"(split {preset.split!r}); drop the protocol key")
        protocol = preset.split
    if "test_sets" not in evaluate:
        test_sets = [preset.test_set]
    return protocol, test_sets


def load_run_config(path: str | Path | None = None, preset: str | None = None, out: str | Path | None = None,
                    protocol_preset: str | None = None) -> RunConfig:
    """A run config from a YAML file or a named preset; ``out`` overrides its output folder.

    ``protocol_preset`` sets (or replaces) the config's ``protocol_preset`` key.
    """
    import yaml

    if (path is None) == (preset is None):
        raise AnobenchError("give a CONFIG.yaml or --preset quickstart (one of them)")
    if preset is not None:
        if preset != "quickstart":
            raise AnobenchError(f"unknown preset {preset!r} (known: quickstart)")
        root = Path(out) if out else Path.cwd() / QUICKSTART["out"]
        data = dict(QUICKSTART, out=str(root.resolve()), data_root=str((root / QUICKSTART["data_root"]).resolve()))
        return parse_run_config(_with_protocol_preset(data, protocol_preset), Path.cwd(), "preset quickstart")
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnobenchError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AnobenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise AnobenchError(f"{path}: a run config is a YAML mapping")
    config = parse_run_config(_with_protocol_preset(data, protocol_preset), path.resolve().parent, str(path))
    if out is not None:
        config.out = Path(out).resolve()
    return config


def _with_protocol_preset(data: dict[str, Any], name: str | None) -> dict[str, Any]:
    if name is None:
        return data
    data = dict(data, protocol_preset=name)
    data.pop("protocol", None)
    data["train"] = {k: v for k, v in (data.get("train") or {}).items() if k != "profile"}
    return data


def _evaluated(run_dir: Path, protocol: str) -> bool:
    from anobench.results import RESULTS_FILENAME, read_results

    path = run_dir / RESULTS_FILENAME
    if not path.exists():
        return False
    try:
        return bool((read_results(path)["protocol"] == protocol).any())
    except AnobenchError:
        return False


def _check_sample_count(run_dir: Path, num: int) -> None:
    """A cell's run was trained on a frozen number of samples; a grid asking for another is refused."""
    trained_on = getattr(_run_record(run_dir), "generated_samples", None)
    if trained_on is not None and int(trained_on) != int(num):
        raise AnobenchError(f"{run_dir}: trained on {trained_on} generated samples, the config asks for {num}; "
                            "use another out folder (results of both would otherwise be confused)")


def _trained(run_dir: Path) -> bool:
    from anobench.records import COMPLETE

    return getattr(_run_record(run_dir), "status", None) == COMPLETE


def _run_record(run_dir: Path):
    """The cell's run.json record, or None when there is none or it is unreadable (the trainer names it)."""
    from anobench.records import RunRecord

    if not (run_dir / RunRecord.FILE).is_file():
        return None
    try:
        return RunRecord.read(run_dir)
    except AnobenchError:
        return None


def run_grid(config: RunConfig, progress: bool = True, echo=click.echo, executor: str = "local",
             address: str | None = None, max_parallel: int | None = None, task_cpus: int = 1, retries: int = 2,
             listeners=(), heartbeat: float = 60.0) -> str:
    """Run every missing cell of the grid; return the rendered report (also written to OUT).

    ``executor`` is ``local`` (one cell after another here) or ``ray`` (stages as Ray tasks; see
    :mod:`anobench.executors`). Failing cells do not stop the others: the report covers the
    finished cells, the failures are listed, and an :class:`AnobenchError` ends the run.
    ``listeners`` are called with each cell's outcome as it finishes (the MLflow logger).
    ``heartbeat``: seconds between two progress lines while cells run (0: none).
    """
    from anobench.executors import EXECUTORS, GridProgress, Heartbeat, cell_label, run_local, run_ray

    if executor not in EXECUTORS:
        raise AnobenchError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if executor == "local" and (address or max_parallel):
        raise AnobenchError("--address and --max-parallel need --executor ray")
    started = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    if config.demo_data is not None and not (config.data_root / config.categories[0]).is_dir():
        from anobench.demo import make_demo_dataset

        options = dict(config.demo_data)
        demo = make_demo_dataset(config.data_root, seed=0, size=int(options.get("size", 256)),
                                 n_train=int(options.get("train", 40)))
        echo(f"demo dataset written: {demo.line()}")
    cells = config.cells()
    tracker = GridProgress(len(cells), echo, list(listeners))
    with Heartbeat(tracker, heartbeat, started):
        if executor == "ray":
            run_ray(config, cells, tracker, address=address, max_parallel=max_parallel, task_cpus=task_cpus,
                    retries=retries)
        else:
            run_local(config, cells, tracker, progress=progress)
    failures = tracker.failures
    finished = [cell for cell in cells if (config.run_dir(*cell) / "results.csv").exists()]
    text = write_report(config, finished) if finished else "no cell finished: no report\n"
    echo(f"grid of {len(cells)} cells done in {(time.perf_counter() - started) / 60:.1f} min, "
         f"{len(failures)} failed; report: {config.out / ('report.' + REPORT_SUFFIX[config.report.get('format', 'markdown')])}")
    if failures:
        echo(text.rstrip("\n"))
        for outcome in failures:
            echo(f"failed: {cell_label(outcome.cell)}: {outcome.text}")
        raise AnobenchError(f"{len(failures)} of {len(cells)} cells failed (listed above); re-run the same command "
                            f"to retry them, finished cells are skipped")
    return text


def write_report(config: RunConfig, cells: list[tuple[str, str, int]]) -> str:
    """Write OUT/report.<ext> (and report.md) with the statistics and OUT/figures/; return the Markdown text."""
    from anobench.images import atomic_write_text
    from anobench.report import report_files

    fmt = config.report.get("format", "markdown")
    layout = config.report.get("layout")
    metrics = config.report.get("metrics")
    run_dirs = [config.run_dir(*cell) for cell in cells]
    stats = {"primary": config.report.get("primary"), "resamples": int(config.report.get("resamples", 1000))}
    generated = [d for d in (config.generated_dir(*cell) for cell in cells) if d.is_dir()]
    report_path = config.out / f"report.{REPORT_SUFFIX[fmt]}"
    text = report_files(run_dirs, fmt, metrics, layout, generated=generated if fmt == "html" else (),
                        figures_dir=config.out / "figures", out=report_path, **stats)
    atomic_write_text(report_path, text)
    if fmt == "markdown":
        return text
    markdown = report_files(run_dirs, "markdown", metrics, layout, **stats)  # the terminal's readable table
    atomic_write_text(config.out / "report.md", markdown)
    return markdown


SetKey = tuple  # (listed generator, category, seed, num): one plain generated set


def set_keys(config: RunConfig, cell: tuple[str, str, int]) -> list[SetKey]:
    """The plain generated sets a cell trains on: its generator's, or a mixture's components.

    Cells that differ only in training settings (a ``synthetic_fraction`` sweep, a ``num`` sweep
    value equal to the listed ``num``) and mixtures over listed generators name the same key:
    the executors make each key once and every cell needing it waits for it.
    """
    from anobench.sweeps import mixture_counts

    label, category, seed = cell
    variant = config.variant(label)
    if variant.components is None:
        return [(variant.generator, category, seed, variant.num)]
    counts = mixture_counts(variant.components, variant.num)
    return [(name, category, seed, max(config.spec(name).num, count)) for name, count in counts.items()]


def set_dir(config: RunConfig, key: SetKey) -> Path:
    """Where a plain set lives: ``OUT/generated/seed<S>[/num<N>]/<generator>/<category>``."""
    name, category, seed, num = key
    root = config.generated_dir(name, category, seed).parent.parent
    return (root if num == config.spec(name).num else root / f"num{num}") / name / category


def cell_set_dir(config: RunConfig, cell: tuple[str, str, int]) -> Path:
    """The folder a cell trains on: its plain set, or its composed mixture."""
    if config.variant(cell[0]).components is not None:
        return config.generated_dir(*cell)
    return set_dir(config, set_keys(config, cell)[0])


def generate_set(config: RunConfig, key: SetKey, progress: bool):
    """Write (or complete) one plain set; returns its :class:`GenerationSummary`."""
    from anobench.generation import generate_dataset

    label, category, seed, num = key
    spec = config.spec(label)
    return generate_dataset(
        spec.name, config.dataset, config.data_root, category, num, set_dir(config, key).parent.parent, seed=seed,
        split=config.protocol, anomaly_source=spec.anomaly_source, model=spec.model, checkpoint=spec.checkpoint,
        device=spec.device, batch_size=spec.batch_size, overrides=spec.overrides,
        image_size=_image_size(config.train), progress=progress, label=spec.label)


def compose_cell_set(config: RunConfig, cell: tuple[str, str, int]) -> Path:
    """A mixture cell's set, composed from its component sets (already generated)."""
    from anobench.sweeps import compose_mixture, mixture_counts

    variant = config.variant(cell[0])
    counts = mixture_counts(variant.components, variant.num)
    parts = {key[0]: set_dir(config, key) for key in set_keys(config, cell)}
    return compose_mixture(parts, counts, config.generated_dir(*cell))


def _image_size(train: dict[str, Any]) -> int:
    """Generate at the size the detector trains at (the profile's, or ``train.set.image_size``)."""
    from anobench.detectors.profiles import PROFILES

    size = (train.get("set") or {}).get("image_size")
    if size is not None:
        try:
            return int(size)
        except ValueError:
            raise AnobenchError(f"train.set.image_size must be an integer, got {size!r}") from None
    profile = train.get("profile", "quick")
    if profile not in PROFILES:
        raise AnobenchError(f"unknown train profile {profile!r} (known: {', '.join(PROFILES)})")
    return PROFILES[profile].image_size
