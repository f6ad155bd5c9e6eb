"""A DH-Diff model bundle (backbone, prompt encoder, codec, schedule) and its checkpoint folder.

A checkpoint folder written by ``train-generator`` holds::

    dhdiff.json          what was trained: architecture config, UNet config, vocabulary, category,
                         defect types, the references' raw-mask cell sets, step, seed, loss
    model.safetensors    trained weights (backbone incl. Siamese encoder, small prompt encoder)
    training_state.pt    weights + Adam state + step, for resuming (not needed to generate)
    loss.csv             per-step training loss

An SD-initialised checkpoint stores the trained UNet; the frozen VAE and CLIP text encoder are
read from the SD folder (recorded in ``dhdiff.json``, or ``--model`` at generation time).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anobench.config import config_from_dict, config_to_dict
from anobench.errors import AnobenchError
from anobench.generators.dhdiff.components import (
    ClipPromptEncoder,
    PatchCodec,
    VaeCodec,
    WordPromptEncoder,
    small_scheduler_config,
    words,
)
from anobench.generators.dhdiff.config import DHDiffConfig
from anobench.generators.dhdiff.model import (
    DHDiffUNet,
    Placement,
    apply_lora,
    build_unet,
    load_sd_unet,
    small_unet_config,
    trainable_state,
)
from anobench.generators.dhdiff.preprocess import prompt_for
from anobench.images import atomic_write_bytes, atomic_write_text

FORMAT = "anobench-dhdiff/1"
META_FILE = "dhdiff.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
LOSS_FILE = "loss.csv"


@dataclass
class DHDiffBundle:
    """Everything needed to train or sample DH-Diff for one category."""

    config: DHDiffConfig
    backbone: DHDiffUNet
    prompt_encoder: nn.Module
    codec: Any
    scheduler_config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pixel_space(self) -> bool:
        return self.codec.kind == "pixel"

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def grid_size(self) -> int:
        return int(self.config.grid_size)

    @property
    def latent_unit(self) -> int:
        """Pixels per latent cell: raw-mask cell edges snap to multiples of it."""
        return int(self.codec.factor)

    @property
    def defect_types(self) -> list[str]:
        return list(self.meta.get("defect_types", []))

    def reference_cells(self, defect_type: str | None = None) -> list[np.ndarray]:
        rows = self.meta.get("reference_cells", [])
        return [np.array(r["cells"], dtype=bool) for r in rows
                if defect_type is None or r["defect_type"] == defect_type]

    def trainable(self) -> nn.ModuleDict:
        """The modules whose weights training updates and checkpoints store."""
        modules = {"backbone": self.backbone}
        if isinstance(self.prompt_encoder, WordPromptEncoder):
            modules["prompt_encoder"] = self.prompt_encoder
        return nn.ModuleDict(modules)

    def to(self, device: str) -> "DHDiffBundle":
        self.backbone.to(device)
        self.prompt_encoder.to(device)
        if isinstance(self.codec, VaeCodec):
            self.codec.vae.to(device)
        return self


def _vocabulary(category: str, defect_types: list[str]) -> list[str]:
    vocab: set[str] = set()
    for defect in [None, *defect_types]:
        vocab.update(words(prompt_for(category, defect)[0]))
    return sorted(vocab)


def _check_sd_folder(model: str) -> Path:
    """A local diffusers SD folder, or a hub id's cached snapshot (the resolver DeltaDeno uses)."""
    from anobench.generators.sd_weights import resolve_sd_weights

    folder = resolve_sd_weights(model, "dhdiff --model (omit it for the small from-scratch model)")
    if not folder.is_dir():
        raise AnobenchError(f"--model {model}: not a folder; pass a diffusers Stable Diffusion folder")
    missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / sub).is_dir()]
    if missing:
        raise AnobenchError(f"--model {model}: not a diffusers Stable Diffusion folder (missing {', '.join(missing)}/)")
    return folder


def _sd_parts(model: str):
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = _check_sd_folder(model)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    scheduler_config = dict(DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config)
    return VaeCodec(vae), ClipPromptEncoder(tokenizer, text_encoder), scheduler_config


