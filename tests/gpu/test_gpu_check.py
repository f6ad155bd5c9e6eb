"""The GPU check (issue 12): detector AMP speed-up, DeltaDeno and DH-Diff at SD-1.5 scale.

Run on a CUDA machine with ``pytest tests/gpu -m gpu -s`` (about 5 minutes on one H200): each
test prints seconds per step and peak GPU memory. Without CUDA every test is skipped with the
reason. SD-1.5 here is the real architecture with random weights (``../shared/assets``
configs): the numbers are cost, not image quality.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

GiB = 2**30


def report(name: str, seconds_per_step: float, extra: str = "") -> None:
    peak = torch.cuda.max_memory_allocated() / GiB
    print(f"\n[gpu-check] {name}: {seconds_per_step:.3f} s/step, peak GPU memory {peak:.2f} GiB {extra}".rstrip())


def test_detector_200_amp_steps_on_bottle_are_5x_the_cpu(shared_data, tmp_path):
    from anobench.detectors.train import train_detector
    from anobench.generation import generate_dataset

    if not (shared_data / "dtd" / "images").is_dir():
        pytest.skip("needs ../shared/data/dtd/images for the DRAEM set")
    root = shared_data / "mvtec_ad"
    gen = generate_dataset("draem", "mvtec_ad", root, "bottle", 48, tmp_path / "gen", seed=0,
                           anomaly_source=shared_data / "dtd" / "images", image_size=256, device="cpu",
                           progress=False).folder
    common = {"val_every": "1000", "checkpoint_every": "1000", "max_val_samples": "4"}
    cpu = train_detector("mvtec_ad", root, "bottle", gen, tmp_path / "cpu", overrides={**common, "steps": "12"},
                         progress=False, device="cpu")
    cpu_rate = 12 * 8 / cpu.seconds
    gpu = train_detector("mvtec_ad", root, "bottle", gen, tmp_path / "gpu", overrides={**common, "steps": "200"},
                         progress=False, device="cuda", precision="auto")
    gpu_rate = 200 * 8 / gpu.seconds
    run = json.loads((tmp_path / "gpu" / "run.json").read_text())
    report("detector unet 256px batch 8, 200 steps", gpu.seconds / 200,
           f"({run['execution']['precision']}, {run['execution']['workers']} workers; {gpu_rate:.0f} samples/s "
           f"vs CPU {cpu_rate:.1f} samples/s = {gpu_rate / cpu_rate:.1f}x)")
    assert run["execution"]["device"].startswith("cuda") and run["execution"]["precision"] in ("bf16", "fp16")
    losses = [float(r.split(",")[1]) for r in (tmp_path / "gpu" / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 200 and np.isfinite(losses).all() and np.mean(losses[-20:]) < np.mean(losses[:20])
    assert gpu_rate >= 5 * cpu_rate


def test_deltadeno_full_sd15_architecture_512px_10_steps():
    from tiny_sd import sd15_components

    from anobench.generators.deltadeno.pipeline import DeltaDenoPipeline

    pipe = DeltaDenoPipeline(**sd15_components(seed=0)).to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    source = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)]
    kwargs = dict(num_inference_steps=10, strength=1.0, generator=[torch.Generator("cpu").manual_seed(0)])
    pipe(source, "a photo of a bottle", ["a photo of a bottle with a crack"], ["a crack"],
         **{**kwargs, "num_inference_steps": 1})  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = pipe(source, "a photo of a bottle", ["a photo of a bottle with a crack"], ["a crack"], **kwargs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    report("deltadeno SD-1.5 fp16 512px, 10 steps, 1 image", seconds / 10, f"({seconds:.1f} s per image)")
    assert out.images.shape == (1, 512, 512, 3) and np.isfinite(out.images).all()
    assert out.masks.shape == (1, 512, 512) and 0 < out.masks.mean() < 1


def test_dhdiff_sd15_layout_20_steps_batch_8_low_memory():
    """bf16 autocast + gradient checkpointing, full UNet + twin encoder + DDA/SSM trained with Adam."""
    from tiny_sd import sd15_components

    from anobench.generators.dhdiff.checkpoint import DHDiffBundle
    from anobench.generators.dhdiff.components import ClipPromptEncoder, VaeCodec, training_scheduler
    from anobench.generators.dhdiff.config import DHDiffConfig
    from anobench.generators.dhdiff.model import DHDiffUNet, Placement
    from anobench.generators.dhdiff.preprocess import raw_mask_cells
    from anobench.generators.dhdiff.train import TrainingSet, make_batch, training_loss
    from anobench.devices import autocast, resolve_precision
    from diffusers import UNet2DConditionModel

    parts = sd15_components(seed=0)
    unet = UNet2DConditionModel.from_config(parts["unet"].config, num_class_embeds=2)  # + the domain label
    torch.nn.init.zeros_(unet.class_embedding.weight)
    config = DHDiffConfig(batch_size=8, sd_resolution=256, precision="auto", gradient_checkpointing=True)
    backbone = DHDiffUNet(unet, Placement.from_config(config))
    bundle = DHDiffBundle(config, backbone, ClipPromptEncoder(parts["tokenizer"], parts["text_encoder"]),
                          VaeCodec(parts["vae"]), dict(parts["scheduler"].config), {"resolution": 256})
    bundle.to("cuda")
    backbone.unet.enable_gradient_checkpointing()
    trainable = [p for p in bundle.trainable().parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    optimizer = torch.optim.Adam(trainable, lr=1e-5)
    rng = np.random.default_rng(0)
    anomalies, cells = [], []
    for _ in range(4):
        image = rng.uniform(-1, 1, (256, 256, 3)).astype(np.float32)
        mask = np.zeros((256, 256), bool)
        y, x = rng.integers(16, 180, 2)
        mask[y:y + 48, x:x + 48] = True
        anomalies.append((image, mask, "crack"))
        cells.append(("crack", raw_mask_cells(mask, 5, 8)))
    data = TrainingSet("bottle", anomalies, [anomalies[0][0]], cells)
    scheduler = training_scheduler(bundle.scheduler_config)
    precision = resolve_precision("cuda", "auto")
    times = []
    for step in range(20):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast("cuda", precision):
            loss, _ = training_loss(bundle, make_batch(data, config, 0, step, bundle.latent_unit), scheduler, "cuda")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        assert torch.isfinite(loss)
    report("dhdiff SD-1.5 layout 256px batch 8, 20 steps (bf16 autocast + checkpointing)",
           float(np.mean(times[2:])), f"({n_trainable / 1e6:.0f} M trainable parameters, {precision.name})")
    assert n_trainable > 1.0e9
