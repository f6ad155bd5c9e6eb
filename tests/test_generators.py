"""Every registered generator honours the interface; draem and crop_paste in depth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from anobench.config import config_from_dict, config_to_dict
from anobench.datasets import load_category
from anobench.errors import AnobenchError
from anobench.generation import build_generator, load_references
from anobench.generators import GenerationContext, SampleRequest, available_generators
from anobench.generators.crop_paste import foreground_mask
from anobench.generators.draem import DraemConfig, perlin_noise
from anobench.protocol import split_category


@pytest.mark.parametrize("name", sorted(available_generators()))
def test_registered_generator_contract(name):
    cls = available_generators()[name]
    assert cls.name == name and cls.version and cls.description
    assert dataclasses.is_dataclass(cls.config_class)
    config = cls.config_class()
    assert config_from_dict(cls.config_class, config_to_dict(config)) == config
    assert cls.needs.describe()


def _context(demo_root, category="disc", size=64, references=False, source=None):
    data = load_category("mvtec_ad", demo_root, category)
    refs = load_references(data, split_category(data), size) if references else []
    return data, GenerationContext("mvtec_ad", category, size, [s.path for s in data.train], refs,
                                   data.defect_types, anomaly_source=source)


def _requests(data, size=64, n=4, seed=0):
    return [SampleRequest(i, seed * 1000 + i, data.train[i % len(data.train)].image(size), "x") for i in range(n)]


@pytest.mark.parametrize("name,kwargs", [
    ("draem", {}), ("draem", {"variant": "anomalib"}), ("crop_paste", {}), ("crop_paste", {"blend": "seamless"}),
])
def test_samples_are_deterministic_and_masks_cover_every_change(demo_root, name, kwargs):
    data, context = _context(demo_root, references=name == "crop_paste")
    outputs = []
    for _ in range(2):
        gen = build_generator(name, {k: str(v) for k, v in kwargs.items()})
        gen.setup(context)
        outputs.append(gen.generate(_requests(data)))
    for a, b, request in zip(*outputs, _requests(data)):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert a.mask.any(), "every generated sample is anomalous"
        changed = (a.image != request.source).any(axis=2)
        assert not (changed & ~a.mask).any(), "a pixel outside the mask changed"
        # Poisson blending may leave some masked pixels equal to the source; a paste or a DRAEM blend not
        least = 0.0 if kwargs.get("blend") == "seamless" else 0.3
        assert changed[a.mask].mean() > least, "the mask should mark pixels that differ from the source"


def test_draem_perlin_matches_anomalib_noise():
    from anomalib.data.utils.generators.perlin import generate_perlin_noise

    torch.manual_seed(3)
    reference = generate_perlin_noise(256, 256, scale=(4, 8), device=torch.device("cpu")).numpy()
    torch.manual_seed(3)
    angles = (2 * torch.pi * torch.rand(5, 9)).numpy()
    ours = perlin_noise((256, 256), (4, 8), angles)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def _solid_texture_draem(demo_root, tmp_path, monkeypatch, overrides):
    """DRAEM on a one-colour texture folder with the photometric augmenters switched off."""
    from PIL import Image

    import anobench.generators.draem as draem

    texture_dir = tmp_path / "tex"
    texture_dir.mkdir(exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), (255, 0, 0), np.uint8)).save(texture_dir / "red.png")
    monkeypatch.setattr(draem, "augment_texture", lambda texture, rng, count=3: texture)
    data, context = _context(demo_root, source=texture_dir)
    gen = build_generator("draem", overrides)
    gen.setup(context)
    return data.train[0].image(64), gen


@pytest.mark.parametrize("variant,texture_weight", [("draem", 0.7), ("anomalib", 0.3)])
def test_draem_blend_follows_variant(demo_root, tmp_path, monkeypatch, variant, texture_weight):
    """beta = 0.3: DRAEM weights the image by beta, anomalib weights the texture by beta."""
    source, gen = _solid_texture_draem(demo_root, tmp_path, monkeypatch, {"beta_range": "0.3,0.3", "variant": variant})
    image, mask, beta = gen.synthesize(source, np.random.default_rng(0))
    assert beta == pytest.approx(0.3) and mask.any()
    red = np.array([255, 0, 0], np.float32)
    expected = np.rint(texture_weight * red + (1 - texture_weight) * source.astype(np.float32)).astype(np.uint8)
    assert np.array_equal(image[mask], expected[mask])
    assert np.array_equal(image[~mask], source[~mask])
    assert DraemConfig(variant="anomalib").resolved_beta() == (0.1, 1.0)
    assert DraemConfig().resolved_beta() == (0.0, 0.8)


def test_draem_uses_anomaly_source_textures(demo_root, tmp_path, monkeypatch):
    source, gen = _solid_texture_draem(demo_root, tmp_path, monkeypatch, {"beta_range": "0,0"})
    assert gen.texture_paths == [tmp_path / "tex" / "red.png"]
    image, mask, _ = gen.synthesize(source, np.random.default_rng(1))
    assert mask.any() and (image[mask] == (255, 0, 0)).all()  # beta 0: the texture's own pixels


def test_crop_paste_pastes_reference_pixels_inside_foreground(demo_root):
    data, context = _context(demo_root, references=True)
    gen = build_generator("crop_paste", {"rotation": "0", "scale_range": "1,1", "brightness": "0", "contrast": "0", "flip": "false"})
    gen.setup(context)
    request = _requests(data, n=1)[0]
    sample = gen.generate([request])[0]
    assert sample.defect_type in data.defect_types
    assert sample.extra["reference"].startswith("test/")
    # untransformed paste: the masked pixels are exactly the reference's defect pixels
    ref = next(r for r in context.references if r.path == sample.extra["reference"])
    ys, xs = np.nonzero(ref.mask)
    cut = ref.image[ys.min():ys.max() + 1, xs.min():xs.max() + 1][ref.mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]]
    assert np.array_equal(sample.image[sample.mask], cut)
    # the mask follows the paste and stays on the object, for every sample
    gen = build_generator("crop_paste")
    gen.setup(context)
    for request in _requests(data, n=6, seed=3):
        sample = gen.generate([request])[0]
        assert foreground_mask(request.source)[sample.mask].all(), sample.extra


def test_crop_paste_without_references_fails_clearly(demo_root):
    _, context = _context(demo_root)
    gen = build_generator("crop_paste")
    with pytest.raises(AnobenchError, match="reference anomaly"):
        gen.setup(context)
    data, context = _context(demo_root, references=True)
    for ref in context.references:
        ref.mask[:] = False
    with pytest.raises(AnobenchError, match="non-empty mask"):
        build_generator("crop_paste").setup(context)


def test_foreground_of_object_and_texture(demo_root):
    disc = load_category("mvtec_ad", demo_root, "disc").train[0].image(64)
    weave = load_category("mvtec_ad", demo_root, "weave").train[0].image(64)
    fg = foreground_mask(disc)
    assert 0.2 < fg.mean() < 0.6 and not fg[0, 0]
    assert foreground_mask(weave).all()


def test_sample_randomness_depends_on_category(demo_root, tmp_path):
    """Same seed and index, other category: other draws (draem masks used to repeat across categories)."""
    from anobench.generation import generate_dataset, source_choice
    from anobench.images import read_mask

    assert source_choice(0, "disc", 0, 1000) != source_choice(0, "weave", 0, 1000)
    assert source_choice(0, "disc", 0, 1000) == source_choice(0, "disc", 0, 1000)
    for category in ("disc", "weave"):
        generate_dataset("draem", "mvtec_ad", demo_root, category, 3, tmp_path, seed=0, image_size=64, progress=False)
    masks = {c: [read_mask(tmp_path / "draem" / c / "masks" / f"{i:05d}.png") for i in range(3)] for c in ("disc", "weave")}
    assert all(not np.array_equal(a, b) for a, b in zip(masks["disc"], masks["weave"]))


def test_a_plugin_generator_without_a_name_is_an_error(monkeypatch):
    import sys
    from importlib.metadata import EntryPoint

    import anobench.generators.base as base

    class Nameless(base.Generator):
        config_class = DraemConfig

        def generate(self, requests):
            return []

    module = type(sys)("_anobench_test_gen_plugins")
    module.Nameless = Nameless
    monkeypatch.setitem(sys.modules, module.__name__, module)
    eps = [EntryPoint("nameless", f"{module.__name__}:Nameless", base.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(base, "entry_points", lambda group: eps)
    base._load_all.cache_clear()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    with pytest.raises(AnobenchError, match="class .*Nameless has no name; set name = 'nameless'"):
        available_generators()
