"""detection_metrics against scikit-learn and anomalib's AUPRO, on random and tied inputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from anobench.metrics import aupro, detection_metrics, ranking_metrics

TOL = 1e-6


def anomalib_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    torch = pytest.importorskip("torch")
    from anomalib.metrics import AUPRO

    metric = AUPRO(fields=["anomaly_map", "gt_mask"], fpr_limit=fpr_limit)
    metric.update(SimpleNamespace(anomaly_map=torch.from_numpy(maps), gt_mask=torch.from_numpy(masks)))
    return float(metric.compute())


def sklearn_f1max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-300)))


def reference(scores, labels, maps, masks, fpr_limit=0.3) -> dict[str, float]:
    pixels, truth = maps.ravel(), masks.ravel()
    return {
        "image_auroc": roc_auc_score(labels, scores),
        "image_ap": average_precision_score(labels, scores),
        "image_f1max": sklearn_f1max(labels, scores),
        "pixel_auroc": roc_auc_score(truth, pixels),
        "pixel_ap": average_precision_score(truth, pixels),
        "pixel_f1max": sklearn_f1max(truth, pixels),
        "aupro": anomalib_aupro(maps, masks, fpr_limit),
    }


def make_case(seed: int, n: int = 10, size: int = 32, ties: int | None = None):
    """Random rectangles (several per image, some touching) and maps that partly see them."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        if i % 3 == 0:
            continue  # normal images
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.integers(0, size - 2, 2)
            h, w = rng.integers(1, size // 3, 2)
            masks[i, y:y + h, x:x + w] = True
    maps = rng.random((n, size, size)) + masks * rng.uniform(0.0, 1.0)
    if ties is not None:
        maps = np.round(maps * ties) / ties  # few distinct levels: most thresholds are ties
    maps = maps.astype(np.float32)
    labels = masks.any(axis=(1, 2))
    scores = maps.reshape(n, -1).max(axis=1)
    if ties is not None:
        scores = np.round(scores * 2) / 2
    return scores, labels, maps, masks


def assert_close(got: dict[str, float], ref: dict[str, float]) -> None:
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=TOL, rel=0), key


@pytest.mark.parametrize("seed", range(4))
def test_random_inputs_match_sklearn_and_anomalib(seed):
    scores, labels, maps, masks = make_case(seed)
    assert_close(detection_metrics(scores, labels, maps, masks), reference(scores, labels, maps, masks))


@pytest.mark.parametrize("seed,levels", [(10, 3), (11, 5), (12, 10), (13, 1)])
def test_tied_inputs_match_sklearn_and_anomalib(seed, levels):
    scores, labels, maps, masks = make_case(seed, ties=levels)
    assert len(np.unique(maps)) <= 2 * levels + 2
    assert_close(detection_metrics(scores, labels, maps, masks), reference(scores, labels, maps, masks))


def test_detector_like_maps_with_saturated_ties():
    """Sigmoid maps saturate to exact 0.0/1.0 in float32: huge tie groups at both ends."""
    rng = np.random.default_rng(5)
    masks = np.zeros((6, 48, 48), bool)
    masks[1, 10:20, 10:30] = masks[2, 30:40, 5:9] = masks[4, 0:48, 20:22] = True
    logits = rng.normal(scale=150.0, size=masks.shape) + masks * 60.0
    maps = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    assert (maps == 1.0).sum() > 100 and (maps == 0.0).sum() > 100
    scores, labels = maps.reshape(6, -1).mean(1), masks.any(axis=(1, 2))
    assert_close(detection_metrics(scores, labels, maps, masks), reference(scores, labels, maps, masks))


def test_diagonal_regions_are_one_component_like_anomalib():
    """anomalib labels with 8-connectivity: squares touching at a corner are one region."""
    masks = np.zeros((2, 12, 12), bool)
    masks[0, 2:4, 2:4] = masks[0, 4:6, 4:6] = True  # corner contact: one region
    masks[0, 8:11, 8:9] = True  # a second region
    masks[1, 1:3, 8:11] = True
    maps = np.random.default_rng(1).random(masks.shape).astype(np.float32) + masks * 0.2
    assert aupro(maps, masks) == pytest.approx(anomalib_aupro(maps, masks), abs=TOL)


@pytest.mark.parametrize("limit", [0.05, 0.3, 0.7, 1.0])
def test_aupro_other_fpr_limits(limit):
    _, _, maps, masks = make_case(21, ties=7)
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(anomalib_aupro(maps, masks, limit), abs=TOL)


def test_aupro_limit_hit_exactly_at_a_threshold():
    """10 normal pixels with distinct values: the top 3 give FPR exactly 0.3 (no interpolation)."""
    maps = np.array([[[0.95, 0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2, 0.1], [0.85, 0.75, 0.05, 0.65, 0.01]]],
                    dtype=np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[0, 2, :] = [True, True, False, True, False]
    masks[0, 2, 4] = True
    got = aupro(maps, masks)
    assert got == pytest.approx(anomalib_aupro(maps, masks), abs=TOL)


def test_perfect_and_inverted_maps():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:5, 2:5] = True
    perfect = masks.astype(np.float32)
    got = detection_metrics([1.0, 0.0], [1, 0], perfect, masks)
    assert got["pixel_auroc"] == 1.0 and got["pixel_ap"] == 1.0 and got["pixel_f1max"] == 1.0
    assert got["aupro"] == pytest.approx(1.0)
    inverted = detection_metrics([0.0, 1.0], [1, 0], 1 - perfect, masks)
    assert inverted["pixel_auroc"] == 0.0 and inverted["image_auroc"] == 0.0
    assert inverted["aupro"] == pytest.approx(anomalib_aupro(1 - perfect, masks), abs=TOL)


