"""DeltaDeno (Xu et al., arXiv 2511.16920) as a self-contained diffusers pipeline.

Zero-shot and training-free, on a pretrained Stable Diffusion (1.x or 2.x):

1. The normal source image is encoded (VAE mean) and noised to the strength's timestep with
   one noise draw: the shared starting latent of both branches, which follow one DDIM schedule.
   The *normal* branch is conditioned on "a photo of a {object}", the *anomaly* branch on
   "a photo of a {object} with {anomaly}" (refined token by token, see ``prompts.py``).
2. Every denoising step is ONE batched UNet call. During the accumulation window it holds both
   branches and the unconditional rows of classifier-free guidance, all on the same latent (the
   anomaly branch's, which starts as the shared noised source), so each per-step delta is the
   prompt pair's effect alone, not the drift between two trajectories; the unconditional row is
   then shared too (3 rows per sample instead of 4).
3. Delta attribution: during the window, the per-pixel L2 norm (over latent channels) of the
   difference between the branches' guided noise predictions is summed into a localisation
   map. At the window's end the map is smoothed (Gaussian), min-max normalised, upsampled to
   image resolution and thresholded: that is the mask.
4. Mask-guided latent inpainting: from the inpainting start on, after every scheduler step the
   anomaly latent outside the mask is replaced by the source latent noised to the next timestep
   (with the shared noise); after the last step, by the clean source latent. Outside the window
   the normal branch's prediction is not used, so those steps run the anomaly branch alone.
5. Spatial attention bias: from the mask on, the anomaly tokens' cross-attention logits are
   raised inside the mask only (``attention.py``).

The decoded image is composited at image resolution with the same mask, so pixels outside it
are exactly the VAE reconstruction of the source (``background="reconstruction"``), the source
itself (``"source"``), or the decoded latent as is (``"latent"``, the bare latent inpainting).

Batch layout of the UNet call (B samples, one latent z each), rows in this order: while the
window is open ``[uncond x z, normal x z, anomaly x z]``, afterwards ``[uncond x z, anomaly x z]``
(the uncond rows are absent without guidance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from anobench.generators.deltadeno.attention import SpatialBias, install_spatial_bias
from anobench.generators.deltadeno.prompts import RefinedPrompts, refine_prompts

Background = Literal["reconstruction", "source", "latent"]


@dataclass(frozen=True)
class StepPlan:
    """What each of the ``num_steps`` denoising steps actually run does (indices into those steps).

    The window ``[window_start, window_end)`` accumulates deltas; the mask exists after step
    ``window_end - 1``; latents entering step ``k >= inpaint_from`` (and the final latent) follow
    the source outside the mask. Fractions are of the steps run, so defaults hold for any
    ``steps`` and ``strength``; the window always has at least one step.
    """

    num_steps: int
    window_start: int
    window_end: int
    inpaint_from: int

    @classmethod
    def from_fractions(cls, num_steps: int, window: tuple[float, float], inpaint_start: float) -> "StepPlan":
        if num_steps < 1:
            raise ValueError("no denoising step to run: raise steps or strength")
        start = min(int(math.floor(window[0] * num_steps + 1e-9)), num_steps - 1)
        end = min(max(start + 1, int(math.ceil(window[1] * num_steps - 1e-9))), num_steps)
        inpaint = min(max(end, int(math.ceil(inpaint_start * num_steps - 1e-9))), num_steps)
        return cls(num_steps, start, end, inpaint)


@dataclass
class DeltaDenoOutput(BaseOutput):
    """Per sample: the edited image, its mask and the localisation map, all at image resolution."""

    images: np.ndarray  # (B, H, W, 3) float32 in [0, 1]
    masks: np.ndarray  # (B, H, W) bool: the mask that guided inpainting
    heatmaps: np.ndarray  # (B, H, W) float32 in [0, 1]: the normalised, smoothed delta map
    latent_masks: np.ndarray  # (B, h, w) bool: the mask on the latent grid (covers ``masks``)
    reconstructions: np.ndarray | None = None  # (B, H, W, 3) VAE reconstruction of each source
    plan: StepPlan | None = None


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, h, w) with edge-replicating borders.

    Replicating (not reflecting, as torchvision does) keeps a region near the border from
    being mirrored onto the border row, which would grow the mask there.
    """
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def localise(delta: torch.Tensor, image_size: tuple[int, int], scale: int, sigma: float,
             threshold: float, min_area: float, max_area: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accumulated deltas (B, h, w) -> (heatmap (B, H, W) in [0, 1], mask (B, H, W), latent mask (B, 1, h, w)).

    The map is smoothed on the latent grid, min-max normalised per image, upsampled bilinearly
    and thresholded. A mask smaller than ``min_area`` (a fraction of the image) is grown to the
    ``min_area`` highest-scoring pixels, so every sample has an anomaly; one larger than
    ``max_area`` keeps only its ``max_area`` highest-scoring pixels. The latent mask marks
    every latent cell touching the pixel mask.
    """
    x = gaussian_smooth(delta[:, None].float(), sigma)
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    heat = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)[:, 0]
    mask = heat > threshold
    least = max(1, int(math.ceil(min_area * image_size[0] * image_size[1])))
    most = max(least, int(math.floor(max_area * image_size[0] * image_size[1])))
    for i in range(mask.shape[0]):
        area = int(mask[i].sum())
        if area < least or area > most:
            top = torch.topk(heat[i].flatten(), least if area < least else most).indices
            mask[i].zero_()
            mask[i].view(-1)[top] = True
    latent = F.max_pool2d(mask[:, None].float(), scale)
    return heat, mask, latent


class DeltaDenoPipeline(DiffusionPipeline):
    """Zero-shot anomaly generation by delta-denoising attribution on Stable Diffusion components.

    Load like any SD checkpoint (``DeltaDenoPipeline.from_pretrained(folder_or_hub_id)``); the
    checkpoint's scheduler is replaced by a DDIM scheduler with the same betas. Cross-attention
    processors are wrapped once for the spatial bias (inactive outside DeltaDeno's own calls).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: UNet2DConditionModel, scheduler) -> None:
        super().__init__()
        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(f"DeltaDeno needs a text-to-image UNet ({vae.config.latent_channels} input channels), "
                             f"got {unet.config.in_channels} (an inpainting checkpoint?)")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.spatial_bias = SpatialBias()
        self.num_cross_attention_layers = install_spatial_bias(self.unet, self.spatial_bias)
        self._prompt_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------- pieces

    def encode_prompts(self, normal_prompt: str, anomaly_prompts: Sequence[str], anomaly_phrases: Sequence[str],
                       token_weight: float) -> RefinedPrompts:
        """Refined text conditioning (cached per prompt string: a run reuses a few prompts)."""
        if len(self._prompt_cache) > 256:
            self._prompt_cache.clear()
        return refine_prompts(self.tokenizer, self.text_encoder, normal_prompt, anomaly_prompts, anomaly_phrases,
                              token_weight, cache=self._prompt_cache)

    def _image_tensor(self, images) -> torch.Tensor:
        """uint8 (B, H, W, 3) arrays -> float (B, 3, H, W) in [-1, 1] on the pipeline's device."""
        if isinstance(images, torch.Tensor):
            x = images.float()
        else:
            x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        if h % self.vae_scale_factor or w % self.vae_scale_factor:
            raise ValueError(f"image size {h}x{w} must be a multiple of {self.vae_scale_factor}")
        return (x * 2 - 1).to(self._execution_device, self.vae.dtype)

    @torch.no_grad()
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent of an image batch in [-1, 1] (the posterior mean, scaled)."""
        return self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], (B, 3, H, W) float32."""
        x = self.vae.decode(z / self.vae.config.scaling_factor).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def _epsilon(self, model_output: torch.Tensor, sample: torch.Tensor, t) -> torch.Tensor:
        """The noise prediction, whatever the UNet predicts (epsilon, v or sample)."""
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return model_output
        alpha = self.scheduler.alphas_cumprod.to(sample.device)[int(t)].to(sample.dtype)
        if kind == "v_prediction":
            return alpha.sqrt() * model_output + (1 - alpha).sqrt() * sample
        if kind == "sample":
            return (sample - alpha.sqrt() * model_output) / (1 - alpha).sqrt()
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def timesteps_for(self, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The img2img schedule: the last ``int(steps * strength)`` of ``steps`` DDIM timesteps."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        init = min(int(num_inference_steps * strength), num_inference_steps)
        return self.scheduler.timesteps[num_inference_steps - init:]

    # ------------------------------------------------------------------------- the method

    @torch.no_grad()
    def __call__(
        self,
        images,
        normal_prompt: str,
        anomaly_prompts: Sequence[str],
        anomaly_phrases: Sequence[str],
        *,
        strength: float = 0.75,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        window: tuple[float, float] = (0.0, 0.5),
        threshold: float = 0.5,
        smooth_sigma: float = 0.5,
        inpaint_start: float = 0.5,
        token_weight: float = 1.5,
        attention_bias: float = 1.0,
        min_area: float = 0.005,
        max_area: float = 1.0,
        background: Background = "reconstruction",
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> DeltaDenoOutput:
        """Edit each source image into an anomalous one; see the module docstring for the steps.

        ``images``: uint8 (H, W, 3) arrays (or a float (B, 3, H, W) tensor in [0, 1]);
        ``anomaly_prompts[i]`` must contain ``anomaly_phrases[i]``. Pass one ``torch.Generator``
        per image to make each sample independent of the batch it is in.
        """
        device = self._execution_device
        x = self._image_tensor(images)
        b = x.shape[0]
        if len(anomaly_prompts) != b or len(anomaly_phrases) != b:
            raise ValueError(f"{b} images need {b} anomaly prompts and phrases")
        if background not in ("reconstruction", "source", "latent"):
            raise ValueError(f"unknown background {background!r}")
        dtype = self.unet.dtype
        do_cfg = guidance_scale > 1.0

        z0 = self.encode_image(x).to(dtype)
        text = self.encode_prompts(normal_prompt, anomaly_prompts, anomaly_phrases, token_weight)
        uncond, normal = text.uncond.to(dtype), text.normal.to(dtype)
        anomaly, anomaly_tokens = text.anomaly.to(dtype), text.anomaly_tokens
        no_tokens = torch.zeros_like(anomaly_tokens)

        timesteps = self.timesteps_for(num_inference_steps, strength)
        plan = StepPlan.from_fractions(len(timesteps), window, inpaint_start)
        noise = randn_tensor(z0.shape, generator=generator, device=device, dtype=dtype)
        latents = self.scheduler.add_noise(z0, noise, timesteps[:1].repeat(b))

        delta = torch.zeros(b, *z0.shape[-2:], device=device, dtype=torch.float32)
        heat = mask = latent_mask = None
        self.spatial_bias.bias = attention_bias
        try:
            for i, t in enumerate(self.progress_bar(timesteps)):
                in_window = plan.window_start <= i < plan.window_end
                # conditioning rows: [normal, anomaly] in the window, else [anomaly]; uncond first
                cond = [normal.expand(b, -1, -1), anomaly] if in_window else [anomaly]
                tokens = [no_tokens, anomaly_tokens] if in_window else [anomaly_tokens]
                if do_cfg:
                    cond.insert(0, uncond.expand(b, -1, -1))
                    tokens.insert(0, no_tokens)
                rows = len(cond)
                if latent_mask is not None:
                    self.spatial_bias.set(torch.cat(tokens), latent_mask.repeat(rows, 1, 1, 1))
                else:
                    self.spatial_bias.clear()
                model_in = self.scheduler.scale_model_input(latents.repeat(rows, 1, 1, 1), t)
                out = self.unet(model_in, t, encoder_hidden_states=torch.cat(cond), return_dict=False)[0]
                outs = list(out.chunk(rows))
                if do_cfg:
                    out_uncond = outs.pop(0)
                    outs = [out_uncond + guidance_scale * (o - out_uncond) for o in outs]
                pred = outs[-1]  # the anomaly branch drives the latent

                if in_window:
                    eps_normal = self._epsilon(outs[0], latents, t)
                    eps_anomaly = self._epsilon(pred, latents, t)
                    delta += (eps_anomaly.float() - eps_normal.float()).norm(dim=1)

                latents = self.scheduler.step(pred, t, latents, return_dict=False)[0]

                if i == plan.window_end - 1:
                    heat, mask, latent_mask = localise(delta, tuple(x.shape[-2:]), self.vae_scale_factor,
                                                       smooth_sigma, threshold, min_area, max_area)
                    latent_mask = latent_mask.to(dtype)
                if latent_mask is not None and i + 1 >= plan.inpaint_from:
                    if i + 1 < len(timesteps):
                        source = self.scheduler.add_noise(z0, noise, timesteps[i + 1:i + 2].repeat(b))
                    else:
                        source = z0
                    latents = latent_mask * latents + (1 - latent_mask) * source
        finally:
            self.spatial_bias.clear()

        recon = None
        if background == "reconstruction":
            decoded, recon = self.decode_latents(torch.cat([latents, z0])).chunk(2)
        else:
            decoded = self.decode_latents(latents)
        pixel_mask = mask[:, None].to(decoded.dtype)
        if background == "reconstruction":
            decoded = pixel_mask * decoded + (1 - pixel_mask) * recon
        elif background == "source":
            decoded = pixel_mask * decoded + (1 - pixel_mask) * (x.float() / 2 + 0.5)

        def hwc(t: torch.Tensor) -> np.ndarray:
            return t.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)

        return DeltaDenoOutput(
            images=hwc(decoded),
            masks=mask.cpu().numpy(),
            heatmaps=heat.cpu().numpy().astype(np.float32),
            latent_masks=latent_mask[:, 0].bool().cpu().numpy(),
            reconstructions=hwc(recon) if recon is not None else None,
            plan=plan,
        )
