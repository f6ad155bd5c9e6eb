"""Detector training settings: the config dataclass and its named profiles (quick, paper)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from anobench.config import apply_overrides
from anobench.errors import AnobenchError



@dataclass
class TrainConfig:
    """Detector training settings. ``profile`` presets live in :data:`PROFILES`."""

    detector: str = "unet"  # a registered detector (anobench.detectors.base.available_detectors)
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
        from anobench.detectors.base import available_detectors

        if self.detector not in available_detectors():
            raise AnobenchError(f"train config: unknown detector {self.detector!r} "
                                f"(available: {', '.join(available_detectors())})")
        for ok, message in checks:
            if not ok:
                raise AnobenchError(f"train config: {message}")

    def resolved(self) -> "TrainConfig":
        """The config with detector defaults filled in (what run.json records)."""
        from anobench.detectors.base import detector_spec

        spec = detector_spec(self.detector)
        weights = self.encoder_weights or spec.default_weights
        encoder = self.encoder if self.encoder is not None else spec.default_encoder
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
