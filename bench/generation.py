"""The generation loop: real category + protocol split + generator -> a generated set on disk.

Sample ``i`` of a run is fixed by ``(seed, category, i)`` alone: that pair picks the normal source image
and the generator's per-sample seed. So a run can be killed at any point and resumed, batches
can be any size, and the files are byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import itertools
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

import anobench
from anobench.config import apply_overrides, config_hash, config_to_dict
from anobench.datasets import CategoryData, list_images, load_category
from anobench.devices import resolve_device  # one resolver for every command
from anobench.errors import AnobenchError
from anobench.generators.base import (
    GeneratedSample,
    GenerationContext,
    Generator,
    ReferenceAnomaly,
    SampleRequest,
    get_generator_class,
)
from anobench.images import read_rgb
from anobench.artifacts import relative_path
from anobench.progress import progress_bar
from anobench.protocol import ProtocolSplit, split_category, split_mismatch
from anobench.records import COMPLETE, RUNNING, DatasetRecord
from anobench.safety import check_generate
from anobench.store import DatasetWriter


@dataclass
class GenerationSummary:
    folder: Path
    generated: int
    total: int
    seconds: float
    repaired: int = 0  # samples found missing or damaged and made again
    dropped: int = 0  # test images left out of the split as duplicates of a reference

    def line(self) -> str:
        rate = self.generated / self.seconds if self.seconds > 0 else float("nan")
        repaired = f", {self.repaired} missing or damaged remade" if self.repaired else ""
        dropped = (f"; {self.dropped} test image(s) duplicating a reference dropped from the split "
                   "(listed in dataset.json)") if self.dropped else ""
        return (
            f"{self.folder}: {self.total} images ({self.generated} new{repaired}) in {self.seconds:.1f} s, "
            f"{rate:.2f} images/s{dropped}"
        )




def peak_memory_mb() -> float:
    """Peak resident memory of this process (and CUDA allocations when a GPU was used)."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
    return round(peak, 1)


def category_key(category: str) -> int:
    """A stable 32-bit number naming a category, so each category draws its own randomness."""
    return int(hashlib.sha256(category.encode("utf-8")).hexdigest()[:8], 16)


def source_choice(seed: int, category: str, index: int, n_normals: int) -> tuple[int, int]:
    """(normal image index, generator seed) of sample ``index``: fixed by (seed, category, index)."""
    rng = np.random.default_rng([seed, category_key(category), index])
    return int(rng.integers(n_normals)), int(rng.integers(2**63 - 1))


def load_references(data: CategoryData, split: ProtocolSplit, size: int) -> list[ReferenceAnomaly]:
    return [
        ReferenceAnomaly(*s.image_and_mask(size), defect_type=s.defect_type, path=data.relpath(s.path))
        for s in split.references
    ]


def build_generator(name: str, overrides: dict[str, str] | None = None) -> Generator:
    cls = get_generator_class(name)
    config = apply_overrides(cls.config_class(), overrides or {})
    return cls(config)


def prepare_context(
    gen: Generator,
    dataset: str,
    data_root: str | Path,
    category: str,
    split: str = "thirds",
    image_size: int = 256,
    anomaly_source: str | Path | None = None,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    drop_duplicates: bool = False,
) -> tuple[CategoryData, ProtocolSplit, GenerationContext]:
    """Read a category, split it by protocol, and build what the generator may see.

    Reference anomalies are loaded only for generators that need them: zero-shot generators
    see none. Shared by generation and by the training stage of trainable generators.
    """
    data = load_category(dataset, data_root, category)
    protocol = split_category(data, split, drop_duplicates=drop_duplicates)
    references: list[ReferenceAnomaly] = []
    if gen.needs.reference_anomalies:
        references = load_references(data, protocol, image_size)
        if not references:
            raise AnobenchError(
                f"generator {gen.name!r} needs few-shot reference anomalies, but {data.root} has none "
                f"under protocol {split!r}"
            )
    context = GenerationContext(
        dataset=dataset,
        category=category,
        image_size=image_size,
        normal_paths=[s.path for s in data.train],
        references=references,
        defect_types=data.defect_types,
        anomaly_source=_check_anomaly_source(anomaly_source),
        model=model,
        checkpoint=Path(checkpoint) if checkpoint else None,
        device=resolve_device(device),
        data_root=Path(data_root),
    )
    return data, protocol, context


