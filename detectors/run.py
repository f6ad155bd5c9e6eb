"""A detector run's folder as later stages read it: file names, checkpoints, the finished run.

``RUN`` holds ``run.json`` (what was trained on, config, status, chosen checkpoint), ``last.pt``
(resume state), ``best.pt`` (the weights chosen on synthetic validation), ``loss.csv`` and
``val.csv``. Evaluation reads a run through :class:`TrainedRun` and never imports the trainer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anobench.config import config_from_dict
from anobench.detectors.base import Detector, build_detector
from anobench.detectors.profiles import TrainConfig
from anobench.errors import AnobenchError
from anobench.images import atomic_write_bytes
from anobench.records import COMPLETE, RunRecord

RUN_JSON = RunRecord.FILE
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
LOSS_LOG = "loss.csv"
VAL_LOG = "val.csv"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, required: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """A checkpoint anobench wrote, with the ``required`` keys; anything else names the file."""
    from anobench.metadata import check_checkpoint

    try:
        return check_checkpoint(path, torch.load(path, map_location="cpu", weights_only=False), required)
    except AnobenchError:
        raise
    except FileNotFoundError:
        raise AnobenchError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file, whatever torch raises
        raise AnobenchError(f"{path}: unreadable checkpoint ({exc.__class__.__name__})") from None


@dataclass
class TrainedRun:
    """A finished run as the evaluator reads it: its typed ``run.json`` and training config."""

    folder: Path
    record: RunRecord
    config: TrainConfig

    @property
    def meta(self) -> dict[str, Any]:
        """``run.json`` as a dict (old status values already read as their new equivalents)."""
        return self.record.to_dict()

    @classmethod
    def open(cls, folder: str | Path) -> "TrainedRun":
        folder = Path(folder)
        path = folder / RUN_JSON
        if not path.exists():
            raise AnobenchError(f"{folder}: not a detector run (no {RUN_JSON}); train one with `anobench train-detector`")
        record = RunRecord.read(folder)
        if record.status != COMPLETE or not (folder / BEST_CHECKPOINT).exists():
            raise AnobenchError(f"{folder}: training has not finished; re-run the same train-detector command to resume")
        try:
            config = config_from_dict(TrainConfig, record.config)
        except AnobenchError as exc:
            raise AnobenchError(f"{path}: config: {exc}") from None
        except (KeyError, TypeError, ValueError):
            raise AnobenchError(f"{path}: unreadable config in run.json") from None
        return cls(folder, record, config)

    def load_model(self) -> Detector:
        """The selected checkpoint's detector (encoder weights come from the checkpoint)."""
        weights = "none"
        model = build_detector(self.config.detector, self.config.encoder, weights)
        from anobench.metadata import load_state

        state = load_checkpoint(self.folder / BEST_CHECKPOINT)
        load_state(model, state["model"], self.folder / BEST_CHECKPOINT)
        return model.eval()
