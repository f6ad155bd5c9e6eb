"""Scoring one generated set: read it and its real category, run the chosen metrics, keep rows.

The metrics themselves are pure functions in :mod:`anobench.metrics.generation`; this module is
the orchestration around them (which images, which references, why a metric is unavailable),
the tidy result rows, the JSON record beside the set and the generators-by-metrics table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from anobench.errors import AnobenchError
from anobench.metrics.generation import (
    IC_LPIPS_VARIANTS,
    fid,
    ic_lpips,
    inception_features,
    inception_score,
    kid,
    mask_consistency,
    mask_statistics,
)

# --------------------------------------------------------------------------- scoring a generated set

METRIC_GROUPS = ("ic_lpips", "kid", "fid", "is", "mask_consistency", "mask_stats", "cost")
# column order of the report's generation-quality table
METRIC_ORDER = (
    "n_samples",
    "ic_lpips_dualanodiff", "ic_lpips_dfmgan",
    "is", "is_std", "kid", "kid_std", "fid",
    "mask_change_inside", "mask_changed",
    "mask_area", "mask_area_real", "mask_area_w1",
    "mask_components", "mask_components_real", "mask_components_w1",
    "seconds_per_sample", "peak_memory_mb", "device",
)
DEVICE_PREFIX = "device="  # categorical fact stored as metric "device=<name>", value 1 (report.py reads it)


@dataclass
class GenerationScores:
    """Every value computed for one generated set, and why the others could not be."""

    generator: str
    dataset: str
    category: str
    protocol: str
    seed: int
    config_hash: str
    values: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> reason
    details: dict[str, Any] = field(default_factory=dict)
    device: str | None = None

    def rows(self, version: str | None = None) -> list[dict[str, Any]]:
        """Tidy result rows (``detector`` is ``-``: these rows describe the data, not a detector)."""
        import anobench
        from anobench.results import NO_DETECTOR

        base = {"dataset": self.dataset, "category": self.category, "generator": self.generator,
                "detector": NO_DETECTOR, "seed": self.seed, "protocol": self.protocol,
                "config_hash": self.config_hash, "version": version or anobench.__version__}
        rows = [{**base, "metric": name, "value": float(value)} for name, value in self.values.items()]
        rows += [{**base, "metric": name, "value": float("nan")} for name in self.unavailable
                 if name not in self.values]
        if self.device:
            rows.append({**base, "metric": DEVICE_PREFIX + self.device, "value": 1.0})
        order = {m: i for i, m in enumerate(METRIC_ORDER)}
        return sorted(rows, key=lambda r: (order.get(r["metric"], len(order)), r["metric"]))

    def to_json(self) -> dict[str, Any]:
        """Everything, including what the rows cannot hold: IC-LPIPS clusters and rules, reasons."""
        import anobench

        return {"generator": self.generator, "dataset": self.dataset, "category": self.category,
                "protocol": self.protocol, "seed": self.seed, "config_hash": self.config_hash,
                "device": self.device, "values": self.values, "unavailable": self.unavailable,
                "details": self.details, "anobench_version": anobench.__version__}

    def lines(self) -> list[str]:
        """Human-readable summary, one metric per line."""
        out = [f"{name:<22} {value:.6g}" for name, value in self.values.items()]
        if self.device:
            out.append(f"{'device':<22} {self.device}")
        out += [f"{name:<22} unavailable: {reason}" for name, reason in self.unavailable.items()]
        return out


def _config_hash(meta: dict[str, Any]) -> str:
    if meta.get("config_hash"):
        return str(meta["config_hash"])
    blob = json.dumps(meta.get("config", {}), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _parse_metrics(metrics: Iterable[str] | None) -> list[str]:
    if metrics is None:
        return list(METRIC_GROUPS)
    chosen = []
    for item in metrics:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name not in METRIC_GROUPS:
                raise AnobenchError(f"unknown --metrics {name!r} (known: {', '.join(METRIC_GROUPS)})")
            chosen.append(name)
    return chosen or list(METRIC_GROUPS)


def score_generated_set(
    folder: str | os.PathLike,
    dataset: str | None = None,
    data_root: str | os.PathLike | None = None,
    category: str | None = None,
    split: str | None = None,
    metrics: Iterable[str] | None = None,
    ic_lpips_variants: Sequence[str] = ("dualanodiff", "dfmgan"),
    real: Literal["all", "references", "test"] = "all",
    change_threshold: int = 8,
    device: str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> GenerationScores:
    """Score one generated set (``OUT/<generator>/<category>``) against its real category.

    Dataset, category and data root default to the set's own ``dataset.json``; ``split``
    defaults to the split frozen into the set (read back and verified, not recomputed). IC-LPIPS uses the split's
    few-shot references; KID/FID compare with the ``real`` anomalies (all real anomalies of the
    category by default, the most images a small category has); mask statistics compare with all
    real defects of the category.
    """
    from anobench.datasets import load_category
    from anobench.protocol import frozen_split, split_category
    from anobench.store import GeneratedSet

    say = log or (lambda message: None)
    chosen = _parse_metrics(metrics)
    for variant in ic_lpips_variants:
        if variant not in IC_LPIPS_VARIANTS:
            raise AnobenchError(f"unknown IC-LPIPS variant {variant!r} (known: {', '.join(IC_LPIPS_VARIANTS)})")
    if real not in ("all", "references", "test"):
        raise AnobenchError(f"real set must be all, references or test, got {real!r}")
    gen = GeneratedSet.open(folder)
    record = gen.record
    if category is not None and record.category != category:
        raise AnobenchError(f"{folder}: generated for category {record.category!r}, not {category!r}")
    if dataset is not None and record.dataset not in (None, dataset):
        raise AnobenchError(f"{folder}: generated from dataset {record.dataset!r}, not {dataset!r}")
    dataset, category = dataset or record.dataset, category or record.category
    if not dataset:
        raise AnobenchError(f"{folder}: dataset.json names no dataset; pass --dataset")
    data = load_category(dataset, data_root if data_root is not None else gen.data_root(), category)
    recorded = record.protocol or {}
    if split is None and isinstance(recorded.get("test"), list):
        protocol = frozen_split(data, recorded, Path(folder) / record.FILE)
    else:
        protocol = split_category(data, split or record.protocol_name)
    protocol_name = protocol.name
    size = int(record.image_size or 256)
    scores = GenerationScores(
        generator=gen.generator, dataset=dataset, category=category, protocol=protocol_name,
        seed=int(record.seed or 0), config_hash=_config_hash(record.to_dict()),
    )
    scores.values["n_samples"] = float(len(gen))
    say(f"loading {len(gen)} generated images ({size} px)")
    from anobench.progress import progress_bar

    loaded = [gen.load(i, size) for i in progress_bar(range(len(gen)), desc="load generated", unit="img",
                                                       disable=log is None, leave=False)]
    images = [img for img, _ in loaded]
    masks = [m for _, m in loaded]
    gen_types = [str(row.get("defect_type") or "") for row in gen.rows]
    real_anomalies = {"all": data.test_anomalies, "references": protocol.references,
                      "test": [s for s in protocol.test if s.label == 1]}[real]

    if "ic_lpips" in chosen:
        if not protocol.references:
            for variant in ic_lpips_variants:
                scores.unavailable[f"ic_lpips_{variant}"] = f"no reference anomalies under protocol {protocol_name!r}"
        else:
            refs = [s.image(size) for s in protocol.references]
            ref_types = [s.defect_type for s in protocol.references]
            for variant in ic_lpips_variants:
                config = IC_LPIPS_VARIANTS[variant]
                say(f"IC-LPIPS ({variant}: {config.net}, cap {config.cap}, empty clusters {config.empty})")
                result = ic_lpips(images, refs, config, gen_types, ref_types, device=device)
                name = f"ic_lpips_{variant}"
                if math.isnan(result.value):
                    scores.unavailable[name] = "every cluster has fewer than 2 generated images"
                else:
                    scores.values[name] = result.value
                scores.details[name] = {"groups": result.groups, "cluster_sizes": result.cluster_sizes,
                                        "grouping": result.grouping, "config": asdict(config)}

    if "kid" in chosen or "fid" in chosen:
        say(f"Inception features ({len(images)} generated, {len(real_anomalies)} real)")
        try:
            gen_feats = inception_features(images, device=device)
            real_feats = inception_features([s.image(size) for s in real_anomalies], device=device)
        except AnobenchError as exc:
            for name in ("kid", "fid"):
                if name in chosen:
                    scores.unavailable[name] = str(exc)
        else:
            if "kid" in chosen:
                try:
                    result = kid(real_feats, gen_feats, seed=seed)
                    scores.values["kid"], scores.values["kid_std"] = result.value, result.std
                    scores.details["kid"] = {"subset_size": result.subset_size, "num_subsets": result.num_subsets,
                                             "real": real, "n_real": len(real_feats)}
                except AnobenchError as exc:
                    scores.unavailable["kid"] = str(exc)
            if "fid" in chosen:
                try:
                    scores.values["fid"] = fid(real_feats, gen_feats)
                    scores.details["fid"] = {"real": real, "n_real": len(real_feats)}
                except AnobenchError as exc:
                    scores.unavailable["fid"] = str(exc)

    if "is" in chosen:
        from anobench.weights import WEIGHTS, weights_available, weights_dir

        ok, reason = weights_available("inception-v3-imagenet")
        if not ok and "checksum" not in reason:
            scores.unavailable["is"] = (
                "no ImageNet Inception classifier offline (the FID Inception has no classifier head); "
                f"put {WEIGHTS['inception-v3-imagenet'].filename} in {weights_dir()} or set "
                "$ANOBENCH_WEIGHT_INCEPTION_V3_IMAGENET"
            )
        elif not ok:
            scores.unavailable["is"] = reason
        else:
            try:
                scores.values["is"], scores.values["is_std"] = inception_score(images, device=device)
            except AnobenchError as exc:
                scores.unavailable["is"] = str(exc)

    if "mask_consistency" in chosen:
        _score_mask_consistency(scores, gen, data.root, images, masks, size, change_threshold)

    if "mask_stats" in chosen:
        from scipy.stats import wasserstein_distance

        gen_area, gen_comp = mask_statistics(masks)
        real_area, real_comp = mask_statistics(s.mask(size) for s in data.test_anomalies)
        scores.values["mask_area"] = float(gen_area.mean())
        scores.values["mask_components"] = float(gen_comp.mean())
        if len(real_area):
            scores.values["mask_area_real"] = float(real_area.mean())
            scores.values["mask_area_w1"] = float(wasserstein_distance(gen_area, real_area))
            scores.values["mask_components_real"] = float(real_comp.mean())
            scores.values["mask_components_w1"] = float(wasserstein_distance(gen_comp, real_comp))
        else:
            for name in ("mask_area_real", "mask_area_w1", "mask_components_real", "mask_components_w1"):
                scores.unavailable[name] = f"{data.root} has no real anomalies"

    if "cost" in chosen:
        seconds = [float(r["seconds"]) for r in gen.rows if r.get("seconds") is not None]
        if seconds:
            scores.values["seconds_per_sample"] = float(np.mean(seconds))
        else:
            scores.unavailable["seconds_per_sample"] = "manifest rows have no seconds"
        if record.peak_memory_mb is not None:
            scores.values["peak_memory_mb"] = float(record.peak_memory_mb)
        else:
            scores.unavailable["peak_memory_mb"] = "dataset.json has no peak_memory_mb"
        scores.device = record.device or None
    return scores


def _score_mask_consistency(scores: GenerationScores, gen, category_root: Path, images, masks,
                            size: int, threshold: int) -> None:
    from anobench.images import read_rgb

    if not any(row.get("source") for row in gen.rows):
        reason = f"generator {gen.generator!r} does not edit a normal source image (no source in the manifest)"
        scores.unavailable["mask_change_inside"] = scores.unavailable["mask_changed"] = reason
        return
    inside, changed = [], []
    for row, image, mask in zip(gen.rows, images, masks):
        if not row.get("source"):
            continue
        source_path = Path(category_root) / row["source"]
        if not source_path.is_file():
            raise AnobenchError(f"{source_path}: source image of generated sample {row.get('id')} not found "
                                "(is --data-root the one the set was generated from?)")
        a, b = mask_consistency(image, read_rgb(source_path, size), mask, threshold)
        inside.append(a)
        changed.append(b)
    inside_ok = [v for v in inside if not math.isnan(v)]
    if inside_ok:
        scores.values["mask_change_inside"] = float(np.mean(inside_ok))
    else:
        scores.unavailable["mask_change_inside"] = "no generated image differs from its source"
    changed_ok = [v for v in changed if not math.isnan(v)]
    if changed_ok:
        scores.values["mask_changed"] = float(np.mean(changed_ok))
    else:
        scores.unavailable["mask_changed"] = "every generated mask is empty"
    scores.details["mask_consistency"] = {"threshold": threshold, "n": len(inside)}


# --------------------------------------------------------------------------- results and report

QUALITY_JSON = "generation_quality.json"


def write_scores_json(scores: GenerationScores, folder: str | os.PathLike) -> Path:
    """Record the full scores (clusters, rules, reasons) beside the generated set."""
    from anobench.images import atomic_write_text

    path = Path(folder) / QUALITY_JSON
    atomic_write_text(path, json.dumps(scores.to_json(), indent=2, sort_keys=True, default=float) + "\n")
    return path


def append_generation_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Append tidy rows to a results file (CSV or parquet) through the results store."""
    from anobench.results import append_rows

    return append_rows(path, rows)