def source_fields(gen, dataset: str, category: str, data_root, folder, image_size: int, seed: int) -> dict:
    """What a generated set and a generator checkpoint both record of the generator and its data."""
    return {"generator": gen.name, "generator_version": gen.version, "config": config_to_dict(gen.config),
            "dataset": dataset, "category": category, "data_root": relative_path(data_root, folder),
            "data_root_abs": str(Path(data_root).resolve()), "image_size": image_size, "seed": seed}


def generate_dataset(
    generator: str,
    dataset: str,
    data_root: str | Path,
    category: str,
    num: int,
    out: str | Path,
    seed: int = 0,
    split: str = "thirds",
    anomaly_source: str | Path | None = None,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
    overrides: dict[str, str] | None = None,
    image_size: int = 256,
    progress: bool = True,
    verify: bool = False,
    drop_duplicates: bool = False,
    label: str | None = None,
) -> GenerationSummary:
    """Write ``num`` samples to ``out/<generator>/<category>/``, resuming what is already there.

    ``label`` replaces ``<generator>`` in that path (a run grid's labelled entry, so two setups
    of one generator get two folders); the set still records the generator's registered name.

    ``verify`` checks every stored file against its manifest sha256 and regenerates damaged
    samples (missing files are always regenerated); ``drop_duplicates`` leaves test images that
    duplicate a reference out of the split (recorded in ``dataset.json``).
    """
    if num < 1:
        raise AnobenchError(f"--num must be at least 1, got {num}")
    if batch_size < 1:
        raise AnobenchError(f"--batch-size must be at least 1, got {batch_size}")
    if seed < 0:
        raise AnobenchError(f"--seed must be a non-negative integer, got {seed}")
    gen = build_generator(generator, overrides)
    check_generate(label or gen.name, data_root, category, num, out, seed, image_size, batch_size, anomaly_source,
                   checkpoint)
    data, protocol, context = prepare_context(gen, dataset, data_root, category, split, image_size,
                                              anomaly_source, model, checkpoint, device, drop_duplicates)
    split_record = protocol.summary(data)
    checkpoint_id = check_checkpoint_split(checkpoint, split_record) if checkpoint else None
    folder = Path(out) / (label or gen.name) / category
    record = DatasetRecord(
        **source_fields(gen, dataset, category, data_root, folder, image_size, seed),
        config_hash=config_hash(gen.config),
        protocol=split_record,
        reference_anomalies=bool(gen.needs.reference_anomalies),
        anomaly_source=str(context.anomaly_source) if context.anomaly_source else None,
        anomaly_source_id=folder_id(context.anomaly_source) if context.anomaly_source else None,
        model=model,
        checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
        checkpoint_id=checkpoint_id,
        device=context.device,
        anobench_version=anobench.__version__,
    )
    with DatasetWriter(folder, record, verify=verify) as writer:
        done = writer.done
        n_todo = num - sum(1 for i in done if i < num)
        todo = (i for i in range(num) if i not in done)  # lazy: a huge --num builds no index list
        started = time.perf_counter()
        if n_todo:
            _generate(gen, context, data, writer, todo, n_todo, num, seed, image_size, batch_size, progress)
        elapsed = time.perf_counter() - started
        status = COMPLETE if len(writer.done) >= num else RUNNING
        total_seconds = sum(r.get("seconds", 0.0) for r in writer.rows.values())
        if n_todo:  # a re-run with nothing to make keeps the cost recorded by the runs that made the set
            writer.record_cost(peak_memory_mb(), status=status, num=len(writer.done),
                               seconds_per_sample=round(total_seconds / max(len(writer.done), 1), 4))
        elif writer.record.status != status or writer.record.num != len(writer.done):
            writer.write_meta(status=status, num=len(writer.done))
        return GenerationSummary(folder, n_todo, len(writer.done), elapsed, len(writer.dropped),
                                 len(split_record["dropped"]))


