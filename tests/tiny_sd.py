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
import sys
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
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


# words of the tests' and the generators' prompts: each is one token, as in the real CLIP vocabulary
TINY_WORDS = (
    "a photo of with and the an on in at no good normal defect defective anomaly anomalous damaged "
    "bottle cable capsule carpet grid hazelnut leather metal nut pill screw tile toothbrush transistor "
    "wood zipper disc box weave grain candle pcb macaroni cashew chewinggum fryum pipe bracket sheet "
    "broken large small contamination crack scratch hole stain cut color fold glue poke thread print "
    "bent flip misplaced squeeze rough liquid faulty imprint combined missing manipulated front back "
    "splayed spot oil split tear crease dirty chip burnt stuck"
).split()


def tiny_clip_tokenizer(words: tuple[str, ...] = tuple(TINY_WORDS)):
    """A real ``CLIPTokenizer`` on a tiny BPE vocabulary: every byte, and ``words`` as whole tokens.

    The vocabulary has CLIP's byte-level alphabet (so any text tokenises) and one merge chain
    per word, so a listed word is one token as in the real vocabulary.
    """
    import json as _json
    import tempfile

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(dict.fromkeys(bytes_to_unicode().values()))
    vocab: dict[str, int] = {}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[str] = []
    for word in dict.fromkeys(words):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            merge = f"{current} {part}"
            if merge not in merges:
                merges.append(merge)
            current += part
            vocab.setdefault(current, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    folder = Path(tempfile.mkdtemp(prefix="tiny_clip_tokenizer_"))
    (folder / "vocab.json").write_text(_json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                         model_max_length=77)


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
