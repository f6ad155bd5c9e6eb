"""Detector training on a generated set: half real normals, half synthetic anomalies per batch.

One run lives in a folder ``RUN``::

    run.json     what was trained on (dataset, category, generated set, protocol), the full
                 config and its hash, status, chosen checkpoint and training time
    last.pt      model + optimiser + scheduler + step, rewritten atomically every few steps:
                 a killed run (even ``kill -9``) resumes from it
    best.pt      the weights chosen on the held-out synthetic validation split
    loss.csv     step, focal loss, learning rate, elapsed seconds
    val.csv      step, validation image AUROC and pixel AP, selection score

Batch ``s`` is drawn from ``(seed, s)`` alone, so a resumed run sees the same batches as an
uninterrupted one. The checkpoint is chosen on held-out synthetic samples (plus held-out training
normals for the image-level part); the real test set is never looked at during training.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import anobench
from anobench.config import apply_overrides, config_from_dict, config_hash, config_to_dict
from anobench.datasets import load_category
from anobench.detectors.base import Detector, build_detector
from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes, atomic_write_text, read_mask, read_rgb
from anobench.store import GeneratedSet

RUN_JSON = "run.json"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
LOSS_LOG = "loss.csv"
VAL_LOG = "val.csv"
DEFAULT_ENCODER_WEIGHTS = {"unet": "imagenet", "draem_disc": "none"}


@dataclass
class TrainConfig:
    """Detector training settings. ``profile`` presets live in :data:`PROFILES`."""

    detector: Literal["unet", "draem_disc"] = "unet"
    encoder: Optional[str] = None  # smp encoder name; None: the detector's default
    encoder_weights: Optional[str] = None  # imagenet | none; None: the detector's default
    image_size: int = 256
    steps: int = 300
    batch_size: int = 8
    synthetic_fraction: float = 0.5  # share of each batch taken from the generated set
    lr: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.8, 0.9)  # fractions of ``steps`` where the LR drops
    lr_gamma: float = 0.2
    focal_alpha: float = -1.0  # torchvision sigmoid_focal_loss; < 0 disables class weighting
    focal_gamma: float = 2.0
    map_sigma: float = 0.0  # Gaussian smoothing of the pixel map at validation/evaluation; 0: raw (DRAEM)
    hflip: bool = False  # random horizontal flips (off: not every product is mirror-symmetric)
    val_fraction: float = 0.1  # of the generated set, held out for checkpoint selection
    max_val_samples: int = 48
    val_normals: int = 16  # training normals held out for the image-level validation score
    val_every: int = 50
    checkpoint_every: int = 20
    channels_last: bool = True  # ~1.5x faster convolutions on CPU

    def validate(self) -> None:
        checks = [
            (self.image_size >= 32 and self.image_size % 32 == 0, "image_size must be a multiple of 32 (>= 32)"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (0.0 < self.synthetic_fraction < 1.0, "synthetic_fraction must be in (0, 1)"),
            (self.lr > 0, "lr must be > 0"),
            (all(0 < m <= 1 for m in self.lr_milestones), "lr_milestones are fractions in (0, 1]"),
            (0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)"),
            (self.val_every >= 1 and self.checkpoint_every >= 1, "val_every and checkpoint_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise AnobenchError(f"train config: {message}")

    def resolved(self) -> "TrainConfig":
        """The config with detector defaults filled in (what run.json records)."""
        weights = self.encoder_weights or DEFAULT_ENCODER_WEIGHTS[self.detector]
        encoder = self.encoder
        if encoder is None and self.detector == "unet":
            from anobench.detectors.unet import DEFAULT_ENCODER

            encoder = DEFAULT_ENCODER
        return dataclasses.replace(self, encoder=encoder, encoder_weights=weights)


PROFILES: dict[str, TrainConfig] = {
    # CPU, minutes: 300 steps of batch 8 at 256 px (the budget of the DRAEM reference run on this
    # machine) with a 10x learning rate, which converges much further in 300 steps than 1e-4.
    # Raw maps, as DRAEM and AnomalyDiffusion score them; smoothing only by ``--set map_sigma=S``.
    "quick": TrainConfig(steps=300, lr=1e-3, lr_milestones=(0.8, 0.9), val_every=50),
    # DRAEM / AnomalyDiffusion settings: 256 px, Adam 1e-4, batch 8, LR x0.2 at 80% and 90%, raw
    # maps. 20k steps ~ DRAEM's 700 epochs over a category's ~200 normals at batch 8 (a GPU job).
    "paper": TrainConfig(steps=20000, lr=1e-4, lr_milestones=(0.8, 0.9), val_every=1000, checkpoint_every=200,
                         max_val_samples=200, val_normals=20),
}


def profile_config(profile: str, overrides: dict[str, str] | None = None, **fields: Any) -> TrainConfig:
    """A profile's config with explicit field values (None = keep) and ``--set`` overrides."""
    if profile not in PROFILES:
        raise AnobenchError(f"unknown --profile {profile!r} (known: {', '.join(PROFILES)})")
    config = dataclasses.replace(PROFILES[profile], **{k: v for k, v in fields.items() if v is not None})
    config = apply_overrides(config, overrides or {})
    config.validate()
    return config.resolved()


