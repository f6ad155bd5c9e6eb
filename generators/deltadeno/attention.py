"""DeltaDeno's spatial attention bias, as a diffusers attention processor.

Inside the predicted anomaly region, the anomaly tokens should win the cross-attention: the
processor adds ``bias`` to the attention logits of those token columns, at query positions
inside the region, and nowhere else (other tokens, other positions, the normal and
unconditional rows all get exactly zero). ``exp(bias)`` is the factor by which the anomaly
tokens' attention odds grow there.

The processor wraps the layer's own processor and hands it the bias as an additive
``attention_mask`` (diffusers' processors add a float mask to the logits before the softmax), so
SDPA, classic and sliced attention all keep working. Self-attention layers are left untouched.
One :class:`SpatialBias` object is shared by all wrapped layers; the pipeline sets it before each
UNet call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class SpatialBias:
    """Where and on which token columns the cross-attention logits get the bias, for one UNet call.

    ``tokens``: (rows, L) with 1.0 on the anomaly-token columns of each row of the UNet batch
    (all zero for unconditional and normal-prompt rows). ``region``: (rows, 1, h, w) on the
    latent grid, 1.0 inside the predicted region. Each attention resolution sees the region as
    the fraction of its cell that lies inside (area pooling), so a cell wholly outside gets 0.
    """

    def __init__(self, bias: float = 0.0) -> None:
        self.bias = float(bias)
        self.tokens: torch.Tensor | None = None
        self.region: torch.Tensor | None = None
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        return self.bias != 0.0 and self.tokens is not None and self.region is not None

    def set(self, tokens: torch.Tensor | None, region: torch.Tensor | None) -> None:
        if tokens is not None and region is not None and tokens.shape[0] != region.shape[0]:
            raise ValueError(f"tokens ({tokens.shape[0]} rows) and region ({region.shape[0]} rows) disagree")
        self.tokens, self.region = tokens, region
        self._cache.clear()

    def clear(self) -> None:
        self.set(None, None)

    def logits_bias(self, num_queries: int, dtype: torch.dtype) -> torch.Tensor:
        """(rows, num_queries, L) additive bias for a layer whose queries are ``num_queries`` cells."""
        key = (num_queries, dtype)
        if key not in self._cache:
            h, w = self.region.shape[-2:]
            grid = _grid_for(h, w, num_queries)
            occupancy = F.adaptive_avg_pool2d(self.region.float(), grid).flatten(1)  # (rows, N)
            bias = self.bias * occupancy[:, :, None] * self.tokens.float()[:, None, :]
            self._cache[key] = bias.to(dtype)
        return self._cache[key]


def _grid_for(h: int, w: int, num_queries: int) -> tuple[int, int]:
    """The UNet's feature grid holding ``num_queries`` cells: the latent grid halved (ceil) k times."""
    while h * w > num_queries:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != num_queries:
        raise ValueError(f"cannot map {num_queries} attention queries onto the latent grid")
    return h, w


class SpatialBiasProcessor:
    """Cross-attention processor: the wrapped processor, with the spatial bias on the logits."""

    def __init__(self, processor, state: SpatialBias) -> None:
        self.processor = processor
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is not None and self.state.active:
            num_queries = hidden_states.shape[1] if hidden_states.ndim == 3 else \
                hidden_states.shape[2] * hidden_states.shape[3]
            bias = self.state.logits_bias(num_queries, hidden_states.dtype)
            if bias.shape[0] != hidden_states.shape[0] or bias.shape[-1] != encoder_hidden_states.shape[1]:
                raise ValueError(f"spatial bias of shape {tuple(bias.shape)} does not fit a batch of "
                                 f"{hidden_states.shape[0]} with {encoder_hidden_states.shape[1]} tokens")
            attention_mask = bias if attention_mask is None else attention_mask + bias
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def install_spatial_bias(unet, state: SpatialBias) -> int:
    """Wrap the processor of every cross-attention layer of ``unet``; returns how many were wrapped.

    Idempotent: a layer already wrapped is re-pointed at ``state``.
    """
    processors = {}
    wrapped = 0
    for name, processor in unet.attn_processors.items():
        module = unet.get_submodule(name.rsplit(".processor", 1)[0])
        if getattr(module, "is_cross_attention", False):
            inner = processor.processor if isinstance(processor, SpatialBiasProcessor) else processor
            processor = SpatialBiasProcessor(inner, state)
            wrapped += 1
        processors[name] = processor
    unet.set_attn_processor(processors)
    return wrapped
