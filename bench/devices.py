"""Which accelerator a command runs on, and the precision and loader settings that go with it.

``--device`` takes ``auto`` (the first of CUDA, Apple MPS, CPU that this machine has), ``cpu``,
``cuda``, ``cuda:N`` or ``mps``. A device that is malformed or absent is refused with one line
before any work starts, so an artifact never records a device it did not run on: asking for
``cuda`` on a machine without one is an error, not a silent CPU run.

Mixed precision follows the device: none on the CPU (so CPU results stay bit-identical to the
fp32 code), bfloat16 autocast on a CUDA card that supports it, float16 autocast with a
``GradScaler`` on older cards.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator

import torch

from anobench.errors import AnobenchError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | None = "auto") -> str:
    """The canonical device name (``cpu``, ``cuda:0``, ``mps``) for a ``--device`` value.

    Raises :class:`AnobenchError` (one line) for a malformed name or a device this machine lacks.
    """
    text = (spec or "auto").strip().lower()
    match = _SPEC.match(text)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise AnobenchError(f"unknown --device {spec!r} (use {DEVICE_CHOICES})")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        return "mps" if _mps_available() else "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "mps":
        if not _mps_available():
            raise AnobenchError("--device mps: this machine has no Apple MPS device; use --device cpu or auto")
        return "mps"
    if not torch.cuda.is_available():
        raise AnobenchError(f"--device {text}: no CUDA device on this machine (torch.cuda.is_available() is False); "
                            "use --device cpu or auto")
    number = int(index) if index is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if number >= count:
        raise AnobenchError(f"--device {text}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return f"cuda:{number}"


def device_label(device: str) -> str:
    """What artifacts record: the canonical name plus the card's model on CUDA."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None: plain fp32) and whether the loss needs a gradient scaler."""

    dtype: torch.dtype | None
    scaled: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(device: str, requested: str = "auto") -> Precision:
    """``auto``: fp32 on CPU and MPS, bf16 on CUDA cards with bf16, else fp16 with a scaler."""
    if requested not in PRECISIONS:
        raise AnobenchError(f"unknown precision {requested!r} (known: {', '.join(PRECISIONS)})")
    on_cuda = device.startswith("cuda")
    if requested == "auto":
        if not on_cuda:
            return Precision(None, False)
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp32":
        return Precision(None, False)
    if requested == "fp16":
        if device == "cpu":
            raise AnobenchError("precision fp16 needs a GPU (CPU autocast supports bf16); use fp32 or bf16")
        return Precision(torch.float16, on_cuda)
    return Precision(torch.bfloat16, False)


@contextlib.contextmanager
def autocast(device: str, precision: Precision) -> Iterator[None]:
    """``torch.autocast`` for mixed precision; a no-op in fp32 (the CPU default)."""
    if precision.dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=precision.dtype):
        yield


def grad_scaler(device: str, precision: Precision) -> "torch.amp.GradScaler | None":
    """A GradScaler for fp16 on CUDA (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if precision.scaled else None


def set_deterministic(enabled: bool) -> None:
    """Opt-in bitwise reproducibility on GPUs: deterministic kernels, no cuDNN autotuning.

    Costs speed on CUDA (and needs ``CUBLAS_WORKSPACE_CONFIG``, set here when missing); on the
    CPU it changes nothing that is not deterministic already.
    """
    import os

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.cuda.is_available()


def peak_gpu_memory_mb(device: str) -> float | None:
    """Peak CUDA memory allocated on ``device`` since the last reset (None off CUDA)."""
    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)


@dataclass(frozen=True)
class Execution:
    """Where and how a model runs: device, precision, loader workers, deterministic kernels.

    Not part of a config's hash (the same settings may run anywhere) but recorded in every
    artifact beside it, since mixed precision on a GPU does not give the CPU's bits.
    """

    device: str = "cpu"
    precision: Precision = Precision(None, False)
    workers: int = 0
    deterministic: bool = False

    @classmethod
    def resolve(cls, device: str | None = "auto", precision: str = "auto", workers: int | None = None,
                deterministic: bool = False) -> "Execution":
        """Validate ``--device`` etc.; ``workers`` None: 0 on the CPU, up to 4 loader processes on a GPU."""
        import os

        name = resolve_device(device)
        if workers is None:
            workers = 0 if name == "cpu" else min(4, max(0, (os.cpu_count() or 1) - 1))
        if workers < 0:
            raise AnobenchError(f"--workers must be >= 0, got {workers}")
        return cls(name, resolve_precision(name, precision), workers, deterministic)

    @property
    def pin_memory(self) -> bool:
        return self.device.startswith("cuda")

    def record(self) -> dict[str, object]:
        """What run.json and result rows keep."""
        return {"device": device_label(self.device), "precision": self.precision.name, "workers": self.workers,
                "deterministic": self.deterministic}


def optimizer_step(loss: "torch.Tensor", optimizer: "torch.optim.Optimizer",
                   scaler: "torch.amp.GradScaler | None") -> None:
    """Backward and step, through the fp16 grad scaler when there is one (CPU/bf16: plain)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
