"""The detector training loop: half real normals, half synthetic anomalies per batch.

The run folder's files are described in :mod:`anobench.detectors.run`; ``last.pt`` is rewritten
atomically every few steps, so a killed run (even ``kill -9``) resumes from it, and batches come
from :mod:`anobench.detectors.data`, fixed by ``(seed, step)``. The checkpoint is chosen on held-out synthetic samples (plus held-out training
normals for the image-level part); the real test set is never looked at during training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import anobench
from anobench.artifacts import open_artifact, relative_path
from anobench.config import config_hash, config_to_dict
from anobench.datasets import load_category
from anobench.detectors.base import Detector, build_detector
from anobench.detectors.data import ImageCache, TrainingData, step_batches
from anobench.detectors.predict import predict_images, to_input
from anobench.detectors.profiles import PROFILES, TrainConfig, profile_config  # noqa: F401 - re-exported
from anobench.detectors.run import (  # noqa: F401 - re-exported for callers of the old module
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    LOSS_LOG,
    RUN_JSON,
    VAL_LOG,
    TrainedRun,
    load_checkpoint,
    save_checkpoint,
)
from anobench.devices import Execution, autocast, grad_scaler, optimizer_step, peak_gpu_memory_mb, set_deterministic
from anobench.errors import AnobenchError
from anobench.images import atomic_write_text
from anobench.progress import progress_bar
from anobench.records import COMPLETE, RUNNING, RunRecord
from anobench.safety import check_train
from anobench.store import GeneratedSet

@dataclass
class TrainSummary:
    run_dir: Path
    steps: int
    best_step: int
    best_score: float
    seconds: float
    resumed_from: int

    def line(self) -> str:
        resumed = f", resumed from step {self.resumed_from}" if self.resumed_from else ""
        score = f"{self.best_score:.4f}" if not math.isnan(self.best_score) else "n/a"
        return (f"{self.run_dir}: trained {self.steps} steps in {self.seconds / 60:.1f} min{resumed}; "
                f"checkpoint of step {self.best_step} (validation score {score})")


# run.json keys that must match for a run to resume (no paths: a moved or copied grid resumes)
IDENTITY_KEYS = RunRecord.IDENTITY


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log rows written after the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and ln.split(",")[0].isdigit()
                         and int(ln.split(",")[0]) <= last_step and ln.endswith("\n")]
    atomic_write_text(path, "".join(kept))


class _CsvLog:
    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        if not path.exists():
            atomic_write_text(path, ",".join(columns) + "\n")
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, *values: Any) -> None:
        self.handle.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def validation_score(model: Detector, data: TrainingData, cache: ImageCache, channels_last: bool,
                     map_sigma: float = 0.0, execution: Execution = Execution()) -> dict[str, float]:
    """Image AUROC (held-out synthetic vs held-out normals) and pixel AP; their mean selects."""
    from anobench.metrics.detection import ranking_metrics

    size = cache.size
    images = torch.stack([cache.image(p) for p in data.val_normals] + [cache.image(p) for p, _ in data.val_synthetic])
    masks = torch.stack([torch.zeros((1, size, size), dtype=torch.bool)] * len(data.val_normals)
                        + [cache.mask(m) for _, m in data.val_synthetic])
    maps, scores = predict_images(model, images, channels_last=channels_last, map_sigma=map_sigma,
                                  device=execution.device, precision=execution.precision)
    labels = np.r_[np.zeros(len(data.val_normals), bool), np.ones(len(data.val_synthetic), bool)]
    image_auroc = ranking_metrics(scores, labels)[0] if len(data.val_normals) else math.nan
    pixel_ap = ranking_metrics(maps.ravel(), masks.numpy().ravel())[1]
    parts = [v for v in (image_auroc, pixel_ap) if not math.isnan(v)]
    return {"image_auroc": image_auroc, "pixel_ap": pixel_ap, "score": float(np.mean(parts)) if parts else math.nan}


def train_detector(
    dataset: str | None,
    data_root: str | Path | None,
    category: str | None,
    generated: str | Path,
    out: str | Path,
    profile: str = "quick",
    seed: int = 0,
    detector: str | None = None,
    encoder: str | None = None,
    encoder_weights: str | None = None,
    overrides: dict[str, str] | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    deterministic: bool = False,
    protocol_preset: str | None = None,
    num: int | None = None,
) -> TrainSummary:
    """Train (or resume) a detector on ``generated`` plus the category's normals into ``out``.

    Dataset, category and data root come from the generated set's ``dataset.json``; the
    arguments only check them (``data_root`` points at moved data). The train/validation split
    is frozen into run.json at the first start and read back on resume, so a set that grew since
    does not move samples between the two. ``max_steps`` stops early after that many steps in
    this call (the run stays resumable): tests use it to simulate a kill. ``protocol_preset``
    (see :mod:`anobench.presets`) replaces ``profile`` with a paper's settings.

    ``device``/``precision``/``workers``/``deterministic`` say where it runs
    (:class:`anobench.devices.Execution`); run.json records them under ``execution``. On the
    CPU the defaults are main's fp32 loop, bit for bit.

    ``num`` trains on the set's first ``num`` samples only (a grid whose ``num`` shrank below an
    existing set's size): they are exactly a fresh ``num``-sized set's samples, so the run is the
    one a fresh set would give and records ``generated_samples = num``.
    """
    execution = Execution.resolve(device, precision, workers, deterministic)
    if num is not None and num < 1:
        raise AnobenchError(f"--num must be at least 1, got {num}")
    gen = GeneratedSet.open(generated, limit=num)
    dataset, category = _check_generated(gen, dataset, category, Path(generated))
    root = Path(data_root) if data_root is not None else gen.data_root()
    if protocol_preset is None:
        config = profile_config(profile, overrides, detector=detector, encoder=encoder,
                                encoder_weights=encoder_weights)
        check_train(root, category, generated, out, seed, config.image_size, config.batch_size)
        data = load_category(dataset, root, category)
    else:  # a preset counts epochs over the category's training normals
        from anobench.presets import check_split, get_preset, preset_config

        data = load_category(dataset, root, category)
        check_split(get_preset(protocol_preset), gen.record.protocol_name, str(generated))
        config = preset_config(protocol_preset, len(data.train), overrides, detector=detector, encoder=encoder,
                               encoder_weights=encoder_weights)
        profile = f"preset:{protocol_preset}"  # what the rows' profile column shows
        check_train(root, category, generated, out, seed, config.image_size, config.batch_size)
    _check_image_size(gen, config.image_size, Path(generated))
    out = Path(out)
    torch.manual_seed(seed)
    model = build_detector(config.detector, config.encoder, config.encoder_weights)  # a bad encoder fails here
    frozen = _frozen_record(out) if num is None else None
    record = RunRecord(
        dataset=dataset,
        category=category,
        data_root=relative_path(root, out),
        data_root_abs=str(root.resolve()),
        generated=relative_path(gen.folder, out),
        generated_abs=str(gen.folder.resolve()),
        generator=gen.generator,
        generator_config_hash=gen.record.config_hash,
        generation_seed=gen.record.seed,
        generated_samples=_frozen_count(frozen, len(gen)),
        reference_anomalies=gen.record.reference_anomalies,
        protocol=gen.record.protocol_name,
        protocol_split=gen.record.protocol,
        seed=seed,
        profile=profile,
        protocol_preset=protocol_preset,
        detector=config.detector,
        config=config_to_dict(config),
        config_hash=config_hash(config),
        anobench_version=anobench.__version__,
    )
    with open_artifact(out, record) as artifact:
        return _train(artifact, config, model, gen, data, seed, progress, max_steps, execution)


def _frozen_record(out: Path) -> dict[str, Any] | None:
    """The training split an earlier start froze (None when there is none yet)."""
    if not (out / RUN_JSON).is_file():
        return None
    try:
        return RunRecord.read(out).training_split
    except AnobenchError:
        return None  # open_artifact names an unreadable run.json


def _frozen_count(frozen: dict[str, Any] | None, available: int) -> int:
    if not frozen:
        return available
    return len(frozen.get("train_synthetic", [])) + len(frozen.get("val_synthetic", []))


def _train(artifact, config: TrainConfig, model: Detector, gen: GeneratedSet, data, seed: int, progress: bool,
           max_steps: int | None, execution: Execution) -> TrainSummary:
    out, record, category = artifact.folder, artifact.record, data.category
    if record.status == COMPLETE and record.best and (out / BEST_CHECKPOINT).exists():
        return TrainSummary(out, config.steps, record.best["step"], record.best["score"],
                            record.train_seconds or 0.0, config.steps)
    normals = [s.path for s in data.train]
    if record.training_split:
        split = TrainingData.from_record(record.training_split, gen, normals, data.relpath, out / RUN_JSON)
    else:
        split = TrainingData.split(normals, gen, config, seed)
        artifact.save(training_split=split.to_record(gen, data.relpath))
    if execution.deterministic or execution.device != "cpu":
        set_deterministic(execution.deterministic)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(execution.device)
    scaler = grad_scaler(execution.device, execution.precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    milestones = sorted({max(1, int(round(m * config.steps))) for m in config.lr_milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.lr_gamma)

    start, seconds, best = 0, 0.0, {"step": 0, "score": -math.inf}
    if (out / LAST_CHECKPOINT).exists():
        from anobench.metadata import load_state

        state = load_checkpoint(out / LAST_CHECKPOINT, ("model", "optimizer", "scheduler", "torch_rng", "step",
                                                        "seconds", "best"))
        load_state(model, state["model"], out / LAST_CHECKPOINT)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and execution.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], torch.device(execution.device))
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, seconds, best = state["step"], state["seconds"], state["best"]
    resumed_from = start
    _truncate_log(out / LOSS_LOG, start)
    _truncate_log(out / VAL_LOG, start)
    loss_log = _CsvLog(out / LOSS_LOG, ["step", "loss", "lr", "seconds"])
    val_log = _CsvLog(out / VAL_LOG, ["step", "image_auroc", "pixel_ap", "score"])
    artifact.save(split=split.summary(), status=RUNNING, execution=execution.record())

    stop = config.steps if max_steps is None else min(config.steps, start + max_steps)
    batches = step_batches(split, config, seed, start, stop, execution.workers, execution.pin_memory)
    cache = ImageCache(config.image_size)  # validation images (the loader's workers keep their own)
    bar = progress_bar(total=config.steps, initial=start, desc=f"train {config.detector}/{category}", unit="step",
                       disable=not progress)
    from torchvision.ops import sigmoid_focal_loss

    try:
        t0 = time.perf_counter()
        for step, (images, masks) in zip(range(start, stop), batches):
            model.train()
            with autocast(execution.device, execution.precision):
                logits = model(to_input(images, config.channels_last, execution.device))
            # the loss in fp32 from fp32 logits: focal terms of confident pixels underflow in half
            loss = sigmoid_focal_loss(logits.float(), masks.to(execution.device, non_blocking=True).float(),
                                      alpha=config.focal_alpha, gamma=config.focal_gamma, reduction="mean")
            optimizer_step(loss, optimizer, scaler)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = step + 1
            if not torch.isfinite(loss):
                raise AnobenchError(f"training diverged at step {done} (loss {loss.item()}); lower --set lr=...")
            if done % config.val_every == 0 or done == config.steps:
                if split.val_synthetic:
                    val = validation_score(model, split, cache, config.channels_last, config.map_sigma, execution)
                    val_log.write(done, val["image_auroc"], val["pixel_ap"], val["score"])
                    if val["score"] > best["score"]:
                        best = {"step": done, "score": val["score"]}
                        save_checkpoint(out / BEST_CHECKPOINT, {"model": model.state_dict(), "step": done, "score": val["score"]})
                    bar.set_postfix(val=f"{val['score']:.3f}", refresh=False)
                elif done == config.steps:
                    best = {"step": done, "score": math.nan}
                    save_checkpoint(out / BEST_CHECKPOINT, {"model": model.state_dict(), "step": done, "score": math.nan})
            seconds += time.perf_counter() - t0
            loss_log.write(done, float(loss.item()), float(lr), round(seconds, 2))
            if done % config.checkpoint_every == 0 or done == stop:
                save_checkpoint(out / LAST_CHECKPOINT, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    **_accelerator_state(execution, scaler),
                    "step": done, "seconds": seconds, "best": best,
                })
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update(1)
            t0 = time.perf_counter()  # the next batch's wait counts, log and checkpoint writes do not
    finally:
        bar.close()
        batches.close()
        loss_log.close()
        val_log.close()

    if stop == config.steps:
        artifact.save(status=COMPLETE, best=best, train_seconds=round(seconds, 1),
                      steps_per_second=round((config.steps - resumed_from) / max(seconds, 1e-9), 4),
                      peak_gpu_memory_mb=peak_gpu_memory_mb(execution.device))
    return TrainSummary(out, stop, best["step"], best["score"], seconds, resumed_from)


def _accelerator_state(execution: Execution, scaler) -> dict[str, Any]:
    """Extra resume state off the CPU: the CUDA generator and the fp16 loss scale."""
    if not execution.device.startswith("cuda"):
        return {}
    return {"cuda_rng": torch.cuda.get_rng_state(torch.device(execution.device)),
            "scaler": scaler.state_dict() if scaler is not None else None}


def _check_generated(gen: GeneratedSet, dataset: str | None, category: str | None,
                     folder: Path) -> tuple[str, str]:
    """The set's own dataset and category (given ones must agree with them)."""
    for key, given in (("category", category), ("dataset", dataset)):
        recorded = getattr(gen.record, key)
        if given is not None and recorded not in (None, given):
            raise AnobenchError(f"{folder}: generated set is for {key} {recorded!r}, not {given!r}")
    dataset, category = dataset or gen.record.dataset, category or gen.record.category
    if not dataset or not category:
        raise AnobenchError(f"{folder}: dataset.json names no dataset or category; pass --dataset and --category")
    return str(dataset), str(category)


def _check_image_size(gen: GeneratedSet, image_size: int, folder: Path) -> None:
    """Refuse a generated set made at another size than the detector trains at.

    An error, not a silent resize: training at the set's size would change the detector (and the
    size every test image is scored at) behind the user's back, and upsampling a small set blurs
    its defects. The message names both sizes and both fixes.
    """
    made = gen.record.image_size
    if made is not None and int(made) != int(image_size):
        raise AnobenchError(f"{folder}: generated set is {made} px but the detector trains at {image_size} px; "
                            f"train with --set image_size={made} or regenerate with --image-size {image_size}")
