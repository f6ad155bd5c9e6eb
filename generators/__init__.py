"""Anomaly generators and their registry (``anobench.generators``)."""

from anobench.generators.base import (
    GeneratedSample,
    GenerationContext,
    Generator,
    GeneratorNeeds,
    ReferenceAnomaly,
    SampleRequest,
    available_generators,
    get_generator_class,
    register_generator,
)

__all__ = [
    "GeneratedSample",
    "GenerationContext",
    "Generator",
    "GeneratorNeeds",
    "ReferenceAnomaly",
    "SampleRequest",
    "available_generators",
    "get_generator_class",
    "register_generator",
]
