"""DH-Diff (Double Helix Diffusion, Wu et al.): joint anomaly image and annotation generation.

One diffusion backbone denoises the joint latent (z_I, z_A) of an anomaly image and its mask.
Domain-Decoupled Attention keeps the two domains' attention apart (image cross-attention to
a reference feature through a zero-initialised conv; annotation self-attention), and Semantic
Score Map modification aligns them through their text score maps and an optional control map.
See ``../shared/papers/dh-diff.txt`` and the modules of this package:

- ``config``: every knob (placement, training, sampling);
- ``attention``: DDA (eq. 4-5) and SSM (eq. 6-7) as diffusers attention processors;
- ``model``: the UNet over the joint latent, placement, Siamese reference encoder;
- ``components``: codecs (patchified pixels / SD VAE), prompt encoders, schedules;
- ``preprocess``: K x K raw masks, reference crops, prompts, graphical guidance;
- ``train``: eq. 8 training loop with checkpoints, resume and loss log;
- ``sampling``: joint denoising on a normal image and compositing;
- ``checkpoint``: the model bundle and its checkpoint folder.

Usage (the small from-scratch CPU model; add ``--model SD_FOLDER`` to start from Stable Diffusion)::

    anobench train-generator --generator dhdiff --data-root DATA --category bottle --out ckpt/bottle
    anobench generate --generator dhdiff --checkpoint ckpt/bottle --data-root DATA --category bottle \\
        --num 100 --out generated

The paper's placement ablations (Tables VIII, IX) are ``--set`` overrides listed in
``ABLATIONS``, e.g. Table IX row 2: ``--set dda_encoder=every_other --set dda_decoder=none
--set ssm_encoder=every_other --set ssm_decoder=none``.

Torch and diffusers are imported only when a model is set up or trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import (
    GeneratedSample,
    GenerationContext,
    Generator,
    GeneratorNeeds,
    SampleRequest,
    register_generator,
)
from anobench.generators.dhdiff.config import ABLATIONS, SAMPLING_FIELDS, DHDiffConfig

__all__ = ["ABLATIONS", "DHDiffConfig", "DHDiffGenerator"]


@register_generator
class DHDiffGenerator(Generator):
    name = "dhdiff"
    version = "1"
    display_name = "DH-Diff"
    description = ("DH-Diff: one diffusion backbone generates defect image and mask together "
                   "(domain-decoupled attention + semantic score maps); trained per category")
    config_class = DHDiffConfig
    needs = GeneratorNeeds(normal_images=True, reference_anomalies=True, pretrained_weights=False,
                           training_stage=True)
    sampling_fields = SAMPLING_FIELDS
    edits_source = False  # one backbone makes image and mask from noise; the source is not kept
    dummy_overrides = {"num_inference_steps": "2", "mask_threshold": "0.3", "feather": "0", "min_mask_pixels": "1",
                       "max_attempts": "2"}

    @classmethod
    def dummy_context(cls, folder: Path, size: int = 64, category: str = "disc") -> GenerationContext:
        """The demo context plus a tiny random checkpoint (a 2-block model at 16 px) for tests."""
        import dataclasses

        from anobench.generators.dhdiff.checkpoint import build_bundle, save_checkpoint

        context = super().dummy_context(folder, size, category)
        checkpoint = Path(folder) / "dhdiff_checkpoint"
        if not (checkpoint / "model.safetensors").exists():
            config = DHDiffConfig(resolution=16, patch_size=2, block_out_channels=(8, 16), attention_heads=2,
                                  text_dim=16)
            bundle = build_bundle(config, category, context.defect_types, seed=0)
            cells = [[1 if (r in (1, 2) and c == 2) else 0 for c in range(config.grid_size)]
                     for r in range(config.grid_size)]
            save_checkpoint(bundle, checkpoint, step=0, seed=0,
                            reference_cells=[{"defect_type": d, "cells": cells} for d in context.defect_types])
        return dataclasses.replace(context, checkpoint=checkpoint)

    def setup(self, context: GenerationContext) -> None:
        super().setup(context)
        if context.checkpoint is None:
            raise AnobenchError(
                "dhdiff needs --checkpoint: train one first with `anobench train-generator --generator dhdiff "
                f"--category {context.category} --out CKPT_DIR ...`"
            )
        import torch

        from anobench.generators.dhdiff.checkpoint import load_checkpoint

        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        self.bundle = load_checkpoint(context.checkpoint, model=context.model, device=context.device)
        trained_on = self.bundle.meta.get("category")
        if trained_on != context.category:
            raise AnobenchError(
                f"{context.checkpoint}: checkpoint was trained on category {trained_on!r}, not {context.category!r}"
            )
        if self.config.defect_type is not None and self.config.defect_type not in self.bundle.defect_types:
            raise AnobenchError(
                f"defect_type {self.config.defect_type!r} is not in the checkpoint "
                f"(trained: {', '.join(self.bundle.defect_types)})"
            )
        self.control_mask = None
        if self.config.control_mask:
            from anobench.images import read_mask

            self.control_mask = read_mask(self.config.control_mask, context.image_size)
            if not self.control_mask.any():
                raise AnobenchError(f"{self.config.control_mask}: control_mask has no anomalous pixel")

    def fit(self, context: GenerationContext, out_dir: Path, **options: Any) -> dict:
        from anobench.generators.dhdiff.train import fit

        return fit(self.config, context, Path(out_dir), **options)

    def _plan(self, request: SampleRequest) -> tuple[str, np.ndarray]:
        """The request's defect type and raw-mask cells, drawn from its seed."""
        from anobench.generators.dhdiff.preprocess import raw_mask_cells, sample_cells

        rng = request.rng()
        defect = self.config.defect_type or self.bundle.defect_types[int(rng.integers(len(self.bundle.defect_types)))]
        if self.control_mask is not None:
            return defect, raw_mask_cells(self.control_mask, self.bundle.grid_size)
        cells = sample_cells(rng, self.bundle.reference_cells(defect) or self.bundle.reference_cells(),
                             self.config.cells, self.config.cell_transform, self.bundle.grid_size)
        return defect, cells

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        """One request at a time: a sample's bytes must not depend on which batch it came in."""
        from anobench.generators.dhdiff.sampling import generate_defect

        out = []
        for request in requests:
            defect_type, cells = self._plan(request)
            for attempt in range(self.config.max_attempts):
                seed = request.seed
                if attempt:
                    seed = int(np.random.default_rng([request.seed, attempt]).integers(2**63 - 1))
                result = generate_defect(
                    self.bundle, request.source, cells, defect_type, self.config, seed,
                    control_mask=self.control_mask, device=self.context.device,
                    allow_fallback=attempt == self.config.max_attempts - 1,
                )
                if int(result.mask.sum()) >= self.config.min_mask_pixels or result.fallback_mask:
                    break
            out.append(GeneratedSample(
                image=result.image,
                mask=result.mask,
                defect_type=defect_type,
                prompt=result.prompt,
                extra={
                    "cells": cells.astype(int).tolist(),
                    "attempts": attempt + 1,
                    "fallback_mask": result.fallback_mask,
                    "checkpoint_step": self.bundle.meta.get("step"),
                    "mask_fraction": round(float(result.mask.mean()), 5),
                },
                arrays={
                    "annotation": np.round(result.annotation * 255).astype(np.uint8),
                    "raw_mask": result.raw_mask.astype(np.uint8) * 255,
                },
            ))
        return out