def test_input_forms_agree():
    """Torch tensors, (N, 1, H, W), 0/255 uint8 masks and lists of maps give the same numbers."""
    torch = pytest.importorskip("torch")
    scores, labels, maps, masks = make_case(3)
    base = detection_metrics(scores, labels, maps, masks)
    assert detection_metrics(torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(maps)[:, None],
                             torch.from_numpy(masks)[:, None]) == base
    assert detection_metrics(list(scores), labels.astype(int), list(maps), list(masks.astype(np.uint8) * 255)) == base


def test_maps_of_different_sizes_pool_all_pixels():
    rng = np.random.default_rng(4)
    maps = [rng.random((16, 16)).astype(np.float32), rng.random((24, 20)).astype(np.float32)]
    masks = [np.zeros((16, 16), bool), np.zeros((24, 20), bool)]
    masks[1][3:9, 4:12] = True
    maps[1][masks[1]] += 0.5
    got = detection_metrics([0.2, 0.9], [0, 1], maps, masks)
    pixels = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([m.ravel() for m in masks])
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(truth, pixels), abs=TOL)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(truth, pixels), abs=TOL)


def test_float64_maps_keep_their_own_ties():
    scores, labels, maps, masks = make_case(8)
    maps64 = maps.astype(np.float64) + np.random.default_rng(0).random(maps.shape) * 1e-12
    got = detection_metrics(scores, labels, maps64, masks)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps64.ravel()), abs=TOL)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(masks.ravel(), maps64.ravel()), abs=TOL)


def test_ranking_metrics_on_tied_scores():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 0])
    scores = np.array([0.5, 0.5, 0.1, 0.9, 0.5, 0.5, 0.9, 0.1, 0.3, 0.3])
    auroc, ap, f1 = ranking_metrics(scores, labels)
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert f1 == pytest.approx(sklearn_f1max(labels, scores), abs=1e-12)


# ---------------------------------------------------------------------------------------- edge cases

def test_one_image_class_gives_nan_not_an_exception():
    """Documented: AUROC needs both classes (NaN); AP and F1-max need a positive (1.0 if no negative)."""
    _, _, maps, masks = make_case(2)
    only_normal = detection_metrics(np.ones(len(maps)), np.zeros(len(maps)), maps, masks)
    assert math.isnan(only_normal["image_auroc"]) and math.isnan(only_normal["image_ap"])
    assert math.isnan(only_normal["image_f1max"])
    assert not math.isnan(only_normal["pixel_auroc"])  # pixels still have both classes
    only_anomalous = detection_metrics(np.arange(len(maps)), np.ones(len(maps)), maps, masks)
    assert math.isnan(only_anomalous["image_auroc"])
    assert only_anomalous["image_ap"] == 1.0 and only_anomalous["image_f1max"] == 1.0


def test_masks_without_anomalous_pixels_give_nan_pixel_metrics():
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    got = detection_metrics([0.1, 0.9, 0.5], [0, 1, 1], maps, np.zeros_like(maps, dtype=bool))
    assert got["image_auroc"] == 1.0
    assert all(math.isnan(got[k]) for k in ("pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"))


def test_all_pixels_anomalous_give_nan_auroc_and_aupro():
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    got = detection_metrics([0.1, 0.9], [0, 1], maps, np.ones_like(maps, dtype=bool))
    assert math.isnan(got["pixel_auroc"]) and math.isnan(got["aupro"])
    assert got["pixel_ap"] == 1.0


@pytest.mark.parametrize("bad,message", [
    (dict(image_scores=[0.1, float("nan"), 0.3]), "NaN"),
    (dict(image_labels=[0, 2, 1]), "0/1"),
    (dict(image_labels=[0, 1]), "image_labels has 2"),
    (dict(masks=np.zeros((3, 5, 5), bool)), "shape"),
    (dict(anomaly_maps=np.zeros((2, 4, 4))), "2 anomaly maps"),
    (dict(anomaly_maps=np.zeros((3, 4))), "(N, H, W)"),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    args = dict(image_scores=[0.1, 0.2, 0.3], image_labels=[0, 1, 1], anomaly_maps=np.zeros((3, 4, 4)),
                masks=np.zeros((3, 4, 4), bool))
    args.update(bad)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        detection_metrics(**args)


def test_nan_in_maps_is_rejected():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detection_metrics([0, 1], [0, 1], maps, maps > 0)


def test_keys_and_types():
    scores, labels, maps, masks = make_case(1)
    got = detection_metrics(scores, labels, maps, masks)
    assert list(got) == ["image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max",
                         "aupro"]
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in got.values())
