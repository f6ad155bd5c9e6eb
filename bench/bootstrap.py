"""Stratified bootstrap of every detection metric over the test images, fast enough for pixels.

A resample draws, with replacement, as many anomalous test images from the anomalous ones and as
many normal images from the normal ones as the test set holds (stratified by label, so every
resample has both classes). Pixel metrics resample whole images: an image drawn twice brings its
pixels twice and, for AUPRO, its defect regions twice (as two regions, the way
:func:`anobench.metrics.detection.detection_metrics` counts the regions of a list holding that
image twice).

Speed: recomputing the pixel metrics of 100 maps of 256 x 256 a thousand times means a thousand
sorts of 6.5M values. Here the maps are stored as quantile codes (:mod:`anobench.perimage`), so
each image is summarised once by three histograms over the codes: normal-pixel counts,
anomalous-pixel counts and, for AUPRO, the sum over its anomalous pixels of
``1 / region size``. A resample's pooled histograms are a matrix product of its image
multiplicities with those per-image histograms, and every metric (AUROC, AP, F1-max, AUPRO to
an FPR limit) follows from suffix sums over the codes, exactly as
:mod:`anobench.metrics.detection` computes them from sorted values (ties = one code). On the
code maps the values equal ``detection_metrics`` to float rounding (tests/test_bootstrap.py);
against the float maps they differ by the quantisation only (tests/perf/bench_bootstrap.py).

The interval is the percentile interval of the resampled values (scipy.stats.bootstrap has no
stratified resampling and would re-sort the pixels per resample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anobench.metrics.detection import AUPRO_FPR_LIMIT, DETECTION_METRICS
from anobench.perimage import PerImage

DEFAULT_RESAMPLES = 1000
# dense per-image histograms are capped at this many entries per array (codes merged in pairs above it)
MAX_HIST_ENTRIES = 1 << 24
CHUNK = 64  # resamples per matrix product (bounds the memory to CHUNK x codes)


@dataclass
class BootstrapResult:
    """Metric values on the full test set and on every resample (same order for every run)."""

    metrics: dict[str, float]
    samples: dict[str, np.ndarray]  # metric -> (B,) values

    @property
    def n_resamples(self) -> int:
        return len(next(iter(self.samples.values()))) if self.samples else 0

    def interval(self, metric: str, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of ``metric`` (NaN when the metric is undefined)."""
        return percentile_interval(self.samples[metric], level)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def resample_counts(labels, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(B, N) multiplicities of the test images in each stratified resample.

    Depends on the labels and the seed only: every run scored on the same test images gets the
    same resamples, which is what makes comparisons paired.
    """
    labels = np.asarray(labels).astype(bool)
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    rng = np.random.default_rng([seed, 11])
    counts = np.zeros((n_resamples, labels.size), dtype=np.int32)
    rows = np.arange(n_resamples)[:, None]
    for stratum in (np.flatnonzero(labels), np.flatnonzero(~labels)):
        if stratum.size == 0:
            continue
        picks = stratum[rng.integers(0, stratum.size, size=(n_resamples, stratum.size))]
        np.add.at(counts, (np.broadcast_to(rows, picks.shape), picks), 1)
    return counts


def bootstrap_metrics(data: PerImage, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      counts: np.ndarray | None = None, fpr_limit: float = AUPRO_FPR_LIMIT) -> BootstrapResult:
    """Every detection metric of ``data`` on the full test set and on each stratified resample.

    ``counts`` (from :func:`resample_counts`) overrides ``n_resamples``/``seed``; pass the same
    counts to every run of one comparison.
    """
    if counts is None:
        counts = resample_counts(data.labels, n_resamples, seed)
    if counts.shape[1] != data.n_images:
        raise ValueError(f"counts are for {counts.shape[1]} images, the test set has {data.n_images}")
    full = np.ones((1, data.n_images), dtype=np.int32)
    weights = np.concatenate([full, counts])
    image = image_histograms(data.scores, data.labels)
    values = {}
    values.update(zip(("image_auroc", "image_ap", "image_f1max"), _ranking_batches(image, weights)))
    if data.has_maps:
        pixel = pixel_histograms(data)
        pix = _pixel_batches(pixel, weights, fpr_limit)
        values.update(zip(("pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"), pix))
    metrics = {m: float(values[m][0]) for m in DETECTION_METRICS if m in values}
    samples = {m: values[m][1:] for m in DETECTION_METRICS if m in values}
    return BootstrapResult(metrics, samples)


# --------------------------------------------------------------------------- per-image histograms

@dataclass
class Histograms:
    """Per-image counts over shared codes: anomalous ``pos``, normal ``neg`` and AUPRO weights."""

    pos: np.ndarray  # (N, K) float32
    neg: np.ndarray  # (N, K) float32
    pro: np.ndarray | None = None  # (N, K) float32: sum of 1/region size of the image's anomalous pixels
    regions: np.ndarray | None = None  # (N,) regions per image


def image_histograms(scores, labels) -> Histograms:
    """Image scores as one-hot histograms over their distinct values."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    _, codes = np.unique(scores, return_inverse=True)
    k = int(codes.max()) + 1 if codes.size else 1
    one_hot = np.zeros((scores.size, k), dtype=np.float32)
    one_hot[np.arange(scores.size), codes] = 1.0
    return Histograms(one_hot * labels[:, None], one_hot * ~labels[:, None])


def pixel_histograms(data: PerImage) -> Histograms:
    """Per-image pixel histograms over the stored codes (merged in pairs while too large)."""
    import cv2

    n = data.n_images
    k = int(data.edges.size)
    shift = 0
    while n * ((k - 1 >> shift) + 1) > MAX_HIST_ENTRIES and (k - 1 >> shift) > 0:
        shift += 1
    k = (k - 1 >> shift) + 1
    pos = np.zeros((n, k), np.float32)
    neg = np.zeros((n, k), np.float32)
    pro = np.zeros((n, k), np.float32)
    regions = np.zeros(n, np.float64)
    for i in range(n):
        codes = data.codes[i].astype(np.int64) >> shift
        mask = data.masks[i]
        neg[i] = np.bincount(codes[~mask], minlength=k)
        if mask.any():
            count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
            regions[i] = count - 1
            inside = codes[mask]
            pos[i] = np.bincount(inside, minlength=k)
            pro[i] = np.bincount(inside, weights=1.0 / stats[labels[mask], cv2.CC_STAT_AREA], minlength=k)
    return Histograms(pos, neg, pro, regions)


# --------------------------------------------------------------------------- metrics from pooled histograms

def _ranking_batches(hist: Histograms, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    out = [[], [], []]
    for start in range(0, len(weights), CHUNK):
        w = weights[start:start + CHUNK].astype(np.float32)
        for acc, v in zip(out, ranking_from_histograms(w @ hist.pos, w @ hist.neg)):
            acc.append(v)
    return tuple(np.concatenate(v) for v in out)


def _pixel_batches(hist: Histograms, weights: np.ndarray, fpr_limit: float) -> tuple[np.ndarray, ...]:
    out = [[], [], [], []]
    # float32 suffix sums of counts are exact below 2**24 pixels per resample
    pixels = weights.astype(np.float64) @ (hist.pos.sum(1) + hist.neg.sum(1))
    dtype = np.float32 if pixels.max() < 2 ** 24 else np.float64
    for start in range(0, len(weights), CHUNK):
        w = weights[start:start + CHUNK].astype(np.float32)
        pos, neg = w @ hist.pos, w @ hist.neg
        tp, fp = _suffix(pos, dtype), _suffix(neg, dtype)
        ranking = _ranking(pos, neg, tp, fp)
        # AUPRO only reads the codes down to the first one past the FPR limit in every resample
        n_out = np.count_nonzero(fp > fpr_limit * fp[:, :1], axis=1)
        k0 = max(0, int(n_out.min()) - 1)
        regions = w.astype(np.float64) @ hist.regions
        pro = (w @ hist.pro[:, k0:]) / regions[:, None].astype(np.float32)
        aupro = aupro_from_histograms(fp[:, k0:], _suffix(pro, np.float64), fp[:, 0], fpr_limit, suffixed=True)
        aupro[regions == 0] = np.nan
        for acc, v in zip(out, (*ranking, aupro)):
            acc.append(v)
    return tuple(np.concatenate(v) for v in out)


def _suffix(a: np.ndarray, dtype=np.float64) -> np.ndarray:
    """s[:, k] = sum of a[:, k:]."""
    return np.cumsum(a[:, ::-1], axis=1, dtype=dtype)[:, ::-1]


def ranking_from_histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUROC, AP, F1-max) per row of pooled (B, K) positive / negative counts over ascending codes."""
    return _ranking(pos, neg, _suffix(pos), _suffix(neg))


def _ranking(pos, neg, tp, fp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_pos, n_neg = tp[:, 0].astype(np.float64), fp[:, 0].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Mann-Whitney: positives above negatives, ties (same code) count half
        wins = n_pos * n_neg - np.einsum("bk,bk->b", pos, fp, dtype=np.float64) \
            + 0.5 * np.einsum("bk,bk->b", pos, neg, dtype=np.float64)
        auroc = wins / (n_pos * n_neg)
        ap = np.einsum("bk,bk->b", pos, tp / np.maximum(tp + fp, 1), dtype=np.float64) / n_pos
        f1 = np.max(2.0 * tp / (tp + fp + tp[:, :1]), axis=1).astype(np.float64)
    no_pos, no_neg = n_pos == 0, n_neg == 0
    auroc[no_pos | no_neg] = np.nan
    ap[no_pos], f1[no_pos] = np.nan, np.nan
    ap[no_neg & ~no_pos], f1[no_neg & ~no_pos] = 1.0, 1.0
    return auroc, ap, f1


def aupro_from_histograms(neg: np.ndarray, pro_weights: np.ndarray, n_neg: np.ndarray | None = None,
                          fpr_limit: float = AUPRO_FPR_LIMIT, suffixed: bool = False) -> np.ndarray:
    """Normalised AUPRO per row from normal counts and per-code PRO increments (weights / regions).

    The curve's points are the thresholds "at code k" (FPR = normals >= k, PRO = weights >= k)
    and the threshold above all codes (0, 0); the step crossing the limit is cut by linear
    interpolation, as in :func:`anobench.metrics.detection.aupro`. With ``suffixed`` the two
    arrays are already suffix sums, and may hold only the top codes (``n_neg``: all normals).
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fp = neg if suffixed else _suffix(neg)
    pro_low = pro_weights if suffixed else _suffix(pro_weights)
    n_neg = (fp[:, 0] if n_neg is None else np.asarray(n_neg)).astype(np.float64)[:, None]
    zero = np.zeros((fp.shape[0], 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr_low = fp / n_neg  # at code k
        fpr_high = np.concatenate([fpr_low[:, 1:], zero], axis=1)  # just above code k
        pro_high = np.concatenate([pro_low[:, 1:], zero], axis=1)
        inside = fpr_low <= fpr_limit
        area = np.einsum("bk,bk->b", np.where(inside, fpr_low - fpr_high, 0.0), pro_low + pro_high) / 2.0
        n_out = (~inside).sum(axis=1)
        rows = np.flatnonzero(n_out > 0)
        j = n_out[rows] - 1  # FPR falls with the code, so the last code past the limit is n_out - 1
        f1, f2 = fpr_high[rows, j], fpr_low[rows, j]
        p1, p2 = pro_high[rows, j], pro_low[rows, j]
        cut = f1 < fpr_limit
        p_lim = p1 + (p2 - p1) * (fpr_limit - f1) / np.where(f2 > f1, f2 - f1, 1.0)
        area[rows] += np.where(cut, (fpr_limit - f1) * (p1 + p_lim) / 2.0, 0.0)
        result = area / fpr_limit
    undefined = (n_neg[:, 0] == 0) | ~(pro_low[:, 0] > 0)
    result[undefined] = np.nan
    return result
