"""What every detector shares: RGB in [0, 1] in, one anomaly logit per pixel out, DRAEM scoring.

A detector is an ``nn.Module`` whose ``forward`` maps a batch of RGB images in [0, 1]
(``B x 3 x H x W``) to one logit channel (``B x 1 x H x W``). The anomaly map is its sigmoid and
the image score is DRAEM's: the maximum of the map smoothed by a 21 x 21 mean filter, which
ignores isolated hot pixels that a plain maximum would pick up.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from anobench.errors import AnobenchError

IMAGE_SCORE_KERNEL = 21


def draem_image_scores(maps: torch.Tensor, kernel: int = IMAGE_SCORE_KERNEL) -> torch.Tensor:
    """``max(avg_pool2d(map, kernel, stride 1, padding kernel // 2))`` per image (B x 1 x H x W -> B)."""
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    pooled = F.avg_pool2d(maps, kernel, stride=1, padding=kernel // 2)
    return pooled.flatten(1).amax(dim=1)


class Detector(nn.Module):
    """Base class: subclasses implement ``forward`` (logits); scoring is shared."""

    name: str = "detector"

    @torch.no_grad()
    def predict(self, images: torch.Tensor, map_sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly maps B x H x W in [0, 1], image scores B) for RGB images in [0, 1].

        The image score is always DRAEM's, on the raw map; ``map_sigma`` > 0 smooths the returned
        pixel map with a Gaussian of that sigma (anomalib's anomaly-map smoothing).
        """
        maps = torch.sigmoid(self(images).float())
        scores = draem_image_scores(maps)
        if map_sigma > 0:
            maps = smooth_maps(maps, map_sigma)
        return maps[:, 0], scores


def smooth_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of B x 1 x H x W maps; kernel 2 * int(4 sigma + 0.5) + 1 as anomalib's."""
    from torchvision.transforms.functional import gaussian_blur

    kernel = 2 * int(4.0 * sigma + 0.5) + 1
    kernel = min(kernel, 2 * (min(maps.shape[-2:]) // 2) - 1)  # reflect padding needs kernel < size
    return gaussian_blur(maps, [kernel, kernel], [sigma, sigma])


_BUILDERS: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable:
    """Decorator for a builder ``fn(encoder, encoder_weights) -> Detector``."""

    def wrap(fn: Callable[..., Detector]) -> Callable[..., Detector]:
        _BUILDERS[name] = fn
        return fn

    return wrap


def available_detectors() -> list[str]:
    _load_builtin()
    return sorted(_BUILDERS)


def build_detector(name: str, encoder: str | None = None, encoder_weights: str = "imagenet") -> Detector:
    """A detector by name (``unet`` or ``draem_disc``), with its encoder weights resolved offline."""
    _load_builtin()
    if name not in _BUILDERS:
        raise AnobenchError(f"unknown detector {name!r} (available: {', '.join(sorted(_BUILDERS))})")
    return _BUILDERS[name](encoder=encoder, encoder_weights=encoder_weights)


def _load_builtin() -> None:
    import anobench.detectors.draem_disc  # noqa: F401
    import anobench.detectors.unet  # noqa: F401
