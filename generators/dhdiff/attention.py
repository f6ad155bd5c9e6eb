"""DH-Diff attention: Domain-Decoupled Attention (eq. 4-5) and Semantic Score Map modification (eq. 6-7).

The backbone runs image and annotation as one batch ``[images; annotations]`` (2B items) through
a diffusers ``UNet2DConditionModel``: convolutions and feed-forwards are shared, attention is
where the domains meet or are kept apart. These processors replace the UNet's attention
processors; they read per-forward conditioning from a :class:`DHState` passed as
``cross_attention_kwargs={"dh": state}``.

- ``JointSelfAttnProcessor``: the baseline's concatenated attention (eq. 1-3): image and
  annotation tokens of one sample attend to each other, so features leak across domains.
- ``DomainDecoupledAttnProcessor`` (eq. 4-5): image cross-attention whose keys/values add the
  reference feature F_R through a zero-initialised 1x1 conv; annotation self-attention with its
  own projections. No token of one domain enters the other's attention.
- ``TextCrossAttnProcessor``: the baseline's text cross-attention, each domain on its own.
- ``SemanticScoreMapProcessor`` (eq. 6-7): text score maps of both domains and an optional
  control map S_O fused by a learnable conv plus their mean; each domain's output is its fused
  map times the text values.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DHState:
    """Conditioning of one backbone forward that the attention processors read.

    ``reference`` maps a DDA site to its reference feature F_R (tokens ``[B, hw, c]``);
    ``guidance`` is the graphical guidance map in [0, 1] (``[B, 1, H, W]``, any resolution),
    ``has_guidance`` says per sample whether it is present, and ``defect_weights`` (``[B, L]``)
    spreads each sample's guided score mass over its prompt's defect tokens (all zero for a
    prompt without defect words).
    """

    num_images: int
    latent_hw: tuple[int, int]
    reference: dict[str, torch.Tensor] | None = None
    guidance: torch.Tensor | None = None
    has_guidance: torch.Tensor | None = None
    defect_weights: torch.Tensor | None = None

    def grid(self, tokens: int) -> tuple[int, int]:
        """Spatial (h, w) of a token sequence at one UNet level."""
        height, width = self.latent_hw
        factor = math.sqrt(height * width / tokens)
        h, w = round(height / factor), round(width / factor)
        if h * w != tokens:
            raise ValueError(f"cannot map {tokens} tokens onto the {height}x{width} latent grid")
        return h, w

    def control_scores(self, tokens: int, text_len: int) -> torch.Tensor | None:
        """S_O as a score map ``[B, 1, hw, L]`` (rows sum to 1), or None without guidance.

        Inside the guidance the score mass sits on the defect tokens; outside it sits on the
        first (start) token, where text-to-image cross-attention parks the mass of pixels that
        no word describes.
        """
        if self.guidance is None or self.has_guidance is None or not bool(self.has_guidance.any()):
            return None
        h, w = self.grid(tokens)
        g = F.interpolate(self.guidance.float(), size=(h, w), mode="area").flatten(1).clamp(0, 1)  # [B, hw]
        start = torch.zeros(text_len, device=g.device)
        start[0] = 1.0
        defect = self.defect_weights.float() if self.defect_weights is not None else torch.zeros(g.shape[0], text_len)
        no_defect = defect.sum(dim=1, keepdim=True) <= 0
        defect = torch.where(no_defect, start.expand_as(defect), defect / defect.sum(1, keepdim=True).clamp_min(1e-8))
        scores = g[:, :, None] * defect[:, None, :] + (1 - g)[:, :, None] * start[None, None, :]
        return scores[:, None]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, channels = x.shape
    return x.view(n, length, heads, channels // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    out = F.scaled_dot_product_attention(_split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads),
                                         scale=scale)
    return _merge_heads(out)


def _project_out(attn, linear: nn.Linear, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    out = attn.to_out[1](linear(out))  # linear, then the block's dropout
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def check_supported(attn) -> None:
    """These processors implement the plain SD attention; refuse variants they would silently drop."""
    for name in ("spatial_norm", "group_norm", "norm_q", "norm_k", "norm_cross"):
        if getattr(attn, name, None) not in (None, False):
            raise ValueError(f"DH-Diff attention does not support Attention.{name}")


class JointSelfAttnProcessor:
    """Baseline concatenated attention (eq. 1-3): one softmax over a sample's image and annotation tokens."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, dh=None):
        if dh is None:  # not a joint batch: plain self-attention
            out = _attend(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states),
                          attn.heads, attn.scale)
            return _project_out(attn, attn.to_out[0], out, hidden_states)
        b, tokens = dh.num_images, hidden_states.shape[1]
        joint = torch.cat([hidden_states[:b], hidden_states[b:]], dim=1)  # [B, 2hw, c]
        out = _attend(attn.to_q(joint), attn.to_k(joint), attn.to_v(joint), attn.heads, attn.scale)
        out = _project_out(attn, attn.to_out[0], out, joint)
        return torch.cat([out[:, :tokens], out[:, tokens:]], dim=0)


