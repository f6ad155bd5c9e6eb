"""Sweep axes of a run grid: sample count, synthetic:real batch ratio, mixtures of generators.

A run config's ``sweep`` mapping adds one-dimensional sweeps to the grid (each axis on its own,
not their product)::

    sweep:
      num: [50, 100, 200]                  # generated samples, for every listed generator
      synthetic_fraction: [0.25, 0.5, 0.75]   # share of each training batch that is synthetic
      mix:                                 # weighted mixtures of listed generators (ASBench's hybrids)
        - {draem: 0.5, crop_paste: 0.5}

Each swept cell is a :class:`Variant` whose label names what was varied (``draem[num=50]``,
``crop_paste[synthetic_fraction=0.25]``, ``mix[draem=0.5,crop_paste=0.5]``), built from each
listed entry's label (its name unless the entry gives a ``label:``); a swept cell's label is the
generator name its result rows carry (an entry as listed keeps its registered name), and the
swept value is kept with its stored per-image data (``sweep``: axis -> value), from which the
report draws metric-vs-value curves, one per entry (``base_generator``).

A mixture is composed from the component generators' own sets at the same seed: the first
``round(w * num)`` samples of each (sample ``i`` of a set depends only on (seed, i), so these
are exactly the samples a ``num``-sample run of that generator would hold), copied into one
set whose manifest names each sample's source generator. (A registered ``mix`` generator, once
on main, can replace this composition without changing the labels.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anobench.errors import AnobenchError

SWEEP_KEYS = {"num", "synthetic_fraction", "mix"}
MIX = "mix"


@dataclass
class Variant:
    """One column of the grid: a generator (or mixture) with what the sweep set."""

    label: str
    generator: str  # the listed generator's label, or "mix"
    num: int
    train_overrides: dict[str, str] = field(default_factory=dict)
    sweep: dict[str, float] = field(default_factory=dict)
    components: dict[str, float] | None = None  # mixture weights, in the order given
    registered: str | None = None  # the registered generator of a listed entry as it is

    def setup(self) -> dict[str, Any]:
        """What evaluation stores with the per-image data (and the rows' generator label).

        A listed entry as it is keeps its registered name in the rows (a labelled entry's setup
        differs by config hash); a swept cell carries its label.
        """
        row = self.registered if self.registered and not self.sweep and self.components is None else self.label
        out: dict[str, Any] = {"label": row, "base_generator": self.generator}
        if self.sweep:
            out["sweep"] = dict(self.sweep)
        if self.components:
            out["components"] = dict(self.components)
        return out


def _number(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AnobenchError(f"{where}: {value!r} is not a number") from None


def _text(value: float) -> str:
    return f"{value:g}"


def parse_sweep(data: Any, generators, source: str = "config") -> list[Variant]:
    """The grid's variants: every listed generator as it is, then one per swept value."""
    variants = [Variant(g.label, g.label, g.num, registered=g.name) for g in generators]
    if data is None:
        return variants
    if not isinstance(data, dict):
        raise AnobenchError(f"{source}: sweep must be a mapping of axis: [values]")
    unknown = sorted(set(data) - SWEEP_KEYS)
    if unknown:
        raise AnobenchError(f"{source}: sweep: unknown axis {', '.join(unknown)} (known: {', '.join(sorted(SWEEP_KEYS))})")
    names = {g.label: g for g in generators}  # a listed entry by its label (its name unless labelled)
    for axis in ("num", "synthetic_fraction"):
        values = data.get(axis)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            raise AnobenchError(f"{source}: sweep.{axis} must be a non-empty list")
        for raw in values:
            value = _number(raw, f"{source}: sweep.{axis}")
            if axis == "num" and (value < 1 or value != int(value)):
                raise AnobenchError(f"{source}: sweep.num values must be positive integers, got {raw!r}")
            if axis == "synthetic_fraction" and not 0 < value < 1:
                raise AnobenchError(f"{source}: sweep.synthetic_fraction values must be in (0, 1), got {raw!r}")
            for g in generators:
                label = f"{g.label}[{axis}={_text(value)}]"
                if axis == "num":
                    variants.append(Variant(label, g.label, int(value), sweep={"num": value}))
                else:
                    variants.append(Variant(label, g.label, g.num, {"synthetic_fraction": _text(value)},
                                            sweep={"synthetic_fraction": value}))
    for i, mixture in enumerate(data.get("mix") or []):
        where = f"{source}: sweep.mix[{i}]"
        if not isinstance(mixture, dict) or len(mixture) < 2:
            raise AnobenchError(f"{where}: a mixture maps 2+ listed generators to weights")
        weights = {str(k): _number(v, where) for k, v in mixture.items()}
        missing = [k for k in weights if k not in names]
        if missing:
            raise AnobenchError(f"{where}: {', '.join(missing)} not in generators (listed: {', '.join(names)})")
        if any(w < 0 for w in weights.values()) or not math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6):
            raise AnobenchError(f"{where}: weights must be >= 0 and sum to 1")
        label = MIX + "[" + ",".join(f"{k}={_text(w)}" for k, w in weights.items()) + "]"
        num = max(names[k].num for k in weights)
        first = next(iter(weights))
        variants.append(Variant(label, MIX, num, sweep={"mix_weight": weights[first]}, components=weights))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise AnobenchError(f"{source}: sweep repeats a cell ({', '.join(sorted({x for x in labels if labels.count(x) > 1}))})")
    return variants


def mixture_counts(weights: dict[str, float], num: int) -> dict[str, int]:
    """Samples per component: rounded shares, the remainder to the last component."""
    counts, left = {}, num
    items = list(weights.items())
    for name, w in items[:-1]:
        counts[name] = min(left, int(round(w * num)))
        left -= counts[name]
    counts[items[-1][0]] = left
    return counts


def compose_mixture(parts: dict[str, Path], counts: dict[str, int], out: Path) -> Path:
    """Write a generated set at ``out`` from the first ``counts[g]`` samples of each part (resumable)."""
    from anobench.artifacts import relative_path, resolve_stored_path
    from anobench.records import DatasetRecord
    from anobench.store import DatasetWriter, GeneratedSet

    sets = {g: GeneratedSet.open(folder) for g, folder in parts.items()}
    first = next(iter(sets.values()))
    for g, s in sets.items():
        if len(s) < counts[g]:
            raise AnobenchError(f"{s.folder}: has {len(s)} samples, the mixture needs {counts[g]}")
    base = first.record
    data_root = resolve_stored_path(first.folder, base, "data_root")
    record = DatasetRecord(
        generator=MIX, generator_version="1", config={"weights": counts}, dataset=base.dataset,
        category=base.category, seed=base.seed, image_size=base.image_size, protocol=base.protocol,
        data_root=relative_path(data_root, out) if data_root else None,
        data_root_abs=str(data_root.resolve()) if data_root else None,
        components={g: s.record.config_hash for g, s in sets.items()})
    with DatasetWriter(out, record) as writer:
        _fill_mixture(writer, sets, counts)
    return Path(out)


def _fill_mixture(writer, sets, counts: dict[str, int]) -> int:
    from anobench.records import COMPLETE

    index = 0
    for g, s in sets.items():
        for i in range(counts[g]):
            if index not in writer.done:
                image, mask = s.load(i)
                row = {k: v for k, v in s.rows[i].items() if k not in ("id", "index", "files", "sha256")}
                writer.add(index, image, mask, dict(row, source_generator=g, source_index=i))
            index += 1
    writer.write_meta(status=COMPLETE, num=index)
    return index
