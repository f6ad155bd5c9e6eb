"""The generator zoo: each recipe's distributions against its authors' code, exact pixels on hand-made cases.

Statistical checks draw a few hundred samples at a fixed seed and test them against the
recipe's distribution (scipy.stats); each would fail if the recipe's distribution changed
(e.g. a uniform aspect instead of log-uniform, beta unclipped, a missing coin flip).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from anobench.generation import build_generator
from anobench.generators import GenerationContext, SampleRequest
from anobench.generators.cutout import CutoutConfig, cutout
from anobench.generators.cutpaste import CutPasteConfig, cutpaste_normal, cutpaste_scar
from anobench.generators.destseg import DestSegConfig
from anobench.generators.foreground import foreground_mask, memseg_foreground
from anobench.generators.fpi import FpiConfig, fpi_patch
from anobench.generators.fractal import FractalConfig, fag, sample_system
from anobench.generators.glass_las import GlassLasConfig
from anobench.generators.nsa import NsaConfig, class_settings, draw_half_width, nsa_sample

ZOO = ["cutpaste", "cutpaste_scar", "cutpaste_3way", "cutout", "nsa", "fpi", "fractal", "memseg", "destseg",
       "glass_las", "mix"]
SIZE = 64
ALPHA = 0.001  # significance of the distribution tests


def _noise_image(seed: int, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtd")
    for k in range(3):
        (root / f"class{k}").mkdir()
        Image.fromarray(_noise_image(100 + k, 48)).save(root / f"class{k}" / f"t{k}.jpg")
    return root


def _context(root, category="disc", size=SIZE, source=None, dataset="mvtec_ad"):
    from anobench.datasets import load_category

    data = load_category("mvtec_ad", root, category)
    return data, GenerationContext(dataset, category, size, [s.path for s in data.train], [], data.defect_types,
                                   anomaly_source=source)


def _requests(data, n=6, size=SIZE):
    return [SampleRequest(i, 7919 * i + 3, data.train[i % len(data.train)].image(size),
                          data.relpath(data.train[i % len(data.train)].path)) for i in range(n)]


# ----------------------------------------------------------------------------- every zoo generator


@pytest.mark.parametrize("category", ["disc", "weave"])
@pytest.mark.parametrize("name", ZOO)
def test_zoo_is_deterministic_and_masks_cover_changes(demo_root, textures, name, category):
    data, context = _context(demo_root, category, source=textures)
    runs = []
    for _ in range(2):
        gen = build_generator(name)
        gen.setup(context)
        runs.append(gen.generate(_requests(data)))
    for a, b, request in zip(*runs, _requests(data)):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.extra == b.extra
        assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8 and a.mask.any()
        changed = (a.image != request.source).any(axis=2)
        assert not (changed & ~a.mask).any(), f"{name}: a pixel outside the mask changed"
        assert changed.any(), f"{name}: nothing changed"


# ----------------------------------------------------------------------------- cutpaste


def test_cutpaste_patch_sizes_and_aspects_follow_the_recipe():
    cfg, image = CutPasteConfig(), _noise_image(0)
    rng = np.random.default_rng(0)
    records = [cutpaste_normal(image, rng, cfg)[2] for _ in range(400)]
    aspects = np.log([r["aspect"] for r in records])
    lo = np.log(0.3)
    assert stats.kstest(aspects, stats.uniform(lo, -2 * lo).cdf).pvalue > ALPHA, "aspect must be log-uniform in [0.3, 1/0.3]"
    areas = np.array([r["area_ratio"] for r in records])  # whole-pixel sides: the area is the drawn one, rounded
    assert stats.kstest(areas, stats.uniform(0.02, 0.13).cdf).statistic < 0.08
    assert areas.min() > 0.018 and areas.max() < 0.16


def test_cutpaste_pastes_the_cut_box_exactly():
    image = _noise_image(1)
    out, mask, rec = cutpaste_normal(image, np.random.default_rng(3), CutPasteConfig(color_jitter=0.0))
    (fy, fx), (ty, tx), h, w = rec["from"], rec["to"], rec["cut_h"], rec["cut_w"]
    assert np.array_equal(out[ty:ty + h, tx:tx + w], image[fy:fy + h, fx:fx + w])
    assert mask.sum() == h * w and mask[ty:ty + h, tx:tx + w].all()
    assert np.array_equal(out[~mask], image[~mask])


def test_cutpaste_jitter_changes_only_the_patch():
    image = _noise_image(2)
    out, mask, rec = cutpaste_normal(image, np.random.default_rng(4), CutPasteConfig())
    assert set(rec["jitter"]) == {"brightness", "contrast", "saturation", "hue"}
    assert all(abs(rec["jitter"][k] - 1) <= 0.1 for k in ("brightness", "contrast", "saturation"))
    assert abs(rec["jitter"]["hue"]) <= 0.1


def test_scar_sizes_rotation_and_alpha_mask():
    cfg, image = CutPasteConfig(), _noise_image(3)
    rng = np.random.default_rng(1)
    draws = [cutpaste_scar(image, rng, cfg) for _ in range(300)]
    angles = np.array([d[2]["angle"] for d in draws])
    assert stats.kstest(angles, stats.uniform(-45, 90).cdf).pvalue > ALPHA
    widths = np.array([d[2]["cut_w"] for d in draws])
    heights = np.array([d[2]["cut_h"] for d in draws])
    assert widths.min() >= 2 and widths.max() <= 16 and heights.min() >= 10 and heights.max() <= 25
    assert stats.kstest(widths + np.random.default_rng(0).uniform(-0.5, 0.5, 300), stats.uniform(2, 14).cdf).statistic < 0.1
    # the mask follows the rotated alpha: about w*h pixels, far less than the rotated box at 45 degrees
    for out, mask, rec in draws:
        assert abs(mask.sum() - rec["cut_w"] * rec["cut_h"]) <= 0.25 * rec["cut_w"] * rec["cut_h"] + 8
    out, mask, rec = cutpaste_scar(image, np.random.default_rng(5), CutPasteConfig(scar_rotation=(0.0, 0.0), color_jitter=0.0))
    (fy, fx), (ty, tx), h, w = rec["from"], rec["to"], rec["cut_h"], rec["cut_w"]
    assert np.array_equal(out[ty:ty + h, tx:tx + w], image[fy:fy + h, fx:fx + w]) and mask.sum() == h * w


def test_cutpaste_3way_is_an_even_union(demo_root):
    data, context = _context(demo_root, "weave")
    gen = build_generator("cutpaste_3way")
    gen.setup(context)
    source = data.train[0].image(SIZE)
    kinds = [s.defect_type for s in gen.generate([SampleRequest(i, i, source, "x") for i in range(400)])]
    scars = kinds.count("scar")
    assert set(kinds) == {"scar", "normal"}
    assert stats.binomtest(scars, 400, 0.5).pvalue > ALPHA


# ----------------------------------------------------------------------------- cutout


def test_cutout_sides_uniform_and_hole_black():
    image = _noise_image(4) | 1  # no black pixel to start with
    rng = np.random.default_rng(0)
    draws = [cutout(image, rng, CutoutConfig()) for _ in range(620)]
    sides = np.array([d[2]["side"] for d in draws])
    counts = np.bincount(sides - 20, minlength=31)
    assert sides.min() >= 20 and sides.max() <= 50
    assert stats.chisquare(counts).pvalue > ALPHA
    for out, mask, rec in draws[:50]:
        (cy, cx), half = rec["center"], rec["side"] // 2
        expected = np.zeros(mask.shape, bool)
        expected[max(0, cy - half):cy + half, max(0, cx - half):cx + half] = True  # clipped at the border
        assert np.array_equal(mask, expected)
        assert (out[mask] == 0).all() and np.array_equal(out[~mask], image[~mask])
    centers = np.array([d[2]["center"] for d in draws]).ravel()
    assert stats.kstest(centers + 0.5, stats.uniform(0, 256).cdf).pvalue > ALPHA  # anywhere, edges included


# ----------------------------------------------------------------------------- nsa


def test_nsa_half_widths_are_gamma_distributed():
    rng = np.random.default_rng(0)
    widths = np.array([draw_half_width(rng, (2, 0.05, 0.03), 256, 0, 256) for _ in range(500)])
    # int() floors: the drawn value lies within a pixel above the integer
    assert stats.kstest((widths + 0.5) / 256 - 0.03, stats.gamma(2, scale=0.05).cdf).pvalue > ALPHA


def test_nsa_patch_count_follows_coin_flips():
    cfg = NsaConfig(resize=False)
    st = class_settings(cfg, "mvtec_ad", "carpet")  # a texture: no background rule, 4 patches
    assert st.num_patches == 4 and st.background is None and st.resize_bounds == (0.5, 2.0)
    dest, src = _noise_image(5), _noise_image(6)
    rng = np.random.default_rng(0)
    counts = np.array([len(nsa_sample(dest, src, rng, cfg, st)[3]["patches"]) for _ in range(160)])
    observed = np.bincount(counts - 1, minlength=4)
    expected = stats.binom(3, 0.5).pmf(range(4)) * len(counts)  # first patch always, then 3 coin flips
    assert stats.chisquare(observed, expected).pvalue > ALPHA


def test_nsa_class_tables():
    st = class_settings(NsaConfig(), "mvtec_ad", "bottle")
    assert st.num_patches == 3 and st.background == (200, 60) and st.min_object_pct == 0.7
    assert st.width_bounds == ((0.03, 0.4), (0.03, 0.4)) and st.resize_bounds == (0.7, 1.3)
    screw = class_settings(NsaConfig(), "mvtec_ad", "screw")
    assert screw.num_patches == 4 and screw.width_bounds == ((0.03, 0.12), (0.03, 0.12)) and screw.logistic == (1, 3)
    assert class_settings(NsaConfig(), "magnetic_tile", "tile").background is None


def test_nsa_label_is_the_changed_pixels_and_poisson_moves_gradients_not_values():
    cfg = NsaConfig(resize=False)
    st = class_settings(cfg, "mvtec_ad", "carpet")
    # flat source into flat destination: Poisson blending carries gradients, so nothing changes
    out, label, _, _ = nsa_sample(np.full((128, 128, 3), 50, np.uint8), np.full((128, 128, 3), 200, np.uint8),
                                  np.random.default_rng(0), cfg, st)
    assert not label.any() and np.abs(out.astype(int) - 50).max() <= 2  # rounding only, under tol
    # a textured source: the label is where the mean change exceeds tol (median-filtered)
    dest, src = np.full((128, 128, 3), 120, np.uint8), _noise_image(7, 128)
    out, label, _, rec = nsa_sample(dest, src, np.random.default_rng(1), cfg, st)
    change = np.abs(out.astype(float) - dest).mean(axis=-1) > 1
    assert label.any() and (label & change).sum() / label.sum() > 0.9
    assert not (change & ~label).any() or (change & ~label).sum() < 0.05 * change.sum()


def test_nsa_intensity_label_is_written(demo_root):
    data, context = _context(demo_root, "weave")
    gen = build_generator("nsa", {"label_mode": "logistic-intensity"})
    gen.setup(context)
    sample = gen.generate(_requests(data, 1))[0]
    label = sample.arrays["label"]
    assert label.shape == sample.mask.shape and label.max() > 0 and (label[~sample.mask] == 0).all()


# ----------------------------------------------------------------------------- fpi


def test_fpi_alpha_and_width_distribution():
    a, b = _noise_image(8), _noise_image(9)
    rng = np.random.default_rng(0)
    recs = [fpi_patch(a, b, rng, FpiConfig())[3] for _ in range(400)]
    alphas = np.array([r["alpha"] for r in recs])
    assert stats.kstest(alphas, stats.uniform(0.05, 0.9).cdf).pvalue > ALPHA
    halves = np.array([r["half_width"] for r in recs])
    assert halves.min() >= 13 and halves.max() <= 50  # randint(round(0.05*256), round(0.2*256))
    assert stats.chisquare(np.bincount(halves - 13, minlength=38)).pvalue > ALPHA
    centers = np.array([r["center"] for r in recs])
    assert centers.min() >= 25 and centers.max() <= 229  # randint(25.6, 230.4): the central 80 %


def test_fpi_interpolates_exactly_with_continuous_label():
    a, b = np.zeros((256, 256, 3), np.uint8), np.full((256, 256, 3), 200, np.uint8)
    out, mask, label, rec = fpi_patch(a, b, np.random.default_rng(2), FpiConfig())
    y0, y1, x0, x1 = rec["box"]
    alpha = rec["alpha"]
    assert (out[y0:y1, x0:x1] == np.rint((1 - alpha) * 200)).all()
    assert mask.sum() == (y1 - y0) * (x1 - x0) and np.allclose(label[mask], 1 - alpha)
    assert (out[~mask] == 0).all()
    # where the two images agree nothing is labelled
    _, mask2, _, _ = fpi_patch(a, a.copy(), np.random.default_rng(2), FpiConfig())
    assert not mask2.any()


# ----------------------------------------------------------------------------- fractal


def test_fractal_ifs_sigma_factor_and_contractive_maps():
    rng = np.random.default_rng(0)
    factors = []
    for _ in range(300):
        maps = sample_system(2, rng)
        sv = np.linalg.svd(maps[:, :, :2], compute_uv=False)
        assert (sv[:, 0] < 1).all()
        factors.append((sv[:, 0] + 2 * sv[:, 1]).sum())
    assert stats.kstest(factors, stats.uniform(3.5, 0.5).cdf).pvalue > ALPHA


def test_fractal_sizes_rotation_and_dilated_mask():
    import cv2

    image = _noise_image(10)
    rng = np.random.default_rng(0)
    cfg = FractalConfig(noise_probability=0.0)
    draws = [fag(image, rng, cfg) for _ in range(200)]
    angles = np.array([d[2]["angle"] for d in draws])
    sides = np.array([d[2]["side"] for d in draws])
    assert stats.kstest(angles, stats.uniform(15, 60).cdf).pvalue > ALPHA
    assert stats.kstest(sides + 0.5, stats.uniform(25.6, 102.4).cdf).statistic < 0.1
    out, mask, rec = draws[0]
    changed = (out != image).any(axis=2).astype(np.uint8)
    # on a noise image every pasted pixel changes, so the mask is its 3x3 dilation, 3 times
    assert np.array_equal(mask, cv2.dilate(changed, np.ones((3, 3), np.uint8), iterations=3).astype(bool))
    noisy = [fag(image, rng, FractalConfig(noise_probability=1.0)) for _ in range(3)]
    assert all(r["noise"] for _, _, r in noisy)


# ----------------------------------------------------------------------------- foreground, memseg


def test_foreground_rules():
    image = np.full((32, 32, 3), 255, np.uint8)
    image[8:24, 8:24] = 60
    fg = foreground_mask(image, "mvtec_ad", "bottle")  # MemSeg: grey > 250 is background
    assert fg[8:24, 8:24].all() and fg.sum() == 256
    assert np.array_equal(memseg_foreground(image, 100, True), ~fg)  # bg_reverse keeps the bright side
    assert foreground_mask(image, "mvtec_ad", "carpet").all() and foreground_mask(image, "magnetic_tile", "tile").all()


def test_draem_foreground_keeps_the_mask_on_the_object(demo_root):
    data, context = _context(demo_root, "disc")
    gen = build_generator("draem", {"foreground": "true"})
    gen.setup(context)
    for request, sample in zip(_requests(data), gen.generate(_requests(data))):
        assert not (sample.mask & ~foreground_mask(request.source, "mvtec_ad", "disc")).any()


# hashes of draem's config as made before `foreground` took rule names: existing sets must resume
DRAEM_HASH = {"false": "d026f5e69f54", "true": "91b46740b427"}


@pytest.mark.parametrize("value, stored, digest", [
    ("false", False, DRAEM_HASH["false"]), ("true", True, DRAEM_HASH["true"]),
    ("memseg", True, DRAEM_HASH["true"]),  # the explicit name of true: the same setting, the same hash
    ("realnet", "realnet", None)])
def test_draem_foreground_rules_keep_the_old_hashes(value, stored, digest):
    from anobench.config import config_from_dict, config_hash, config_to_dict
    from anobench.generators.draem import DraemConfig

    config = build_generator("draem", {"foreground": value}).config
    assert config.foreground == stored
    assert config_from_dict(DraemConfig, config_to_dict(config)) == config  # dataset.json round-trip
    assert config_hash(config) == (digest or config_hash(config))
    if digest is None:
        assert config_hash(config) not in DRAEM_HASH.values()
    assert config_hash(build_generator("draem", {}).config) == DRAEM_HASH["false"]


def test_draem_foreground_realnet_takes_realnets_rule():
    """A dark part on a light grey ground, as bottle: MemSeg keeps every pixel (grey <= 250), RealNet the part."""
    from anobench.errors import AnobenchError

    image = np.full((64, 64, 3), 220, np.uint8)
    image[16:48, 16:48] = 40
    part = np.zeros((64, 64), bool)
    part[16:48, 16:48] = True
    requests = [SampleRequest(i, 7919 * i + 3, image, "x") for i in range(12)]
    masks = {}
    for rules in ("realnet", "memseg"):
        gen = build_generator("draem", {"foreground": rules})
        gen.setup(GenerationContext("mvtec_ad", "bottle", 64, [], [], []))
        masks[rules] = [s.mask for s in gen.generate(requests)]
    assert all(not (m & ~part).any() for m in masks["realnet"])  # on the part only
    assert any((m & ~part).any() for m in masks["memseg"])  # MemSeg's bottle rule keeps the ground
    with pytest.raises(AnobenchError, match="foreground must be one of true, false, memseg, realnet"):
        build_generator("draem", {"foreground": "blob"})


def _flat_textures(tmp_path, value=200):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(tmp_path / "flat" / "a.png")
    return tmp_path


def _flat_context(tmp_path, category="carpet"):
    return GenerationContext("mvtec_ad", category, 64, [], [], [], anomaly_source=_flat_textures(tmp_path))


def test_memseg_factor_and_exact_texture_blend(tmp_path):
    gen = build_generator("memseg", {"texture_probability": "1.0"})
    gen.setup(_flat_context(tmp_path))
    source = np.full((64, 64, 3), 100, np.uint8)
    samples = gen.generate([SampleRequest(i, i, source, "x") for i in range(300)])
    factors = np.array([s.extra["factor"] for s in samples])
    assert stats.kstest(factors, stats.uniform(0.15, 0.85).cdf).pvalue > ALPHA
    s = samples[0]
    f = s.extra["factor"]
    assert (s.image[s.mask] == np.floor(f * 200 + (1 - f) * 100 + 1e-9)).all() or \
        (np.abs(s.image[s.mask].astype(int) - (f * 200 + (1 - f) * 100)) < 1).all()
    assert (s.image[~s.mask] == 100).all()


def test_memseg_structure_source_is_a_tile_shuffle(monkeypatch):
    from anobench.generators import memseg

    monkeypatch.setattr(memseg, "augment_texture", lambda image, rng, count: image)
    image = np.arange(64 * 64 * 3, dtype=np.uint32).reshape(64, 64, 3) % 251
    image = image.astype(np.uint8)
    shuffled = memseg.structure_source(image, np.random.default_rng(0), 8)
    tiles = lambda im: sorted(im.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, -1).tobytes()[i * 192:(i + 1) * 192]
                              for i in range(64))
    assert not np.array_equal(shuffled, image) and tiles(shuffled) == tiles(image)


# ----------------------------------------------------------------------------- destseg


def test_destseg_beta_and_raw_texture(tmp_path):
    gen = build_generator("destseg")
    gen.setup(_flat_context(tmp_path))
    source = np.full((64, 64, 3), 100, np.uint8)
    samples = gen.generate([SampleRequest(i, i, source, "x") for i in range(300)])
    betas = np.array([s.extra["beta"] for s in samples])
    assert stats.kstest(betas, stats.uniform(0, 0.8).cdf).pvalue > ALPHA
    for s in samples[:20]:  # no augmenter: the flat texture stays flat, the blend is exact
        b = s.extra["beta"]
        assert (s.image[s.mask] == np.rint(((1 - b) * 200 + b * 100))).all()
    assert DestSegConfig().rotation == "none"


# ----------------------------------------------------------------------------- glass


def test_glass_beta_mask_kinds_and_three_ops(tmp_path):
    gen = build_generator("glass_las", {"foreground": "none"})
    gen.setup(_flat_context(tmp_path))
    source = np.full((64, 64, 3), 100, np.uint8)
    samples = gen.generate([SampleRequest(i, i, source, "x") for i in range(300)])
    betas = np.array([s.extra["beta"] for s in samples])
    assert betas.min() >= 0.2 and betas.max() <= 0.8
    assert stats.kstest(betas, stats.norm(0.5, 0.1).cdf).pvalue > ALPHA
    kinds = [s.extra["mask"] for s in samples]
    assert stats.chisquare([kinds.count(k) for k in ("union", "intersection", "single")]).pvalue > ALPHA
    assert all(len(set(s.extra["ops"])) == 3 for s in samples)


def test_glass_blend_in_normalised_space_equals_pixel_space():
    rng = np.random.default_rng(0)
    image, aug, m = rng.random((3, 8, 8)), rng.random((3, 8, 8)), (rng.random((1, 8, 8)) > 0.5).astype(float)
    beta = 0.37
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    norm = lambda x: (x - mean) / std
    glass = norm(image) * (1 - m) + (1 - beta) * norm(aug) * m + beta * norm(image) * m
    ours = image * (1 - m) + (1 - beta) * aug * m + beta * image * m
    assert np.allclose(glass, norm(ours))
    assert GlassLasConfig().beta_clip == (0.2, 0.8)


# ----------------------------------------------------------------------------- mix


def test_mix_draws_components_by_weight_and_records_them(demo_root):
    data, context = _context(demo_root, "weave")
    gen = build_generator("mix", {"components": "cutout,cutpaste", "weights": "0.8,0.2"})
    gen.setup(context)
    source = data.train[0].image(SIZE)
    samples = gen.generate([SampleRequest(i, i, source, "x") for i in range(300)])
    names = [s.extra["component"] for s in samples]
    assert stats.binomtest(names.count("cutout"), 300, 0.8).pvalue > ALPHA
    # a component's sample is that generator's output for the recorded seed
    s = samples[0]
    member = build_generator(s.extra["component"])
    member.setup(context)
    direct = member.generate([SampleRequest(0, s.extra["component_seed"], source, "x")])[0]
    assert np.array_equal(direct.image, s.image) and direct.extra == s.extra["component_extra"]


def test_mix_rejects_bad_components():
    from anobench.errors import AnobenchError

    with pytest.raises(AnobenchError):
        build_generator("mix", {"components": "cutout,nope"})
    with pytest.raises(AnobenchError):
        build_generator("mix", {"components": "cutout", "weights": "1,2"})


def test_nsa_object_mask_equals_nsa_formula():
    import cv2

    from anobench.generators.foreground import nsa_object_mask

    image = _noise_image(11, 128)
    for background, threshold in ((200, 60), (20, 20)):
        far = (np.abs(image.mean(axis=-1) - background) > threshold).astype(np.uint8)  # self_sup_tasks.py
        assert np.array_equal(nsa_object_mask(image, background, threshold), cv2.medianBlur(far, 7).astype(bool))