class TextCrossAttnProcessor:
    """Baseline text cross-attention: every item attends to its own prompt, no fusion."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, dh=None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        out = _attend(attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), attn.heads, attn.scale)
        return _project_out(attn, attn.to_out[0], out, hidden_states)


def _copy_linear(linear: nn.Linear) -> nn.Linear:
    return copy.deepcopy(linear)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class DomainDecoupledAttnProcessor(nn.Module):
    """Domain-Decoupled Attention (eq. 4-5).

    Image: ``Q = W_Q F_I``, ``K = W_K (zeta(F_R) + F_I)``, ``V = W_V (zeta(F_R) + F_I)`` with the
    block's own projections and zeta a zero-initialised 1x1 conv, so training starts from the
    plain image self-attention. Annotation: self-attention with separate projections ``W^A``
    (initialised as copies of the block's, so an SD-initialised model starts from SD's weights).
    """

    def __init__(self, attn, site: str, reference_channels: int | None):
        super().__init__()
        check_supported(attn)
        self.site = site
        self.to_q_a = _copy_linear(attn.to_q)
        self.to_k_a = _copy_linear(attn.to_k)
        self.to_v_a = _copy_linear(attn.to_v)
        self.to_out_a = _copy_linear(attn.to_out[0])
        dim = attn.to_q.in_features
        self.zero_conv = (
            zero_module(nn.Conv2d(reference_channels, dim, kernel_size=1)) if reference_channels else None
        )

    def reference_term(self, dh: DHState, tokens: int) -> torch.Tensor | None:
        """zeta(F_R) as tokens ``[B, hw, c]``, or None when this forward has no reference."""
        if self.zero_conv is None or dh.reference is None or self.site not in dh.reference:
            return None
        ref = dh.reference[self.site]
        h, w = dh.grid(tokens)
        ref_map = ref.transpose(1, 2).reshape(ref.shape[0], ref.shape[2], h, w)
        return self.zero_conv(ref_map).flatten(2).transpose(1, 2)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, dh=None):
        if dh is None:
            raise ValueError("DomainDecoupledAttnProcessor needs cross_attention_kwargs={'dh': DHState}")
        b, tokens = dh.num_images, hidden_states.shape[1]
        f_i, f_a = hidden_states[:b], hidden_states[b:]
        kv = f_i
        ref = self.reference_term(dh, tokens)
        if ref is not None:
            kv = f_i + ref
        image = _attend(attn.to_q(f_i), attn.to_k(kv), attn.to_v(kv), attn.heads, attn.scale)
        image = _project_out(attn, attn.to_out[0], image, f_i)
        annotation = _attend(self.to_q_a(f_a), self.to_k_a(f_a), self.to_v_a(f_a), attn.heads, attn.scale)
        annotation = _project_out(attn, self.to_out_a, annotation, f_a)
        return torch.cat([image, annotation], dim=0)


class SemanticScoreMapProcessor(nn.Module):
    """Semantic Score Map modification (eq. 6-7).

    ``S_I = softmax(Q_I K_T^T)``, ``S_A = softmax(Q_A K_T^T)``; with the control map S_O (or, for a
    sample without guidance, the neutral ``(S_I + S_A) / 2``), ``(S^_I, S^_A) = eta(S_I, S_A, S_O) +
    mean(S_I, S_A, S_O)`` where eta is a learnable 3x3 conv over each (head, token) score map's
    spatial layout. Outputs ``S^_I V_T`` and ``S^_A V_T`` are concatenated back into the joint
    batch. eta starts as ``(S_I, S_A) - mean``, so an SD-initialised model starts from SD's
    cross-attention; training learns how much each domain takes from the other and from S_O.
    """

    def __init__(self, attn, site: str):
        super().__init__()
        check_supported(attn)
        self.site = site
        self.to_q_a = _copy_linear(attn.to_q)
        self.fusion = nn.Conv2d(3, 2, kernel_size=3, padding=1)
        self.reset_fusion()

    @torch.no_grad()
    def reset_fusion(self) -> None:
        """eta(S) + mean(S) == (S_I, S_A): the identity-preserving start."""
        self.fusion.weight.zero_()
        self.fusion.bias.zero_()
        third = 1.0 / 3.0
        self.fusion.weight[0, :, 1, 1] = torch.tensor([1 - third, -third, -third])
        self.fusion.weight[1, :, 1, 1] = torch.tensor([-third, 1 - third, -third])

    def score_maps(self, attn, f_i, f_a, text):
        """Eq. 6: the text score maps ``[B, heads, hw, L]`` of both domains, and the text values."""
        k = _split_heads(attn.to_k(text), attn.heads)
        v = _split_heads(attn.to_v(text), attn.heads)
        q_i = _split_heads(attn.to_q(f_i), attn.heads)
        q_a = _split_heads(self.to_q_a(f_a), attn.heads)
        s_i = torch.softmax(q_i @ k.transpose(-1, -2) * attn.scale, dim=-1)
        s_a = torch.softmax(q_a @ k.transpose(-1, -2) * attn.scale, dim=-1)
        return s_i, s_a, v

    def fuse(self, s_i: torch.Tensor, s_a: torch.Tensor, s_o: torch.Tensor, hw: tuple[int, int]):
        """Eq. 7, first line: ``eta(S_I, S_A, S_O) + mean(S_I, S_A, S_O)`` for both domains."""
        b, heads, tokens, length = s_i.shape
        h, w = hw
        stacked = torch.stack([s_i, s_a, s_o.expand_as(s_i)], dim=2)  # [B, heads, 3, hw, L]
        maps = stacked.permute(0, 1, 4, 2, 3).reshape(b * heads * length, 3, h, w)
        fused = self.fusion(maps).reshape(b, heads, length, 2, tokens).permute(0, 1, 3, 4, 2)  # [B, heads, 2, hw, L]
        fused = fused + stacked.mean(dim=2, keepdim=True)
        return fused[:, :, 0], fused[:, :, 1]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, dh=None):
        if dh is None:
            raise ValueError("SemanticScoreMapProcessor needs cross_attention_kwargs={'dh': DHState}")
        if encoder_hidden_states is None:
            raise ValueError("SemanticScoreMapProcessor is a text cross-attention; it needs encoder_hidden_states")
        b, tokens = dh.num_images, hidden_states.shape[1]
        f_i, f_a = hidden_states[:b], hidden_states[b:]
        text = encoder_hidden_states[:b]  # both halves of the joint batch carry the same prompts
        s_i, s_a, v = self.score_maps(attn, f_i, f_a, text)
        neutral = (s_i + s_a) / 2
        s_o = dh.control_scores(tokens, text.shape[1])
        if s_o is None:
            s_o = neutral
        else:
            s_o = torch.where(dh.has_guidance.view(b, 1, 1, 1), s_o.to(s_i.dtype).expand_as(s_i), neutral)
        fused_i, fused_a = self.fuse(s_i, s_a, s_o, dh.grid(tokens))
        image = _project_out(attn, attn.to_out[0], _merge_heads(fused_i @ v), f_i)
        annotation = _project_out(attn, attn.to_out[0], _merge_heads(fused_a @ v), f_a)
        return torch.cat([image, annotation], dim=0)  # eq. 7: C(S^_I V_T, S^_A V_T)


class ReferenceCaptureProcessor:
    """Plain self-attention that also records its input: the reference feature F_R of one site."""

    def __init__(self, site: str, store: dict[str, torch.Tensor]):
        self.site = site
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        self.store[self.site] = hidden_states
        out = _attend(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states),
                      attn.heads, attn.scale)
        return _project_out(attn, attn.to_out[0], out, hidden_states)
