"""DeltaDeno on tiny random Stable Diffusion pipelines (real tokenizer, real diffusers classes).

No SD weights exist offline, so these tests check the method's mechanics, not image quality:
one batched UNet call per step, delta localisation (a planted difference is found), latent
inpainting that keeps the source outside the mask, the attention bias's exact footprint,
prompt refinement, determinism and the generator contract.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from anobench.config import apply_overrides, config_to_dict
from anobench.errors import AnobenchError
from anobench.generators import GenerationContext, SampleRequest
from anobench.generators.deltadeno import DeltaDenoConfig, DeltaDenoGenerator, load_pipeline
from anobench.generators.deltadeno.prompts import (
    CATEGORIES,
    GENERIC_DEFECTS,
    anomaly_token_positions,
    category_prompts,
    resolve_anomaly,
    token_ids,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_sd import save_tiny_sd, sd15_components  # noqa: E402

NORMAL = "a photo of a bottle"
ANOMALY = "a photo of a bottle with a large crack"
PHRASE = "a large crack"
FAST = dict(num_inference_steps=8, strength=1.0)  # 8 steps run: window 0..3, inpainting from 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads and lose much to thread contention on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny")


@pytest.fixture(scope="module")
def pipe(tiny_sd_dir):
    return load_pipeline(str(tiny_sd_dir))


def source_images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth product-like images: a shaded disc on a gradient, different per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.35, 0.65, 2).tolist() + [rng.uniform(0.2, 0.35)]
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        base = np.stack([0.3 + 0.4 * xx, 0.3 + 0.3 * yy, 0.5 * np.ones_like(xx)], -1)
        base[disc] = rng.uniform(0.4, 0.9, 3)
        images.append((255 * np.clip(base + 0.02 * rng.standard_normal(base.shape), 0, 1)).astype(np.uint8))
    return images


def run(pipe, n=1, size=64, seeds=None, **kwargs):
    seeds = seeds if seeds is not None else list(range(n))
    return pipe(source_images(n, size), NORMAL, [ANOMALY] * n, [PHRASE] * n,
                generator=[torch.Generator().manual_seed(s) for s in seeds], **{**FAST, **kwargs})


def make_generator(pipe, category="bottle", size=64, **config):
    gen = DeltaDenoGenerator(DeltaDenoConfig(**config))
    gen.setup(GenerationContext("mvtec_ad", category, size, model="tiny"), pipeline=pipe)
    return gen


def requests(n=2, size=64, seed=0):
    return [SampleRequest(i, 1000 * seed + i, image, f"src{i}.png") for i, image in enumerate(source_images(n, size, seed))]


# ----------------------------------------------------------------------------- cheap import, defaults, config


def test_import_does_not_load_torch_or_diffusers():
    code = "import sys, anobench.generators.deltadeno; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_category_defaults_cover_mvtec_ad_visa_and_mpdd():
    expected = {
        "mvtec_ad": "bottle cable capsule carpet grid hazelnut leather metal_nut pill screw tile toothbrush "
                    "transistor wood zipper",
        "visa": "candle capsules cashew chewinggum fryum macaroni1 macaroni2 pcb1 pcb2 pcb3 pcb4 pipe_fryum",
        "mpdd": "bracket_black bracket_brown bracket_white connector metal_plate tubes",
    }
    for dataset, names in expected.items():
        assert sorted(CATEGORIES[dataset]) == sorted(names.split()), dataset
        for name, prompts in CATEGORIES[dataset].items():
            assert prompts.object_name and prompts.defects, name
            assert all(phrase.strip() and "_" not in phrase for phrase in prompts.defects.values()), name
    assert sorted(category_prompts("mvtec_ad", "screw").defects) == [
        "manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"]
    assert category_prompts("visa", "pcb4").object_name == "printed circuit board"
    unknown = category_prompts("folder", "my_widget")
    assert unknown.object_name == "my widget" and unknown.defects == GENERIC_DEFECTS


def test_bottle_defaults_are_the_real_defect_folders():
    bottle = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad" / "bottle" / "test"
    if not bottle.is_dir():
        pytest.skip(f"real data not found at {bottle}")
    folders = sorted(p.name for p in bottle.iterdir() if p.is_dir() and p.name != "good")
    assert sorted(CATEGORIES["mvtec_ad"]["bottle"].defects) == folders


def test_config_overrides_validate_and_round_trip():
    config = apply_overrides(DeltaDenoConfig(), {"window": "0,0.3", "inpaint_start": "0.4", "anomaly": "a dent"})
    assert config.window == (0.0, 0.3) and config.inpaint_start == 0.4 and config.anomaly == "a dent"
    json.dumps(config_to_dict(config))
    for bad in ({"window": "0.5,0.2"}, {"window": "0,0.6"}, {"strength": "0"}, {"steps": "1", "strength": "0.5"},
                {"threshold": "1"}, {"anomaly_template": "a {object}"}):
        with pytest.raises(AnobenchError):
            apply_overrides(DeltaDenoConfig(), bad)


def test_step_plan_fractions():
    from anobench.generators.deltadeno.pipeline import StepPlan

    assert StepPlan.from_fractions(37, (0.0, 0.5), 0.5) == StepPlan(37, 0, 19, 19)
    assert StepPlan.from_fractions(2, (0.0, 0.5), 0.5) == StepPlan(2, 0, 1, 1)
    assert StepPlan.from_fractions(1, (0.0, 0.5), 0.5) == StepPlan(1, 0, 1, 1)  # never an empty window
    assert StepPlan.from_fractions(10, (0.2, 0.4), 0.7) == StepPlan(10, 2, 4, 7)


# ----------------------------------------------------------------------------- weights


def test_missing_weights_fail_at_once_with_one_line(tmp_path, tiny_sd_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ANOBENCH_ALLOW_DOWNLOAD", raising=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((tiny_sd_dir / "model_index.json").read_text())  # no weights
    cases = {
        None: ["--model", "hub id"],
        "no-such-org/no-such-sd-model": ["--model", "no-such-org/no-such-sd-model", "cache"],
        str(tmp_path): [str(tmp_path), "model_index.json"],
        str(broken): [str(broken), "cannot load"],
    }
    for model, needles in cases.items():
        with pytest.raises(AnobenchError) as info:
            DeltaDenoGenerator().setup(GenerationContext("mvtec_ad", "bottle", 64, model=model))
        message = str(info.value)
        assert "\n" not in message and all(n in message for n in needles), message


# ----------------------------------------------------------------------------- prompt refinement


def test_prompt_refinement_aligns_shared_tokens_and_weights_anomaly_tokens(pipe):
    from anobench.generators.deltadeno.prompts import encode_texts

    tok, enc = pipe.tokenizer, pipe.text_encoder
    # anomaly before the object: the causal encoder gives "bottle" a different embedding in each prompt
    anomaly_prompt = "a photo of a large crack bottle"
    refined = pipe.encode_prompts(NORMAL, [anomaly_prompt], [PHRASE], token_weight=2.0)
    raw_normal, raw_anomaly = encode_texts(tok, enc, [NORMAL, anomaly_prompt])
    ids_n, ids_a = token_ids(tok, NORMAL), token_ids(tok, anomaly_prompt)
    positions = anomaly_token_positions(tok, ids_a, PHRASE)
    assert tok.convert_ids_to_tokens([ids_a[p] for p in positions]) == ["a</w>", "large</w>", "crack</w>"]
    bottle_n, bottle_a = ids_n.index(tok.convert_tokens_to_ids("bottle</w>")), len(ids_a) - 2
    assert not torch.allclose(raw_normal[bottle_n], raw_anomaly[bottle_a])
    emb = refined.anomaly[0]
    for i in range(positions[0]):  # BOS, "a photo of"
        assert torch.equal(emb[i], refined.normal[0, i])
    assert torch.equal(emb[bottle_a], refined.normal[0, bottle_n])
    assert torch.allclose(emb[positions], 2.0 * raw_anomaly[positions])
    eos = len(ids_a) - 1
    assert torch.equal(emb[eos], raw_anomaly[eos]), "the end token summarises the anomaly prompt: kept"
    assert refined.anomaly_tokens[0].nonzero().flatten().tolist() == positions


def test_anomaly_is_drawn_with_the_seed_or_fixed(pipe):
    gen = make_generator(pipe)
    draws = [gen.choose_anomaly(SampleRequest(0, seed, np.zeros((64, 64, 3), np.uint8), "x")) for seed in range(40)]
    assert draws == [gen.choose_anomaly(SampleRequest(0, seed, np.zeros((64, 64, 3), np.uint8), "x"))
                     for seed in range(40)]
    assert {d for d, _ in draws} == {"broken_large", "broken_small", "contamination"}
    assert resolve_anomaly(gen.prompts, "broken_small") == ("broken_small", "a small broken chip")
    fixed = make_generator(pipe, anomaly="a dent")
    assert fixed.choose_anomaly(SampleRequest(0, 5, np.zeros((64, 64, 3), np.uint8), "x")) == ("a_dent", "a dent")


# ----------------------------------------------------------------------------- the generator contract


def test_generate_shapes_and_manifest_record(pipe):
    gen = make_generator(pipe, steps=8)
    samples = gen.generate(requests(3))
    knobs = {f.name for f in fields(DeltaDenoConfig)} - {"object_name", "anomaly", "dtype", "batch_invariant",
                                                        "variant", "prompt_file"}
    for s in samples:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (64, 64) and s.mask.dtype == bool and 0 < s.mask.mean() < 1
        assert s.arrays["heatmap"].shape == (64, 64) and s.arrays["heatmap"].dtype == np.uint8
        assert s.defect_type in CATEGORIES["mvtec_ad"]["bottle"].defects
        assert s.prompt == f"a photo of a bottle with {s.extra['anomaly']}"
        assert s.extra["normal_prompt"] == NORMAL and knobs <= set(s.extra)
        json.dumps(s.extra)


def test_same_seed_gives_the_same_bytes(pipe):
    first = make_generator(pipe, steps=6).generate(requests(2))
    again = make_generator(pipe, steps=6).generate(requests(2))
    other = make_generator(pipe, steps=6).generate(requests(2, seed=1))
    for a, b, c in zip(first, again, other):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.arrays["heatmap"], b.arrays["heatmap"])
        assert not np.array_equal(a.image, c.image)


def test_batch_invariant_mode_gives_the_same_bytes_whatever_the_batch(pipe):
    gen = make_generator(pipe, steps=6, batch_invariant=True)
    together = gen.generate(requests(3))
    alone = [gen.generate([r])[0] for r in requests(3)]
    for a, b in zip(together, alone):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


# ----------------------------------------------------------------------------- the method


@pytest.mark.parametrize("guidance,rows", [(7.5, (3, 2)), (1.0, (2, 1))])
def test_one_batched_unet_call_per_step(pipe, guidance, rows):
    batches = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        out = run(pipe, n=2, guidance_scale=guidance)
    finally:
        handle.remove()
    plan = out.plan
    assert len(batches) == plan.num_steps == 8
    in_window, after = rows
    # window: [uncond, normal, anomaly] x B on one shared latent; afterwards [uncond, anomaly] x B
    assert batches == [2 * in_window] * plan.window_end + [2 * after] * (plan.num_steps - plan.window_end)


def test_latents_follow_the_source_outside_the_mask(pipe, monkeypatch):
    """Latent inpainting: outside the mask every later latent is the source noised with the shared noise."""
    n = 2
    seen, decoded = [], []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: seen.append((args[0][:n].clone(), int(args[1]))))
    original_decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z, *a, **k: decoded.append(z.clone()) or original_decode(z, *a, **k))
    try:
        out = run(pipe, n=n, seeds=[3, 4])
    finally:
        handle.remove()
    x = torch.from_numpy(np.stack(source_images(n))).permute(0, 3, 1, 2).float() / 127.5 - 1
    z0 = pipe.encode_image(x)
    noise = torch.cat([torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(s))[None] for s in (3, 4)])
    outside = torch.from_numpy(~out.latent_masks)[:, None].expand_as(z0)
    assert outside.any() and (~outside).any()
    for i, (latent, t) in enumerate(seen):
        if i >= out.plan.inpaint_from:
            expected = pipe.scheduler.add_noise(z0, noise, torch.tensor([t] * n))
            torch.testing.assert_close(latent[outside], expected[outside], atol=1e-5, rtol=1e-5)
    final = decoded[-1][:n] * pipe.vae.config.scaling_factor
    torch.testing.assert_close(final[outside], z0[outside], atol=1e-5, rtol=1e-5)
    assert (final[~outside] - z0[~outside]).abs().mean() > 1e-3, "inside the mask the latent was edited"


def test_background_equals_the_vae_reconstruction_outside_the_mask(pipe):
    out = run(pipe, n=2, background="reconstruction")
    mask = out.masks
    assert mask.any() and (~mask).any()
    assert np.array_equal(out.images[~mask], out.reconstructions[~mask])
    x = torch.from_numpy(np.stack(source_images(2))).permute(0, 3, 1, 2).float() / 127.5 - 1
    recon = pipe.decode_latents(pipe.encode_image(x)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out.reconstructions, recon, atol=1e-4)
    assert np.abs(out.images[mask] - recon[mask]).mean() > 1e-3

    kept = run(pipe, n=2, background="source")
    sources = np.stack(source_images(2)).astype(np.float32) / 255.0
    np.testing.assert_allclose(kept.images[~kept.masks], sources[~kept.masks], atol=1e-6)


def _attention(attn, hidden, context, extra_logits):
    """Reference cross-attention with an additive logit term, written out by hand."""
    b, n, _ = hidden.shape
    heads = attn.heads
    q = attn.to_q(hidden).view(b, n, heads, -1).transpose(1, 2)
    k = attn.to_k(context).view(b, context.shape[1], heads, -1).transpose(1, 2)
    v = attn.to_v(context).view(b, context.shape[1], heads, -1).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) * attn.scale + extra_logits[:, None]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
    return attn.to_out[0](out)


def test_attention_bias_adds_to_anomaly_token_logits_inside_the_region_only():
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    from anobench.generators.deltadeno.attention import SpatialBias, SpatialBiasProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).eval()
    hidden, context = torch.randn(2, 16, 16), torch.randn(2, 5, 12)  # 4x4 queries, 5 tokens
    tokens = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.float32)  # row 0: normal prompt
    region = torch.zeros(2, 1, 8, 8)
    region[:, :, 0:4, 2:8] = 1  # latent grid 8x8 -> 4x4 queries: cells (0,1) half, (0,2),(0,3),(1,1..3) full
    state = SpatialBias(bias=3.0)
    state.set(tokens, region)
    bias = state.logits_bias(16, torch.float32)
    expected_cells = torch.zeros(4, 4)
    expected_cells[0:2, 1:4] = 1.0
    expected = 3.0 * expected_cells.flatten()[None, :, None] * tokens[:, None, :]
    torch.testing.assert_close(bias, expected)
    assert bias[0].abs().sum() == 0 and bias[1][:, [0, 1, 4]].abs().sum() == 0
    assert bias[1][expected_cells.flatten() == 0].abs().sum() == 0
    with torch.no_grad():
        for inner in (AttnProcessor2_0(), AttnProcessor()):
            attn.set_processor(SpatialBiasProcessor(inner, state))
            torch.testing.assert_close(attn(hidden, context), _attention(attn, hidden, context, expected),
                                       atol=1e-5, rtol=1e-5)
            state.clear()  # inactive: the wrapped processor alone
            torch.testing.assert_close(attn(hidden, context), _attention(attn, hidden, context, 0 * expected),
                                       atol=1e-5, rtol=1e-5)
            state.set(tokens, region)


def test_attention_bias_in_the_pipeline(pipe, monkeypatch):
    from anobench.generators.deltadeno.attention import SpatialBias, SpatialBiasProcessor

    cross = [name for name, p in pipe.unet.attn_processors.items() if isinstance(p, SpatialBiasProcessor)]
    assert cross and all(name.endswith("attn2.processor") for name in cross)
    assert all(not isinstance(p, SpatialBiasProcessor) for name, p in pipe.unet.attn_processors.items()
               if name.endswith("attn1.processor"))
    calls = []
    original = SpatialBias.logits_bias

    def spy(self, num_queries, dtype):
        bias = original(self, num_queries, dtype)
        calls.append((bias.clone(), self.tokens.clone(), self.region.clone()))
        return bias

    monkeypatch.setattr(SpatialBias, "logits_bias", spy)
    steps = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: steps.append(len(calls)))
    try:
        out = run(pipe, n=2, attention_bias=2.0)
    finally:
        handle.remove()
    assert steps[: out.plan.window_end + 1] == [0] * (out.plan.window_end + 1), "no bias before the mask exists"
    assert len(calls) == (out.plan.num_steps - out.plan.window_end) * len(cross), "every layer, every later step"
    positions = anomaly_token_positions(pipe.tokenizer, token_ids(pipe.tokenizer, ANOMALY), PHRASE)
    latent_mask = torch.from_numpy(out.latent_masks).float()[:, None]
    for bias, tokens, region in calls:
        rows = bias.shape[0]
        assert rows == 4  # [uncond x 2, anomaly x 2]
        assert bias[:2].abs().sum() == 0, "unconditional rows carry no bias"
        other = [k for k in range(bias.shape[-1]) if k not in positions]
        assert bias[:, :, other].abs().sum() == 0, "only anomaly-token columns"
        n = bias.shape[1]
        side = int(round((latent_mask.shape[-1] ** 2 / n) ** 0.5))
        cells = torch.nn.functional.avg_pool2d(latent_mask, side).flatten(1)  # fraction of each cell inside
        for r in (2, 3):
            torch.testing.assert_close(bias[r][:, positions], 2.0 * cells[r - 2][:, None].expand(-1, len(positions)))
            assert bias[r][cells[r - 2] == 0].abs().sum() == 0, "no bias outside the region"
            assert bias[r][cells[r - 2] > 0][:, positions].min() > 0


def plant(pipe, monkeypatch, region: torch.Tensor, amplitude: float = 0.2) -> None:
    """Make the anomaly branch's prediction the normal branch's plus ``amplitude`` inside ``region``.

    Anomaly rows are recognised by their text embedding; they are run with the normal prompt's
    embedding, so outside ``region`` the two branches predict exactly the same noise.
    """
    text = pipe.encode_prompts(NORMAL, [ANOMALY], [PHRASE], token_weight=1.5)
    known = (text.uncond[0], text.normal[0])
    original = pipe.unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        rows = torch.tensor([not any(torch.equal(e, k) for k in known) for e in encoder_hidden_states])
        context = encoder_hidden_states.clone()
        context[rows] = text.normal[0]
        out = original(sample, timestep, context, *args, **kwargs)
        (out[0] if isinstance(out, tuple) else out.sample)[rows] += amplitude * region
        return out

    monkeypatch.setattr(pipe.unet, "forward", forward)


@pytest.mark.parametrize("box", [(3, 11, 5, 13), (0, 6, 9, 16), (10, 14, 2, 7)])  # latent rows y0:y1, cols x0:x1
def test_planted_delta_region_is_found(pipe, monkeypatch, box):
    y0, y1, x0, x1 = box
    region = torch.zeros(16, 16)
    region[y0:y1, x0:x1] = 1
    plant(pipe, monkeypatch, region)
    out = pipe(source_images(1, 128), NORMAL, [ANOMALY], [PHRASE], token_weight=1.5,
               generator=[torch.Generator().manual_seed(0)], **FAST)
    truth = np.kron(region.numpy(), np.ones((8, 8))).astype(bool)
    mask = out.masks[0]
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9, f"IoU {iou:.3f}"
    assert out.heatmaps[0][truth].mean() > 0.8 and out.heatmaps[0][~truth].mean() < 0.05


def test_generate_dataset_end_to_end(tiny_sd_dir, demo_root, tmp_path):
    from anobench.generation import generate_dataset
    from anobench.store import GeneratedSet

    summary = generate_dataset("deltadeno", "mvtec_ad", demo_root, "disc", 3, tmp_path, seed=0,
                               model=str(tiny_sd_dir), device="cpu", batch_size=2, image_size=64,
                               overrides={"steps": "6"}, progress=False)
    assert summary.total == 3
    generated = GeneratedSet.open(summary.folder)
    assert len(generated.rows) == 3 and generated.record.generator == "deltadeno"
    for i, row in enumerate(generated.rows):
        image, mask = generated.load(i, 64)
        assert 0 < mask.mean() < 1
        assert row["prompt"].startswith("a photo of a disc with ") and row["extra"]["normal_prompt"] == "a photo of a disc"
        assert (summary.folder / "extras" / "heatmap").is_dir()


# ----------------------------------------------------------------------------- full-size architecture


@pytest.mark.slow
def test_one_step_of_the_sd15_architecture_at_256px():
    from anobench.generators.deltadeno.pipeline import DeltaDenoPipeline

    pipe = DeltaDenoPipeline(**sd15_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    batches = []
    pipe.unet.register_forward_pre_hook(lambda module, args: batches.append(tuple(args[0].shape)))
    out = pipe(source_images(1, 256), NORMAL, [ANOMALY], [PHRASE], num_inference_steps=1, strength=1.0,
               generator=[torch.Generator().manual_seed(0)])
    assert batches == [(3, 4, 32, 32)]
    assert out.images.shape == (1, 256, 256, 3) and np.isfinite(out.images).all()
    assert out.masks.shape == (1, 256, 256) and 0 < out.masks.mean() < 1
    assert pipe.num_cross_attention_layers == 16


def test_the_tiny_tokenizer_for_bare_clones_is_a_clip_tokenizer():
    """Without ../shared the tests build this one (ANOBENCH_TINY_TOKENIZER=1 forces it)."""
    from transformers import CLIPTokenizer
    from tiny_sd import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    assert isinstance(tokenizer, CLIPTokenizer) and tokenizer.model_max_length == 77
    assert tokenizer.tokenize("a photo of a bottle with broken large") == [
        "a</w>", "photo</w>", "of</w>", "a</w>", "bottle</w>", "with</w>", "broken</w>", "large</w>"]
    ids = tokenizer("a photo of a zzq", padding="max_length", max_length=77)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 77 and tokenizer.eos_token_id in ids


# ----------------------------------------------------------------------------- resolution, variant, prompts, area


def test_generation_runs_at_the_models_native_size_and_resizes_after(pipe):
    shapes = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape[-2:])))
    try:
        gen = DeltaDenoGenerator(DeltaDenoConfig(steps=4, strength=1.0))
        gen.setup(GenerationContext("mvtec_ad", "bottle", 32, model="tiny"), pipeline=pipe)
        assert gen.resolution == 64  # tiny UNet sample_size 8 x VAE factor 8
        [sample] = gen.generate(requests(1, size=32))
        assert set(shapes) == {(8, 8)}, "SD ran at 64 px, not at the detector's 32"
        assert sample.image.shape == (32, 32, 3) and sample.mask.shape == (32, 32) and sample.mask.any()
        assert sample.arrays["heatmap"].shape == (32, 32) and sample.extra["resolution"] == 64
        shapes.clear()
        gen = DeltaDenoGenerator(DeltaDenoConfig(steps=4, strength=1.0, resolution=128))
        gen.setup(GenerationContext("mvtec_ad", "bottle", 32, model="tiny"), pipeline=pipe)
        gen.generate(requests(1, size=32))
        assert set(shapes) == {(16, 16)}
    finally:
        hook.remove()


def test_resize_mask_keeps_half_covered_pixels_and_never_empties():
    from anobench.generators.deltadeno import resize_mask

    mask = np.zeros((64, 64), bool)
    mask[8:24, 8:24] = True
    assert resize_mask(mask, 32).sum() == 64  # 16x16 -> 8x8
    tiny = np.zeros((64, 64), bool)
    tiny[0, 0] = True
    assert resize_mask(tiny, 16).sum() == 1


def test_fp16_only_folder_loads_through_its_variant(tmp_path):
    from anobench.generators.deltadeno import only_variant_files
    from tiny_sd import as_stable_diffusion, tiny_sd_components

    folder = tmp_path / "fp16"
    as_stable_diffusion(tiny_sd_components()).save_pretrained(folder, variant="fp16")
    assert only_variant_files(folder) == "fp16"
    assert any(".fp16." in p.name for p in (folder / "unet").iterdir())
    pipe = load_pipeline(str(folder))  # picked up without --set variant
    assert pipe.unet.config.sample_size == 8
    assert load_pipeline(str(folder), variant="fp16").unet.dtype == torch.float32  # weights as saved, cast to dtype
    with pytest.raises(AnobenchError, match="cannot load"):
        load_pipeline(str(folder), variant="bf16")


MAGNETIC_TILE = ["blowhole", "break", "crack", "fray", "uneven"]


def test_prompts_follow_the_datasets_own_defect_names(tmp_path):
    mvtec_tile = category_prompts("mvtec_ad", "tile", ["crack", "glue_strip", "gray_stroke", "oil", "rough"])
    assert mvtec_tile == CATEGORIES["mvtec_ad"]["tile"]
    magnetic = category_prompts("mvtec_ad", "tile", MAGNETIC_TILE)  # Magnetic-tile in the MVTec layout
    assert sorted(magnetic.defects) == MAGNETIC_TILE and magnetic.object_name == "tile"
    assert magnetic.defects["blowhole"] == "blowhole" and magnetic.defects["crack"] == GENERIC_DEFECTS["crack"]
    assert "ceramic" not in magnetic.object_name and "glue_strip" not in magnetic.defects
    subset = category_prompts("mvtec_ad", "bottle", ["contamination"])  # a protocol that drops types
    assert list(subset.defects) == ["contamination"] and subset.object_name == "bottle"
    file = tmp_path / "prompts.yaml"
    file.write_text("tile:\n  object: magnetic tile\n  defects:\n    blowhole: a small blowhole\n")
    user = category_prompts("mvtec_ad", "tile", MAGNETIC_TILE, prompt_file=str(file))
    assert user.object_name == "magnetic tile" and user.defects == {"blowhole": "a small blowhole"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("object: x\n")
    with pytest.raises(AnobenchError, match="needs 'defects"):
        category_prompts("mvtec_ad", "tile", prompt_file=str(bad))
    with pytest.raises(AnobenchError, match="not found"):
        category_prompts("mvtec_ad", "tile", prompt_file=str(tmp_path / "none.yaml"))


def test_magnetic_tile_folders_give_its_own_prompts(shared_data, pipe):
    from anobench.datasets import load_category

    root = shared_data / "magnetic_tile"
    if not (root / "tile").is_dir():
        pytest.skip(f"{root / 'tile'} not found")
    data = load_category("mvtec_ad", root, "tile")
    gen = DeltaDenoGenerator(DeltaDenoConfig(steps=2))
    gen.setup(GenerationContext("mvtec_ad", "tile", 64, model="tiny", defect_types=data.defect_types), pipeline=pipe)
    assert sorted(gen.prompts.defects) == MAGNETIC_TILE and gen.normal_prompt == "a photo of a tile"


def test_alignment_changes_nothing_with_the_default_suffix_templates(pipe):
    """Why the docstring drops the claim: CLIP is causal, so the shared prefix is already equal."""
    from anobench.generators.deltadeno.prompts import encode_texts

    tok, enc = pipe.tokenizer, pipe.text_encoder
    config = DeltaDenoConfig()
    normal = config.normal_template.format(object="bottle")
    anomaly = config.anomaly_template.format(object="bottle", anomaly=PHRASE)
    refined = pipe.encode_prompts(normal, [anomaly], [PHRASE], token_weight=1.0)
    raw = encode_texts(tok, enc, [anomaly])[0]
    assert torch.equal(refined.anomaly[0], raw)
    n_prefix = len(token_ids(tok, normal)) - 1  # BOS .. "bottle"
    assert torch.equal(raw[:n_prefix], refined.normal[0, :n_prefix])


def test_max_area_caps_the_mask():
    from anobench.generators.deltadeno.pipeline import localise

    delta = torch.rand(2, 8, 8) * 0.01
    delta[:, :6, :] += 1.0  # 75% of the map above any threshold
    _, mask, _ = localise(delta, (64, 64), 8, 0.0, 0.5, 0.005)
    assert mask[0].float().mean() >= 0.7
    heat, capped, _ = localise(delta, (64, 64), 8, 0.0, 0.5, 0.005, max_area=0.25)
    assert int(capped[0].sum()) == 1024
    assert heat[0][capped[0]].min() >= heat[0][~capped[0]].max()  # the highest-scoring pixels kept
    with pytest.raises(AnobenchError, match="max_area"):
        DeltaDenoConfig(max_area=0.001).validate()
