"""DH-Diff training-step time: the DH-Diff UNet against the same UNet without DDA/SSM.

Both models are the same diffusers ``UNet2DConditionModel`` over the joint latent (image and
annotation as one batch of 2B). The baseline is the paper's Table VIII row (1): concatenated
image/annotation self-attention and plain text cross-attention in every block, no reference
encoder. DH-Diff adds the paper's placement (DDA + SSM in every encoder block and every other
decoder block) and the Siamese reference encoder that feeds DDA. A step is forward, eq. 8 loss,
backward and an Adam update on random latents. Prints median step times and the ratio
(DH-Diff / baseline; the issue's budget is <= 1.5x).

    python tests/perf/bench_dhdiff.py [--config small|sd-half] [--batch 8] [--steps 10] [--threads 1]

``small`` is the from-scratch CPU configuration (64 px, patch 4: 16x16x48 latent); ``sd-half``
is SD 1.5's block layout at half width on a 32x32 latent (the paper's 256 px), to see the ratio
on the SD architecture without its 860M parameters.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from anobench.generators.dhdiff.config import DHDiffConfig
from anobench.generators.dhdiff.model import DHDiffUNet, Placement, build_unet, small_unet_config


def unet_config(name: str) -> tuple[dict, int, int]:
    """(UNet config, latent channels, latent size) of a named benchmark configuration."""
    if name == "small":
        config = DHDiffConfig()
        channels = 3 * config.patch_size**2
        return small_unet_config(config, channels), channels, config.resolution // config.patch_size
    if name == "sd-half":
        return dict(
            sample_size=32, in_channels=4, out_channels=4,
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            block_out_channels=[160, 320, 640, 640], layers_per_block=2, attention_head_dim=8,
            cross_attention_dim=384, num_class_embeds=2,
        ), 4, 32
    raise SystemExit(f"unknown --config {name!r} (small, sd-half)")


def step_times(model: DHDiffUNet, batch: int, channels: int, size: int, text_dim: int, steps: int,
               warmup: int) -> list[float]:
    g = torch.Generator().manual_seed(0)
    z_i, z_a, z_r = (torch.randn(batch, channels, size, size, generator=g) for _ in range(3))
    noise_i, noise_a = torch.randn_like(z_i), torch.randn_like(z_a)
    text = torch.randn(batch, 16, text_dim, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    guidance = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    has = torch.arange(batch) % 2 == 0
    weights = torch.zeros(batch, 16)
    weights[:, 7:9] = 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        eps_i, eps_a = model(z_i, z_a, t, text, z_reference=z_r, guidance=guidance, has_guidance=has,
                             defect_weights=weights)
        loss = F.mse_loss(torch.cat([eps_i, eps_a], 1), torch.cat([noise_i, noise_a], 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, channels, size = unet_config(args.config)
    results = {}
    variants = [("baseline (no DDA/SSM)", Placement.baseline()), ("DH-Diff (paper placement)", Placement())]
    for name, placement in variants:
        torch.manual_seed(0)
        model = DHDiffUNet(build_unet(config), placement)
        n_params = sum(p.numel() for p in model.parameters())
        times = step_times(model, args.batch, channels, size, config["cross_attention_dim"], args.steps, args.warmup)
        results[name] = statistics.median(times)
        print(f"{name:<28} {n_params / 1e6:7.2f} M params  median step {results[name]:.3f} s "
              f"(min {min(times):.3f}, max {max(times):.3f}; batch {args.batch}, {channels}x{size}x{size} latent, "
              f"{args.threads} thread(s))")
    base, dh = results.values()
    print(f"ratio DH-Diff / baseline: {dh / base:.2f}x (budget <= 1.5x)")


if __name__ == "__main__":
    main()
