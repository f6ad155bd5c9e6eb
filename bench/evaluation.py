"""Scoring a trained detector on REAL held-out test images, as tidy result rows.

The test set is the one the run's protocol holds out (``split_category(...).test``): the same
images for every generator of a comparison, never the few-shot references a generator saw.
``test_set="all"`` scores every test image of the category instead, for comparison with papers
and reference runs that use the full MVTec test split; those rows carry protocol ``all``.

A run trained under a protocol preset (:mod:`anobench.presets`) is scored on that preset's test
set and also gets the preset's metric variants (e.g. AnomalyDiffusion's ``aupro_thr100``), as
separately named rows. Pixel maps are scored raw unless the run's config smooths them
(``map_sigma`` > 0, recorded in the rows' ``map_sigma`` column).

Outputs under the run folder: ``results.csv`` (appended tidy rows; a later row with the same key
wins in reports), ``scores-<protocol>.csv`` (per-image scores), ``maps-<protocol>.npz`` (per-image scores, masks and
quantised maps: what ``anobench report`` bootstraps, see :mod:`anobench.perimage`) and ``heatmaps/*.png`` (a few test
images with their ground-truth outline and the detector's map).
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import anobench
from anobench.datasets import load_category
from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes, atomic_write_text, png_bytes
from anobench.artifacts import resolve_stored_path
from anobench.protocol import frozen_split, split_category
from anobench.results import hash_text, result_config_hash

TEST_SETS = ("protocol", "all")
ALL_TEST_IMAGES = "all"


@dataclass
class Evaluation:
    run_dir: Path
    protocol: str
    n_images: int
    n_anomalous: int
    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    results_path: Path
    seconds: float

    def line(self) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return (f"{self.run_dir} [{self.protocol}: {self.n_images} test images, {self.n_anomalous} anomalous]: "
                f"{shown}")


def setup_columns(meta: dict[str, Any], config, n_test: int, n_anomalous: int, leaky: bool,
                  device: str = "") -> dict[str, str]:
    """The setup cells of a result row (:data:`anobench.results.SETUP_COLUMNS`), from run.json.

    ``device`` is where the evaluation ran; ``train_device`` comes from run.json's ``execution``.
    """
    saw = meta.get("reference_anomalies")
    execution = meta.get("execution") if isinstance(meta.get("execution"), dict) else {}
    return {
        "generator_config_hash": hash_text(meta.get("generator_config_hash") or ""),
        "n_generated": str(meta.get("generated_samples", "")),
        "reference_anomalies": "" if saw is None else str(bool(saw)).lower(),
        "encoder": str(config.encoder or ""),
        "encoder_weights": str(config.encoder_weights or ""),
        "profile": str(meta.get("profile", "")),
        "steps": str(config.steps),
        "lr": f"{config.lr:g}",
        "image_size": str(config.image_size),
        "map_sigma": f"{config.map_sigma:g}",
        "n_test": str(n_test),
        "n_test_anomalous": str(n_anomalous),
        "leaky": str(bool(leaky)).lower(),
        "device": str(device or ""),
        "train_device": str(execution.get("device") or ""),
    }


def _run_split(data, meta: dict[str, Any], folder: Path):
    """The split frozen into the run (from its generated set), verified; never recomputed by name.

    Runs made before splits were frozen carry only the protocol name: their split is recomputed.
    """
    recorded = meta.get("protocol_split")
    if isinstance(recorded, dict) and isinstance(recorded.get("test"), list):
        return frozen_split(data, recorded, folder / "run.json")
    return split_category(data, meta.get("protocol", "thirds"))


def evaluate(run_dir: str | Path, test_set: str | None = None, data_root: str | Path | None = None,
             heatmaps: int = 8, results: str | Path | None = None, batch_size: int = 8,
             progress: bool = True, setup: dict[str, Any] | None = None, device: str = "auto",
             precision: str = "auto", deterministic: bool = False,
             protocol_preset: str | None = None) -> Evaluation:
    """Score ``run_dir``'s selected checkpoint on the real test images; append tidy rows.

    Args:
        test_set: ``protocol`` (the run's held-out split) or ``all`` (every test image); default:
            the protocol preset's, else ``protocol``.
        protocol_preset: score as this preset does (test set, metric variants); default: the
            preset the run was trained under, if any.
        data_root: where the real dataset is now, if it moved since training.
        heatmaps: how many test images to save with their heat maps (anomalous first).
        results: results file to append to (default ``RUN/results.csv``).
        setup: what a grid sweep varied (``label``: the generator name the rows carry, e.g.
            ``draem[num=100]``; ``sweep``: axis -> value; ``base_generator``), kept with the maps.
        device, precision, deterministic: where the detector runs (:mod:`anobench.devices`);
            the rows record it in their ``device`` column (and the training device in ``train_device``).
    """
    from anobench.devices import Execution, device_label, set_deterministic

    from anobench.detectors.predict import predict_images
    from anobench.detectors.run import TrainedRun
    from anobench.metrics.detection import detection_metrics
    from anobench.results import HEATMAP_DIR, RESULTS_FILENAME, append_rows

    execution = Execution.resolve(device, precision, 0, deterministic)
    started = time.perf_counter()
    from anobench.results import check_appendable
    from anobench.safety import check_output, folder_writable

    run = TrainedRun.open(run_dir)  # run.json and the checkpoint's presence, before any real work
    meta = run.meta
    preset = _run_preset(meta, protocol_preset, run_dir)
    if test_set is None:
        test_set = preset.test_set if preset is not None else "protocol"
    if test_set not in TEST_SETS:
        raise AnobenchError(f"unknown test set {test_set!r} (known: {', '.join(TEST_SETS)})")
    folder = Path(run_dir)
    results_path = Path(results) if results else folder / RESULTS_FILENAME
    root = Path(data_root) if data_root is not None else resolve_stored_path(Path(run_dir), meta, "data_root")
    if root is None:
        raise AnobenchError(f"{run_dir}: the dataset it was trained on is not at "
                            f"{meta.get('data_root_abs') or meta.get('data_root')}; pass --data-root")
    check_output(results_path, "--results", {"--data-root": root}, folders=["--data-root"])
    if results is None and not folder_writable(folder):
        raise AnobenchError(f"{folder}: run folder is not writable (read-only media?); "
                            "give --results elsewhere to evaluate it")
    check_appendable(results_path)
    keep_files = folder_writable(folder)  # per-image scores and heat maps live in the run folder
    data = load_category(meta["dataset"], root, meta["category"])
    split = _run_split(data, meta, Path(run_dir))
    if test_set == ALL_TEST_IMAGES:
        samples, protocol = list(data.test), ALL_TEST_IMAGES
        # every test image includes the references: leaky for a generator that saw them
        leaky = bool(split.references) and bool(meta.get("reference_anomalies", True))
    else:
        protocol = split.name
        samples = split.test
        leaky = split.leaky
    if not samples:
        raise AnobenchError(f"{data.root}: no test images under protocol {protocol!r}")
    size = run.config.image_size
    if execution.deterministic or execution.device != "cpu":
        set_deterministic(execution.deterministic)
    model = run.load_model().to(execution.device)
    # channels_last only off the CPU: the CPU keeps main's contiguous fp32 path, bit for bit
    channels_last = run.config.channels_last and execution.device != "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    from anobench.progress import progress_bar

    images, masks = [], []
    for sample in progress_bar(samples, desc=f"read {meta['category']} test", unit="img", disable=not progress,
                               leave=False):
        image, mask = sample.image_and_mask(size)
        images.append(image)
        masks.append(mask)
    maps, scores = predict_images(model, images, batch_size=batch_size, map_sigma=run.config.map_sigma,
                                  channels_last=channels_last, device=execution.device,
                                  precision=execution.precision)
    labels = np.array([s.label for s in samples], dtype=bool)
    masks_arr = np.stack(masks)
    metrics = detection_metrics(scores, labels, maps, masks_arr)
    if preset is not None and preset.metric_variants:
        from anobench.metrics.variants import variant_metrics

        metrics.update(variant_metrics(preset.metric_variants, maps, masks_arr))

    varied = dict(setup or {})
    label = str(varied.pop("label", meta["generator"]))
    setup = setup_columns(meta, run.config, n_test=len(samples), n_anomalous=int(labels.sum()), leaky=leaky,
                          device=device_label(execution.device))
    if keep_files:
        _write_scores(folder / f"scores-{protocol}.csv", samples, data, scores)
        _write_per_image(folder, protocol, dict(meta, generator=label), samples, data, scores, labels, maps,
                         masks_arr, {**setup, **varied})
    else:
        import warnings

        from anobench.errors import AnobenchWarning

        warnings.warn(f"{folder}: read-only, so per-image scores, maps and heat maps are not saved", AnobenchWarning,
                      stacklevel=2)
    if keep_files and heatmaps and test_set != ALL_TEST_IMAGES:
        save_heatmaps(folder / HEATMAP_DIR, samples, images, masks, maps, scores, limit=heatmaps)
    rows = [{
        "dataset": meta["dataset"], "category": meta["category"], "generator": label,
        "detector": meta["detector"], "seed": int(meta["seed"]), "protocol": protocol, "metric": name,
        "value": float(value), "config_hash": hash_text(result_config_hash(meta)), "version": anobench.__version__, **setup,
    } for name, value in metrics.items()]
    append_rows(results_path, rows)
    return Evaluation(folder, protocol, len(samples), int(labels.sum()), metrics, rows, results_path,
                      time.perf_counter() - started)


def _write_per_image(folder: Path, protocol: str, meta, samples, data, scores, labels, maps, masks,
                     setup: dict[str, Any] | None = None) -> None:
    from anobench import perimage

    keys = {"dataset": meta["dataset"], "category": meta["category"], "generator": meta["generator"],
            "detector": meta["detector"], "seed": int(meta["seed"]), "protocol": protocol,
            "config_hash": result_config_hash(meta), "generated_samples": meta.get("generated_samples"),
            "synthetic_fraction": (meta.get("config") or {}).get("synthetic_fraction"),
            "train_minutes": float(meta.get("train_seconds") or 0.0) / 60.0,
            "seconds_per_sample": _seconds_per_sample(folder, meta)}
    keys.update(setup or {})
    record = perimage.from_arrays(scores, labels, maps, masks, names=[data.relpath(s.path) for s in samples],
                                  defect_types=[s.defect_type for s in samples], meta=keys)
    perimage.save(folder / perimage.FILE_PATTERN.format(protocol=protocol), record)


def _seconds_per_sample(folder: Path, meta: dict[str, Any]) -> float | None:
    """Mean generation seconds per sample of the samples the run trained on (None when the set is gone)."""
    try:
        from anobench.store import GeneratedSet

        generated = resolve_stored_path(folder, meta, "generated")  # relative to the run, then absolute
        rows = GeneratedSet.open(generated, limit=meta.get("generated_samples")).rows
        seconds = [float(r.get("seconds") or 0.0) for r in rows]
        return float(np.mean(seconds)) if seconds else None
    except Exception:  # noqa: BLE001 - a moved or partial set only loses the cost figure
        return None
def _run_preset(meta: dict[str, Any], name: str | None, run_dir):
    """The preset to score with: the one named, else the run's own; a mismatch is refused."""
    from anobench.presets import check_split, get_preset

    trained = meta.get("protocol_preset")
    if name is not None and trained is not None and name != trained:
        raise AnobenchError(f"{run_dir}: trained under protocol preset {trained!r}, not {name!r}")
    name = name or trained
    if name is None:
        return None
    preset = get_preset(name)
    check_split(preset, meta.get("protocol", "thirds"), f"{run_dir}")
    return preset


def _write_scores(path: Path, samples, data, scores: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "defect_type", "label", "score"])
    for sample, score in zip(samples, scores):
        writer.writerow([data.relpath(sample.path), sample.defect_type, sample.label, f"{float(score):.6f}"])
    atomic_write_text(path, buffer.getvalue())