def generation_quality_table(rows_df, by_category: bool = False):
    """Generation-quality table: generators as rows, metrics as columns (the report's table).

    Takes tidy result rows (a DataFrame with the result columns); keeps generation rows
    (``detector == "-"``), averages over seeds (and over categories unless ``by_category``), and
    turns the ``device=<name>`` facts back into a ``device`` text column. Columns follow
    :data:`METRIC_ORDER`; metrics nobody computed are dropped; unknown metrics come last.
    """
    import pandas as pd

    if rows_df is None or len(rows_df) == 0:
        return pd.DataFrame()
    df = rows_df[rows_df["detector"].astype(str) == "-"].copy()
    if df.empty:
        return pd.DataFrame()
    index = ["dataset", "category", "generator"] if by_category else ["generator"]
    is_device = df["metric"].astype(str).str.startswith(DEVICE_PREFIX)
    devices = df[is_device].assign(device=lambda d: d["metric"].str[len(DEVICE_PREFIX):])
    numeric = df[~is_device].copy()
    numeric["value"] = pd.to_numeric(numeric["value"], errors="coerce")
    table = numeric.pivot_table(index=index, columns="metric", values="value", aggfunc="mean", dropna=False)
    if not devices.empty:
        dev = devices.groupby(index)["device"].agg(lambda s: ",".join(sorted(set(s))))
        table["device"] = dev.reindex(table.index)
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    columns = sorted(table.columns, key=lambda c: (order.get(c, len(order)), str(c)))
    table = table[columns]
    table.columns.name = None
    return table
