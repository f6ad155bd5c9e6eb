"""What surrounds the backbone: the latent codec, the prompt encoder, and the noise schedule.

Two configurations share one backbone code path:

- small (no ``--model``): pixel space made compact by a lossless space-to-depth patchify
  (:class:`PatchCodec`), a small word-level prompt encoder trained with the UNet
  (:class:`WordPromptEncoder`), and a cosine DDPM schedule;
- Stable Diffusion (``--model``): SD's frozen VAE (:class:`VaeCodec`) and frozen CLIP text
  encoder (:class:`ClipPromptEncoder`), SD's noise schedule, the UNet initialised from SD.

The annotation goes through the same codec as the image: the mask, scaled to [-1, 1] and
repeated over the three colour channels, is an "image" of the annotation domain.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"


class PatchCodec:
    """Pixel space, patchified: ``[B, 3, H, W]`` <-> ``[B, 3 p^2, H/p, W/p]``, exactly invertible."""

    kind = "pixel"

    def __init__(self, patch_size: int):
        self.patch_size = patch_size
        self.latent_channels = 3 * patch_size**2
        self.factor = patch_size  # pixels per latent cell

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(image, self.patch_size)

    def decode_image(self, latent: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latent, self.patch_size).clamp(-1, 1)

    def encode_annotation(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encode_image((mask * 2 - 1).expand(-1, 3, -1, -1))

    def decode_annotation(self, latent: torch.Tensor) -> torch.Tensor:
        """Soft annotation in [0, 1], ``[B, 1, H, W]``."""
        return ((self.decode_image(latent).mean(dim=1, keepdim=True) + 1) / 2).clamp(0, 1)


class VaeCodec:
    """Stable Diffusion's frozen VAE; latents scaled by its scaling factor, encoded by the mean."""

    kind = "vae"

    def __init__(self, vae):
        self.vae = vae.eval().requires_grad_(False)
        self.scaling = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean * self.scaling

    @torch.no_grad()
    def decode_image(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent / self.scaling).sample.clamp(-1, 1)

    def encode_annotation(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encode_image((mask * 2 - 1).expand(-1, 3, -1, -1))

    def decode_annotation(self, latent: torch.Tensor) -> torch.Tensor:
        return ((self.decode_image(latent).mean(dim=1, keepdim=True) + 1) / 2).clamp(0, 1)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class WordPromptEncoder(nn.Module):
    """A small trainable text encoder over the words of the training prompts.

    Token 0 of every prompt is ``<bos>``: like CLIP's start token, it is where cross-attention
    can park the score mass of pixels no word describes (S_O uses it outside the guidance).
    """

    def __init__(self, vocabulary: Sequence[str], dim: int, max_length: int = 16, heads: int = 4):
        super().__init__()
        self.vocabulary = [PAD, BOS, EOS, UNK, *sorted(set(vocabulary) - {PAD, BOS, EOS, UNK})]
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_length = max_length
        self.embed = nn.Embedding(len(self.vocabulary), dim)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)

    def token_count(self, prompt: str) -> int:
        """Tokens of ``prompt`` before its end token (the start token included)."""
        return min(1 + len(words(prompt)), self.max_length - 1)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = torch.full((len(prompts), self.max_length), self.index[PAD], dtype=torch.long)
        for row, prompt in enumerate(prompts):
            tokens = [BOS, *words(prompt)][: self.max_length - 1] + [EOS]
            ids[row, : len(tokens)] = torch.tensor([self.index.get(t, self.index[UNK]) for t in tokens])
        return ids

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenize(prompts).to(self.embed.weight.device)
        return self.norm(self.layer(self.embed(ids) + self.position))


class ClipPromptEncoder(nn.Module):
    """SD's frozen CLIP tokenizer and text encoder."""

    def __init__(self, tokenizer, text_encoder):
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.max_length = tokenizer.model_max_length

    def token_count(self, prompt: str) -> int:
        return min(len(self.tokenizer(prompt).input_ids) - 1, self.max_length - 1)

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]


def defect_weights(encoder, prompts: Sequence[str], prefixes: Sequence[str]) -> torch.Tensor:
    """``[B, L]`` weights spreading each prompt's guided score mass over its defect-word tokens.

    A prompt is its prefix ("a photo of a bottle with") plus the defect words ("broken large");
    the defect tokens are those after the prefix's tokens. A prompt equal to its prefix has none.
    """
    out = torch.zeros(len(prompts), encoder.max_length)
    for row, (prompt, prefix) in enumerate(zip(prompts, prefixes)):
        start, stop = encoder.token_count(prefix), encoder.token_count(prompt)
        if stop > start:
            out[row, start:stop] = 1.0 / (stop - start)
    return out


def small_scheduler_config(config: Any) -> dict[str, Any]:
    return {"num_train_timesteps": 1000, "beta_schedule": config.beta_schedule, "prediction_type": "epsilon",
            "clip_sample": True, "clip_sample_range": 1.0}


def training_scheduler(scheduler_config: dict[str, Any]):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config)


def sampling_scheduler(scheduler_config: dict[str, Any], pixel_space: bool):
    """DDIM (eta 0, deterministic); x0 clipped to [-1, 1] only in pixel space."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler_config, clip_sample=pixel_space)
