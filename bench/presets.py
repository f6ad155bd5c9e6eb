"""Named protocol presets: the detector protocols of DRAEM, AnomalyDiffusion and DH-Diff.

anobench's own profiles (``quick``, ``paper``) differ from the papers on purpose (a pretrained
U-Net encoder, a short CPU schedule, synthetic-only checkpoint selection). A preset instead
reproduces one paper's detector protocol by name, so a number can be set beside the paper's:
detector and initialisation, optimiser, epochs (turned into steps), batch, schedule, map
post-processing, the split of the real anomalies and the test set, and the metric variants the
paper's code computes. Every setting names the file and line it comes from (:attr:`Preset.sources`)
and every remaining difference is listed (:attr:`Preset.deviations`).

One deviation is common to all and deliberate: the papers' code picks its checkpoint on the test
set (AnomalyDiffusion keeps the epoch with the best test AUROC + pixel AUROC + AP + PRO); anobench
never looks at the test set during training. It uses the last step where the paper does (DRAEM),
and its held-out synthetic validation split otherwise; report captions say so.

Used by ``anobench train-detector --protocol-preset NAME`` (training settings, written to
run.json), ``anobench evaluate`` (the preset's test set and metric variants; read from run.json,
or named with ``--protocol-preset``) and ``anobench run`` (``protocol_preset:`` in the grid
YAML, or ``--protocol-preset``: also the split the generators use).

References (commits as stored in the search index):
``DRAEM`` = VitjanZ/DRAEM (train_DRAEM.py, test_DRAEM.py @ b5b11e7; data_loader.py @ 3adbb42;
README.md @ 2dbf673); ``AnoDiff`` = sjtuplayer/anomalydiffusion (train-localization.py,
test-localization.py @ b6d805d; unet_utils/data_loader.py @ 1a95dd9; unet_utils/au_pro_util.py
@ 4e6c1cb); ``DH-Diff`` = ../shared/papers/dh-diff.txt (line numbers of that text).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from anobench.errors import AnobenchError

DRAEM = "VitjanZ/DRAEM"
ANODIFF = "sjtuplayer/anomalydiffusion"
DHDIFF = "dh-diff.txt"
SELECTION_NOTE = ("Checkpoints are chosen without the test set (last step, or a held-out synthetic split); "
                  "the papers' code selects on the test set, so their numbers are optimistic by comparison.")


@dataclass(frozen=True)
class Preset:
    """One paper's detector protocol; ``train`` holds :class:`TrainConfig` field values."""

    name: str
    title: str
    train: dict[str, Any]
    epochs: int
    epoch_samples: Optional[int]  # samples per epoch; None: the category's training normals
    split: Optional[str]  # the protocol split generators must use; None: any (zero-shot)
    test_set: str  # "protocol" (the split's test part) or "all" (every test image)
    metric_variants: tuple[str, ...] = ()
    leaky: bool = False
    sources: tuple[tuple[str, str], ...] = ()  # (setting, where it comes from)
    deviations: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def steps(self, n_train_normals: int, batch_size: int) -> int:
        """Optimiser steps of ``epochs`` epochs (the last batch of an epoch may be short)."""
        per_epoch = self.epoch_samples if self.epoch_samples is not None else n_train_normals
        return self.epochs * max(1, math.ceil(per_epoch / batch_size))

    def caption(self) -> str:
        leak = " Leaky: test images include the generators' reference anomalies." if self.leaky else ""
        return f"Protocol preset {self.name} ({self.title}).{leak} {SELECTION_NOTE}"

    def describe(self) -> str:
        """The preset as text: settings with their sources, then the deviations."""
        lines = [f"{self.name}: {self.title}", "  settings:"]
        lines += [f"    {what}  [{where}]" for what, where in self.sources]
        lines += ["  deviations:"] + [f"    - {d}" for d in self.deviations]
        return "\n".join(lines)


_DISC_TRAIN = dict(detector="draem_disc", encoder_weights="none", image_size=256, batch_size=8, lr=1e-4,
                   lr_milestones=(0.8, 0.9), lr_gamma=0.2, focal_alpha=-1.0, focal_gamma=2.0, map_sigma=0.0,
                   synthetic_fraction=0.5, hflip=False, checkpoint_every=200)
# AnomalyDiffusion's detector training (settings and schedule); the DH-Diff preset derives its own from it
_ANODIFF_TRAINING = dict(
    train=dict(_DISC_TRAIN, val_fraction=0.1, max_val_samples=200, val_normals=20, val_every=630),
    epochs=200,
    epoch_samples=500,
)

