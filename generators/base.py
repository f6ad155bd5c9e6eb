"""The generator interface, its registry, and the records passed in and out of ``generate``.

A generator is a registered class with a config dataclass and a statement of what it needs.
The benchmark gives it a :class:`GenerationContext` once (``setup``), then batches of
:class:`SampleRequest` (a normal source image and a per-sample seed); it returns one
:class:`GeneratedSample` per request. Third-party generators register through the entry-point
group ``anobench.generators`` (an entry point names the class)::

    [project.entry-points."anobench.generators"]
    mygen = "mypkg.gen:MyGenerator"
"""

from __future__ import annotations

import functools
import abc
import dataclasses
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from anobench.errors import AnobenchError
from anobench.plugins import check_declared_name, load_entry_points

ENTRY_POINT_GROUP = "anobench.generators"
BUILTIN_MODULES = (
    "anobench.generators.draem",
    "anobench.generators.crop_paste",
    "anobench.generators.deltadeno",
    "anobench.generators.dhdiff",
    "anobench.generators.cutpaste",
    "anobench.generators.cutout",
    "anobench.generators.nsa",
    "anobench.generators.fpi",
    "anobench.generators.fractal",
    "anobench.generators.memseg",
    "anobench.generators.destseg",
    "anobench.generators.glass_las",
    "anobench.generators.mix",
)


@dataclass(frozen=True)
class GeneratorNeeds:
    """What a generator consumes; shown by ``anobench list`` and checked before a run."""

    normal_images: bool = True
    reference_anomalies: bool = False
    pretrained_weights: bool = False
    training_stage: bool = False
    anomaly_source: bool = False  # an optional folder of texture images (DRAEM)

    def describe(self) -> str:
        parts = []
        if self.normal_images:
            parts.append("normal images")
        parts.append("few-shot reference anomalies" if self.reference_anomalies else "zero-shot")
        if self.pretrained_weights:
            parts.append("pretrained weights (--model)")
        if self.training_stage:
            parts.append("training stage (train-generator)")
        if self.anomaly_source:
            parts.append("optional anomaly source (--anomaly-source)")
        return ", ".join(parts)


@dataclass
class ReferenceAnomaly:
    """A real few-shot anomaly from the protocol's reference split."""

    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray  # bool HxW
    defect_type: str
    path: str


@dataclass
class GenerationContext:
    """What a generator may use, fixed for a whole run."""

    dataset: str
    category: str
    image_size: int = 256
    normal_paths: list[Path] = field(default_factory=list)
    references: list[ReferenceAnomaly] = field(default_factory=list)
    defect_types: list[str] = field(default_factory=list)
    anomaly_source: Path | None = None
    model: str | None = None
    checkpoint: Path | None = None
    device: str = "cpu"
    data_root: Path | None = None  # the dataset root the normal paths live under (dummy contexts, tests)


@dataclass
class SampleRequest:
    """One sample to make: the normal source image and the seed that fixes everything random."""

    index: int
    seed: int
    source: np.ndarray  # uint8 HxWx3, already at the context's image size
    source_path: str

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


@dataclass
class GeneratedSample:
    """A synthetic anomaly: the image, its binary mask, and what the manifest records of it."""

    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray  # bool HxW, True where the image is anomalous
    defect_type: str
    prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able per-sample record
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # extra outputs saved as PNG (e.g. heatmap)


class Generator(abc.ABC):
    """Base class: subclass, set the class attributes, implement ``generate``, register."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # how reports name it (e.g. "Crop&Paste"); default: ``name``
    config_class: ClassVar[type]
    needs: ClassVar[GeneratorNeeds] = GeneratorNeeds()
    # config fields that change sampling only, outside a training stage's resume identity
    sampling_fields: ClassVar[frozenset[str]] = frozenset()
    # True: the output is the source image edited inside the mask only (pixels outside stay equal)
    edits_source: ClassVar[bool] = True
    # --set overrides that make the dummy context fast (tiny steps); used by tests and benchmarks
    dummy_overrides: ClassVar[dict[str, str]] = {}

    @classmethod
    def dummy_context(cls, folder: Path, size: int = 64, category: str = "disc") -> GenerationContext:
        """A small real-layout context to exercise the generator on: procedural MVTec-layout data
        (``anobench.demo``) written under ``folder``, with the references the generator needs.

        Generators that need pretrained weights or a trained checkpoint override this to build
        tiny random ones, so the shared behavioural test runs them without downloads.
        """
        from anobench.datasets import load_category
        from anobench.demo import make_demo_dataset
        from anobench.generation import load_references
        from anobench.protocol import split_category

        root = Path(folder) / "data"
        if not (root / category).is_dir():
            make_demo_dataset(root, seed=0, size=size, n_train=4, n_test_good=2, n_per_defect=3)
        data = load_category("mvtec_ad", root, category)
        references = load_references(data, split_category(data), size) if cls.needs.reference_anomalies else []
        return GenerationContext("mvtec_ad", category, size, [s.path for s in data.train], references,
                                 data.defect_types, data_root=root)

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    def setup(self, context: GenerationContext) -> None:
        """Load what ``generate`` needs (textures, weights, checkpoints); called once per run."""
        self.context = context

    def fit(self, context: GenerationContext, out_dir: Path, **options: Any) -> Path:
        """The training stage, for generators whose ``needs.training_stage`` is true."""
        raise AnobenchError(f"generator {self.name!r} has no training stage")

    @abc.abstractmethod
    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        """Make one sample per request; the same request (seed) must give the same pixels."""


_REGISTRY: dict[str, type[Generator]] = {}


def register_generator(cls: type[Generator]) -> type[Generator]:
    """Class decorator: make a generator available by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise TypeError(f"{cls!r} is not a Generator subclass")
    if not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"generator name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


@functools.cache
def _load_all() -> None:
    """Built-ins, then plug-ins of the entry-point group, once per process."""
    load_entry_points(ENTRY_POINT_GROUP, "generator", _REGISTRY, register_plugin, entry_points, BUILTIN_MODULES)


def register_plugin(name: str, cls: Any, where: str) -> None:
    """Register an entry point's class under the entry point's name; a class without a name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise AnobenchError(f"generator plug-in {name!r} ({where}) is not a Generator subclass")
    check_declared_name("generator", name, cls, Generator, where)
    try:
        register_generator(cls)
    except (TypeError, ValueError) as exc:
        raise AnobenchError(f"generator plug-in {name!r} ({where}): {exc}") from None


def available_generators() -> dict[str, type[Generator]]:
    """Every registered generator, built-in and plug-in, by name."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def display_name(name: str) -> str:
    """A generator's name as reports print it: its ``display_name``, else the registry name."""
    cls = available_generators().get(name)
    return (cls.display_name if cls is not None else "") or name


def get_generator_class(name: str) -> type[Generator]:
    generators = available_generators()
    if name not in generators:
        raise AnobenchError(f"unknown generator {name!r} (available: {', '.join(generators)})")
    return generators[name]
