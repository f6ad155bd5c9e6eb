"""ONE behavioural test, parametrised over every registered generator (as timm tests its models).

A new generator (built-in or plug-in) is picked up with no edit here. Its ``dummy_context``
gives it small procedural data (and, for generators that need weights or a checkpoint, tiny
random ones); ``dummy_overrides`` makes it fast. Checked: output shapes and dtypes, same seed
same bytes, another seed another sample, the mask covers every changed pixel when the generator
edits its source image, and a run interrupted mid-batch resumes to the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anobench.generation import build_generator, generate_dataset
from anobench.generators.base import Generator, SampleRequest, available_generators
from anobench.images import read_rgb

SIZE = 64


def _has_own_dummy(cls) -> bool:
    return cls.dummy_context.__func__ is not Generator.dummy_context.__func__


@pytest.fixture(scope="module")
def dummy_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dummy")


def _context(cls, root: Path):
    if (cls.needs.pretrained_weights or cls.needs.training_stage) and not _has_own_dummy(cls):
        pytest.skip(f"{cls.name} needs weights or a checkpoint and has no dummy_context of its own")
    return cls.dummy_context(root / cls.name, size=SIZE)


def _requests(context, seeds):
    """One request per seed, all on the same source image (so only the seed tells them apart)."""
    path = context.normal_paths[0]
    return [SampleRequest(i, seed, read_rgb(path, SIZE), str(path)) for i, seed in enumerate(seeds)]


def _generate(name, context, seeds):
    gen = build_generator(name, available_generators()[name].dummy_overrides)
    gen.setup(context)
    return gen.generate(_requests(context, seeds))


@pytest.mark.parametrize("name", sorted(available_generators()))
def test_generators_needing_weights_bring_their_own_dummy_context(name):
    """So the behavioural tests below run every generator (none skip for want of weights)."""
    cls = available_generators()[name]
    if cls.needs.pretrained_weights or cls.needs.training_stage:
        assert _has_own_dummy(cls), f"{name} needs weights or a checkpoint: give it a dummy_context"


@pytest.mark.parametrize("name", sorted(available_generators()))
def test_generator_behaviour(name, dummy_root):
    cls = available_generators()[name]
    context = _context(cls, dummy_root)
    first = _generate(name, context, [11, 12])
    again = _generate(name, context, [11, 12])
    assert len(first) == 2
    for sample, request in zip(first, _requests(context, [11, 12])):
        assert sample.image.shape == (SIZE, SIZE, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (SIZE, SIZE) and sample.mask.dtype == bool and sample.mask.any()
        assert isinstance(sample.defect_type, str) and sample.defect_type
        if cls.edits_source:
            changed = (sample.image != request.source).any(axis=2)
            assert changed.any(), "the sample equals its source"
            assert not (changed & ~sample.mask).any(), "a pixel outside the mask changed"
    for a, b in zip(first, again):
        assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    a, b = first
    assert a.image.tobytes() != b.image.tobytes() or a.mask.tobytes() != b.mask.tobytes(), "seed is ignored"


@pytest.mark.parametrize("name", sorted(available_generators()))
def test_generator_resumes_an_interrupted_batch_to_the_same_bytes(name, dummy_root, tmp_path):
    cls = available_generators()[name]
    context = _context(cls, dummy_root)
    kwargs = dict(seed=1, checkpoint=context.checkpoint, model=context.model, anomaly_source=context.anomaly_source,
                  image_size=SIZE, overrides=dict(cls.dummy_overrides), device="cpu", progress=False)
    generate_dataset(name, "mvtec_ad", context.data_root, context.category, 3, tmp_path / "straight",
                     batch_size=3, **kwargs)
    generate_dataset(name, "mvtec_ad", context.data_root, context.category, 2, tmp_path / "killed",
                     batch_size=2, **kwargs)
    folder = tmp_path / "killed" / name / context.category
    manifest = folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while appending sample 1's row
    summary = generate_dataset(name, "mvtec_ad", context.data_root, context.category, 3, tmp_path / "killed",
                               batch_size=2, **kwargs)
    assert summary.generated == 2 and summary.total == 3
    straight = tmp_path / "straight" / name / context.category
    for sub in ("images", "masks"):
        names = sorted(p.name for p in (straight / sub).iterdir())
        assert names == sorted(p.name for p in (folder / sub).iterdir()) and len(names) == 3
        for file in names:
            assert (straight / sub / file).read_bytes() == (folder / sub / file).read_bytes(), f"{sub}/{file}"