def build_bundle(config: DHDiffConfig, category: str, defect_types: list[str], model: str | None = None,
                 seed: int = 0) -> DHDiffBundle:
    """A fresh bundle: small from scratch, or initialised from the SD folder ``model``."""
    placement = Placement.from_config(config)
    if config.trained == "lora" and model is None:
        raise AnobenchError("trained=lora needs --model (a Stable Diffusion folder or hub id): "
                            "the small model is trained from scratch, in full")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model is None:
            codec = PatchCodec(config.patch_size)
            unet_config = small_unet_config(config, codec.latent_channels)
            unet = build_unet(unet_config)
            prompt_encoder = WordPromptEncoder(_vocabulary(category, defect_types), config.text_dim)
            scheduler_config = small_scheduler_config(config)
            resolution = config.resolution
            source = {"kind": "small"}
        else:
            codec, prompt_encoder, scheduler_config = _sd_parts(model)
            folder = _check_sd_folder(model)
            unet = load_sd_unet(str(folder))
            unet_config = dict(unet.config)
            resolution = config.sd_resolution
            source = {"kind": "sd", "model": str(folder.resolve()), "model_id": str(model)}
        backbone = DHDiffUNet(unet, placement, tied_reference=config.tied_reference)
        if config.trained == "lora":
            apply_lora(backbone, config.lora_rank)
    meta = {
        "format": FORMAT,
        "source": source,
        "resolution": resolution,
        "unet_config": json.loads(json.dumps(unet_config, default=list)),
        "vocabulary": getattr(prompt_encoder, "vocabulary", None),
        "category": category,
        "defect_types": list(defect_types),
    }
    return DHDiffBundle(config, backbone, prompt_encoder, codec, dict(scheduler_config), meta)


def save_checkpoint(bundle: DHDiffBundle, folder: Path, **meta_updates: Any) -> None:
    """Write the weights, then the description (atomically each): a reader never sees half a file."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in trainable_state(bundle.trainable(), bundle.config.trained).items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(state, metadata={"format": FORMAT}))
    bundle.meta.update(meta_updates)
    meta = dict(bundle.meta, config=config_to_dict(bundle.config), scheduler_config=bundle.scheduler_config)
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise AnobenchError(
            f"{folder}: not a dhdiff checkpoint (no {META_FILE}; train one with `anobench train-generator "
            "--generator dhdiff ...`)"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnobenchError(f"{path}: unreadable checkpoint description ({exc.msg})") from None
    if meta.get("format") != FORMAT:
        raise AnobenchError(f"{path}: unknown checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_checkpoint(folder: str | Path, model: str | None = None, device: str = "cpu") -> DHDiffBundle:
    """Rebuild a trained bundle from its checkpoint folder (``model`` overrides the recorded SD folder)."""
    folder = Path(folder)
    meta = read_meta(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise AnobenchError(f"{folder}: checkpoint has no {WEIGHTS_FILE} (training never reached a checkpoint)")
    fields = {f.name for f in dataclasses.fields(DHDiffConfig)}
    config = config_from_dict(DHDiffConfig, {k: v for k, v in meta["config"].items() if k in fields})
    source = meta["source"]
    from diffusers import UNet2DConditionModel

    unet = None
    if source["kind"] == "small":
        codec = PatchCodec(config.patch_size)
        prompt_encoder = WordPromptEncoder(meta["vocabulary"], config.text_dim)
    else:
        sd_folder = model or source.get("model")
        if sd_folder and not Path(sd_folder).is_dir() and source.get("model_id"):
            sd_folder = str(_check_sd_folder(source["model_id"]))  # the hub id's cached snapshot
        if not sd_folder or not Path(sd_folder).is_dir():
            raise AnobenchError(
                f"{folder}: this checkpoint was trained from Stable Diffusion at {source.get('model')}, "
                "which is not on disk: pass its folder with --model"
            )
        codec, prompt_encoder, _ = _sd_parts(sd_folder)
        if config.trained == "lora":
            unet = load_sd_unet(sd_folder)  # the frozen base LoRA was trained on
    if unet is None:
        unet = UNet2DConditionModel.from_config(meta["unet_config"])
    backbone = DHDiffUNet(unet, Placement.from_config(config), tied_reference=config.tied_reference)
    if config.trained == "lora":
        apply_lora(backbone, config.lora_rank)
    bundle = DHDiffBundle(config, backbone, prompt_encoder, codec, dict(meta["scheduler_config"]), meta)
    from safetensors.torch import load_file

    missing, unexpected = bundle.trainable().load_state_dict(load_file(str(weights)), strict=False)
    expected = trainable_state(bundle.trainable(), config.trained)  # not the frozen base, not tied aliases
    missing = [k for k in missing if k in expected]
    if missing or unexpected:
        raise AnobenchError(
            f"{weights}: weights do not fit the recorded architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)"
        )
    bundle.backbone.eval()
    bundle.prompt_encoder.eval()
    return bundle.to(device)
