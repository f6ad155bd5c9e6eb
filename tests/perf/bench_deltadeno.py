"""Per-image cost of DeltaDeno against plain diffusers img2img with the same model, steps and guidance.

DeltaDeno's second branch adds rows to the UNet batch during the accumulation window (one
shared latent: [uncond, normal, anomaly] instead of [uncond, cond]), plus a second VAE decode
for the reconstruction background; everything else should be near free. Target: <= 2.2x.

    python tests/perf/bench_deltadeno.py                 # tiny model and SD 1.5 architecture
    python tests/perf/bench_deltadeno.py --only tiny --repeats 5

Both pipelines share the very same components (random weights: the cost does not depend on
them), run interleaved, and the median of ``--repeats`` timed calls is reported. The SD 1.5
run needs ~5 GB of RAM.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_sd import sd15_components, tiny_sd_components  # noqa: E402

NORMAL = "a photo of a bottle"
ANOMALY = "a photo of a bottle with a large crack"
PHRASE = "a large crack"


def source(size: int, batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.random((size, size, 3)) * 255).astype(np.uint8) for _ in range(batch)]


def bench(label: str, components: dict, size: int, steps: int, guidance: float, strength: float,
          batch: int, repeats: int) -> float:
    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

    from anobench.generators.deltadeno.pipeline import DeltaDenoPipeline

    components = {**components, "scheduler": DDIMScheduler.from_config(components["scheduler"].config)}
    unet = components["unet"]
    plain_processors = dict(unet.attn_processors)
    img2img = StableDiffusionImg2ImgPipeline(**components, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    deltadeno = DeltaDenoPipeline(**components)  # wraps the cross-attention processors of the shared UNet
    biased_processors = dict(unet.attn_processors)
    for p in (img2img, deltadeno):
        p.set_progress_bar_config(disable=True)
    images = source(size, batch)
    image_tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0

    def run_img2img():
        unet.set_attn_processor(dict(plain_processors))  # it consumes the dict
        img2img(prompt=[ANOMALY] * batch, image=image_tensor, strength=strength, num_inference_steps=steps,
                guidance_scale=guidance, output_type="np",
                generator=[torch.Generator().manual_seed(i) for i in range(batch)])

    def run_deltadeno():
        unet.set_attn_processor(dict(biased_processors))
        deltadeno(images, NORMAL, [ANOMALY] * batch, [PHRASE] * batch, strength=strength,
                  num_inference_steps=steps, guidance_scale=guidance,
                  generator=[torch.Generator().manual_seed(i) for i in range(batch)])

    times = {"img2img": [], "deltadeno": []}
    run_img2img(), run_deltadeno()  # warm-up
    for _ in range(repeats):
        for name, fn in (("img2img", run_img2img), ("deltadeno", run_deltadeno)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / batch)
    plain, ours = statistics.median(times["img2img"]), statistics.median(times["deltadeno"])
    ratio = ours / plain
    print(f"{label:<26} {size:>4}px  steps {steps}  batch {batch}  img2img {plain * 1000:9.1f} ms/img  "
          f"deltadeno {ours * 1000:9.1f} ms/img  ratio {ratio:.2f}x  {'OK' if ratio <= 2.2 else 'OVER 2.2x'}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("tiny", "sd15"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--strength", type=float, default=1.0, help="1.0 runs all --steps steps in both")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), guidance {args.guidance}, "
          f"strength {args.strength}, DeltaDeno default window/inpainting")
    with torch.no_grad():
        if args.only in (None, "tiny"):
            bench("tiny random SD", tiny_sd_components(), args.size, args.steps, args.guidance, args.strength,
                  args.batch, args.repeats)
        if args.only in (None, "sd15"):
            bench("SD 1.5 arch (random)", sd15_components(), args.size, args.steps, args.guidance, args.strength,
                  args.batch, max(1, min(args.repeats, 3)))


if __name__ == "__main__":
    main()
