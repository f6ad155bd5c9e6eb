"""DH-Diff training: the noise-prediction loss of eq. 8 on few-shot anomalies and normals.

Each step draws a batch from ``(seed, step)`` alone (which images, flips, raw masks, guidance,
noise, timesteps), so a killed run resumed from its last checkpoint continues exactly as an
uninterrupted run would. The image, annotation and reference latents are noised at the same
timestep; the reference with the *same* noise as the image (paper, Sec. III-C). The loss is the
mean squared error between the target and the prediction over the joint latent (z_I, z_A); the
target follows the scheduler's ``prediction_type`` (the noise for ``epsilon``, as in eq. 8; the
velocity for ``v_prediction`` SD 2.x models; the clean latent for ``sample``), the same rule the
DDIM sampler applies, so a v-prediction model trains and samples in one parameterisation.

Off the CPU the forward runs under autocast (``precision``: bf16, or fp16 with a GradScaler) and
``gradient_checkpointing`` recomputes the UNet's activations in the backward pass.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from anobench.errors import AnobenchError
from anobench.generators.base import GenerationContext
from anobench.generators.dhdiff.checkpoint import (
    LOSS_FILE,
    STATE_FILE,
    DHDiffBundle,
    build_bundle,
    save_checkpoint,
)
from anobench.generators.dhdiff.components import defect_weights, training_scheduler
from anobench.generators.dhdiff.config import DHDiffConfig
from anobench.generators.dhdiff.preprocess import make_example, raw_mask_cells, resize_mask
from anobench.images import read_rgb

LOSS_COLUMNS = ("step", "loss", "loss_image", "loss_annotation", "seconds")


@dataclass
class TrainingSet:
    """Training pixels at model resolution: few-shot anomalies (with masks) and normals."""

    category: str
    anomalies: list[tuple[np.ndarray, np.ndarray, str]]  # (float32 HxWx3 in [-1, 1], bool HxW, defect type)
    normals: list[np.ndarray]
    reference_cells: list[tuple[str, np.ndarray]]  # (defect type, bool [K, K]) per reference

    @property
    def defect_types(self) -> list[str]:
        return sorted({d for _, _, d in self.anomalies})


def _to_unit_range(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 127.5 - 1.0


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def training_set_from_context(context: GenerationContext, resolution: int, k: int, unit: int) -> TrainingSet:
    """The protocol's reference anomalies (never the test split) and the category's normal images."""
    if not context.references:
        raise AnobenchError(
            f"{context.category}: dhdiff trains on few-shot reference anomalies, and the split has none")
    anomalies, cells = [], []
    for ref in context.references:
        mask = resize_mask(np.asarray(ref.mask, dtype=bool), resolution)
        if not mask.any():
            continue  # a reference without an annotated pixel carries no defect to learn
        anomalies.append((_to_unit_range(_resize_image(ref.image, resolution)), mask, ref.defect_type))
        cells.append((ref.defect_type, raw_mask_cells(mask, k, unit)))
    if not anomalies:
        raise AnobenchError(f"{context.category}: every reference anomaly has an empty mask")
    normals = [_to_unit_range(read_rgb(p, resolution)) for p in context.normal_paths]
    return TrainingSet(context.category, anomalies, normals, cells)


@dataclass
class Batch:
    image: torch.Tensor  # [B, 3, H, W] in [-1, 1]
    annotation: torch.Tensor  # [B, 1, H, W] in {0, 1}
    reference: torch.Tensor  # [B, 3, H, W]: the image cropped by the raw mask
    raw_mask: torch.Tensor  # [B, 1, H, W] in {0, 1}
    guidance: torch.Tensor  # [B, 1, H, W] in [0, 1]
    has_guidance: torch.Tensor  # [B] bool
    prompts: list[str]
    prefixes: list[str]
    noise_seed: int


def make_batch(data: TrainingSet, config: DHDiffConfig, seed: int, step: int, unit: int) -> Batch:
    """The batch of ``step``: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    size = config.batch_size
    n_normal = int(round(size * config.normal_fraction)) if data.normals else 0
    n_normal = min(n_normal, size - 1)
    cells = [c for _, c in data.reference_cells]
    examples = []
    for i in range(size):
        if i < n_normal:
            image = data.normals[int(rng.integers(len(data.normals)))]
            mask, defect = np.zeros(image.shape[:2], dtype=bool), None
        else:
            image, mask, defect = data.anomalies[int(rng.integers(len(data.anomalies)))]
        examples.append(make_example(
            image, mask, data.category, defect, rng, k=config.grid_size, unit=unit, flip=config.flip,
            guidance_prob=config.guidance_prob, guidance_kinds=tuple(config.guidance_kinds), normal_cells=cells,
        ))
    h, w = examples[0].raw_mask.shape
    guidance = np.stack([e.guidance if e.guidance is not None else np.zeros((h, w), np.float32) for e in examples])
    return Batch(
        image=torch.from_numpy(np.stack([e.image for e in examples])),
        annotation=torch.from_numpy(np.stack([e.annotation for e in examples])),
        reference=torch.from_numpy(np.stack([e.reference for e in examples])),
        raw_mask=torch.from_numpy(np.stack([e.raw_mask for e in examples]))[:, None].float(),
        guidance=torch.from_numpy(guidance)[:, None],
        has_guidance=torch.tensor([e.guidance is not None for e in examples]),
        prompts=[e.prompt for e in examples],
        prefixes=[e.prefix for e in examples],
        noise_seed=int(rng.integers(2**63 - 1)),
    )


