"""Stable Diffusion pipelines with random weights, built offline, for tests and benchmarks.

No SD weights exist on this machine, so diffusion code is tested on (a) a tiny random SD whose
components have the real classes and the real CLIP tokenizer (``../shared/assets/clip_tokenizer``)
and (b) the full SD 1.5 architecture from its configs (``../shared/assets/sd15_configs``) with
random weights. ``save_tiny_sd(folder)`` writes a diffusers folder that ``--model FOLDER``
accepts, exactly like a downloaded checkpoint. The tiny SD itself is the package's one builder
(:mod:`anobench.tiny_sd`, which DeltaDeno's dummy context uses too); this module gives it the
real tokenizer when the shared assets exist.

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

from anobench import tiny_sd as _tiny

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
    """The real CLIP ViT-L/14 tokenizer (SD 1.x) from the shared assets, else a tiny one.

    Without ``../shared`` (a bare clone), or with ``ANOBENCH_TINY_TOKENIZER=1``, a tiny CLIP BPE
    tokenizer is built on the fly (:func:`tiny_clip_tokenizer`), so tests run instead of skipping.
    """
    import os

    from transformers import CLIPTokenizer

    if TOKENIZER_DIR.is_dir() and not os.environ.get("ANOBENCH_TINY_TOKENIZER"):
        return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    return tiny_clip_tokenizer()


TINY_WORDS = _tiny.TINY_WORDS
tiny_clip_tokenizer = _tiny.tiny_clip_tokenizer


def tiny_sd_components(seed: int = 0, **kwargs) -> dict:
    """The package's tiny SD (:func:`anobench.tiny_sd.tiny_sd_components`) with :func:`load_tokenizer`'s tokenizer."""
    kwargs.setdefault("tokenizer", load_tokenizer())
    return _tiny.tiny_sd_components(seed, **kwargs)


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
