"""The ``deltadeno`` generator: DeltaDeno (arXiv 2511.16920), zero-shot anomalies from Stable Diffusion.

No real anomaly is seen and nothing is trained: a pretrained SD (``--model``: a local diffusers
folder or a hub id in the local cache) edits each normal image, finding where to put the defect
from the difference between a normal and an anomaly prompt (``pipeline.py``). Per category, the
object and defect names come from ``prompts.py`` (keyed by the dataset's own defect folders, or
a ``prompt_file``); the defect of a sample is drawn with its seed unless ``anomaly`` fixes it.

SD runs at its own resolution (``resolution``; default the model's native sample size, 512 px
for SD 1.5): sources are resized up to it and the edited image, mask and heat map are resized
back to the detector's ``--image-size`` afterwards (area averaging; the mask is the pixels at
least half covered by the native mask). Half-precision-only folders load through ``variant``.

Importing this package is cheap: torch and diffusers load in ``setup``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

from anobench.errors import AnobenchError
from anobench.generators.base import (
    GeneratedSample,
    GenerationContext,
    Generator,
    GeneratorNeeds,
    SampleRequest,
    register_generator,
)
from anobench.generators.deltadeno.prompts import CategoryPrompts, category_prompts, resolve_anomaly

MISSING_WEIGHTS = ("deltadeno needs Stable Diffusion weights: pass --model /path/to/diffusers-folder "
                   "or a hub id cached locally (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)")


@dataclass
class DeltaDenoConfig:
    """DeltaDeno's knobs. Step-valued knobs are fractions of the denoising steps actually run
    (``int(steps * strength)``), so they stay valid when ``steps`` or ``strength`` change."""

    object_name: Optional[str] = None  # None: the category's default (prompts.py)
    anomaly: Optional[str] = None  # a defect type of the category or free text; None: drawn per sample
    normal_template: str = "a photo of a {object}"
    anomaly_template: str = "a photo of a {object} with {anomaly}"
    strength: float = 0.75  # img2img strength: how far the source is noised
    steps: int = 50  # DDIM steps for strength 1
    guidance: float = 7.5  # classifier-free guidance scale (<= 1 disables guidance)
    window: tuple[float, float] = (0.0, 0.5)  # delta accumulation window [start, end)
    threshold: float = 0.5  # on the min-max normalised map
    smooth_sigma: float = 0.5  # Gaussian smoothing of the map, in latent pixels (0: none)
    min_area: float = 0.005  # smallest mask, as a fraction of the image (never an empty mask)
    max_area: float = 0.25  # largest mask: a larger thresholded region keeps its highest-scoring pixels
    resolution: Optional[int] = None  # SD's working size in px; None: the UNet's native sample size
    variant: Optional[str] = None  # weight file variant, e.g. fp16; None: fp16 if a folder holds only those
    prompt_file: Optional[str] = None  # YAML/JSON {object: ..., defects: {type: phrase}}; overrides the tables
    inpaint_start: float = 0.5  # latent inpainting from this fraction on (>= window end)
    token_weight: float = 1.5  # scale of the anomaly tokens' embeddings
    attention_bias: float = 1.0  # added to anomaly-token cross-attention logits inside the mask
    background: Literal["reconstruction", "source", "latent"] = "reconstruction"  # pixels outside the mask
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: float16 on CUDA
    # Batched kernels round differently for different batch sizes, so a sample's last bits (and,
    # rarely, a mask pixel at the threshold) depend on its batch. true (default): one sample per
    # pipeline call, byte-identical whatever --batch-size or a resume does; false batches samples,
    # faster on a GPU, identical only for the same batch composition.
    batch_invariant: bool = True

    def validate(self) -> None:
        if not 0.0 < self.strength <= 1.0:
            raise AnobenchError(f"strength must be in (0, 1], got {self.strength}")
        if self.steps < 1 or int(self.steps * self.strength) < 1:
            raise AnobenchError(f"steps * strength must give at least one step, got {self.steps} * {self.strength}")
        start, end = self.window
        if not 0.0 <= start < end <= 1.0:
            raise AnobenchError(f"window must satisfy 0 <= start < end <= 1, got {self.window}")
        if not end <= self.inpaint_start <= 1.0:
            raise AnobenchError(f"inpaint_start must lie in [window end, 1], got {self.inpaint_start}")
        if not 0.0 <= self.threshold < 1.0:
            raise AnobenchError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 < self.min_area < 1.0:
            raise AnobenchError(f"min_area must be in (0, 1), got {self.min_area}")
        if not self.min_area <= self.max_area <= 1.0:
            raise AnobenchError(f"max_area must be in [min_area, 1], got {self.max_area}")
        if self.resolution is not None and self.resolution < 64:
            raise AnobenchError(f"resolution must be >= 64 px, got {self.resolution}")
        if self.smooth_sigma < 0 or self.token_weight <= 0:
            raise AnobenchError("smooth_sigma must be >= 0 and token_weight > 0")
        if "{object}" not in self.normal_template or "{object}" not in self.anomaly_template \
                or "{anomaly}" not in self.anomaly_template:
            raise AnobenchError("normal_template needs {object}; anomaly_template needs {object} and {anomaly}")


def only_variant_files(folder: Path) -> str | None:
    """The variant (e.g. ``fp16``) of a diffusers folder whose UNet holds only variant weights."""
    names = [p.name for p in (folder / "unet").glob("diffusion_pytorch_model*")] if folder.is_dir() else []
    plain = [n for n in names if n.split(".")[1] in ("safetensors", "bin") or ".safetensors.index" in n]
    variants = {n.split(".")[1] for n in names if n not in plain}
    return variants.pop() if not plain and len(variants) == 1 else None


def load_pipeline(model: str | None, device: str = "cpu", dtype: str = "auto", variant: str | None = None):
    """Load a :class:`DeltaDenoPipeline` from a local folder or a locally cached hub id.

    ``variant`` picks weight files such as ``*.fp16.safetensors`` (the half-precision-only
    downloads); None picks it for a local folder that has nothing else. Nothing is downloaded
    unless ``ANOBENCH_ALLOW_DOWNLOAD=1``: without weights the run fails at once with one line
    saying what to pass.
    """
    if not model:
        raise AnobenchError(MISSING_WEIGHTS)
    from anobench.generators.sd_weights import downloads_allowed, resolve_sd_weights

    if not Path(model).expanduser().exists() and not downloads_allowed():
        model = str(resolve_sd_weights(model, "deltadeno"))  # a cached hub id: its snapshot folder
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise AnobenchError(f"{path}: not a diffusers Stable Diffusion folder (no model_index.json); "
                                "pass a folder saved by diffusers' save_pretrained")
        source = str(path)
        variant = variant or only_variant_files(path)
    else:
        source = model
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from anobench.generators.deltadeno.pipeline import DeltaDenoPipeline

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(
        dtype, torch.float16 if str(device).startswith("cuda") else torch.float32)
    kwargs = {} if torch_dtype == torch.float32 else {"torch_dtype": torch_dtype}
    if variant:
        kwargs["variant"] = variant
    if importlib.util.find_spec("accelerate") is None:
        kwargs["low_cpu_mem_usage"] = False  # avoids diffusers' warning; same result
    allow_download = os.environ.get("ANOBENCH_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes")
    with _quiet(diffusers_logging), _quiet(transformers_logging), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch_dtype -> dtype rename in newer diffusers
        try:
            pipe = DeltaDenoPipeline.from_pretrained(source, local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            if path.exists():
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise AnobenchError(f"{path}: cannot load Stable Diffusion weights ({reason})") from exc
            if not allow_download:
                raise AnobenchError(f"{MISSING_WEIGHTS}; {model!r} is neither a local folder nor a hub id in "
                                    f"the local Hugging Face cache") from exc
            pipe = DeltaDenoPipeline.from_pretrained(source, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@contextlib.contextmanager
def _quiet(logging_module):
    """Silence a library's loading progress bars and warnings while weights load."""
    bars_were_on = logging_module.is_progress_bar_enabled()
    verbosity = logging_module.get_verbosity()
    logging_module.disable_progress_bar()
    logging_module.set_verbosity_error()
    try:
        yield
    finally:
        logging_module.set_verbosity(verbosity)
        if bars_were_on:
            logging_module.enable_progress_bar()


@register_generator
class DeltaDenoGenerator(Generator):
    """DeltaDeno: two SD branches localise a defect by their denoising delta and inpaint it."""

    name = "deltadeno"
    version = "1"
    display_name = "DeltaDeno"
    description = ("DeltaDeno (arXiv 2511.16920): zero-shot, training-free SD editing; normal vs anomaly "
                   "prompt deltas give the mask that guides latent inpainting")
    config_class = DeltaDenoConfig
    needs = GeneratorNeeds(normal_images=True, reference_anomalies=False, pretrained_weights=True)
    edits_source = False  # the VAE round trip changes pixels outside the mask too
    dummy_overrides = {"steps": "4"}  # 3 DDIM steps at strength 0.75: delta window, then inpainting

    @classmethod
    def dummy_context(cls, folder: Path, size: int = 64, category: str = "disc") -> GenerationContext:
        """The demo context plus a tiny random Stable Diffusion folder (:mod:`anobench.tiny_sd`) as ``--model``."""
        import dataclasses

        from anobench.tiny_sd import save_tiny_sd

        context = super().dummy_context(folder, size, category)
        model = Path(folder) / "tiny_sd"
        if not (model / "model_index.json").is_file():
            save_tiny_sd(model)
        return dataclasses.replace(context, model=str(model))

    def setup(self, context: GenerationContext, pipeline=None) -> None:
        """Load the SD weights from ``context.model`` (or use ``pipeline``, already built)."""
        super().setup(context)
        self.config.validate()
        self.pipe = pipeline if pipeline is not None else load_pipeline(context.model, context.device,
                                                                        self.config.dtype, self.config.variant)
        self.pipe.set_progress_bar_config(disable=True)
        scale = self.pipe.vae_scale_factor
        self.resolution = self.config.resolution or int(self.pipe.unet.config.sample_size) * scale
        if self.resolution % scale:
            raise AnobenchError(f"deltadeno needs resolution to be a multiple of {scale}, got {self.resolution}")
        self.prompts: CategoryPrompts = category_prompts(context.dataset, context.category, context.defect_types,
                                                         self.config.prompt_file)
        self.object_name = self.config.object_name or self.prompts.object_name
        self.normal_prompt = self.config.normal_template.format(object=self.object_name)

    def choose_anomaly(self, request: SampleRequest) -> tuple[str, str]:
        """(defect type, phrase) of a sample: fixed by ``anomaly``, else drawn with the sample's seed."""
        if self.config.anomaly:
            return resolve_anomaly(self.prompts, self.config.anomaly)
        names = list(self.prompts.defects)
        name = names[int(request.rng().integers(len(names)))]
        return name, self.prompts.defects[name]

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        cfg = self.config
        chunks = [[r] for r in requests] if cfg.batch_invariant else [requests]
        return [sample for chunk in chunks for sample in self._generate_batch(chunk)]

    def _generate_batch(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        """One pipeline call for ``requests``; each sample's noise comes from its own seed."""
        import numpy as np
        import torch

        cfg = self.config
        chosen = [self.choose_anomaly(r) for r in requests]
        anomaly_prompts = [cfg.anomaly_template.format(object=self.object_name, anomaly=phrase) for _, phrase in chosen]
        try:
            out = self.pipe(
                [resize(r.source, self.resolution) for r in requests], self.normal_prompt, anomaly_prompts,
                [p for _, p in chosen],
                strength=cfg.strength, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance,
                window=tuple(cfg.window), threshold=cfg.threshold, smooth_sigma=cfg.smooth_sigma,
                inpaint_start=cfg.inpaint_start, token_weight=cfg.token_weight,
                attention_bias=cfg.attention_bias, min_area=cfg.min_area, max_area=cfg.max_area,
                background=cfg.background,
                generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            )
        except ValueError as exc:  # a prompt that does not fit, a size the VAE cannot take
            raise AnobenchError(f"deltadeno: {exc}") from exc
        skip = ("object_name", "anomaly", "dtype", "batch_invariant", "resolution", "variant", "prompt_file")
        knobs = {k: v for k, v in asdict(cfg).items() if k not in skip}
        knobs["window"] = list(cfg.window)
        size = self.context.image_size
        plan = out.plan
        samples = []
        for i, (request, (defect_type, phrase)) in enumerate(zip(requests, chosen)):
            image = resize(np.clip(np.rint(out.images[i] * 255.0), 0, 255).astype(np.uint8), size)
            mask = resize_mask(out.masks[i], size)
            heatmap = resize(np.clip(np.rint(out.heatmaps[i] * 255.0), 0, 255).astype(np.uint8), size)
            samples.append(GeneratedSample(
                image=image,
                mask=mask,
                defect_type=defect_type,
                prompt=anomaly_prompts[i],
                extra={
                    "normal_prompt": self.normal_prompt,
                    "object": self.object_name,
                    "anomaly": phrase,
                    **knobs,
                    "steps_run": plan.num_steps,
                    "window_steps": [plan.window_start, plan.window_end],
                    "inpaint_from_step": plan.inpaint_from,
                    "mask_area": round(float(mask.mean()), 6),
                    "resolution": self.resolution,
                    "model": self.context.model,
                },
                arrays={"heatmap": heatmap},
            ))
        return samples


def resize(image, size: int):
    """A uint8 image (H x W or H x W x 3) to ``size`` px: area averaging down, bicubic up; as is if equal."""
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    method = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=method)


def resize_mask(mask, size: int):
    """A bool mask to ``size`` px: pixels at least half covered (never empty if the mask was not)."""
    import cv2
    import numpy as np

    mask = mask.astype(bool)
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask
    cover = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    out = cover >= 0.5
    return out if out.any() or not mask.any() else cover > 0
