"""Stable Diffusion pipelines with random weights, built offline, for tests and benchmarks.

No SD weights exist on this machine, so diffusion code is tested on (a) a tiny random SD whose
components have the real classes and the real CLIP tokenizer (``../shared/assets/clip_tokenizer``)
and (b) the full SD 1.5 architecture from its configs (``../shared/assets/sd15_configs``) with
random weights. ``save_tiny_sd(folder)`` writes a diffusers folder that ``--model FOLDER``
accepts, exactly like a downloaded checkpoint.

    from tests.tiny_sd import save_tiny_sd
    folder = save_tiny_sd(tmp_path / "sd")           # StableDiffusionPipeline layout

Usable as a script too: ``python tests/tiny_sd.py OUT_DIR`` writes the tiny folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ASSETS = Path(os.environ.get("ANOBENCH_SHARED") or Path(__file__).resolve().parents[1].parent / "shared") / "assets"
TOKENIZER_DIR = ASSETS / "clip_tokenizer"
SD15_CONFIGS = ASSETS / "sd15_configs"


def _require(path: Path) -> Path:
    if not path.exists():
        try:
            import pytest
        except ImportError:  # used as a script
            raise FileNotFoundError(f"{path} not found (shared assets live next to the repository)") from None
        pytest.skip(f"shared asset {path} not found")
    return path


def load_tokenizer():
    """The real CLIP ViT-L/14 tokenizer (SD 1.x), from the shared assets."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(_require(TOKENIZER_DIR)))


def tiny_sd_components(seed: int = 0, cross_attention_dim: int = 32, vae_scale_factor: int = 8,
                       unet_channels: tuple[int, ...] = (32, 64)) -> dict:
    """Random tiny SD components: the real classes at toy width.

    The VAE keeps SD's downsampling factor (8 by default) and the UNet has cross-attention at
    every resolution, so code that maps pixels to latents to attention maps is exercised as on
    the real model.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    n = len(unet_channels)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae_blocks = max(1, int(vae_scale_factor).bit_length())  # factor 2**(blocks-1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16,) * vae_blocks,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    tokenizer = load_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cross_attention_dim,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=cross_attention_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def sd15_components(seed: int = 0) -> dict:
    """The full SD 1.5 architecture (UNet 860M, VAE, CLIP ViT-L text encoder) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = _require(SD15_CONFIGS)

    def config(name: str) -> dict:
        return json.loads((configs / f"{name}_config.json").read_text())

    torch.manual_seed(seed)
    text_config = {k: v for k, v in config("text_encoder").items() if k != "architectures"}
    components = {
        "unet": UNet2DConditionModel.from_config(config("unet")),
        "vae": AutoencoderKL.from_config(config("vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text_config)),
        "tokenizer": load_tokenizer(),
        "scheduler": DDIMScheduler.from_config(config("scheduler")),
    }
    for key in ("unet", "vae", "text_encoder"):
        components[key].eval()
    return components


def as_stable_diffusion(components: dict):
    """Wrap components in diffusers' ``StableDiffusionPipeline`` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_sd(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write a tiny random SD as a diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ...)."""
    folder = Path(folder)
    as_stable_diffusion(tiny_sd_components(seed, **kwargs)).save_pretrained(folder)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/tiny_sd.py OUT_DIR")
    print(save_tiny_sd(sys.argv[1]))
