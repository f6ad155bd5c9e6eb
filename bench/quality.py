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

    def rows(self, version: str | None = None, only: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Tidy result rows (``detector`` is ``-``: these rows describe the data, not a detector).

        ``device`` is the device the set was generated on (its cost figures' device); ``only``
        keeps the rows of these metrics.
        """
        import anobench
        from anobench.results import NO_DETECTOR, hash_text

        only = None if only is None else set(only)
        base = {"dataset": self.dataset, "category": self.category, "generator": self.generator,
                "detector": NO_DETECTOR, "seed": self.seed, "protocol": self.protocol,
                "config_hash": hash_text(self.config_hash), "version": version or anobench.__version__,
                "device": self.device or ""}
        rows = [{**base, "metric": name, "value": float(value)} for name, value in self.values.items()
                if only is None or name in only]
        rows += [{**base, "metric": name, "value": float("nan")} for name in self.unavailable
                 if name not in self.values and (only is None or name in only)]
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


def metric_names(group: str, ic_lpips_variants: Sequence[str] = ("dualanodiff", "dfmgan")) -> tuple[str, ...]:
    """The result rows one metric group (:data:`METRIC_GROUPS`) writes."""
    return {"ic_lpips": tuple(f"ic_lpips_{v}" for v in ic_lpips_variants), "kid": ("kid", "kid_std"),
            "fid": ("fid",), "is": ("is", "is_std"), "mask_consistency": ("mask_change_inside", "mask_changed"),
            "mask_stats": ("mask_area", "mask_components", "mask_area_real", "mask_area_w1", "mask_components_real",
                           "mask_components_w1"),
            "cost": ("seconds_per_sample", "peak_memory_mb")}[group]


class _Stored:
    """The results store as a scoring run fills it: finished metrics appended as each stage ends.

    Metrics already stored with a finite value for this set (same dataset, category, generator,
    seed, protocol and config hash, and as many samples as it has now) are skipped on a rerun; a
    stored NaN (unavailable) is tried again, since its reason (missing weights, too few images)
    may have gone. Values stored for another sample count (the set grew since) are all redone.
    """

    def __init__(self, path: str | os.PathLike | None, scores: GenerationScores, n_samples: int):
        from anobench.results import check_appendable, hash_text, read_results

        self.path, self.scores, self.values = path, scores, {}
        if path is None:
            return
        check_appendable(path)
        if not (Path(path).exists() and (Path(path).is_dir() or Path(path).stat().st_size)):
            return
        rows = read_results(path)
        mine = rows[(rows["detector"] == "-") & (rows["dataset"] == scores.dataset)
                    & (rows["category"] == scores.category) & (rows["generator"] == scores.generator)
                    & (rows["seed"] == scores.seed) & (rows["protocol"] == scores.protocol)
                    & (rows["config_hash"] == hash_text(scores.config_hash))]
        latest = mine.drop_duplicates("metric", keep="last")
        values = {m: float(v) for m, v in zip(latest["metric"], latest["value"]) if math.isfinite(v)}
        self.values = values if values.get("n_samples") == float(n_samples) else {}

    def todo(self, names: Iterable[str]) -> list[str]:
        """The names still to compute; the stored ones are copied into the scores."""
        names = list(names)
        for name in names:
            if name in self.values:
                self.scores.values[name] = self.values[name]
                self.scores.details.setdefault("stored_before", []).append(name)
        return [n for n in names if n not in self.values]

    def finish(self, names: Iterable[str]) -> None:
        """Append the rows of these just-computed metrics (values, or NaN for the unavailable)."""
        from anobench.results import append_rows

        rows = self.scores.rows(only=names)
        if self.path is not None and rows:
            append_rows(self.path, rows)


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
    results: str | os.PathLike | None = None,
) -> GenerationScores:
    """Score one generated set (``OUT/<generator>/<category>``) against its real category.

    Dataset, category and data root default to the set's own ``dataset.json``; ``split``
    defaults to the split frozen into the set (read back and verified, not recomputed). IC-LPIPS uses the split's
    few-shot references; KID/FID compare with the ``real`` anomalies (all real anomalies of the
    category by default, the most images a small category has); mask statistics compare with all
    real defects of the category.

    With ``log``, every stage (image loading, features, IC-LPIPS, KID, FID, IS, masks) reports
    progress (:func:`anobench.progress.progress_bar`). With ``results``, each stage's rows are
    appended to that store as the stage finishes, so a kill keeps what was done, and metrics
    already stored there for this set and config are not computed again (their stored values
    fill the returned scores; ``details["stored_before"]`` names them).
    """
    from anobench.datasets import load_category
    from anobench.progress import progress_bar
    from anobench.protocol import frozen_split, split_category
    from anobench.store import GeneratedSet

    say = log or (lambda message: None)
    quiet = log is None

    def bar(iterable=None, **kwargs):
        return progress_bar(iterable, disable=quiet, leave=False, **kwargs)

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
        device=record.device or None,  # the device the set was generated on (its cost's device)
    )
    store = _Stored(results, scores, len(gen))
    if store.todo(["n_samples"]):
        scores.values["n_samples"] = float(len(gen))
        store.finish(["n_samples"])
    todo = {group: store.todo(metric_names(group, ic_lpips_variants)) for group in chosen}
    if not any(todo.values()):
        say("every chosen metric is stored already")
        return scores
    say(f"loading {len(gen)} generated images ({size} px)")
    loaded = [gen.load(i, size) for i in bar(range(len(gen)), desc="load generated", unit="img")]
    images = [img for img, _ in loaded]
    masks = [m for _, m in loaded]
    gen_types = [str(row.get("defect_type") or "") for row in gen.rows]
    real_anomalies = {"all": data.test_anomalies, "references": protocol.references,
                      "test": [s for s in protocol.test if s.label == 1]}[real]

    if todo.get("ic_lpips"):
        if not protocol.references:
            for name in todo["ic_lpips"]:
                scores.unavailable[name] = f"no reference anomalies under protocol {protocol_name!r}"
        else:
            refs = [s.image(size) for s in bar(protocol.references, desc="load references", unit="img")]
            ref_types = [s.defect_type for s in protocol.references]
            for variant in ic_lpips_variants:
                name = f"ic_lpips_{variant}"
                if name not in todo["ic_lpips"]:
                    continue
                config = IC_LPIPS_VARIANTS[variant]
                say(f"IC-LPIPS ({variant}: {config.net}, cap {config.cap}, empty clusters {config.empty})")
                with bar(total=len(images), desc=f"IC-LPIPS {variant}", unit="img") as progress:
                    result = ic_lpips(images, refs, config, gen_types, ref_types, device=device,
                                      progress=progress.update)
                if math.isnan(result.value):
                    scores.unavailable[name] = "every cluster has fewer than 2 generated images"
                else:
                    scores.values[name] = result.value
                scores.details[name] = {"groups": result.groups, "cluster_sizes": result.cluster_sizes,
                                        "grouping": result.grouping, "config": asdict(config)}
                store.finish([name])

    inception = [g for g in ("kid", "fid") if todo.get(g)]
    if inception:
        say(f"Inception features ({len(images)} generated, {len(real_anomalies)} real)")
        try:
            gen_feats = inception_features(bar(images, desc="Inception features (generated)", unit="img"),
                                           device=device)
            real_images = (s.image(size) for s in real_anomalies)
            real_feats = inception_features(bar(real_images, total=len(real_anomalies),
                                                desc="Inception features (real)", unit="img"), device=device)
        except AnobenchError as exc:
            for group in inception:
                scores.unavailable[group] = str(exc)
                store.finish(metric_names(group))
        else:
            if "kid" in inception:
                with bar(total=1, desc="KID", unit="step") as progress:
                    try:
                        result = kid(real_feats, gen_feats, seed=seed)
                        scores.values["kid"], scores.values["kid_std"] = result.value, result.std
                        scores.details["kid"] = {"subset_size": result.subset_size,
                                                 "num_subsets": result.num_subsets, "real": real,
                                                 "n_real": len(real_feats)}
                    except AnobenchError as exc:
                        scores.unavailable["kid"] = str(exc)
                    progress.update(1)
                store.finish(metric_names("kid"))
            if "fid" in inception:
                with bar(total=1, desc="FID", unit="step") as progress:
                    try:
                        scores.values["fid"] = fid(real_feats, gen_feats)
                        scores.details["fid"] = {"real": real, "n_real": len(real_feats)}
                    except AnobenchError as exc:
                        scores.unavailable["fid"] = str(exc)
                    progress.update(1)
                store.finish(["fid"])

    if todo.get("is"):
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
                with bar(total=len(images), desc="IS", unit="img") as progress:
                    scores.values["is"], scores.values["is_std"] = inception_score(images, device=device,
                                                                                   progress=progress.update)
            except AnobenchError as exc:
                scores.unavailable["is"] = str(exc)
        store.finish(metric_names("is"))

    if todo.get("mask_consistency"):
        _score_mask_consistency(scores, gen, data.root, images, masks, size, change_threshold, bar)
        store.finish(metric_names("mask_consistency"))

    if todo.get("mask_stats"):
        from scipy.stats import wasserstein_distance

        gen_area, gen_comp = mask_statistics(masks)
        real_masks = bar(data.test_anomalies, desc="real masks", unit="img")
        real_area, real_comp = mask_statistics(s.mask(size) for s in real_masks)
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
        store.finish(metric_names("mask_stats"))

    if todo.get("cost"):
        seconds = [float(r["seconds"]) for r in gen.rows if r.get("seconds") is not None]
        if seconds:
            scores.values["seconds_per_sample"] = float(np.mean(seconds))
        else:
            scores.unavailable["seconds_per_sample"] = "manifest rows have no seconds"
        if record.peak_memory_mb is not None:
            scores.values["peak_memory_mb"] = float(record.peak_memory_mb)
        else:
            scores.unavailable["peak_memory_mb"] = "dataset.json has no peak_memory_mb"
        store.finish(metric_names("cost"))
    return scores


def _score_mask_consistency(scores: GenerationScores, gen, category_root: Path, images, masks,
                            size: int, threshold: int, bar=None) -> None:
    from anobench.images import read_rgb

    if not any(row.get("source") for row in gen.rows):
        reason = f"generator {gen.generator!r} does not edit a normal source image (no source in the manifest)"
        scores.unavailable["mask_change_inside"] = scores.unavailable["mask_changed"] = reason
        return
    inside, changed = [], []
    triples = zip(gen.rows, images, masks)
    if bar is not None:
        triples = bar(triples, total=len(images), desc="mask consistency", unit="img")
    for row, image, mask in triples:
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
    """Record the full scores (clusters, rules, reasons) beside the generated set.

    Details of metrics this run took from the store (not recomputed) are kept from the record
    an earlier run of the same setup wrote.
    """
    from anobench.images import atomic_write_text

    path = Path(folder) / QUALITY_JSON
    record = scores.to_json()
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = None
    same = isinstance(before, dict) and all(before.get(k) == record[k] for k in ("config_hash", "protocol", "seed"))
    if same:
        earlier = {k: v for k, v in (before.get("details") or {}).items() if k != "stored_before"}
        record["details"] = {**earlier, **record["details"]}
        record["unavailable"] = {**{k: v for k, v in (before.get("unavailable") or {}).items()
                                    if k not in record["values"]}, **record["unavailable"]}
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    return path


def append_generation_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Append tidy rows to a results file (CSV or parquet) through the results store."""
    from anobench.results import append_rows

    return append_rows(path, rows)


def generation_quality_table(rows_df, by_category: bool = False):
    """Generation-quality table: generators as rows, metrics as columns (the report's table).

    Takes tidy result rows (a DataFrame with the result columns); keeps generation rows
    (``detector == "-"``), averages over seeds (and over categories unless ``by_category``), and
    adds the rows' ``device`` column as text. Columns follow :data:`METRIC_ORDER`; metrics nobody
    computed are dropped; unknown metrics come last.
    """
    import pandas as pd

    if rows_df is None or len(rows_df) == 0:
        return pd.DataFrame()
    df = rows_df[rows_df["detector"].astype(str) == "-"].copy()
    if df.empty:
        return pd.DataFrame()
    index = ["dataset", "category", "generator"] if by_category else ["generator"]
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    table = df.pivot_table(index=index, columns="metric", values="value", aggfunc="mean", dropna=False)
    if "device" in df.columns and (df["device"].astype(str) != "").any():
        named = df[df["device"].astype(str) != ""]
        dev = named.groupby(index)["device"].agg(lambda s: ",".join(sorted(set(map(str, s)))))
        table["device"] = dev.reindex(table.index)
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    columns = sorted(table.columns, key=lambda c: (order.get(c, len(order)), str(c)))
    table = table[columns]
    table.columns.name = None
    return table
