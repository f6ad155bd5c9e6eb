"""Configuration of the DH-Diff generator: architecture, placement, training and sampling knobs.

Architecture fields are used when a model is *built* (``train-generator``); a checkpoint stores
the configuration it was trained with, and at generation time the checkpoint's architecture
wins while the sampling fields come from the run's config (``--set``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from anobench.errors import AnobenchError

# Which blocks of the encoder / decoder carry a module: "all", "every_other" (the even-indexed
# blocks of the encoder, 0 and 2; the odd-indexed blocks of the decoder, 1 and 3), or None (no
# block; ``--set dda_decoder=none``).
BlockSet = Optional[Literal["all", "every_other"]]

# The paper's placement ablations as --set overrides (Tables VIII and IX).
ABLATIONS: dict[str, dict[str, str]] = {
    "table8-baseline": {"dda_encoder": "none", "dda_decoder": "none", "dda_mid": "false",
                        "ssm_encoder": "none", "ssm_decoder": "none", "ssm_mid": "false"},
    "table8-dda": {"dda_encoder": "all", "dda_decoder": "every_other", "dda_mid": "true",
                   "ssm_encoder": "none", "ssm_decoder": "none", "ssm_mid": "false"},
    "table8-ssm": {"dda_encoder": "none", "dda_decoder": "none", "dda_mid": "false",
                   "ssm_encoder": "all", "ssm_decoder": "every_other", "ssm_mid": "true"},
    "table9-1": {"dda_encoder": "all", "dda_decoder": "none", "ssm_encoder": "all", "ssm_decoder": "none"},
    "table9-2": {"dda_encoder": "every_other", "dda_decoder": "none",
                 "ssm_encoder": "every_other", "ssm_decoder": "none"},
    "table9-3": {"dda_encoder": "every_other", "dda_decoder": "every_other",
                 "ssm_encoder": "every_other", "ssm_decoder": "every_other"},
    "table9-4": {"dda_encoder": "all", "dda_decoder": "every_other",
                 "ssm_encoder": "all", "ssm_decoder": "every_other"},
}


PAPER_LEARNING_RATE = 1e-4
SMALL_LEARNING_RATE = 1e-3


@dataclass
class DHDiffConfig:
    """Every DH-Diff knob, with the paper's choices as defaults where the paper states one."""

    # --- pre-processing (paper: K = 5) ---
    grid_size: int = 5  # K: the raw mask marks the K x K grid cells that contain anomaly

    # --- small from-scratch model (no --model): pixel space, patchified ---
    resolution: int = 64  # model resolution in pixels; outputs are resized to the run's image size
    patch_size: int = 4  # space-to-depth factor: a lossless 'latent' of (resolution/patch)^2 x 3*patch^2
    block_out_channels: tuple[int, ...] = (64, 64, 96, 128)  # level 0 at least as wide as the 48-d latent
    layers_per_block: int = 1
    attention_heads: int = 4
    text_dim: int = 64  # width of the small prompt encoder (= UNet cross-attention dim)

    # --- Stable Diffusion initialisation (--model) ---
    sd_resolution: int = 256  # the paper trains at 256 x 256 (32 x 32 latents)

    # --- placement (paper's final design: every encoder block, every other decoder block) ---
    # *_mid: the UNet's mid block, when it has attention (SD's does; the small model's has none).
    # The paper counts only encoder and decoder blocks; a decoupled mid block keeps the two
    # domains from mixing through concatenated attention at the bottleneck.
    dda_encoder: BlockSet = "all"
    dda_decoder: BlockSet = "every_other"
    dda_mid: bool = True
    ssm_encoder: BlockSet = "all"
    ssm_decoder: BlockSet = "every_other"
    ssm_mid: bool = True

    # --- training (eq. 8; paper: Adam, lr 1e-4) ---
    steps: int = 1200
    batch_size: int = 8
    # Adam step size. None: the paper's 1e-4 when fine-tuning SD (--model); 1e-3 for the small model
    # trained from scratch, which has minutes of CPU instead of the paper's GPU-days at batch 32.
    learning_rate: float | None = None
    ema_decay: float = 0.999  # weights EMA (diffusers EMAModel, warm-up (1+n)/(10+n)) saved for generation; 0: off
    normal_fraction: float = 0.25  # share of each batch made of normals (random raw mask, no-defect prompt)
    guidance_prob: float = 0.5  # probability that a training sample gets graphical guidance S_O
    guidance_kinds: tuple[str, ...] = ("points", "detailed", "raw")
    flip: bool = True  # horizontal-flip augmentation of training images (and their masks)
    beta_schedule: str = "squaredcos_cap_v2"  # small model only; SD keeps its own scheduler
    checkpoint_every: int = 250
    threads: int = 0  # torch threads for training and sampling; 0 leaves torch's default

    # --- generation ---
    num_inference_steps: int = 50
    eta: float = 1.0  # DDIM eta: 1 = DDPM-like fresh (seeded) noise per step, cleaner on the small model; 0 = DDIM path
    guidance_scale: float = 1.0  # >1: classifier-free-style push from the normal prompt to the defect prompt
    defect_type: str | None = None  # None: uniform over the checkpoint's defect types
    cells: Literal["reference", "random"] = "reference"  # where raw-mask cell sets come from
    cell_transform: Optional[Literal["flip", "dihedral"]] = "flip"  # random symmetry of a reference cell set
    control_mask: str | None = None  # a mask image: raw mask = its cells, S_O from it (guidance below)
    guidance: Optional[Literal["raw", "detailed", "points"]] = "raw"  # S_O at generation (none: no S_O)
    composite: Optional[Literal["annotation", "raw"]] = "annotation"  # none: the resized model output
    feather: float = 1.0  # Gaussian sigma (output pixels) of the composite's edge outside the mask
    mask_threshold: float = 0.5
    min_mask_pixels: int = 16  # at output size; fewer: resample with a derived seed
    max_attempts: int = 3

    def learning_rate_for(self, from_sd: bool) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return PAPER_LEARNING_RATE if from_sd else SMALL_LEARNING_RATE

    def validate(self) -> None:
        if self.grid_size < 1:
            raise AnobenchError(f"grid_size must be >= 1, got {self.grid_size}")
        if self.patch_size < 1 or self.resolution % self.patch_size:
            raise AnobenchError(f"resolution {self.resolution} must be a multiple of patch_size {self.patch_size}")
        down = 2 ** (len(self.block_out_channels) - 1)
        if (self.resolution // self.patch_size) % down:
            raise AnobenchError(
                f"resolution/patch_size = {self.resolution // self.patch_size} must be divisible by {down} "
                f"({len(self.block_out_channels)} UNet blocks)"
            )
        if self.resolution // self.patch_size < self.grid_size:
            raise AnobenchError(
                f"the {self.resolution // self.patch_size}-cell latent is coarser than the "
                f"{self.grid_size}x{self.grid_size} raw-mask grid (grid_size): raise resolution or lower patch_size"
            )
        if any(c % self.attention_heads for c in self.block_out_channels):
            raise AnobenchError(f"block_out_channels {self.block_out_channels} must be multiples of attention_heads")
        if not 0.0 <= self.normal_fraction < 1.0:
            raise AnobenchError(f"normal_fraction must be in [0, 1), got {self.normal_fraction}")
        if not 0.0 <= self.guidance_prob <= 1.0:
            raise AnobenchError(f"guidance_prob must be in [0, 1], got {self.guidance_prob}")
        unknown = set(self.guidance_kinds) - {"points", "detailed", "raw"}
        if unknown:
            raise AnobenchError(f"guidance_kinds: unknown kind(s) {sorted(unknown)} (known: points, detailed, raw)")
        if self.steps < 1 or self.batch_size < 1 or self.num_inference_steps < 1:
            raise AnobenchError("steps, batch_size and num_inference_steps must be >= 1")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise AnobenchError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise AnobenchError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_attempts < 1:
            raise AnobenchError(f"max_attempts must be >= 1, got {self.max_attempts}")


# config fields that change sampling or bookkeeping only, not the trained weights: outside the
# training stage's resume identity (anobench.generator_training)
SAMPLING_FIELDS = frozenset({
    "num_inference_steps", "eta", "guidance_scale", "defect_type", "cells", "cell_transform", "control_mask",
    "guidance", "composite", "feather", "mask_threshold", "min_mask_pixels", "max_attempts",
    "steps", "checkpoint_every", "threads",
})
