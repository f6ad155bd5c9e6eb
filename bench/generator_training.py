"""The training stage of trainable generators (``anobench train-generator``).

A generator with ``needs.training_stage`` learns from one category before it generates: the
protocol's few-shot reference anomalies (never the held-out test split) and the normal training
images. Its ``fit`` writes a checkpoint folder that ``anobench generate --checkpoint`` loads;
re-running the same command resumes a killed training run.

The folder is a stage artifact (:mod:`anobench.artifacts`): ``artifact.json`` holds the
generator, its training config, seed and the frozen protocol split (file lists and pixel
hashes). Generation with this checkpoint refuses another split, so no training anomaly can be
a test image. Config fields a generator lists in ``sampling_fields`` (and the step count) do
not enter the identity: they change sampling, not the trained weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

import anobench
from anobench.artifacts import COMPLETE, RUNNING, open_artifact
from anobench.config import config_to_dict
from anobench.errors import AnobenchError
from anobench.generation import build_generator, prepare_context, source_fields
from anobench.records import CheckpointRecord

CHECKPOINT_ARTIFACT = CheckpointRecord.FILE
IDENTITY_KEYS = CheckpointRecord.IDENTITY


def read_checkpoint_artifact(folder: Path) -> CheckpointRecord | None:
    """The benchmark's record of a trained generator checkpoint, or None for a foreign folder."""
    if not Path(folder).is_dir():
        raise AnobenchError(f"{folder}: --checkpoint is not a folder")
    return CheckpointRecord.read(folder) if (Path(folder) / CHECKPOINT_ARTIFACT).exists() else None


@dataclass
class TrainingSummary:
    checkpoint: Path
    step: int
    seconds: float
    loss: float

    def line(self) -> str:
        return f"{self.checkpoint}: trained to step {self.step} in {self.seconds:.0f} s, final loss {self.loss:.4f}"


def train_generator(
    generator: str,
    dataset: str,
    data_root: str | Path,
    category: str,
    out: str | Path,
    model: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    split: str = "thirds",
    device: str = "auto",
    overrides: dict[str, str] | None = None,
    image_size: int = 256,
    progress: bool = True,
) -> TrainingSummary:
    """Fit ``generator`` on one category's references and normals; checkpoint into ``out``."""
    gen = build_generator(generator, overrides)
    if not gen.needs.training_stage:
        raise AnobenchError(f"generator {generator!r} has no training stage (it generates without train-generator)")
    data, protocol, context = prepare_context(gen, dataset, data_root, category, split, image_size, model=model,
                                              device=device)
    out = Path(out)
    sampling = set(getattr(gen, "sampling_fields", ()))
    record = CheckpointRecord(
        **source_fields(gen, dataset, category, data_root, out, image_size, seed),
        training_config={k: v for k, v in config_to_dict(gen.config).items() if k not in sampling},
        protocol=protocol.summary(data),
        model=model,
        device=context.device,
        anobench_version=anobench.__version__,
    )
    with open_artifact(out, record, hint="use a new --out folder") as artifact:
        try:
            result = gen.fit(context, out, steps=steps, seed=seed, split=split, progress=progress,
                             log=lambda message: tqdm.write(message))
        except BaseException:
            if artifact.holds_work():
                artifact.save(status=RUNNING)
            raise
        step = int(result["step"])
        identity = json.dumps(artifact.record.identity(), sort_keys=True, default=str)
        artifact.save(status=COMPLETE, step=step,
                      checkpoint_id=hashlib.sha256(f"{identity}|{step}".encode()).hexdigest()[:16])
    return TrainingSummary(Path(result["checkpoint"]), step, float(result["seconds"]), float(result["loss"]))
