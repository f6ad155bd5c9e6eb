"""Metadata files (``dataset.json``, ``run.json``, checkpoints) validated where they are loaded.

A metadata file that is not what its stage wrote (a JSON list or ``null``, a missing key, a key
of the wrong type, a checkpoint from another program) is an :class:`AnobenchError` naming the
file and what is wrong, raised at load time, before any work that would depend on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from anobench.errors import AnobenchError

def read_json_object(path: str | os.PathLike, what: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path``; anything else (bad JSON, a list, null) names the file.

    The one reader of anobench's metadata files; :mod:`anobench.records` checks the keys.
    """
    path = Path(path)
    what = what or path.name
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise AnobenchError(f"{path}: {what} not found") from None
    except OSError as exc:
        from anobench.safety import os_error

        raise os_error(exc, path) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise AnobenchError(f"{path}: unreadable {what} (not valid UTF-8 JSON)") from None
    if not isinstance(data, dict):
        raise AnobenchError(f"{path}: {what} holds a JSON {_json_type(data)}, expected a JSON object")
    return data


def check_checkpoint(path: str | os.PathLike, state: Any, required: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """A loaded checkpoint is a mapping with the keys anobench writes, else it names the file."""
    if not isinstance(state, dict):
        raise AnobenchError(f"{path}: not an anobench checkpoint (holds a {type(state).__name__})")
    missing = [k for k in required if k not in state]
    if missing:
        raise AnobenchError(f"{path}: not an anobench checkpoint (no {', '.join(missing)}); "
                            "move it away to start over")
    return state


def load_state(model: Any, state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``model.load_state_dict`` with a named error for weights of another architecture."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise AnobenchError(f"{path}: weights do not fit this model ({first[:160]}); "
                            "it was written for another detector or encoder") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "value")
