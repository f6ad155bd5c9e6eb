"""Config dataclasses: ``key=value`` overrides, dict round-trips and a stable hash.

Every generator and detector configuration is a plain dataclass. These helpers give them
what diffusers' ``ConfigMixin`` gives models: a JSON round-trip (``to_dict`` /
``from_dict``), validation of unknown keys, and a content hash that names a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from typing import Any, Iterable, TypeVar

from anobench.errors import AnobenchError

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config from ``config_to_dict`` output, refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AnobenchError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(hints[k], v, k) for k, v in data.items()}
    return cls(**kwargs)


def config_hash(config: Any) -> str:
    """Short content hash of a config, stable across runs and machines."""
    blob = json.dumps(config_to_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise AnobenchError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value  # the value verbatim: text fields keep their spaces
    return out


def apply_overrides(config: C, overrides: dict[str, str]) -> C:
    """Return a copy of ``config`` with string overrides parsed to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise AnobenchError(
                f"unknown --set key {key!r} for {type(config).__name__} "
                f"(known: {', '.join(sorted(fields))})"
            )
        try:
            changes[key] = _coerce(hints[key], parse_typed(hints[key], raw, key), key)
        except AnobenchError as exc:
            raise AnobenchError(f"--set {key}={raw}: {exc}") from None
    new = dataclasses.replace(config, **changes)
    validate = getattr(new, "validate", None)
    if callable(validate):
        validate()
    return new


def parse_typed(tp: Any, raw: str, key: str) -> Any:
    """Parse one command-line value by the field's annotated type.

    Text stays verbatim (commas, ``true`` and digits included); only an optional field takes
    ``none``/``null`` as None. Numbers and booleans are read as JSON scalars, sequences split on
    commas (or read as a JSON list) with each item parsed by the item type.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(origin):
        options = [a for a in args if a is not type(None)]
        if type(None) in args and raw.strip().lower() in ("none", "null"):
            return None
        if bool in options and raw.strip().lower() in ("true", "false"):  # bool | Literal[...]: a switch
            return raw.strip().lower() == "true"
        if any(_is_text(a) for a in options):
            return raw
        return parse_typed(options[0], raw, key) if len(options) == 1 else _parse_scalar(raw)
    if _is_text(tp):
        return raw
    if origin in (tuple, list):
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise AnobenchError(f"{key}: cannot read {raw!r} as a list") from None
        inner = [a for a in args if a is not Ellipsis]
        parts = [part.strip() for part in text.split(",")] if text else []
        if origin is tuple and inner and args[-1] is not Ellipsis and len(inner) == len(parts):
            return [parse_typed(a, part, key) for a, part in zip(inner, parts)]
        item = inner[0] if inner else Any
        return [parse_typed(item, part, key) for part in parts]
    if origin is dict:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise AnobenchError(f"{key} must be a JSON mapping, got {raw!r}") from None
    return _parse_scalar(raw)


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>")


def _is_text(tp: Any) -> bool:
    """A plain ``str`` field, or a Literal of strings only."""
    if tp is str:
        return True
    if typing.get_origin(tp) is typing.Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return False


def _parse_scalar(raw: str) -> Any:
    """A JSON scalar (number, bool, null) when the text is one; the text itself otherwise."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if isinstance(value, float) and not math.isfinite(value):
        raise AnobenchError(f"{raw!r} is not a finite number")
    return value


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or fail with a one-line error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if _is_union(origin):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except AnobenchError as exc:
                errors.append(str(exc))
        literals = [c for a in args if typing.get_origin(a) is typing.Literal for c in typing.get_args(a)]
        if bool in args and literals:  # a switch with named settings: name them all
            choices = ", ".join(["true", "false", *map(str, literals)])
            raise AnobenchError(f"{key} must be one of {choices}, got {value!r}")
        raise AnobenchError(errors[0] if errors else f"bad value for {key}: {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise AnobenchError(f"{key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise AnobenchError(f"{key} needs {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, key) for a, v in zip(args, value))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise AnobenchError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise AnobenchError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise AnobenchError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AnobenchError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise AnobenchError(f"{key} must be text, got {value!r}")
        return str(value)
    return value