PRESETS: dict[str, Preset] = {
    "draem": Preset(
        name="draem",
        title="DRAEM (Zavrtanik et al., ICCV 2021), released code",
        train=dict(_DISC_TRAIN, val_fraction=0.0, val_every=1000),
        epochs=700,
        epoch_samples=None,
        split=None,
        test_set="all",
        sources=(
            ("discriminative U-Net, 2 softmax classes, image score max of 21x21 mean-pooled map",
             f"{DRAEM} train_DRAEM.py:39, test_DRAEM.py:105"),
            ("init: conv weights N(0, 0.02), batch-norm N(1, 0.02) bias 0", f"{DRAEM} train_DRAEM.py:14-20,41"),
            ("Adam, lr 1e-4, batch 8, 700 epochs", f"{DRAEM} train_DRAEM.py:43; README.md:33"),
            ("LR x0.2 at 80% and 90% of the epochs", f"{DRAEM} train_DRAEM.py:47"),
            ("an epoch = one pass over the training normals, each anomalous with p 0.5",
             f"{DRAEM} data_loader.py MVTecDRAEMTrainDataset.__len__, augment_image (no_anomaly > 0.5)"),
            ("focal loss (gamma 2, no class weight)", f"{DRAEM} train_DRAEM.py:51,75"),
            ("checkpoint: the last epoch (saved every epoch)", f"{DRAEM} train_DRAEM.py:101"),
            ("raw softmax map, no smoothing; every test image", f"{DRAEM} test_DRAEM.py:59,103; data_loader.py:14"),
            ("image AUROC/AP, pixel AUROC/AP of all pooled pixels (scikit-learn)",
             f"{DRAEM} test_DRAEM.py:119-126"),
        ),
        deviations=(
            "DRAEM's discriminative network sees [reconstruction, image] (6 channels) and trains jointly with "
            "a reconstructive network (L2 + SSIM loss, train_DRAEM.py:76); here it sees the RGB image only, "
            "as in AnomalyDiffusion's protocol. Its published numbers therefore are not this detector's.",
            "Each DRAEM batch draws normal/anomalous per sample with p 0.5; here every batch is exactly half "
            "and half, with the anomalies taken from the generated set.",
            "DRAEM rotates 30% of its training images by up to 90 degrees (data_loader.py transform_image); "
            "here only the generator's own augmentation applies.",
            "DRAEM's focal loss smooths its one-hot targets by 1e-5; torchvision's sigmoid focal loss does not.",
            "DRAEM's README reports means only (98.1 image AUROC, 97.5 pixel AUROC, 68.9 pixel AP, README.md:42).",
        ),
    ),
    "anomalydiffusion": Preset(
        name="anomalydiffusion",
        title="AnomalyDiffusion (Hu et al., AAAI 2024), released detector code",
        **_ANODIFF_TRAINING,
        split="anomalydiffusion",
        test_set="protocol",
        metric_variants=("aupro_thr100", "pixel_f1max_grid005"),
        leaky=True,
        sources=(
            ("DRAEM's discriminative U-Net on RGB (3 in, 2 out)", f"{ANODIFF} train-localization.py:113"),
            ("init: conv weights N(0, 0.02), batch-norm N(1, 0.02) bias 0", f"{ANODIFF} train-localization.py:18-24,115"),
            ("Adam, lr 1e-4, batch 8, 200 epochs", f"{ANODIFF} train-localization.py:117,176-178"),
            ("LR x0.2 at 80% and 90% of the epochs", f"{ANODIFF} train-localization.py:120"),
            ("an epoch = 500 samples, each normal with p 0.5, else a generated pair (mask > 0.5)",
             f"{ANODIFF} train-localization.py:124; unet_utils/data_loader.py:107,120"),
            ("focal loss on the softmax", f"{ANODIFF} train-localization.py:122"),
            ("raw softmax map; image score max of 21x21 mean-pooled map", f"{ANODIFF} test-localization.py:62"),
            ("test set: every good image, defect images from floor(n/3) in integer order",
             f"{ANODIFF} unet_utils/data_loader.py:19-23"),
            ("generator references: the first floor(n/3) + 1 (index floor(n/3) also tested: leaky)",
             f"{ANODIFF} ldm/data/personalized.py (set=='train': break when idx > len(img_files)//3)"),
            ("image AUROC/AP/F1-max, pixel AUROC/AP (scikit-learn)", f"{ANODIFF} test-localization.py:79-93"),
            ("AUPRO at 100 thresholds (aupro_thr100)",
             f"{ANODIFF} test-localization.py:95; unet_utils/au_pro_util.py calculate_au_pro"),
            ("pixel F1-max on a 0.05 grid (pixel_f1max_grid005)", f"{ANODIFF} test-localization.py:97-112"),
        ),
        deviations=(
            "Checkpoint selection: AnomalyDiffusion evaluates on the test set after every epoch and keeps the "
            "best sum of image AUROC, pixel AUROC, pixel AP and PRO (train-localization.py:162-166); here the "
            "checkpoint is chosen on a held-out synthetic split (10% of the generated set, 20 held-out normals).",
            "Batches are exactly half normal, half generated; the reference draws each sample's kind with p 0.5 "
            "and picks a defect type uniformly before the image (data_loader.py:107,115): generate a balanced "
            "number per defect type (their sets hold up to 500 per type, data_loader.py:89).",
            "20 training normals are held out for the validation score; the reference trains on all of them.",
            "Its focal loss smooths one-hot targets by 1e-5; torchvision's sigmoid focal loss does not.",
            "Ground-truth masks are binarised (> 0); the reference resizes them bilinearly and keeps only pixels "
            "equal to 1 for pixel AUROC/AP (test-localization.py:89): identical when masks are at image size.",
        ),
    ),
    "dhdiff": Preset(
        name="dhdiff",
        title="DH-Diff paper setting (Tables II and IV): 50% of the anomalies train the generator, full test set",
        **_ANODIFF_TRAINING,  # AnomalyDiffusion's detector training, derived (not repeated) so they cannot drift
        split="dhdiff",
        test_set="protocol",
        leaky=True,
        sources=(
            ("50% of the anomalous samples train the generator", f"{DHDIFF}:222"),
            ("all methods evaluated on the same (full) test sets", f"{DHDIFF}:357"),
            ("U-Net localisation, image score by average pooling as in DRAEM", f"{DHDIFF}:349"),
            ("image and pixel AUROC, pixel AP", f"{DHDIFF}:224 (Evaluation Metrics), Tables II and IV"),
            ("detector training: AnomalyDiffusion's (see that preset)", f"{ANODIFF} train-localization.py"),
        ),
        deviations=(
            "Leaky by construction: the full test set contains the 50% of anomalies the generator trained on "
            "(offered to reproduce the paper's numbers, never for a fair comparison).",
            "The paper does not state the detector's optimiser, schedule or epochs (its Adam 1e-4, batch 32 is "
            "the generator's, line 222); this preset uses AnomalyDiffusion's detector protocol, whose numbers "
            "the paper's tables set beside its own.",
            "Which half of each defect type: the first floor(n/2) in integer order (the paper does not say).",
            "Checkpoint selection on a held-out synthetic split (the paper does not say how it selects).",
        ),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise AnobenchError(f"unknown --protocol-preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def preset_config(name: str, n_train_normals: int, overrides: dict[str, str] | None = None, **fields: Any):
    """The training config of preset ``name`` for a category with ``n_train_normals`` normals.

    ``fields`` (None = keep) and ``--set`` ``overrides`` apply on top, e.g. ``steps=200`` for a
    reduced check run; ``steps`` otherwise follows from the preset's epochs.
    """
    from anobench.config import apply_overrides
    from anobench.detectors.train import TrainConfig

    preset = get_preset(name)
    config = dataclasses.replace(TrainConfig(), **preset.train)
    config = dataclasses.replace(config, steps=preset.steps(n_train_normals, config.batch_size))
    config = dataclasses.replace(config, **{k: v for k, v in fields.items() if v is not None})
    overrides = dict(overrides or {})
    if "batch_size" in overrides and "steps" not in overrides:  # epochs stay epochs
        config = apply_overrides(config, {"batch_size": overrides["batch_size"]})
        config = dataclasses.replace(config, steps=preset.steps(n_train_normals, config.batch_size))
    config = apply_overrides(config, overrides)
    config.validate()
    return config.resolved()


def check_split(preset: Preset, protocol: str, where: str) -> None:
    """Refuse a generated set (or run) made under another split than the preset's."""
    if preset.split is not None and protocol != preset.split:
        raise AnobenchError(f"{where}: made with split {protocol!r}, but preset {preset.name} needs split "
                            f"{preset.split!r} (generate with --split {preset.split})")