# ----------------------------------------------------------------------------- data


class ImageCache:
    """Decoded images and masks (uint8 CHW tensors), read once from disk and kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._images: dict[str, torch.Tensor] = {}
        self._masks: dict[str, torch.Tensor] = {}

    def image(self, path: Path) -> torch.Tensor:
        key = str(path)
        if key not in self._images:
            self._images[key] = torch.from_numpy(read_rgb(path, self.size)).permute(2, 0, 1).contiguous()
        return self._images[key]

    def mask(self, path: Path) -> torch.Tensor:
        key = str(path)
        if key not in self._masks:
            self._masks[key] = torch.from_numpy(read_mask(path, self.size)).unsqueeze(0)
        return self._masks[key]


@dataclass
class TrainingData:
    """Normal image paths and generated (image, mask) paths, split into train and validation."""

    normals: list[Path]
    synthetic: list[tuple[Path, Path]]
    val_normals: list[Path]
    val_synthetic: list[tuple[Path, Path]]

    @classmethod
    def split(cls, normals: list[Path], generated: GeneratedSet, config: TrainConfig, seed: int) -> "TrainingData":
        pairs = [(generated.image_path(i), generated.mask_path(i)) for i in range(len(generated))]
        order = np.random.default_rng([seed, 1]).permutation(len(pairs))
        n_val = min(config.max_val_samples, int(round(config.val_fraction * len(pairs))))
        n_val = n_val if len(pairs) - n_val >= 1 else 0
        normal_order = np.random.default_rng([seed, 2]).permutation(len(normals))
        n_val_normals = min(config.val_normals, len(normals) // 5) if n_val else 0
        return cls(
            normals=[normals[i] for i in sorted(normal_order[n_val_normals:])],
            synthetic=[pairs[i] for i in sorted(order[n_val:])],
            val_normals=[normals[i] for i in sorted(normal_order[:n_val_normals])],
            val_synthetic=[pairs[i] for i in sorted(order[:n_val])],
        )

    def summary(self) -> dict[str, int]:
        return {"train_normals": len(self.normals), "train_synthetic": len(self.synthetic),
                "val_normals": len(self.val_normals), "val_synthetic": len(self.val_synthetic)}


class BatchSource:
    """Batch ``step`` = a fixed draw from (seed, step); the next batch is decoded in a thread."""

    def __init__(self, data: TrainingData, config: TrainConfig, seed: int) -> None:
        self.data, self.config, self.seed = data, config, seed
        self.cache = ImageCache(config.image_size)
        self.n_synthetic = max(1, min(config.batch_size - 1, round(config.batch_size * config.synthetic_fraction)))
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: dict[int, Any] = {}

    def _indices(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 3, step])
        n_normal = self.config.batch_size - self.n_synthetic
        normals = rng.choice(len(self.data.normals), n_normal, replace=len(self.data.normals) < n_normal)
        synthetic = rng.choice(len(self.data.synthetic), self.n_synthetic,
                               replace=len(self.data.synthetic) < self.n_synthetic)
        flips = rng.random(self.config.batch_size) < 0.5 if self.config.hflip else np.zeros(self.config.batch_size, bool)
        return normals, synthetic, flips

    def _load(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        normals, synthetic, flips = self._indices(step)
        size = self.config.image_size
        images = [self.cache.image(self.data.normals[i]) for i in normals]
        masks = [torch.zeros((1, size, size), dtype=torch.bool)] * len(normals)
        for i in synthetic:
            image_path, mask_path = self.data.synthetic[i]
            images.append(self.cache.image(image_path))
            masks.append(self.cache.mask(mask_path))
        x, y = torch.stack(images), torch.stack(masks)
        if flips.any():
            x[flips] = x[flips].flip(-1)
            y[flips] = y[flips].flip(-1)
        return x, y

    def get(self, step: int, prefetch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` as uint8 images and bool masks; starts decoding ``prefetch`` meanwhile."""
        future = self._pending.pop(step, None)
        batch = future.result() if future is not None else self._load(step)
        if prefetch is not None and prefetch not in self._pending:
            self._pending[prefetch] = self._pool.submit(self._load, prefetch)
        return batch

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 B x 3 x H x W -> float in [0, 1] (the detectors' input)."""
    x = images.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_images(model: Detector, images: list[np.ndarray] | torch.Tensor, batch_size: int = 8,
                   channels_last: bool = False, map_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(maps N x H x W float32, scores N) for uint8 HxWx3 arrays or a uint8 N x 3 x H x W tensor."""
    model.eval()
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if not isinstance(chunk, torch.Tensor):
            chunk = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2)
        m, s = model.predict(to_input(chunk, channels_last), map_sigma=map_sigma)
        maps.append(m.numpy().astype(np.float32))
        scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)


# ----------------------------------------------------------------------------- the run


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


def _run_identity(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "category", "generated", "generator", "seed", "config_hash")
    return {k: meta.get(k) for k in keys}


def _open_run(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Create ``out`` or re-open it; a folder holding a different run is refused."""
    path = out / RUN_JSON
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AnobenchError(f"{path}: unreadable run.json; use another --out or delete the folder") from None
        if old.get("category") != meta["category"] or old.get("dataset") != meta["dataset"]:
            raise AnobenchError(
                f"{out}: holds a run for {old.get('dataset')}/{old.get('category')}, not "
                f"{meta['dataset']}/{meta['category']}; use another --out"
            )
        diff = [k for k, v in _run_identity(meta).items() if old.get(k) != v]
        if diff:
            raise AnobenchError(f"{out}: holds a run with other settings ({', '.join(diff)} differ); "
                                "use another --out or delete it")
        return old
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise AnobenchError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file, whatever torch raises
        raise AnobenchError(f"{path}: unreadable checkpoint ({exc.__class__.__name__})") from None


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
                     map_sigma: float = 0.0) -> dict[str, float]:
    """Image AUROC (held-out synthetic vs held-out normals) and pixel AP; their mean selects."""
    from anobench.metrics.detection import ranking_metrics

    size = cache.size
    images = torch.stack([cache.image(p) for p in data.val_normals] + [cache.image(p) for p, _ in data.val_synthetic])
    masks = torch.stack([torch.zeros((1, size, size), dtype=torch.bool)] * len(data.val_normals)
                        + [cache.mask(m) for _, m in data.val_synthetic])
    maps, scores = predict_images(model, images, channels_last=channels_last, map_sigma=map_sigma)
    labels = np.r_[np.zeros(len(data.val_normals), bool), np.ones(len(data.val_synthetic), bool)]
    image_auroc = ranking_metrics(scores, labels)[0] if len(data.val_normals) else math.nan
    pixel_ap = ranking_metrics(maps.ravel(), masks.numpy().ravel())[1]
    parts = [v for v in (image_auroc, pixel_ap) if not math.isnan(v)]
    return {"image_auroc": image_auroc, "pixel_ap": pixel_ap, "score": float(np.mean(parts)) if parts else math.nan}


def train_detector(
    dataset: str,
    data_root: str | Path,
    category: str,
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
    protocol_preset: str | None = None,
) -> TrainSummary:
    """Train (or resume) a detector on ``generated`` plus the category's normals into ``out``.

    ``protocol_preset`` (see :mod:`anobench.presets`) replaces ``profile`` with a paper's settings.
    ``max_steps`` stops early after that many steps in this call (the run stays resumable):
    tests use it to simulate a kill.
    """
    data = load_category(dataset, data_root, category)
    gen = GeneratedSet.open(generated)
    _check_generated(gen, dataset, category, Path(generated))
    protocol = (gen.meta.get("protocol") or {}).get("name", "thirds")
    if protocol_preset is not None:
        from anobench.presets import check_split, get_preset, preset_config

        check_split(get_preset(protocol_preset), protocol, f"{generated}")
        config = preset_config(protocol_preset, len(data.train), overrides, detector=detector, encoder=encoder,
                               encoder_weights=encoder_weights)
        profile = None
    else:
        config = profile_config(profile, overrides, detector=detector, encoder=encoder, encoder_weights=encoder_weights)
    out = Path(out)
    meta = {
        "dataset": dataset,
        "category": category,
        "data_root": str(Path(data_root).resolve()),
        "generated": str(Path(generated).resolve()),
        "generator": gen.generator,
        "generator_config_hash": gen.meta.get("config_hash"),
        "generated_samples": len(gen),
        "protocol": protocol,
        "seed": seed,
        "profile": profile,
        "protocol_preset": protocol_preset,
        "detector": config.detector,
        "config": config_to_dict(config),
        "config_hash": config_hash(config),
        "anobench_version": anobench.__version__,
        "status": "training",
    }
    meta = _open_run(out, meta)
    if meta.get("status") == "trained" and (out / BEST_CHECKPOINT).exists():
        return TrainSummary(out, meta["config"]["steps"], meta["best"]["step"], meta["best"]["score"],
                            meta.get("train_seconds", 0.0), meta["config"]["steps"])

    split = TrainingData.split([s.path for s in data.train], gen, config, seed)
    torch.manual_seed(seed)
    model = build_detector(config.detector, config.encoder, config.encoder_weights)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    milestones = sorted({max(1, int(round(m * config.steps))) for m in config.lr_milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.lr_gamma)

    start, seconds, best = 0, 0.0, {"step": 0, "score": -math.inf}
    if (out / LAST_CHECKPOINT).exists():
        state = load_checkpoint(out / LAST_CHECKPOINT)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start, seconds, best = state["step"], state["seconds"], state["best"]
    resumed_from = start
    _truncate_log(out / LOSS_LOG, start)
    _truncate_log(out / VAL_LOG, start)
    loss_log = _CsvLog(out / LOSS_LOG, ["step", "loss", "lr", "seconds"])
    val_log = _CsvLog(out / VAL_LOG, ["step", "image_auroc", "pixel_ap", "score"])
    meta.update(split=split.summary(), status="training")
    atomic_write_text(out / RUN_JSON, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    source = BatchSource(split, config, seed)
    stop = config.steps if max_steps is None else min(config.steps, start + max_steps)
    bar = tqdm(total=config.steps, initial=start, desc=f"train {config.detector}/{category}", unit="step",
               disable=not progress, dynamic_ncols=True)
    from torchvision.ops import sigmoid_focal_loss

    try:
        for step in range(start, stop):
            t0 = time.perf_counter()
            images, masks = source.get(step, prefetch=step + 1 if step + 1 < stop else None)
            model.train()
            logits = model(to_input(images, config.channels_last))
            loss = sigmoid_focal_loss(logits, masks.float(), alpha=config.focal_alpha, gamma=config.focal_gamma,
                                      reduction="mean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            done = step + 1
            if not torch.isfinite(loss):
                raise AnobenchError(f"training diverged at step {done} (loss {loss.item()}); lower --set lr=...")
            if done % config.val_every == 0 or done == config.steps:
                if split.val_synthetic:
                    val = validation_score(model, split, source.cache, config.channels_last, config.map_sigma)
                    val_log.write(done, val["image_auroc"], val["pixel_ap"], val["score"])
                    if val["score"] > best["score"]:
                        best = {"step": done, "score": val["score"]}
                        _save(out / BEST_CHECKPOINT, {"model": model.state_dict(), "step": done, "score": val["score"]})
                    bar.set_postfix(val=f"{val['score']:.3f}", refresh=False)
                elif done == config.steps:
                    best = {"step": done, "score": math.nan}
                    _save(out / BEST_CHECKPOINT, {"model": model.state_dict(), "step": done, "score": math.nan})
            seconds += time.perf_counter() - t0
            loss_log.write(done, float(loss.item()), float(lr), round(seconds, 2))
            if done % config.checkpoint_every == 0 or done == stop:
                _save(out / LAST_CHECKPOINT, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "step": done, "seconds": seconds, "best": best,
                })
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        source.close()
        loss_log.close()
        val_log.close()

    if stop == config.steps:
        meta.update(status="trained", best=best, train_seconds=round(seconds, 1),
                    steps_per_second=round((config.steps - resumed_from) / max(seconds, 1e-9), 4))
        atomic_write_text(out / RUN_JSON, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return TrainSummary(out, stop, best["step"], best["score"], seconds, resumed_from)


def _check_generated(gen: GeneratedSet, dataset: str, category: str, folder: Path) -> None:
    if gen.meta.get("category") not in (None, category):
        raise AnobenchError(f"{folder}: generated set is for category {gen.meta.get('category')!r}, not {category!r}")
    if gen.meta.get("dataset") not in (None, dataset):
        raise AnobenchError(f"{folder}: generated set is for dataset {gen.meta.get('dataset')!r}, not {dataset!r}")


# ----------------------------------------------------------------------------- reading a run


@dataclass
class TrainedRun:
    """A finished run as the evaluator reads it."""

    folder: Path
    meta: dict[str, Any]
    config: TrainConfig

    @classmethod
    def open(cls, folder: str | Path) -> "TrainedRun":
        folder = Path(folder)
        path = folder / RUN_JSON
        if not path.exists():
            raise AnobenchError(f"{folder}: not a detector run (no {RUN_JSON}); train one with `anobench train-detector`")
        try:
            meta = json.loads(path.read_text())
            config = config_from_dict(TrainConfig, meta["config"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise AnobenchError(f"{path}: unreadable run.json") from None
        if meta.get("status") != "trained" or not (folder / BEST_CHECKPOINT).exists():
            raise AnobenchError(f"{folder}: training has not finished; re-run the same train-detector command to resume")
        return cls(folder, meta, config)

    def load_model(self) -> Detector:
        """The selected checkpoint's detector (encoder weights come from the checkpoint)."""
        weights = "none"
        model = build_detector(self.config.detector, self.config.encoder, weights)
        state = load_checkpoint(self.folder / BEST_CHECKPOINT)
        model.load_state_dict(state["model"])
        return model.eval()
