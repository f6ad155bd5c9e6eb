"""The AnomalyDiffusion protocol's detector: DRAEM's discriminative sub-network on RGB input.

AnomalyDiffusion (Hu et al., AAAI 2024) trains DRAEM's discriminative U-Net alone, on the RGB
image (3 input channels instead of DRAEM's image + reconstruction), with two softmax classes and
a focal loss, and scores images the DRAEM way. The network is anomalib's
``DiscriminativeSubNetwork``. Its two-class softmax equals the sigmoid of the logit difference,
so ``forward`` returns that difference as the single logit channel every detector shares; the
sigmoid focal loss on it is the two-class softmax focal loss. It has no pretrained weights.

Initialisation is DRAEM's ``weights_init``, which AnomalyDiffusion copies (VitjanZ/DRAEM@b5b11e7
``train_DRAEM.py`` lines 14-20, applied at line 41; sjtuplayer/anomalydiffusion@b6d805d
``train-localization.py`` lines 18-24, applied at line 115): every convolution weight drawn from
N(0, 0.02), every batch-norm weight from N(1, 0.02) with bias 0; convolution biases keep
PyTorch's default. anomalib's network does not apply it (its defaults are Kaiming-uniform).
"""

from __future__ import annotations

import torch
from torch import nn

from anobench.detectors.base import Detector, register_detector
from anobench.errors import AnobenchError


def _discriminative_subnetwork_class():
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork
    except ImportError as exc:
        raise AnobenchError(
            f"detector 'draem_disc' needs anomalib (pip install anomalib==2.7.0): {exc}"
        ) from None
    return DiscriminativeSubNetwork


class DraemDiscriminativeDetector(Detector):
    """DRAEM's discriminative U-Net (base width 64) on RGB in [0, 1]; one logit channel out."""

    name = "draem_disc"

    def __init__(self, base_width: int = 64) -> None:
        super().__init__()
        self.net = _discriminative_subnetwork_class()(in_channels=3, out_channels=2, base_width=base_width)
        self.net.apply(draem_weights_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        return logits[:, 1:2] - logits[:, 0:1]


@torch.no_grad()
def draem_weights_init(module: nn.Module) -> None:
    """DRAEM's init: conv weights ~ N(0, 0.02); batch-norm weights ~ N(1, 0.02), biases 0."""
    if isinstance(module, nn.modules.conv._ConvNd):
        module.weight.normal_(0.0, 0.02)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.weight.normal_(1.0, 0.02)
        module.bias.zero_()


@register_detector("draem_disc")
def build_draem_disc(encoder: str | None = None, encoder_weights: str = "none") -> DraemDiscriminativeDetector:
    if encoder not in (None, "draem"):
        raise AnobenchError(f"detector 'draem_disc' has a fixed architecture; --encoder {encoder!r} does not apply")
    if encoder_weights != "none":
        raise AnobenchError("detector 'draem_disc' has no pretrained weights; use --encoder-weights none")
    return DraemDiscriminativeDetector()
