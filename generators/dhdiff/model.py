"""The DH-Diff backbone: one diffusers ``UNet2DConditionModel`` over the joint latent (z_I, z_A).

Image and annotation latents go through the UNet as one batch ``[z_I; z_A]`` with a domain
label (the UNet's class embedding, zero-initialised) so shared convolutions know which domain
they see. Attention sites are rewired per :class:`Placement`: DDA replaces the self-attention
and SSM the text cross-attention where placed; elsewhere the baseline's concatenated attention
and plain text cross-attention remain (the paper's Table VIII baseline is "nothing placed").

The reference feature F_R comes from a Siamese conditional encoder (:class:`ReferenceEncoder`):
a trainable twin of the UNet's input stage (conv_in, time/domain embedding, down blocks and,
when needed, the mid block), initialised from the UNet's weights, fed the reference latent noised
with the *same* noise and timestep as the image. It records the input of every self-attention;
a DDA site reads the twin's feature at the same site (encoder, mid) or, in the decoder, the
twin's last feature at the same resolution.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from anobench.generators.dhdiff.attention import (
    DHState,
    DomainDecoupledAttnProcessor,
    JointSelfAttnProcessor,
    ReferenceCaptureProcessor,
    SemanticScoreMapProcessor,
    TextCrossAttnProcessor,
)

IMAGE, ANNOTATION = 0, 1


def _blocks(spec: str | None, count: int, decoder: bool) -> frozenset[int]:
    if spec == "all":
        return frozenset(range(count))
    if spec is None or spec == "none":
        return frozenset()
    if spec == "every_other":  # encoder: blocks 0, 2, ...; decoder: blocks 1, 3, ...
        return frozenset(range(1 if decoder else 0, count, 2))
    raise ValueError(f"unknown block set {spec!r} (all, every_other, or none)")


@dataclass(frozen=True)
class Placement:
    """Which UNet blocks carry DDA and SSM (the paper's Table IX)."""

    dda_encoder: str | None = "all"
    dda_decoder: str | None = "every_other"
    dda_mid: bool = True
    ssm_encoder: str | None = "all"
    ssm_decoder: str | None = "every_other"
    ssm_mid: bool = True

    @classmethod
    def from_config(cls, config: Any) -> "Placement":
        return cls(**{f: getattr(config, f) for f in cls.__dataclass_fields__})

    @classmethod
    def baseline(cls) -> "Placement":
        return cls(None, None, False, None, None, False)

    def has(self, module: str, part: str, block: int, num_blocks: int) -> bool:
        if part == "mid":
            return getattr(self, f"{module}_mid")
        spec = getattr(self, f"{module}_{'encoder' if part == 'down' else 'decoder'}")
        return block in _blocks(spec, num_blocks, decoder=part == "up")


@dataclass
class Site:
    """One transformer block of the UNet: where DDA (attn1) and SSM (attn2) may go."""

    name: str  # e.g. "down.1.0.0": part, block, attention, transformer block
    part: str  # down, mid or up
    block: int
    level: int  # resolution level: 0 is the full latent resolution
    channels: int
    transformer: nn.Module  # a diffusers BasicTransformerBlock


def attention_sites(unet) -> list[Site]:
    """Every transformer block of a UNet2DConditionModel, in forward order."""
    n = len(unet.down_blocks)
    channels = list(unet.config.block_out_channels)
    sites: list[Site] = []

    def add(part: str, block: int, level: int, module: nn.Module, width: int) -> None:
        for a, transformer2d in enumerate(getattr(module, "attentions", None) or []):
            for t, tb in enumerate(transformer2d.transformer_blocks):
                sites.append(Site(f"{part}.{block}.{a}.{t}", part, block, level, width, tb))

    for d, block in enumerate(unet.down_blocks):
        add("down", d, d, block, channels[d])
    if unet.mid_block is not None:
        add("mid", 0, n - 1, unet.mid_block, channels[-1])
    for u, block in enumerate(unet.up_blocks):
        add("up", u, n - 1 - u, block, channels[n - 1 - u])
    return sites


class ReferenceEncoder(nn.Module):
    """Siamese conditional encoder tau_theta: the UNet's input stage, twinned, recording F_R per site.

    ``tied=False`` (the default): a trainable copy initialised from the UNet (348.7 M parameters at
    SD-1.5 scale). ``tied=True``: the UNet's own input stage, shared weights (a Siamese network in the
    strict sense); its attention sites run as plain capturing attention during the reference pass
    (the processors are swapped for that pass and restored), and gradient checkpointing is off
    for that pass so a recomputation never runs the backbone's processors on the reference.
    """

    def __init__(self, unet, levels: int, with_mid: bool, tied: bool = False):
        super().__init__()
        take = (lambda module: module) if tied else copy.deepcopy
        self.tied = tied
        self.conv_in = take(unet.conv_in)
        self.time_proj = take(unet.time_proj)
        self.time_embedding = take(unet.time_embedding)
        self.class_embedding = take(unet.class_embedding)
        self.down_blocks = nn.ModuleList(take(b) for b in unet.down_blocks[:levels])
        self.mid_block = take(unet.mid_block) if with_mid else None
        self._features: dict[str, torch.Tensor] = {}
        self._swaps: list[tuple[nn.Module, Any]] = []  # tied: (attention, processor) for the reference pass
        self.sites: list[Site] = []
        n = len(unet.down_blocks)
        for d, block in enumerate(self.down_blocks):
            self._capture("down", d, d, block, unet.config.block_out_channels[d])
        if self.mid_block is not None:
            self._capture("mid", 0, n - 1, self.mid_block, unet.config.block_out_channels[-1])

    def _capture(self, part: str, index: int, level: int, module: nn.Module, channels: int) -> None:
        for a, transformer2d in enumerate(getattr(module, "attentions", None) or []):
            for t, tb in enumerate(transformer2d.transformer_blocks):
                name = f"{part}.{index}.{a}.{t}"
                for attn, processor in ((tb.attn1, ReferenceCaptureProcessor(name, self._features)),
                                        (tb.attn2, TextCrossAttnProcessor())):
                    if self.tied:
                        self._swaps.append((attn, processor))
                    else:
                        attn.set_processor(processor)
                self.sites.append(Site(name, part, index, level, channels, tb))

    def source_for(self, site: Site) -> Site | None:
        """The twin site whose feature a backbone site reads: same site, else same resolution."""
        for twin in self.sites:
            if twin.name == site.name:
                return twin
        same_level = [twin for twin in self.sites if twin.level == site.level]
        return same_level[-1] if same_level else None

    def forward(self, z_reference: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.tied:
            return self._encode(z_reference, timestep, text)
        blocks = [b for b in [*self.down_blocks, self.mid_block] if b is not None]
        saved = [(attn, attn.processor) for attn, _ in self._swaps]
        flags = [(m, m.gradient_checkpointing) for b in blocks for m in b.modules()
                 if isinstance(getattr(m, "gradient_checkpointing", None), bool)]
        try:
            for attn, processor in self._swaps:
                attn.set_processor(processor)
            for b, _ in flags:
                b.gradient_checkpointing = False
            return self._encode(z_reference, timestep, text)
        finally:
            for attn, processor in saved:
                attn.set_processor(processor)
            for b, flag in flags:
                b.gradient_checkpointing = flag

    def _encode(self, z_reference: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        self._features.clear()
        emb = self.time_embedding(self.time_proj(timestep).to(z_reference.dtype))
        if self.class_embedding is not None:
            labels = torch.full((z_reference.shape[0],), IMAGE, dtype=torch.long, device=z_reference.device)
            emb = emb + self.class_embedding(labels).to(emb.dtype)
        sample = self.conv_in(z_reference)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, _ = block(hidden_states=sample, temb=emb, encoder_hidden_states=text)
            else:
                sample, _ = block(hidden_states=sample, temb=emb)
        if self.mid_block is not None:
            if getattr(self.mid_block, "has_cross_attention", False):
                self.mid_block(sample, emb, encoder_hidden_states=text)
            else:
                self.mid_block(sample, emb)
        features = dict(self._features)
        self._features.clear()
        return features


class DHDiffUNet(nn.Module):
    """DH-Diff noise predictor: eps_theta(z_t, t, T, tau_theta(z_R), S_O) for the joint latent."""

    def __init__(self, unet, placement: Placement, tied_reference: bool = False):
        super().__init__()
        self.placement = placement
        self.sites = attention_sites(unet)
        n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
        counts = {"down": n_down, "mid": 1, "up": n_up}
        self.dda_sites = [s.name for s in self.sites if placement.has("dda", s.part, s.block, counts[s.part])]
        self.ssm_sites = [s.name for s in self.sites if placement.has("ssm", s.part, s.block, counts[s.part])]

        self.reference_encoder: ReferenceEncoder | None = None
        self.reference_source: dict[str, str] = {}  # backbone DDA site -> twin site
        if self.dda_sites:
            dda = [s for s in self.sites if s.name in self.dda_sites]
            levels = max(s.level for s in dda) + 1
            last_down_attends = bool(getattr(unet.down_blocks[-1], "attentions", None))
            with_mid = bool(getattr(unet.mid_block, "attentions", None)) and any(
                s.part == "mid" or (s.level == n_down - 1 and not last_down_attends) for s in dda
            )
            self.reference_encoder = ReferenceEncoder(unet, min(levels, n_down), with_mid, tied=tied_reference)
        for site in self.sites:
            ref_channels = None
            if site.name in self.dda_sites and self.reference_encoder is not None:
                twin = self.reference_encoder.source_for(site)
                if twin is not None:
                    self.reference_source[site.name] = twin.name
                    ref_channels = twin.channels
            attn1 = (
                DomainDecoupledAttnProcessor(site.transformer.attn1, site.name, ref_channels)
                if site.name in self.dda_sites else JointSelfAttnProcessor()
            )
            attn2 = (
                SemanticScoreMapProcessor(site.transformer.attn2, site.name)
                if site.name in self.ssm_sites else TextCrossAttnProcessor()
            )
            site.transformer.attn1.set_processor(attn1)
            site.transformer.attn2.set_processor(attn2)
        self.unet = unet

    @property
    def config(self):
        return self.unet.config

    def forward(
        self,
        z_image: torch.Tensor,
        z_annotation: torch.Tensor,
        timestep: torch.Tensor,
        text: torch.Tensor,
        z_reference: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        has_guidance: torch.Tensor | None = None,
        defect_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted noise of the image and annotation latents (eq. 8's eps_theta)."""
        b = z_image.shape[0]
        timestep = torch.as_tensor(timestep, device=z_image.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        reference = None
        if self.reference_encoder is not None and z_reference is not None:
            twin = self.reference_encoder(z_reference, timestep, text)
            reference = {site: twin[source] for site, source in self.reference_source.items() if source in twin}
        state = DHState(
            num_images=b,
            latent_hw=tuple(z_image.shape[-2:]),
            reference=reference,
            guidance=guidance,
            has_guidance=has_guidance,
            defect_weights=defect_weights,
        )
        labels = torch.cat([torch.full((b,), IMAGE), torch.full((b,), ANNOTATION)]).to(z_image.device)
        out = self.unet(
            torch.cat([z_image, z_annotation]),
            torch.cat([timestep, timestep]),
            encoder_hidden_states=torch.cat([text, text]),
            class_labels=labels,
            cross_attention_kwargs={"dh": state},
        ).sample
        return out[:b], out[b:]


def small_unet_config(config: Any, latent_channels: int) -> dict[str, Any]:
    """A small from-scratch UNet: every block has attention so every placement is meaningful."""
    n = len(config.block_out_channels)
    return dict(
        sample_size=config.resolution // config.patch_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=["CrossAttnDownBlock2D"] * n,
        up_block_types=["CrossAttnUpBlock2D"] * n,
        mid_block_type="UNetMidBlock2D",
        block_out_channels=list(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_heads,  # diffusers' legacy name: the number of heads
        cross_attention_dim=config.text_dim,
        norm_num_groups=min(32, math.gcd(*config.block_out_channels)),
        num_class_embeds=2,  # the domain label: image or annotation
    )


def build_unet(unet_config: dict[str, Any]):
    """A fresh UNet2DConditionModel from a config dict, with its domain embedding at zero."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**unet_config)
    _zero_domain_embedding(unet)
    return unet


def load_sd_unet(model_path: str):
    """SD's UNet with a (zero) domain embedding added.

    With DDA at every attention site (``dda_decoder=all``) the model starts equal to SD on each
    domain (the zero domain embedding, identity-initialised SSM fusion and zero reference convs
    change nothing). With the paper's default placement it does not: the decoder sites without
    DDA keep the baseline's concatenated image+annotation self-attention, which mixes the two
    domains from the first step. Tests pin both facts on a tiny random SD.
    """
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", num_class_embeds=2,
                                                low_cpu_mem_usage=False)
    _zero_domain_embedding(unet)
    return unet


def _zero_domain_embedding(unet) -> None:
    if unet.class_embedding is not None:
        nn.init.zeros_(unet.class_embedding.weight)


LORA_TARGETS = r".*attn[12]\.(to_q|to_k|to_v|to_out\.0)"  # the attention projections (not DDA's copies)


def apply_lora(backbone: DHDiffUNet, rank: int) -> DHDiffUNet:
    """Freeze the backbone, add peft LoRA adapters (rank ``rank``, alpha = rank, B = 0 so the model
    is unchanged) to every attention projection of the UNet and the twin encoder, and train the
    adapters, the DDA/SSM modules (the attention processors' own parameters) and the domain label."""
    from peft import LoraConfig, inject_adapter_in_model

    backbone.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS), backbone)
    for name, param in backbone.named_parameters():
        if "lora_" in name or ".processor." in name or "class_embedding" in name:
            param.requires_grad_(True)
    return backbone


def trainable_state(module: nn.Module, trained: str) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps: every tensor for full training; for LoRA only the trained parameters
    (the frozen base is SD's, re-read from the SD folder at load time). Tensors shared by a tied
    twin are kept once (under the UNet's name)."""
    state, seen, unique = module.state_dict(), set(), {}
    for key, tensor in state.items():  # a tied twin's tensors are the UNet's: keep each storage once
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and ptr in seen:
            continue
        seen.add(ptr)
        unique[key] = tensor
    if trained != "lora":
        return unique
    keep = {name for name, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in unique.items() if k in keep}
