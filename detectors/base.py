"""What every detector shares: RGB in [0, 1] in, one anomaly logit per pixel out, DRAEM scoring.

A detector is an ``nn.Module`` whose ``forward`` maps a batch of RGB images in [0, 1]
(``B x 3 x H x W``) to one logit channel (``B x 1 x H x W``). The anomaly map is its sigmoid and
the image score is DRAEM's: the maximum of the map smoothed by a 21 x 21 mean filter, which
ignores isolated hot pixels that a plain maximum would pick up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from anobench.errors import AnobenchError
from anobench.plugins import check_declared_name, load_entry_points

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


ENTRY_POINT_GROUP = "anobench.detectors"
BUILTIN_MODULES = ("anobench.detectors.unet", "anobench.detectors.draem_disc")


@dataclass(frozen=True)
class DetectorSpec:
    """A registered detector: its builder ``fn(encoder, encoder_weights) -> Detector`` and defaults."""

    name: str
    build: Callable[..., Detector]
    default_weights: str = "none"  # encoder weights when --encoder-weights is not given
    default_encoder: str | None = None


_REGISTRY: dict[str, DetectorSpec] = {}


def register_detector(name: str, default_weights: str = "none", default_encoder: str | None = None) -> Callable:
    """Decorator for a builder ``fn(encoder, encoder_weights) -> Detector``, or a Detector class."""
    if not name or not isinstance(name, str):
        raise AnobenchError(f"a detector needs a name to register, got {name!r}")

    def wrap(fn: Callable[..., Detector]) -> Callable[..., Detector]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.build is not fn:
            raise AnobenchError(f"detector name {name!r} is taken by {existing.build.__module__}")
        _REGISTRY[name] = DetectorSpec(name, fn, default_weights, default_encoder)
        return fn

    return wrap


@functools.cache
def _load_all() -> None:
    """Built-in detectors, then plug-ins of the entry-point group, each under its entry-point name."""
    load_entry_points(ENTRY_POINT_GROUP, "detector", _REGISTRY, register_plugin, entry_points, BUILTIN_MODULES)


def register_plugin(name: str, obj: Any, where: str) -> None:
    """Register an entry point's object: a builder function, or a Detector class with a ``name``."""
    if isinstance(obj, type) and issubclass(obj, Detector):
        check_declared_name("detector", name, obj, Detector, where)
        cls = obj
        register_detector(name, getattr(cls, "default_weights", "none"))(
            lambda encoder=None, encoder_weights="none": cls(encoder=encoder, encoder_weights=encoder_weights))
    elif callable(obj):
        register_detector(name)(obj)
    else:
        raise AnobenchError(f"detector plug-in {name!r} ({where}) is neither a Detector class nor a builder")


def detector_spec(name: str) -> DetectorSpec:
    _load_all()
    if name not in _REGISTRY:
        raise AnobenchError(f"unknown detector {name!r} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def available_detectors() -> list[str]:
    """Every registered detector name, built-in and plug-in: the one source of detector names."""
    _load_all()
    return sorted(_REGISTRY)


def build_detector(name: str, encoder: str | None = None, encoder_weights: str | None = "imagenet") -> Detector:
    """A detector by registered name, with its encoder weights resolved offline."""
    spec = detector_spec(name)
    return spec.build(encoder=encoder, encoder_weights=encoder_weights or spec.default_weights)