def heatmap_tile(image: np.ndarray, mask: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """Side by side: the test image with its ground-truth outline, and the map over the image."""
    import cv2

    outlined = image.copy()
    if mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(outlined, contours, -1, (255, 0, 0), 1)
    colour = cv2.applyColorMap(np.clip(amap * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    overlay = (0.5 * image + 0.5 * colour).astype(np.uint8)
    return np.concatenate([outlined, overlay], axis=1)


def save_heatmaps(folder: Path, samples, images, masks, maps, scores, limit: int = 8) -> list[Path]:
    """Save ``limit`` tiles: mostly anomalous test images (one per defect type in turn), some normals."""
    anomalous = [i for i, s in enumerate(samples) if s.label]
    normals = [i for i, s in enumerate(samples) if not s.label]
    by_type: dict[str, list[int]] = {}
    for i in anomalous:
        by_type.setdefault(samples[i].defect_type, []).append(i)
    chosen: list[int] = []
    n_anomalous = min(len(anomalous), max(limit - max(1, limit // 4), 0)) if normals else min(len(anomalous), limit)
    queues = [list(v) for _, v in sorted(by_type.items())]
    while len(chosen) < n_anomalous and any(queues):
        for queue in queues:
            if queue and len(chosen) < n_anomalous:
                chosen.append(queue.pop(0))
    chosen += normals[: max(0, limit - len(chosen))]
    for old in folder.glob("*.png") if folder.exists() else []:
        old.unlink()
    written = []
    for i in chosen:
        sample = samples[i]
        name = f"{sample.defect_type}_{sample.path.stem}_score{float(scores[i]):.3f}.png"
        path = folder / name
        atomic_write_bytes(path, png_bytes(heatmap_tile(images[i], masks[i], maps[i])))
        written.append(path)
    return written