def training_loss(bundle: DHDiffBundle, batch: Batch, noise_scheduler,
                  device: str = "cpu") -> tuple[torch.Tensor, dict]:
    """Eq. 8: || eps - eps_theta(z_t, t, T, tau(z_R), S_O) ||^2 over the joint latent."""
    codec = bundle.codec
    with torch.no_grad():
        x = codec.encode_image(batch.image.to(device))
        y = codec.encode_annotation(batch.annotation.to(device))
        r = codec.encode_image(batch.reference.to(device))
    generator = torch.Generator().manual_seed(batch.noise_seed)
    noise_i = torch.randn(x.shape, generator=generator).to(device)
    noise_a = torch.randn(y.shape, generator=generator).to(device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x.shape[0],), generator=generator).to(device)
    z_i = noise_scheduler.add_noise(x, noise_i, t)
    z_a = noise_scheduler.add_noise(y, noise_a, t)
    z_r = noise_scheduler.add_noise(r, noise_i, t)  # the same noise as the image (Sec. III-C)
    text = bundle.prompt_encoder(batch.prompts)
    weights = defect_weights(bundle.prompt_encoder, batch.prompts, batch.prefixes).to(device)
    eps_i, eps_a = bundle.backbone(z_i, z_a, t, text, z_reference=z_r, guidance=batch.guidance.to(device),
                                   has_guidance=batch.has_guidance.to(device), defect_weights=weights)
    loss_i = F.mse_loss(eps_i.float(), prediction_target(noise_scheduler, x, noise_i, t))
    loss_a = F.mse_loss(eps_a.float(), prediction_target(noise_scheduler, y, noise_a, t))
    n_i, n_a = noise_i.numel(), noise_a.numel()
    loss = (loss_i * n_i + loss_a * n_a) / (n_i + n_a)  # the mean over every element of (z_I, z_A)
    return loss, {"loss_image": float(loss_i.detach()), "loss_annotation": float(loss_a.detach())}