def _generate(gen: Generator, context: GenerationContext, data: CategoryData, writer: DatasetWriter,
              todo: Iterable[int], n_todo: int, num: int, seed: int, image_size: int, batch_size: int,
              progress: bool) -> None:
    gen.setup(context)
    bar = progress_bar(total=num, initial=num - n_todo, desc=f"{gen.name}/{data.category}", unit="img",
                       disable=not progress)
    for batch in _chunks(todo, batch_size):
        requests = [_request(data, seed, i, image_size) for i in batch]
        t0 = time.perf_counter()
        samples = gen.generate(requests)
        seconds = (time.perf_counter() - t0) / len(batch)
        if len(samples) != len(requests):
            raise AnobenchError(f"generator {gen.name!r} returned {len(samples)} samples for {len(requests)} requests")
        for request, sample in zip(requests, samples):
            check_sample(gen.name, request, sample, image_size)
            writer.add(request.index, sample.image, sample.mask, {
                "source": request.source_path,
                "defect_type": sample.defect_type,
                "prompt": sample.prompt,
                "seed": request.seed,
                "seconds": round(seconds, 4),
                "extra": sample.extra,
            }, sample.arrays)
        bar.update(len(batch))
    bar.close()


def folder_id(folder: Path) -> str:
    """A content id of an input folder from its file names and sizes (cheap; no path in it)."""
    listing = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(repr(listing).encode()).hexdigest()[:16]


def check_checkpoint_split(checkpoint: str | Path, split_record: dict) -> str:
    """A trained generator's checkpoint must carry the split this generation uses; returns its id."""
    from anobench.generator_training import read_checkpoint_artifact

    record = read_checkpoint_artifact(Path(checkpoint))
    if record is None:
        return folder_id(Path(checkpoint))
    trained = record.protocol or {}
    differs = split_mismatch(trained, split_record)
    if differs:
        leaked = sorted(set(trained.get("references") or []) & set(split_record.get("test") or []))
        raise AnobenchError(
            f"{checkpoint}: trained with split {trained.get('name')!r}, this generation uses "
            f"{split_record.get('name')!r} (the {'rule' if differs == 'name' else differs + ' list'} differs; "
            f"{len(leaked)} of its "
            f"{len(trained.get('references') or [])} training anomalies are test images here); "
            f"pass --split {trained.get('name')}"
        )
    return str(record.checkpoint_id)


def _request(data: CategoryData, seed: int, index: int, size: int) -> SampleRequest:
    normal, sample_seed = source_choice(seed, data.category, index, len(data.train))
    path = data.train[normal].path
    return SampleRequest(index=index, seed=sample_seed, source=read_rgb(path, size), source_path=data.relpath(path))


def check_sample(name: str, request: SampleRequest, sample: GeneratedSample, size: int) -> None:
    """Catch generator bugs before they reach disk: shapes, dtypes, non-empty masks."""
    if sample.image.shape != (size, size, 3) or sample.image.dtype != np.uint8:
        raise AnobenchError(f"generator {name!r} returned an image of {sample.image.shape} {sample.image.dtype} "
                            f"for sample {request.index}; expected ({size}, {size}, 3) uint8")
    if sample.mask.shape != (size, size):
        raise AnobenchError(f"generator {name!r} returned a mask of {sample.mask.shape} for sample {request.index}")
    if not sample.mask.any():
        raise AnobenchError(f"generator {name!r} returned an empty mask for sample {request.index}")


def _check_anomaly_source(folder: str | Path | None) -> Path | None:
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise AnobenchError(f"{folder}: --anomaly-source is not a folder")
    if not any(list_images(d) for d in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]):
        raise AnobenchError(f"{folder}: --anomaly-source holds no images")
    return folder.resolve()


def _chunks(items: Iterable[int], size: int) -> Iterable[list[int]]:
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch
