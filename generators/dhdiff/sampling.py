"""Generating a defect on a normal image with a trained DH-Diff bundle.

Image and annotation are denoised together (DDIM, deterministic) from seeded noise. The
anomaly is generated inside the raw mask's cells; outside them the image latent is held on
the forward-noised normal source and the annotation on "no anomaly" at every step (latent
inpainting with the *same* noise), and the reference latent is built by the training rule
``z_R = R * z_t + (1 - R) * noise``: during training the reference is the image cropped by the
raw mask and noised with the image's noise, which is exactly that. The written mask is the
annotation channel binarised.

Compositing (why the output is not the raw model output): the model runs at low resolution, so
its output is resized to the source's size and blended into the source only where the
annotation says "anomaly" (plus a thin feathered edge). The pixels that change are then the
pixels the mask marks, and everything else is the sharp original, so a detector trained on the
pairs learns the defect, not resampling blur. ``composite=raw`` pastes the whole raw-mask cells,
``composite=none`` returns the resized model output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from anobench.generators.dhdiff.checkpoint import DHDiffBundle
from anobench.generators.dhdiff.components import defect_weights, sampling_scheduler
from anobench.generators.dhdiff.config import DHDiffConfig
from anobench.generators.dhdiff.preprocess import cells_to_mask, point_guidance, prompt_for, resize_mask


@dataclass
class Defect:
    """One generated defect at the source's size."""

    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray  # bool HxW
    annotation: np.ndarray  # float32 HxW in [0, 1]: the soft annotation channel
    raw_mask: np.ndarray  # bool HxW
    prompt: str
    fallback_mask: bool = False


def _to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(image.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="area")
    return t


def _resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(t.shape[-2:]) == size:
        return t
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(t, size=size, mode=mode, **kwargs)


def _guidance(kind: str | None, raw: np.ndarray, control: np.ndarray | None, seed: int) -> np.ndarray | None:
    if kind is None:
        return None
    if kind == "raw":
        return raw.astype(np.float32)
    if control is None:
        return raw.astype(np.float32)  # detailed/points need a control mask; without one, the raw mask
    if kind == "detailed":
        return control.astype(np.float32)
    return point_guidance(control, np.random.default_rng([seed, 1]))


@torch.no_grad()
def denoise(bundle: DHDiffBundle, source: torch.Tensor, raw: torch.Tensor, prompt: str, prefix: str,
            normal_prompt: str, guidance: torch.Tensor | None, config: DHDiffConfig, seed: int,
            device: str = "cpu", reference: torch.Tensor | None = None):
    """Joint DDIM denoising of (image, annotation) inside ``raw``; returns decoded image and soft annotation.

    ``source`` is ``[1, 3, S, S]`` in [-1, 1] at model resolution, ``raw`` ``[1, 1, S, S]`` in {0, 1};
    ``reference``, when given, a real reference crop ``[1, 3, S, S]`` (0 outside the raw mask): the
    twin encoder then sees it noised with the image's noise, z_R = add_noise(E(crop), eps_I, t).
    """
    codec = bundle.codec
    x_src = codec.encode_image(source.to(device))
    y_none = codec.encode_annotation(torch.zeros_like(source[:, :1]).to(device))
    empty = codec.encode_image(torch.zeros_like(source).to(device))  # the reference outside the raw mask
    crop = codec.encode_image(reference.to(device)) if reference is not None else None
    keep = _resize(raw.to(device), tuple(x_src.shape[-2:]), "nearest")
    generator = torch.Generator().manual_seed(int(seed))
    noise_i = torch.randn(x_src.shape, generator=generator).to(device)
    noise_a = torch.randn(y_none.shape, generator=generator).to(device)
    scheduler = sampling_scheduler(bundle.scheduler_config, bundle.pixel_space)
    scheduler.set_timesteps(config.num_inference_steps, device=device)

    prompts, prefixes = [prompt], [prefix]
    if config.guidance_scale != 1.0:
        prompts, prefixes = [prompt, normal_prompt], [prefix, normal_prompt]  # defect, then normal prompt
    text = bundle.prompt_encoder(prompts)
    weights = defect_weights(bundle.prompt_encoder, prompts, prefixes).to(device)
    n = len(prompts)
    has = torch.tensor([guidance is not None] * n, device=device)
    g = (guidance if guidance is not None else torch.zeros_like(raw)).to(device).expand(n, -1, -1, -1)

    z_i = noise_i * scheduler.init_noise_sigma
    z_a = noise_a * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        t_batch = t.reshape(1).to(device)
        z_i = keep * z_i + (1 - keep) * scheduler.add_noise(x_src, noise_i, t_batch)
        z_a = keep * z_a + (1 - keep) * scheduler.add_noise(y_none, noise_a, t_batch)
        if crop is None:
            z_r = keep * z_i + (1 - keep) * scheduler.add_noise(empty, noise_i, t_batch)
        else:
            z_r = scheduler.add_noise(crop, noise_i, t_batch)
        eps_i, eps_a = bundle.backbone(z_i.expand(n, -1, -1, -1), z_a.expand(n, -1, -1, -1), t_batch.expand(n),
                                       text, z_reference=z_r.expand(n, -1, -1, -1), guidance=g,
                                       has_guidance=has, defect_weights=weights)
        if n == 2:
            eps_i = eps_i[1:] + config.guidance_scale * (eps_i[:1] - eps_i[1:])
            eps_a = eps_a[1:] + config.guidance_scale * (eps_a[:1] - eps_a[1:])
        joint = scheduler.step(torch.cat([eps_i, eps_a], 1), t, torch.cat([z_i, z_a], 1), eta=config.eta,
                               generator=generator).prev_sample
        z_i, z_a = joint[:, : z_i.shape[1]], joint[:, z_i.shape[1]:]
    z_i = keep * z_i + (1 - keep) * x_src
    z_a = keep * z_a + (1 - keep) * y_none
    return codec.decode_image(z_i).cpu(), codec.decode_annotation(z_a).cpu()