def prediction_target(noise_scheduler, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the model is trained to output under the scheduler's ``prediction_type``."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(clean, noise, t)
    if kind == "sample":
        return clean
    raise AnobenchError(f"dhdiff: unsupported prediction_type {kind!r} (epsilon, v_prediction or sample)")


class LossLog:
    """``loss.csv``: one row per step; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists() and resume_step > 0:
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    try:
                        if int(row["step"]) <= resume_step and row.get("seconds") not in (None, ""):
                            rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue  # a line cut short by a kill
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOSS_COLUMNS)
            writer.writeheader()
            writer.writerows({k: row[k] for k in LOSS_COLUMNS} for row in rows)
        self.recent = [float(r["loss"]) for r in rows[-50:]]
        self.handle = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=LOSS_COLUMNS)

    def add(self, step: int, loss: float, parts: dict, seconds: float) -> None:
        self.writer.writerow({"step": step, "loss": f"{loss:.6f}", "loss_image": f"{parts['loss_image']:.6f}",
                              "loss_annotation": f"{parts['loss_annotation']:.6f}", "seconds": f"{seconds:.1f}"})
        self.handle.flush()
        self.recent = (self.recent + [loss])[-50:]

    @property
    def running(self) -> float:
        return float(np.mean(self.recent)) if self.recent else math.nan

    def close(self) -> None:
        self.handle.close()


def _save_state(bundle: DHDiffBundle, optimizer, ema, step: int, seconds: float, out_dir: Path) -> None:
    from anobench.generators.dhdiff.model import trainable_state

    state = {"step": step, "seconds": seconds, "model": trainable_state(bundle.trainable(), bundle.config.trained),
             "optimizer": optimizer.state_dict(), "ema": ema.state_dict() if ema is not None else None}
    tmp = out_dir / f".{STATE_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out_dir / STATE_FILE)


def state_due(config: DHDiffConfig, pixel_space: bool, done: int, steps: int) -> bool:
    """Whether step ``done`` writes the training state (see ``DHDiffConfig.state_every``)."""
    every = config.state_every if config.state_every is not None else (config.checkpoint_every if pixel_space else steps)
    return done == steps or done % every == 0


def keep_recent_weights(out_dir: Path, step: int, keep_last: int) -> None:
    """Keep ``model.safetensors`` of the last ``keep_last`` checkpoints under ``steps/`` (hard links:
    the live file is replaced by rename, so a link keeps the old bytes without copying them)."""
    if keep_last <= 1:
        return
    import shutil

    folder = out_dir / "steps"
    folder.mkdir(exist_ok=True)
    target = folder / f"step-{step:07d}.safetensors"
    target.unlink(missing_ok=True)
    try:
        os.link(out_dir / "model.safetensors", target)
    except OSError:
        shutil.copy2(out_dir / "model.safetensors", target)
    for old in sorted(folder.glob("step-*.safetensors"))[:-keep_last]:
        old.unlink()


def _save_generation_weights(bundle: DHDiffBundle, ema, params, out_dir: Path, **meta) -> None:
    """The checkpoint ``generate`` loads: the EMA weights when EMA is on, else the raw weights."""
    if ema is None:
        save_checkpoint(bundle, out_dir, ema=False, **meta)
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        save_checkpoint(bundle, out_dir, ema=True, **meta)
    finally:
        ema.restore(params)


def train(bundle: DHDiffBundle, data: TrainingSet, out_dir: Path, steps: int, seed: int = 0, device: str = "cpu",
          progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Train (or resume training) to ``steps``, checkpointing into ``out_dir``; returns a summary."""
    config = bundle.config
    out_dir.mkdir(parents=True, exist_ok=True)
    from anobench.devices import autocast, grad_scaler, optimizer_step, resolve_precision

    module = bundle.trainable().to(device)
    precision = resolve_precision(device, config.precision)
    scaler = grad_scaler(device, precision)
    if config.gradient_checkpointing:
        bundle.backbone.unet.enable_gradient_checkpointing()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate_for(from_sd=not bundle.pixel_space))
    ema = None
    if config.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay)
    start, seconds = 0, 0.0
    state_path = out_dir / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        module.load_state_dict(state["model"], strict=config.trained != "lora")
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        start, seconds = int(state["step"]), float(state["seconds"])
        if log:
            log(f"resuming {out_dir} at step {start} ({seconds:.0f} s trained so far)")
    losses = LossLog(out_dir / LOSS_FILE, start)
    noise_scheduler = training_scheduler(bundle.scheduler_config)
    unit = bundle.latent_unit
    module.train()
    bar = tqdm(total=steps, initial=min(start, steps), desc=f"dhdiff/{data.category}", unit="step",
               disable=not progress, dynamic_ncols=True)
    meta = {"seed": seed, "steps": steps}
    try:
        for step in range(start, steps):
            t0 = time.perf_counter()
            batch = make_batch(data, config, seed, step, unit)
            with autocast(device, precision):
                loss, parts = training_loss(bundle, batch, noise_scheduler, device)
            optimizer_step(loss, optimizer, scaler)
            if ema is not None:
                ema.step(params)
            seconds += time.perf_counter() - t0
            losses.add(step + 1, float(loss.detach()), parts, seconds)
            bar.update(1)
            bar.set_postfix(loss=f"{losses.running:.4f}")
            done = step + 1
            if done % config.checkpoint_every == 0 or done == steps:
                if state_due(config, bundle.pixel_space, done, steps):
                    _save_state(bundle, optimizer, ema, done, seconds, out_dir)
                _save_generation_weights(bundle, ema, params, out_dir, step=done, train_seconds=round(seconds, 1),
                                         loss=round(losses.running, 6), **meta)
                keep_recent_weights(out_dir, done, config.keep_last)
    finally:
        bar.close()
        losses.close()
    if start >= steps and not (out_dir / "model.safetensors").exists():
        _save_generation_weights(bundle, ema, params, out_dir, step=start, train_seconds=round(seconds, 1),
                                 loss=losses.running, **meta)
    return {"checkpoint": str(out_dir), "step": max(start, steps), "seconds": round(seconds, 1),
            "loss": losses.running}


def fit(config: DHDiffConfig, context: GenerationContext, out_dir: Path, steps: int | None = None, seed: int = 0,
        split: str | None = None, progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """``train-generator`` for dhdiff: pre-process the references and normals, build or resume, train."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    steps = int(steps if steps is not None else config.steps)
    if steps < 1:
        raise AnobenchError(f"--steps must be at least 1, got {steps}")
    out_dir = Path(out_dir)  # resume identity (category, seed, split, config): anobench.generator_training
    defect_types = sorted(set(context.defect_types) | {r.defect_type for r in context.references})
    bundle = build_bundle(config, context.category, defect_types, model=context.model, seed=seed)
    data = training_set_from_context(context, bundle.resolution, config.grid_size, bundle.latent_unit)
    bundle.meta.update({
        "dataset": context.dataset,
        "split": split,
        "defect_types": data.defect_types,
        "reference_cells": [{"defect_type": d, "cells": c.astype(int).tolist()} for d, c in data.reference_cells],
        "references": [r.path for r in context.references],
        "num_normals": len(data.normals),
    })
    return train(bundle.to(context.device), data, out_dir, steps, seed=seed, device=context.device,
                 progress=progress, log=log)
