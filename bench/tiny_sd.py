"""A tiny random Stable Diffusion, built in code: for tests, dummy contexts and benchmarks.

No SD weights need to exist: the components have diffusers' and transformers' real classes
(``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, a real ``CLIPTokenizer`` on a
tiny BPE vocabulary, ``DDIMScheduler``) at toy width, so code that loads ``--model FOLDER``
and maps pixels to latents to cross-attention runs exactly as on SD 1.5, on a CPU in seconds.
``save_tiny_sd(folder)`` writes the diffusers folder ``--model`` accepts, like a download.
This is the one builder: ``tests/tiny_sd.py`` adds the real tokenizer and SD 1.5 configs.
"""

from __future__ import annotations

from pathlib import Path

import torch


# words of the tests' and the generators' prompts: each is one token, as in the real CLIP vocabulary
TINY_WORDS = (
    "a photo of with and the an on in at no good normal defect defective anomaly anomalous damaged "
    "bottle cable capsule carpet grid hazelnut leather metal nut pill screw tile toothbrush transistor "
    "wood zipper disc box weave grain candle pcb macaroni cashew chewinggum fryum pipe bracket sheet "
    "broken large small contamination crack scratch hole stain cut color fold glue poke thread print "
    "bent flip misplaced squeeze rough liquid faulty imprint combined missing manipulated front back "
    "splayed spot oil split tear crease dirty chip burnt stuck"
).split()


def tiny_clip_tokenizer(words: tuple[str, ...] = tuple(TINY_WORDS), folder: str | Path | None = None):
    """A real ``CLIPTokenizer`` on a tiny BPE vocabulary: every byte, and ``words`` as whole tokens.

    The vocabulary has CLIP's byte-level alphabet (so any text tokenises) and one merge chain
    per word, so a listed word is one token as in the real vocabulary. Its files are written to
    ``folder`` (default: a new temporary folder).
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
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="tiny_clip_tokenizer_"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(_json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                         model_max_length=77)


def tiny_sd_components(seed: int = 0, cross_attention_dim: int = 32, vae_scale_factor: int = 8,
                       unet_channels: tuple[int, ...] = (32, 64), tokenizer=None) -> dict:
    """Random tiny SD components: the real classes at toy width.

    The VAE keeps SD's downsampling factor (8 by default) and the UNet has cross-attention at
    every resolution, so code that maps pixels to latents to attention maps is exercised as on
    the real model. ``tokenizer`` defaults to :func:`tiny_clip_tokenizer`.
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
    tokenizer = tokenizer if tokenizer is not None else tiny_clip_tokenizer()
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


def save_tiny_sd(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write a tiny random SD as a diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ...)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    pipe = StableDiffusionPipeline(**tiny_sd_components(seed, **kwargs), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