def _feathered(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Alpha: 1 on the mask, a Gaussian fall-off of ``sigma`` pixels outside it."""
    alpha = mask.astype(np.float32)
    if sigma <= 0:
        return alpha
    import cv2

    blurred = cv2.GaussianBlur(alpha, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    return np.maximum(alpha, np.clip(blurred * 2, 0, 1))


def generate_defect(bundle: DHDiffBundle, source: np.ndarray, cells: np.ndarray, defect_type: str,
                    config: DHDiffConfig, seed: int, control_mask: np.ndarray | None = None,
                    device: str = "cpu", allow_fallback: bool = False,
                    reference_image: np.ndarray | None = None) -> Defect:
    """A new ``defect_type`` defect in the raw-mask ``cells`` of ``source`` (uint8 HxWx3).

    With ``allow_fallback``, an annotation that stays below ``min_mask_pixels`` is replaced by its
    strongest part inside the raw mask (the caller's last attempt: a sample must have a mask).
    ``reference_image`` (uint8 HxWx3, already under the cells' symmetry): the real reference
    anomaly whose raw-mask crop conditions the Siamese encoder.
    """
    size = bundle.resolution
    unit = bundle.latent_unit
    out_hw = source.shape[:2]
    raw_model = cells_to_mask(cells, size, unit)
    raw_out = cells_to_mask(cells, out_hw)
    control_model = resize_mask(control_mask, size) if control_mask is not None else None
    guidance = _guidance(config.guidance, raw_model, control_model, seed)
    prompt, prefix = prompt_for(bundle.meta["category"], defect_type)
    normal_prompt = prompt_for(bundle.meta["category"])[0]
    image, annotation = denoise(
        bundle, _to_tensor(source, size), torch.from_numpy(raw_model.astype(np.float32))[None, None], prompt, prefix,
        normal_prompt, None if guidance is None else torch.from_numpy(guidance)[None, None], config, seed, device,
        reference=None if reference_image is None else _to_tensor(reference_image, size) * torch.from_numpy(
            raw_model.astype(np.float32))[None, None],
    )
    annotation_out = _resize(annotation, out_hw, "bilinear")[0, 0].numpy().clip(0, 1)
    annotation_out = np.where(raw_out, annotation_out, 0.0).astype(np.float32)
    mask = annotation_out > config.mask_threshold
    fallback = allow_fallback and int(mask.sum()) < config.min_mask_pixels
    if fallback:
        mask = fallback_mask(annotation_out, raw_out)
    generated = _resize(image, out_hw, "bicubic")[0].permute(1, 2, 0).numpy()
    generated = (generated.clip(-1, 1) + 1) * 127.5
    src = source.astype(np.float32)
    if config.composite == "annotation":
        alpha = _feathered(mask, config.feather)
    elif config.composite == "raw":
        alpha = raw_out.astype(np.float32)
    else:
        alpha = np.ones(out_hw, dtype=np.float32)
    blended = src * (1 - alpha[..., None]) + generated * alpha[..., None]
    return Defect(
        image=np.clip(np.round(blended), 0, 255).astype(np.uint8),
        mask=mask,
        annotation=annotation_out,
        raw_mask=raw_out,
        prompt=prompt,
        fallback_mask=fallback,
    )


def fallback_mask(annotation: np.ndarray, raw_mask: np.ndarray) -> np.ndarray:
    """When every attempt's annotation stays below threshold: its strongest half inside the raw mask."""
    values = np.where(raw_mask, annotation, -1.0)
    top = float(values.max())
    if top <= 0:
        return raw_mask.copy()
    return values >= top * 0.5
