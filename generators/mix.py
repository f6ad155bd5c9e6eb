"""A weighted mixture of registered generators: each sample is made by one of them.

For the hybrid-synthesis question (does a detector trained on several kinds of synthetic
anomaly generalise better than on one?). Each sample draws its component from the weights with
its own generator, then a fresh seed for that component, so the same seed gives the same
component and the same pixels; the choice is recorded per sample (``extra.component``) and the
component's own record is kept under ``extra.component_extra``. Components keep their default
configs; every component is set up once with the run's context.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from anobench.errors import AnobenchError
from anobench.generators.base import (
    GeneratedSample,
    Generator,
    GeneratorNeeds,
    SampleRequest,
    get_generator_class,
    register_generator,
)


@dataclass
class MixConfig:
    components: tuple[str, ...] = ("cutpaste", "nsa", "draem")
    weights: tuple[float, ...] = ()  # empty: equal weights

    def validate(self) -> None:
        if not self.components:
            raise AnobenchError("mix needs at least one component")
        if "mix" in self.components:
            raise AnobenchError("mix cannot contain itself")
        for name in self.components:
            get_generator_class(name)
        if self.weights and len(self.weights) != len(self.components):
            raise AnobenchError(f"mix: {len(self.weights)} weights for {len(self.components)} components")
        if self.weights and (min(self.weights) < 0 or sum(self.weights) <= 0):
            raise AnobenchError("mix: weights must be non-negative with a positive sum")

    def probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights if self.weights else [1.0] * len(self.components), float)
        return w / w.sum()


def _union_needs(names) -> GeneratorNeeds:
    fields = [f.name for f in dataclasses.fields(GeneratorNeeds)]
    needs = [get_generator_class(n).needs for n in names]
    return GeneratorNeeds(**{f: any(getattr(n, f) for n in needs) for f in fields})


@register_generator
class MixGenerator(Generator):
    name = "mix"
    display_name = "Mix"
    version = "1"
    description = "A weighted mixture of registered generators, the component recorded per sample"
    config_class = MixConfig
    needs = GeneratorNeeds(anomaly_source=True)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.config.validate()
        self.needs = _union_needs(self.config.components)

    def setup(self, context) -> None:
        super().setup(context)
        self.members = [get_generator_class(n)() for n in self.config.components]
        for member in self.members:
            member.setup(context)
        self.p = self.config.probabilities()

    def generate(self, requests: list[SampleRequest]) -> list[GeneratedSample]:
        plan = []
        for request in requests:
            rng = request.rng()
            k = int(rng.choice(len(self.members), p=self.p))
            plan.append((k, SampleRequest(request.index, int(rng.integers(2**63 - 1)), request.source, request.source_path)))
        out: list[GeneratedSample | None] = [None] * len(requests)
        for k, member in enumerate(self.members):  # one batch per component
            slots = [i for i, (kk, _) in enumerate(plan) if kk == k]
            if not slots:
                continue
            for i, sample in zip(slots, member.generate([plan[i][1] for i in slots])):
                sample.extra = {"component": self.config.components[k], "component_seed": plan[i][1].seed,
                                "component_extra": sample.extra}
                out[i] = sample
        return out
