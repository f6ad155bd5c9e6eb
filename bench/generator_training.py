"""The training stage of trainable generators (``anobench train-generator``).

A generator with ``needs.training_stage`` learns from one category before it generates: the
protocol's few-shot reference anomalies (never the held-out test split) and the normal training
images. Its ``fit`` writes a checkpoint folder that ``anobench generate --checkpoint`` loads;
re-running the same command resumes a killed training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from anobench.errors import AnobenchError
from anobench.generation import build_generator, prepare_context


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
    _, _, context = prepare_context(gen, dataset, data_root, category, split, image_size, model=model, device=device)
    result = gen.fit(context, Path(out), steps=steps, seed=seed, split=split, progress=progress,
                     log=lambda message: tqdm.write(message))
    return TrainingSummary(Path(result["checkpoint"]), int(result["step"]), float(result["seconds"]),
                           float(result["loss"]))
