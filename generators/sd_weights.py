"""Where Stable Diffusion weights come from: one resolver for every diffusion generator.

``--model`` is a local diffusers folder or a Hugging Face hub id. A hub id resolves to its
snapshot in the local cache (``huggingface_hub.snapshot_download(local_files_only=True)``);
nothing is downloaded unless ``ANOBENCH_ALLOW_DOWNLOAD=1``. Either way the caller gets a local
folder, so every later ``from_pretrained(folder, subfolder=...)`` reads the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

from anobench.errors import AnobenchError

MISSING_WEIGHTS = ("needs Stable Diffusion weights: pass --model /path/to/diffusers-folder "
                   "or a hub id cached locally (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)")


def downloads_allowed() -> bool:
    return os.environ.get("ANOBENCH_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes")


def resolve_sd_weights(model: str | None, generator: str) -> Path:
    """The local folder for ``--model`` (a folder as is; a hub id's cached snapshot).

    Raises a one-line :class:`AnobenchError` naming ``generator`` when there are no weights.
    """
    if not model:
        raise AnobenchError(f"{generator} {MISSING_WEIGHTS}")
    path = Path(model).expanduser()
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=not downloads_allowed()))
    except Exception as exc:  # noqa: BLE001 - not cached, malformed id, offline: all one answer
        raise AnobenchError(f"{generator} {MISSING_WEIGHTS}; {model!r} is neither a local folder nor a hub id "
                            f"in the local Hugging Face cache ({exc.__class__.__name__})") from None
