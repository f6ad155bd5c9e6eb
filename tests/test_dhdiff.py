"""DH-Diff: attention decoupling, zero-conv start, SSM fusion, placement, training, generation.

Everything runs on toy-size models (a few thousand parameters, 8x8 to 16x16 latents) so the file
stays fast; the real-data check is the slow test at the end.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anobench.config import apply_overrides
from anobench.errors import AnobenchError
from anobench.generators.base import GenerationContext, SampleRequest, get_generator_class
from anobench.generators.dhdiff import ABLATIONS, DHDiffConfig, DHDiffGenerator
from anobench.generators.dhdiff.attention import (
    DHState,
    DomainDecoupledAttnProcessor,
    JointSelfAttnProcessor,
    SemanticScoreMapProcessor,
    TextCrossAttnProcessor,
)
from anobench.generators.dhdiff.checkpoint import build_bundle, load_checkpoint, save_checkpoint
from anobench.generators.dhdiff.components import PatchCodec, defect_weights, training_scheduler
from anobench.generators.dhdiff.model import DHDiffUNet, Placement, build_unet, small_unet_config
from anobench.generators.dhdiff.preprocess import (
    cells_to_mask,
    crop_reference,
    make_example,
    prompt_for,
    raw_mask_cells,
    sample_cells,
)
from anobench.generators.dhdiff.train import TrainingSet, fit, make_batch, training_loss

DEFECTS = ["hole", "scratch"]


@pytest.fixture(autouse=True)
def one_thread():
    """Toy models run fastest on one thread, and a shared CPU makes two threads spin-wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**changes) -> DHDiffConfig:
    """A 4-block toy model (every block has attention) at 32 px, patch 2: a 16x16 latent."""
    base = dict(resolution=32, patch_size=2, block_out_channels=(8, 8, 16, 16), attention_heads=2, text_dim=16,
                batch_size=4, steps=4, checkpoint_every=2, num_inference_steps=3, min_mask_pixels=1)
    base.update(changes)
    return DHDiffConfig(**base)


def tiny_backbone(config: DHDiffConfig | None = None, seed: int = 0) -> DHDiffUNet:
    config = config or tiny_config()
    torch.manual_seed(seed)
    unet = build_unet(small_unet_config(config, 3 * config.patch_size**2))
    return DHDiffUNet(unet, Placement.from_config(config))


def site(backbone: DHDiffUNet, name: str):
    return next(s for s in backbone.sites if s.name == name)


def randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Give zero-initialised parameters random values (to test what training could make of them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


# --- Domain-Decoupled Attention (eq. 4-5) -------------------------------------------------------------


def _dda_inputs(b=2, tokens=16, channels=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2 * b, tokens, channels, generator=g)


def test_dda_has_no_cross_domain_leakage_while_concatenated_attention_leaks():
    backbone = tiny_backbone()
    s = site(backbone, "down.0.0.0")
    attn = s.transformer.attn1
    dda = attn.processor
    assert isinstance(dda, DomainDecoupledAttnProcessor)
    randomize(dda.zero_conv)  # a trained zeta: the reference path is live
    b, tokens = 2, 16 * 16
    x = _dda_inputs(b, tokens, s.channels)
    ref = {s.name: torch.randn(b, tokens, s.channels)}
    state = DHState(num_images=b, latent_hw=(16, 16), reference=ref)

    out = dda(attn, x, dh=state)
    changed_annotation = x.clone()
    changed_annotation[b:] += torch.randn_like(changed_annotation[b:])
    out_a = dda(attn, changed_annotation, dh=state)
    assert torch.equal(out[:b], out_a[:b]), "image output changed when only the annotation input changed"
    assert not torch.allclose(out[b:], out_a[b:])

    changed_image = x.clone()
    changed_image[:b] += torch.randn_like(changed_image[:b])
    out_i = dda(attn, changed_image, dh=state)
    assert torch.equal(out[b:], out_i[b:]), "annotation output changed when only the image input changed"
    assert not torch.allclose(out[:b], out_i[:b])

    # the reference reaches the image branch only
    other_ref = DHState(num_images=b, latent_hw=(16, 16), reference={s.name: torch.randn(b, tokens, s.channels)})
    out_r = dda(attn, x, dh=other_ref)
    assert torch.equal(out[b:], out_r[b:])
    assert not torch.allclose(out[:b], out_r[:b])

    # the baseline's concatenated attention (eq. 1-3) does leak: the check above can fail
    joint = JointSelfAttnProcessor()
    base, base_a = joint(attn, x, dh=state), joint(attn, changed_annotation, dh=state)
    assert not torch.allclose(base[:b], base_a[:b])


def test_dda_annotation_branch_has_its_own_projections():
    backbone = tiny_backbone()
    s = site(backbone, "down.1.0.0")
    dda = s.transformer.attn1.processor
    for own, shared in [(dda.to_q_a, s.transformer.attn1.to_q), (dda.to_k_a, s.transformer.attn1.to_k),
                        (dda.to_v_a, s.transformer.attn1.to_v)]:
        assert own.weight is not shared.weight
        assert torch.equal(own.weight, shared.weight)  # initialised as copies (SD init keeps SD's weights)


# --- zero-initialised conv ------------------------------------------------------------------------------


def test_zero_conv_starts_at_zero_and_learns():
    backbone = tiny_backbone()
    ddas = [s.transformer.attn1.processor for s in backbone.sites if s.name in backbone.dda_sites]
    assert ddas and all(p.zero_conv is not None for p in ddas)
    for p in ddas:
        assert not p.zero_conv.weight.any() and not p.zero_conv.bias.any()

    g = torch.Generator().manual_seed(0)
    z_i, z_a, z_r = (torch.randn(2, 12, 16, 16, generator=g) for _ in range(3))
    text = torch.randn(2, 16, 16, generator=g)
    t = torch.tensor([10, 500])
    with_ref = backbone(z_i, z_a, t, text, z_reference=z_r)
    without = backbone(z_i, z_a, t, text, z_reference=None)
    assert torch.equal(with_ref[0], without[0]) and torch.equal(with_ref[1], without[1])

    (with_ref[0].square().mean()).backward()
    assert all(p.zero_conv.weight.grad is not None and p.zero_conv.weight.grad.abs().sum() > 0 for p in ddas)
    # like ControlNet: the twin encoder gets gradient once zeta has moved off zero
    assert not any(p.grad is not None and p.grad.any() for p in backbone.reference_encoder.parameters())
    torch.optim.SGD([p.zero_conv.weight for p in ddas], lr=1.0).step()
    backbone.zero_grad()
    (backbone(z_i, z_a, t, text, z_reference=z_r)[0].square().mean()).backward()
    assert any(p.grad is not None and p.grad.any() for p in backbone.reference_encoder.parameters())


# --- Semantic Score Map modification (eq. 6-7) ----------------------------------------------------------


def test_ssm_score_maps_shapes_and_fusion():
    backbone = tiny_backbone()
    s = site(backbone, "down.0.0.0")
    attn = s.transformer.attn2
    ssm = attn.processor
    assert isinstance(ssm, SemanticScoreMapProcessor)
    b, tokens, length = 2, 256, 16
    g = torch.Generator().manual_seed(0)
    f_i, f_a = torch.randn(b, tokens, s.channels, generator=g), torch.randn(b, tokens, s.channels, generator=g)
    text = torch.randn(b, length, 16, generator=g)
    s_i, s_a, v = ssm.score_maps(attn, f_i, f_a, text)
    assert s_i.shape == s_a.shape == (b, attn.heads, tokens, length)
    assert torch.allclose(s_i.sum(-1), torch.ones(())) and torch.allclose(s_a.sum(-1), torch.ones(()))
    assert v.shape == (b, attn.heads, length, s.channels // attn.heads)

    s_o = torch.softmax(torch.randn(b, 1, tokens, length, generator=g), -1)
    # identity-preserving start: eta + mean == (S_I, S_A) whatever S_O is
    fused_i, fused_a = ssm.fuse(s_i, s_a, s_o, (16, 16))
    assert torch.allclose(fused_i, s_i, atol=1e-6) and torch.allclose(fused_a, s_a, atol=1e-6)

    # general weights: eta is a 3x3 conv over each (head, token) map, plus the mean of the three maps
    randomize(ssm.fusion)
    fused_i, fused_a = ssm.fuse(s_i, s_a, s_o, (16, 16))
    maps = torch.stack([s_i, s_a, s_o.expand_as(s_i)], 2)  # [B, H, 3, hw, L]
    k, h = 3, attn.heads
    spatial = maps.permute(0, 1, 4, 2, 3).reshape(b * h * length, k, 16, 16)
    expected = F.conv2d(spatial, ssm.fusion.weight, ssm.fusion.bias, padding=1)
    expected = expected.reshape(b, h, length, 2, tokens).permute(0, 1, 3, 4, 2) + maps.mean(2, keepdim=True)
    assert torch.allclose(fused_i, expected[:, :, 0], atol=1e-5)
    assert torch.allclose(fused_a, expected[:, :, 1], atol=1e-5)


def test_ssm_connects_domains_only_through_the_fused_score_maps():
    backbone = tiny_backbone()
    s = site(backbone, "down.0.0.0")
    attn = s.transformer.attn2
    ssm = attn.processor
    b, tokens = 2, 256
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * b, tokens, s.channels, generator=g)
    text = torch.randn(b, 16, 16, generator=g).repeat(2, 1, 1)
    state = DHState(num_images=b, latent_hw=(16, 16))
    out = ssm(attn, x, encoder_hidden_states=text, dh=state)
    assert out.shape == x.shape
    changed = x.clone()
    changed[b:] += torch.randn_like(changed[b:])
    # at the identity start the image branch is plain text cross-attention of the image tokens
    plain = TextCrossAttnProcessor()(attn, x[:b], encoder_hidden_states=text[:b])
    assert torch.allclose(out[:b], plain, atol=1e-5)
    assert torch.allclose(ssm(attn, changed, encoder_hidden_states=text, dh=state)[:b], out[:b], atol=1e-6)
    randomize(ssm.fusion)  # a trained eta mixes the two domains' score maps
    out, out_changed = (ssm(attn, y, encoder_hidden_states=text, dh=state) for y in (x, changed))
    assert not torch.allclose(out[:b], out_changed[:b], atol=1e-4)


def test_control_score_map_puts_guided_mass_on_defect_tokens():
    b, length = 2, 8
    guidance = torch.zeros(b, 1, 32, 32)
    guidance[:, :, :16] = 1.0  # top half guided
    weights = torch.zeros(b, length)
    weights[0, 5:7] = 0.5  # sample 0: two defect tokens; sample 1: a no-defect prompt
    state = DHState(num_images=b, latent_hw=(16, 16), guidance=guidance, has_guidance=torch.tensor([True, True]),
                    defect_weights=weights)
    s_o = state.control_scores(64, length)  # an 8x8 level
    assert s_o.shape == (b, 1, 64, length)
    assert torch.allclose(s_o.sum(-1), torch.ones(()))
    top, bottom = s_o[0, 0, :32], s_o[0, 0, 32:]
    assert torch.allclose(top[:, 5:7].sum(-1), torch.ones(())) and torch.allclose(bottom[:, 0], torch.ones(()))
    assert torch.allclose(s_o[1, 0, :, 0], torch.ones(()))
    assert DHState(num_images=b, latent_hw=(16, 16)).control_scores(64, length) is None


def test_guidance_changes_the_output_only_where_ssm_sits():
    g = torch.Generator().manual_seed(0)
    z_i, z_a = torch.randn(2, 12, 16, 16, generator=g), torch.randn(2, 12, 16, 16, generator=g)
    text = torch.randn(2, 16, 16, generator=g)
    t = torch.tensor([100, 700])
    guidance = torch.rand(2, 1, 32, 32, generator=g)
    has = torch.tensor([True, True])
    for placement_changes, expect_effect in [({}, True), (ABLATIONS["table8-dda"], False)]:
        config = apply_overrides(tiny_config(), placement_changes)
        backbone = tiny_backbone(config)
        for s in backbone.sites:
            if isinstance(s.transformer.attn2.processor, SemanticScoreMapProcessor):
                randomize(s.transformer.attn2.processor.fusion)
        plain = backbone(z_i, z_a, t, text)
        guided = backbone(z_i, z_a, t, text, guidance=guidance, has_guidance=has,
                          defect_weights=torch.full((2, 16), 1 / 16))
        assert (not torch.allclose(plain[0], guided[0], atol=1e-5)) == expect_effect


# --- placement (Table IX) -------------------------------------------------------------------------------


PLACEMENTS = {  # preset -> (DDA blocks, SSM blocks) as {part: set of block indices}
    "table9-1": ({"down": {0, 1, 2, 3}}, {"down": {0, 1, 2, 3}}),
    "table9-2": ({"down": {0, 2}}, {"down": {0, 2}}),
    "table9-3": ({"down": {0, 2}, "up": {1, 3}}, {"down": {0, 2}, "up": {1, 3}}),
    "table9-4": ({"down": {0, 1, 2, 3}, "up": {1, 3}}, {"down": {0, 1, 2, 3}, "up": {1, 3}}),
    "table8-baseline": ({}, {}),
    "table8-dda": ({"down": {0, 1, 2, 3}, "up": {1, 3}}, {}),
    "table8-ssm": ({}, {"down": {0, 1, 2, 3}, "up": {1, 3}}),
}


@pytest.mark.parametrize("preset", sorted(PLACEMENTS))
def test_placement_presets_are_honoured(preset):
    config = apply_overrides(tiny_config(), ABLATIONS[preset])
    backbone = tiny_backbone(config)
    dda_expected, ssm_expected = PLACEMENTS[preset]
    for s in backbone.sites:
        in_dda = s.block in dda_expected.get(s.part, set())
        in_ssm = s.block in ssm_expected.get(s.part, set())
        attn1, attn2 = s.transformer.attn1.processor, s.transformer.attn2.processor
        assert isinstance(attn1, DomainDecoupledAttnProcessor if in_dda else JointSelfAttnProcessor), s.name
        assert isinstance(attn2, SemanticScoreMapProcessor if in_ssm else TextCrossAttnProcessor), s.name
    assert (backbone.reference_encoder is not None) == bool(dda_expected)
    # DDA and SSM add parameters (annotation projections, zero conv, fusion conv) over the baseline
    baseline = tiny_backbone(apply_overrides(tiny_config(), ABLATIONS["table8-baseline"]))
    n_params, n_baseline = (sum(p.numel() for p in b.parameters()) for b in (backbone, baseline))
    assert (n_params > n_baseline) == bool(dda_expected or ssm_expected)
    assert n_params >= n_baseline


def test_paper_default_is_table9_row4_and_decoder_reads_reference_at_its_resolution():
    default = tiny_backbone()
    row4 = tiny_backbone(apply_overrides(tiny_config(), ABLATIONS["table9-4"]))
    assert default.dda_sites == row4.dda_sites and default.ssm_sites == row4.ssm_sites
    assert default.reference_source["down.2.0.0"] == "down.2.0.0"
    assert default.reference_source["up.1.0.0"] == "down.2.0.0"  # up block 1 runs at level 2
    assert default.reference_source["up.3.1.0"] == "down.0.0.0"


def test_learning_rate_defaults_follow_the_initialisation():
    assert DHDiffConfig().learning_rate_for(from_sd=True) == 1e-4  # the paper's, for SD fine-tuning
    assert DHDiffConfig().learning_rate_for(from_sd=False) == 1e-3  # from scratch in CPU minutes
    assert DHDiffConfig(learning_rate=3e-4).learning_rate_for(from_sd=True) == 3e-4


def test_placement_values_are_validated():
    with pytest.raises(AnobenchError, match="dda_encoder"):
        apply_overrides(tiny_config(), {"dda_encoder": "most"})


# --- pre-processing -------------------------------------------------------------------------------------


def test_raw_mask_grid_reference_crop_and_prompt():
    mask = np.zeros((20, 20), dtype=bool)
    mask[1, 1] = True  # cell (0, 0)
    mask[9:11, 13] = True  # cells (2, 3) ... rows 8-11 and 12-15 at K=5
    cells = raw_mask_cells(mask, k=5)
    assert cells.shape == (5, 5) and cells.sum() == 2 and cells[0, 0] and cells[2, 3]
    raw = cells_to_mask(cells, 20)
    assert raw.sum() == 2 * 16 and raw[mask].all()
    image = np.random.default_rng(0).uniform(-1, 1, (3, 20, 20)).astype(np.float32)
    ref = crop_reference(image, raw)
    assert np.array_equal(ref[:, raw], image[:, raw]) and not ref[:, ~raw].any()
    assert prompt_for("metal_nut", "color") == ("a photo of a metal nut with color", "a photo of a metal nut with")
    assert prompt_for("bottle") == ("a photo of a bottle", "a photo of a bottle")
    # cell edges snap to the latent grid
    assert raw_mask_cells(np.ones((20, 20), bool), k=5, unit=4).all()
    assert set(np.diff(np.round(np.linspace(0, 64 // 4, 6)).astype(int) * 4)) == {12, 16}  # 64 px, patch 4
    with pytest.raises(AnobenchError, match="grid_size"):
        apply_overrides(tiny_config(), {"resolution": "8", "block_out_channels": "8,8"})


def test_cell_sampling_and_training_example():
    rng = np.random.default_rng(0)
    ref = np.zeros((5, 5), bool)
    ref[0, :2] = True
    for _ in range(10):
        c = sample_cells(rng, [ref], "reference", "flip", 5)
        assert np.array_equal(c, ref) or np.array_equal(c, ref[:, ::-1])
        r = sample_cells(rng, [ref], "random", "none", 5)
        assert r.sum() == 2
    image = np.zeros((20, 20, 3), np.float32)
    mask = np.zeros((20, 20), bool)
    mask[5:7, 5:7] = True
    ex = make_example(image, mask, "bottle", "hole", rng, k=5, unit=1, flip=False, guidance_prob=1.0,
                      guidance_kinds=("detailed",), normal_cells=[ref])
    assert ex.prompt.endswith("with hole") and np.array_equal(ex.guidance > 0, mask)
    assert ex.raw_mask[mask].all() and ex.image.shape == (3, 20, 20)
    normal = make_example(image, np.zeros_like(mask), "bottle", None, rng, k=5, unit=1, flip=False,
                          guidance_prob=0.0, guidance_kinds=(), normal_cells=[ref])
    assert normal.prompt == "a photo of a bottle" and not normal.annotation.any() and normal.raw_mask.any()


# --- training ------------------------------------------------------------------------------------------


def toy_training_set(n: int = 4, size: int = 32) -> TrainingSet:
    """Grey images with a dark square defect; normals are plain grey."""
    rng = np.random.default_rng(0)
    anomalies, cells = [], []
    for i in range(n):
        image = np.full((size, size, 3), 0.2, np.float32) + rng.normal(0, 0.02, (size, size, 3)).astype(np.float32)
        mask = np.zeros((size, size), bool)
        y, x = rng.integers(2, size - 10, 2)
        mask[y:y + 6, x:x + 6] = True
        image[mask] = -0.8
        defect = DEFECTS[i % 2]
        anomalies.append((image, mask, defect))
        cells.append((defect, raw_mask_cells(mask, 5, 2)))
    normals = [np.full((size, size, 3), 0.2, np.float32) for _ in range(3)]
    return TrainingSet("box", anomalies, normals, cells)


def test_training_loss_noises_the_reference_with_the_image_noise():
    """training_loss itself: z_R = R * z_I + (1 - R) * sigma_t * eps_I (same noise and timestep)."""
    config = tiny_config()
    data = toy_training_set()
    bundle = build_bundle(config, "box", data.defect_types, seed=0)
    batch = make_batch(data, config, seed=0, step=0, unit=bundle.latent_unit)
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, z_i, z_a, t, text, z_reference=None, **kwargs):
            seen.update(z_i=z_i, z_a=z_a, t=t, z_r=z_reference)
            return torch.zeros_like(z_i, requires_grad=True), torch.zeros_like(z_a, requires_grad=True)

    bundle.backbone = Spy()
    scheduler = training_scheduler(bundle.scheduler_config)
    loss, parts = training_loss(bundle, batch, scheduler)
    x = bundle.codec.encode_image(batch.image)
    alpha = scheduler.alphas_cumprod[seen["t"]].float().view(-1, 1, 1, 1)
    noise_i = (seen["z_i"] - alpha.sqrt() * x) / (1 - alpha).sqrt()
    keep = F.pixel_unshuffle(batch.raw_mask.expand(-1, 3, -1, -1), 2) > 0
    assert batch.raw_mask.any() and (~keep).any()
    assert torch.allclose(seen["z_r"][keep], seen["z_i"][keep], atol=1e-5)
    assert torch.allclose(seen["z_r"][~keep], ((1 - alpha).sqrt() * noise_i).expand_as(x)[~keep], atol=1e-5)
    # zero predictions: the loss is the mean square of the true noise over (z_I, z_A)
    n_i = noise_i.numel()
    assert float(loss.detach()) == pytest.approx((parts["loss_image"] * n_i + parts["loss_annotation"] * seen["z_a"].numel())
                                        / (n_i + seen["z_a"].numel()), rel=1e-5)
    assert parts["loss_image"] == pytest.approx(float((noise_i ** 2).mean()), rel=1e-4)


def test_batches_are_a_function_of_seed_and_step():
    data = toy_training_set()
    a, b, c = (make_batch(data, tiny_config(), seed, step, 2) for seed, step in [(0, 3), (0, 3), (0, 4)])
    assert torch.equal(a.image, b.image) and a.prompts == b.prompts and a.noise_seed == b.noise_seed
    assert not (torch.equal(a.image, c.image) and a.noise_seed == c.noise_seed)
    assert sum(p == "a photo of a box" for p in a.prompts) == round(4 * tiny_config().normal_fraction)


def test_short_overfit_loss_falls_clearly():
    config = tiny_config(batch_size=4, learning_rate=3e-3, resolution=16, block_out_channels=(16, 16))
    bundle = build_bundle(config, "box", DEFECTS, seed=0)
    batch = make_batch(toy_training_set(size=16), config, seed=0, step=0, unit=2)
    batch = dataclasses.replace(batch, noise_seed=7)
    scheduler = training_scheduler(bundle.scheduler_config)
    optimizer = torch.optim.Adam(bundle.trainable().parameters(), lr=config.learning_rate)

    def loss_now() -> float:
        with torch.no_grad():
            return float(training_loss(bundle, batch, scheduler)[0])

    before = loss_now()
    for _ in range(40):
        loss, _ = training_loss(bundle, batch, scheduler)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = loss_now()
    assert after < 0.4 * before, (before, after)


def _disc_context(demo_root: Path, checkpoint: Path | None = None, image_size: int = 64) -> GenerationContext:
    from anobench.datasets import load_category
    from anobench.generation import load_references
    from anobench.protocol import split_category

    data = load_category("mvtec_ad", demo_root, "disc")
    split = split_category(data, "thirds")
    return GenerationContext(
        dataset="mvtec_ad", category="disc", image_size=image_size, normal_paths=[s.path for s in data.train],
        references=load_references(data, split, image_size), defect_types=data.defect_types, checkpoint=checkpoint,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_fit_checkpoints_resumes_exactly_and_logs_loss(demo_root, tmp_path):
    config = tiny_config(steps=4, checkpoint_every=2, batch_size=2, resolution=16, block_out_channels=(8, 16))
    context = _disc_context(demo_root)
    straight = fit(config, context, tmp_path / "straight", steps=4, seed=3, split="thirds", progress=False)
    fit(config, context, tmp_path / "resumed", steps=2, seed=3, split="thirds", progress=False)
    resumed = fit(config, context, tmp_path / "resumed", steps=4, seed=3, split="thirds", progress=False)
    assert straight["step"] == resumed["step"] == 4
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = (tmp_path / "resumed" / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    meta = json.loads((tmp_path / "resumed" / "dhdiff.json").read_text())
    assert meta["step"] == 4 and meta["category"] == "disc" and meta["reference_cells"] and meta["ema"]
    raw = torch.load(tmp_path / "resumed" / "training_state.pt", weights_only=True)["model"]
    assert any(not torch.equal(raw[k], b[k]) for k in b), "generation weights should be the EMA, not the raw weights"
    assert all(r.startswith("test/") for r in meta["references"])  # the protocol's references only


TINY_TRAIN = {"resolution": "16", "patch_size": "2", "block_out_channels": "8,16", "attention_heads": "2",
              "text_dim": "16", "batch_size": "2", "checkpoint_every": "1", "num_inference_steps": "2",
              "min_mask_pixels": "1", "ema_decay": "0"}


def test_checkpoint_freezes_its_split_and_refuses_other_settings(demo_root, tmp_path):
    """train-generator's artifact: identity (seed, split) on resume, and generation under another split refused."""
    from anobench.generation import generate_dataset
    from anobench.generator_training import train_generator

    ckpt = tmp_path / "ckpt"
    train_generator("dhdiff", "mvtec_ad", demo_root, "disc", ckpt, steps=1, seed=3, overrides=TINY_TRAIN,
                    image_size=64, device="cpu", progress=False)
    record = json.loads((ckpt / "artifact.json").read_text())
    assert record["status"] == "complete" and record["protocol"]["name"] == "thirds" and record["protocol"]["sha256"]
    with pytest.raises(AnobenchError, match="seed differ"):
        train_generator("dhdiff", "mvtec_ad", demo_root, "disc", ckpt, steps=2, seed=4, overrides=TINY_TRAIN,
                        image_size=64, device="cpu", progress=False)
    with pytest.raises(AnobenchError, match="trained with split 'thirds'.*pass --split thirds"):
        generate_dataset("dhdiff", "mvtec_ad", demo_root, "disc", 1, tmp_path / "gen", split="half",
                         checkpoint=ckpt, image_size=64, device="cpu", progress=False)
    # a sampling field is outside the training identity: training further with it resumes
    train_generator("dhdiff", "mvtec_ad", demo_root, "disc", ckpt, steps=2, seed=3,
                    overrides={**TINY_TRAIN, "num_inference_steps": "3"}, image_size=64, device="cpu", progress=False)


# --- generation ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dhdiff_ckpt")
    bundle = build_bundle(tiny_config(), "disc", ["hole", "scratch", "stain"], seed=0)
    cells = np.zeros((5, 5), int)
    cells[1:3, 2] = 1
    save_checkpoint(bundle, folder, step=0, seed=0,
                    reference_cells=[{"defect_type": "hole", "cells": cells.tolist()}])
    return folder


def _request(seed: int, size: int = 64) -> SampleRequest:
    rng = np.random.default_rng(0)
    source = rng.integers(60, 200, (size, size, 3), dtype=np.uint8)
    return SampleRequest(index=0, seed=seed, source=source, source_path="train/good/000.png")


def test_generation_is_deterministic_and_composited(tiny_checkpoint, tmp_path):
    gen = get_generator_class("dhdiff")(tiny_config(mask_threshold=0.3, feather=0.0))
    assert isinstance(gen, DHDiffGenerator)
    gen.setup(GenerationContext(dataset="mvtec_ad", category="disc", image_size=64, checkpoint=tiny_checkpoint))
    first = gen.generate([_request(11)])[0]
    again = gen.generate([_request(11)])[0]
    other = gen.generate([_request(12)])[0]
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    assert not (np.array_equal(first.image, other.image) and np.array_equal(first.mask, other.mask))
    assert first.image.shape == (64, 64, 3) and first.image.dtype == np.uint8 and first.mask.dtype == bool
    assert first.mask.any()
    raw = first.arrays["raw_mask"] > 0
    assert raw[first.mask].all(), "the annotation left the raw-mask cells"
    source = _request(11).source
    assert np.array_equal(first.image[~first.mask], source[~first.mask]), "pixels changed outside the mask"
    assert first.defect_type in ("hole", "scratch", "stain") and "disc" in first.prompt
    assert first.extra["cells"] and json.dumps(first.extra)


def test_generation_with_a_control_mask_and_checkpoint_errors(tiny_checkpoint, tmp_path):
    from anobench.images import atomic_write_bytes, png_bytes

    control = np.zeros((64, 64), bool)
    control[40:50, 8:20] = True
    path = tmp_path / "control.png"
    atomic_write_bytes(path, png_bytes(control))
    gen = DHDiffGenerator(tiny_config(control_mask=str(path), guidance="detailed", min_mask_pixels=10_000,
                                      max_attempts=2))
    gen.setup(GenerationContext(dataset="mvtec_ad", category="disc", image_size=64, checkpoint=tiny_checkpoint))
    sample = gen.generate([_request(5)])[0]
    expected_raw = cells_to_mask(raw_mask_cells(control, 5), 64)
    assert np.array_equal(sample.arrays["raw_mask"] > 0, expected_raw)
    assert sample.mask.any() and expected_raw[sample.mask].all()
    assert sample.extra["attempts"] == 2 and sample.extra["fallback_mask"]  # an impossible minimum: fallback

    with pytest.raises(AnobenchError, match="--checkpoint"):
        DHDiffGenerator(tiny_config()).setup(GenerationContext(dataset="mvtec_ad", category="disc"))
    with pytest.raises(AnobenchError, match="trained on category"):
        DHDiffGenerator(tiny_config()).setup(
            GenerationContext(dataset="mvtec_ad", category="bottle", checkpoint=tiny_checkpoint))
    with pytest.raises(AnobenchError, match="not a dhdiff checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_round_trip_gives_the_same_model(tiny_checkpoint):
    a, b = load_checkpoint(tiny_checkpoint), load_checkpoint(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 12, 16, 16, generator=g)
    text = a.prompt_encoder(["a photo of a disc with hole"])
    assert torch.equal(text, b.prompt_encoder(["a photo of a disc with hole"]))
    with torch.no_grad():
        t = torch.tensor([3])
        assert torch.equal(a.backbone(z, z, t, text, z)[0], b.backbone(z, z, t, text, z)[0])
    w = defect_weights(a.prompt_encoder, ["a photo of a disc with hole"], ["a photo of a disc with"])
    # tokens: <bos> a photo of a disc with | hole
    assert w.shape == (1, a.prompt_encoder.max_length) and w[0, 7] == 1.0 and w.sum() == 1.0


# --- Stable Diffusion initialisation (tiny random SD folder) ---------------------------------------------


def test_sd_initialisation_train_step_and_generation(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_sd import save_tiny_sd

    sd = save_tiny_sd(tmp_path / "sd")
    config = DHDiffConfig(sd_resolution=64, batch_size=2, num_inference_steps=2, min_mask_pixels=1)
    bundle = build_bundle(config, "disc", ["hole"], model=str(sd))
    from diffusers import UNet2DConditionModel

    original = UNet2DConditionModel.from_pretrained(sd, subfolder="unet").state_dict()
    trained = bundle.backbone.unet.state_dict()
    shared = [k for k in original if k in trained]
    assert shared and all(torch.equal(original[k], trained[k]) for k in shared)  # initialised from SD
    assert not bundle.backbone.unet.class_embedding.weight.any()
    assert bundle.codec.kind == "vae" and bundle.resolution == 64

    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:40] = True
    data = TrainingSet("disc", [(image, mask, "hole")], [image], [("hole", raw_mask_cells(mask, 5, 8))])
    batch = make_batch(data, config, 0, 0, bundle.latent_unit)
    loss, parts = training_loss(bundle, batch, training_scheduler(bundle.scheduler_config))
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"loss_image", "loss_annotation"}
    assert all(p.grad is None for p in bundle.prompt_encoder.parameters())  # CLIP stays frozen

    cells = raw_mask_cells(mask, 5, 8).astype(int).tolist()
    bundle.meta.update(reference_cells=[{"defect_type": "hole", "cells": cells}], step=1)
    save_checkpoint(bundle, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "dhdiff.json").read_text())["source"]["kind"] == "sd"
    gen = DHDiffGenerator(config)
    gen.setup(GenerationContext(dataset="mvtec_ad", category="disc", image_size=64, checkpoint=tmp_path / "ckpt"))
    sample = gen.generate([_request(1)])[0]
    assert sample.image.shape == (64, 64, 3) and sample.mask.any()
    with pytest.raises(AnobenchError, match="--model"):
        build_bundle(config, "disc", ["hole"], model=str(tmp_path / "missing"))


# --- command line --------------------------------------------------------------------------------------


def test_cli_train_then_generate(demo_root, tmp_path):
    from click.testing import CliRunner

    from anobench.cli import cli

    runner = CliRunner()
    sets = [f"--set={k}={v}" for k, v in [("resolution", 16), ("patch_size", 2), ("block_out_channels", "8,16"),
                                          ("attention_heads", 2), ("text_dim", 16), ("batch_size", 2)]]
    ckpt = tmp_path / "ckpt"
    result = runner.invoke(cli, ["train-generator", "--generator", "dhdiff", "--data-root", str(demo_root),
                                 "--category", "disc", "--out", str(ckpt), "--steps", "2", "-q", *sets])
    assert result.exit_code == 0, result.output
    assert "trained to step 2" in result.output and (ckpt / "model.safetensors").is_file()
    result = runner.invoke(cli, ["generate", "--generator", "dhdiff", "--data-root", str(demo_root),
                                 "--category", "disc", "--num", "2", "--out", str(tmp_path / "gen"),
                                 "--checkpoint", str(ckpt), "--image-size", "64", "-q",
                                 "--set", "num_inference_steps=2", "--set", "min_mask_pixels=1"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "gen" / "dhdiff" / "disc" / "masks").glob("*.png"))) == 2
    result = runner.invoke(cli, ["generate", "--generator", "dhdiff", "--data-root", str(demo_root),
                                 "--category", "disc", "--num", "1", "--out", str(tmp_path / "gen2")])
    assert result.exit_code == 2 and "--checkpoint" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["train-generator", "--generator", "draem", "--data-root", str(demo_root),
                                 "--category", "disc", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no training stage" in result.output


# --- real data (slow) ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bottle_short_training_lowers_loss_and_generates(shared_data, tmp_path):
    from anobench.generation import generate_dataset

    config = DHDiffConfig(steps=120, checkpoint_every=60, threads=1)
    from anobench.datasets import load_category
    from anobench.generation import load_references
    from anobench.protocol import split_category

    data = load_category("mvtec_ad", shared_data / "mvtec_ad", "bottle")
    split = split_category(data, "thirds")
    context = GenerationContext(dataset="mvtec_ad", category="bottle", normal_paths=[s.path for s in data.train],
                                references=load_references(data, split, 256), defect_types=data.defect_types)
    summary = fit(config, context, tmp_path / "ckpt", seed=0, split="thirds", progress=False)
    losses = [float(r.split(",")[1]) for r in (tmp_path / "ckpt" / "loss.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20]), summary
    out = generate_dataset("dhdiff", "mvtec_ad", shared_data / "mvtec_ad", "bottle", 2, tmp_path / "gen",
                           checkpoint=tmp_path / "ckpt", overrides={"threads": "1"}, progress=False)
    assert out.total == 2
