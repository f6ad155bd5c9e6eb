"""Typed records of the three stage metadata files: ``dataset.json``, ``artifact.json``, ``run.json``.

A stage writes its metadata as ``record.to_dict()`` and every later reader reads it back with
``Record.read(folder)``, so each field's name and type are said once, here. As with diffusers'
configs, a record round-trips exactly: ``Record.from_dict(d).to_dict() == d`` for every file a
stage writes, and ``from_dict(r.to_dict()) == r``.

Keys are handled deliberately:

* a key this version does not know (written by a newer anobench, or added by hand) is kept
  verbatim in ``extra`` and written back unchanged, so reading and rewriting loses nothing;
* old values are read as their new equivalents: a detector run's status ``training`` and
  ``trained`` (before the three artifacts shared one status field) is ``running`` and ``complete``;
* a file that is not a JSON object, a missing required key or a key of the wrong JSON type is a
  one-line :class:`AnobenchError` naming the file and the key.

``status`` is the one status field of every artifact (:data:`STATUSES`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from anobench.errors import AnobenchError

CREATED, RUNNING, COMPLETE = "created", "running", "complete"
STATUSES = (CREATED, RUNNING, COMPLETE)

R = TypeVar("R", bound="StageRecord")


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (bool is not an int; an int is a float)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint) or hint
    return {dict: "object", list: "list", str: "text", int: "integer", float: "number", bool: "boolean"}.get(
        origin, getattr(origin, "__name__", str(origin)))


@dataclass(kw_only=True)
class StageRecord:
    """Base of the three records: typed fields, ``extra`` for keys this version does not know."""

    FILE: ClassVar[str]
    KIND: ClassVar[str]
    IDENTITY: ClassVar[tuple[str, ...]]  # the keys that must match for a folder to be resumed
    OLD_STATUS: ClassVar[dict[str, str]] = {}

    status: str = CREATED
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:  # a writer's typo, not a user's error
            raise ValueError(f"{self.KIND} status {self.status!r} is not one of {', '.join(STATUSES)}")

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str | os.PathLike | None = None) -> R:
        """The record of a metadata dict; ``where`` (the file) names it in errors."""
        where = Path(where) / cls.FILE if where is not None else cls.FILE
        if not isinstance(data, dict):
            raise AnobenchError(f"{where} must hold a JSON object, not {_type_name(type(data))}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        missing = [name for name, f in fields.items() if name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise AnobenchError(f"{where} lacks {', '.join(missing)}; was it written by anobench?")
        values: dict[str, Any] = {}
        for name in fields:
            if name not in data:
                continue
            value = data[name]
            if name == "status" and isinstance(value, str):
                value = cls.OLD_STATUS.get(value, value)
                if value not in STATUSES:
                    raise AnobenchError(f"{where}: status is {data[name]!r}, expected one of {', '.join(STATUSES)}")
            if not _matches(value, hints[name]):
                raise AnobenchError(f"{where}: {name} is {value!r:.60}, expected {_type_name(hints[name])}")
            values[name] = value
        extra = {k: v for k, v in data.items() if k not in fields}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the stage writes (unknown keys kept, the typed fields over them)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        return out

    def identity(self) -> dict[str, Any]:
        data = self.to_dict()
        return {k: data.get(k) for k in self.IDENTITY}

    @classmethod
    def read(cls: type[R], folder: str | os.PathLike) -> R:
        """The record in ``folder/FILE`` (a one-line error when it is missing or malformed)."""
        from anobench.metadata import read_json_object

        path = Path(folder) / cls.FILE
        return cls.from_dict(read_json_object(path, what=f"{cls.KIND} metadata"), path.parent)

    def replace(self: R, **updates: Any) -> R:
        """A copy with ``updates`` (only declared fields: a typo is a programming error)."""
        return dataclasses.replace(self, **updates)


@dataclass(kw_only=True)
class GeneratorSourceRecord(StageRecord):
    """What a generated set and a generator checkpoint both record: the generator and its data."""

    generator: str
    category: str
    generator_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_root: str | None = None  # relative to the artifact's folder
    data_root_abs: str | None = None
    image_size: int | None = None
    seed: int | None = None
    protocol: dict[str, Any] | None = None  # the frozen split (anobench.protocol.ProtocolSplit.summary)
    model: str | None = None
    device: str | None = None
    anobench_version: str | None = None
    checkpoint_id: str | None = None


@dataclass(kw_only=True)
class DatasetRecord(GeneratorSourceRecord):
    """``dataset.json`` of a generated set (:mod:`anobench.store`)."""

    FILE: ClassVar[str] = "dataset.json"
    KIND: ClassVar[str] = "generated set"
    # no paths: a moved folder resumes; the anomaly source and checkpoint enter by content id
    IDENTITY: ClassVar[tuple[str, ...]] = (
        "generator", "generator_version", "config", "dataset", "category", "seed", "image_size", "protocol",
        "anomaly_source_id", "model", "checkpoint_id",
    )

    config_hash: str | None = None
    reference_anomalies: bool | None = None
    anomaly_source: str | None = None
    anomaly_source_id: str | None = None
    checkpoint: str | None = None
    components: dict[str, Any] | None = None  # a mixture's component config hashes
    num: int | None = None
    peak_memory_mb: float | None = None
    seconds_per_sample: float | None = None

    @property
    def protocol_name(self) -> str:
        return str((self.protocol or {}).get("name") or "thirds")


@dataclass(kw_only=True)
class CheckpointRecord(GeneratorSourceRecord):
    """``artifact.json`` of a trained generator checkpoint (:mod:`anobench.generator_training`)."""

    FILE: ClassVar[str] = "artifact.json"
    KIND: ClassVar[str] = "generator checkpoint"
    IDENTITY: ClassVar[tuple[str, ...]] = ("generator", "generator_version", "training_config", "dataset",
                                           "category", "seed", "image_size", "protocol", "model")

    training_config: dict[str, Any] = field(default_factory=dict)  # config less the sampling-only fields
    step: int | None = None


@dataclass(kw_only=True)
class RunRecord(StageRecord):
    """``run.json`` of a detector run (:mod:`anobench.detectors.train`)."""

    FILE: ClassVar[str] = "run.json"
    KIND: ClassVar[str] = "detector run"
    # no paths: a moved or copied grid resumes
    IDENTITY: ClassVar[tuple[str, ...]] = ("dataset", "category", "generator", "generator_config_hash",
                                           "generation_seed", "generated_samples", "protocol", "seed", "config_hash")
    OLD_STATUS: ClassVar[dict[str, str]] = {"training": RUNNING, "trained": COMPLETE}

    dataset: str
    category: str
    generator: str
    detector: str
    seed: int
    config: dict[str, Any]
    data_root: str  # relative to the run folder
    data_root_abs: str | None = None
    generated: str | None = None  # the generated set, relative to the run folder
    generated_abs: str | None = None
    generator_config_hash: str | None = None
    generation_seed: int | None = None
    generated_samples: int | None = None  # the first N samples of the set it trained on
    reference_anomalies: bool | None = None
    protocol: str = "thirds"
    protocol_split: dict[str, Any] | None = None
    profile: str | None = None
    protocol_preset: str | None = None
    config_hash: str | None = None
    anobench_version: str | None = None
    training_split: dict[str, Any] | None = None  # frozen at the first start (anobench.detectors.data)
    split: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    train_seconds: float | None = None
    steps_per_second: float | None = None
    peak_gpu_memory_mb: float | None = None
