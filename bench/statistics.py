"""How sure is a number, and is one generator really better: intervals, paired tests, ranks, a verdict.

Everything here reads stored evaluations (:mod:`anobench.perimage` files, or tidy result rows
where no per-image data was kept) and re-runs no model.

- Over test images: a stratified bootstrap (:mod:`anobench.bootstrap`) of every detection
  metric. With several seeds, a resample's value is the mean over seeds of the metrics on the
  same resampled images; by default each resample also redraws the seeds with replacement
  (two-level bootstrap), so intervals and tests cover both the test images and the training
  randomness (with 3 seeds that second level is coarse: read the t interval over seeds too).
- Over seeds: mean, sample std and the t interval of the mean (``scipy.stats.t``).
- Paired comparison of two generators on the same test images: the bootstrap distribution of
  the difference of their seed-means on identical resamples; two-sided p-value from the
  distribution shifted to the null (Efron & Tibshirani, 1993, sec. 16.4):
  ``p = (1 + #{|d_b - d| >= |d|}) / (B + 1)``.
- Across categories: mean rank (1 = best), Friedman test (``scipy.stats.friedmanchisquare``,
  3+ generators and 2+ categories) and the Nemenyi critical difference of Demsar (2006),
  ``CD = q_alpha * sqrt(k (k + 1) / (6 N))`` with ``q_alpha`` the studentized range quantile over
  sqrt(2); pairwise Nemenyi p-values from ``scikit_posthocs``.
- :func:`verdict`: the generator with the best mean over categories on a primary metric is named
  best only when it beats every other generator significantly (paired bootstrap of the mean over
  categories, each category's images resampled independently; Holm-adjusted); otherwise it says
  that no difference is significant.
- :func:`quality_vs_detection`: Spearman and Kendall rank correlations (``scipy.stats``) between
  generation-quality and detection metrics over (generator, category) points, with bootstrap
  intervals over those points.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anobench.bootstrap import DEFAULT_RESAMPLES, BootstrapResult, bootstrap_metrics, percentile_interval, resample_counts
from anobench.errors import AnobenchError
from anobench.metrics.detection import DETECTION_METRICS
from anobench.perimage import PerImage
from anobench.results import setup_labels

ALPHA = 0.05
LEVEL = 0.95
GROUP_KEYS = ("dataset", "protocol", "detector")


# --------------------------------------------------------------------------- over seeds

@dataclass
class SeedSummary:
    """Mean over seeds, sample std and the t interval of the mean (NaN bounds with one seed)."""

    mean: float
    std: float
    n: int
    low: float
    high: float


def seed_summary(values: Iterable[float], level: float = LEVEL) -> SeedSummary:
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return SeedSummary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(v.mean())
    if v.size == 1:
        return SeedSummary(mean, math.nan, 1, math.nan, math.nan)
    std = float(v.std(ddof=1))
    if std == 0:
        return SeedSummary(mean, 0.0, int(v.size), mean, mean)
    low, high = stats.t.interval(level, v.size - 1, loc=mean, scale=std / math.sqrt(v.size))
    return SeedSummary(mean, std, int(v.size), float(low), float(high))


# --------------------------------------------------------------------------- one cell: (category, generator) over seeds

@dataclass
class Cell:
    """One generator on one category's test set: per-seed values on the full set and on each resample."""

    dataset: str
    protocol: str
    detector: str
    category: str
    generator: str
    seeds: list[int]
    full: dict[str, np.ndarray]  # metric -> (S,)
    samples: dict[str, np.ndarray]  # metric -> (S, B)
    setup: dict = field(default_factory=dict)  # the first seed's stored meta (sweep values, costs)
    seed_draws: np.ndarray | None = None  # (B, S) seeds drawn per resample (two-level bootstrap)

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.dataset, self.protocol, self.detector)

    def mean(self, metric: str) -> float:
        if metric not in self.full or np.isnan(self.full[metric]).all():
            return math.nan
        return float(np.nanmean(self.full[metric]))

    def resampled_mean(self, metric: str) -> np.ndarray:
        """(B,) seed-mean of the metric on each resample (NaN where no seed defines it)."""
        samples = self.samples[metric]
        if self.seed_draws is not None:  # resample the seeds too: each resample's own draw of trainings
            samples = samples[self.seed_draws.T, np.arange(samples.shape[1])[None, :]]
        with np.errstate(invalid="ignore"):
            counts = np.sum(~np.isnan(samples), axis=0)
            return np.where(counts > 0, np.nansum(samples, axis=0) / np.maximum(counts, 1), np.nan)

    def interval(self, metric: str, level: float = LEVEL) -> tuple[float, float]:
        """Bootstrap interval over test images (of the seed-mean)."""
        return percentile_interval(self.resampled_mean(metric), level)

    def over_seeds(self, metric: str, level: float = LEVEL) -> SeedSummary:
        return seed_summary(self.full[metric], level)


@dataclass
class Analysis:
    """Every cell of a set of stored evaluations, bootstrapped on shared resamples per test set."""

    cells: dict[tuple[str, str, str, str, str], Cell]
    n_resamples: int
    seed: int
    resample_seeds: bool = True

    def groups(self) -> list[tuple[str, str, str]]:
        return sorted({c.group for c in self.cells.values()})

    def in_group(self, group: tuple[str, str, str]) -> list[Cell]:
        return [c for c in self.cells.values() if c.group == group]

    def metrics(self) -> list[str]:
        names = {m for c in self.cells.values() for m in c.full}
        return [m for m in DETECTION_METRICS if m in names]

    def interval_rows(self, level: float = LEVEL):
        """Tidy table of every cell and metric: mean, std over seeds, image and seed intervals."""
        import pandas as pd

        rows = []
        for key in sorted(self.cells):
            cell = self.cells[key]
            for metric in cell.full:
                low, high = cell.interval(metric, level)
                s = cell.over_seeds(metric, level)
                rows.append({"dataset": cell.dataset, "protocol": cell.protocol, "detector": cell.detector,
                             "category": cell.category, "generator": cell.generator, "metric": metric,
                             "mean": cell.mean(metric), "std": s.std, "n_seeds": s.n,
                             "ci_low": low, "ci_high": high, "seed_ci_low": s.low, "seed_ci_high": s.high,
                             "n_resamples": self.n_resamples})
        return pd.DataFrame(rows)


def analyse(records: Sequence[PerImage], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
            resample_seeds: bool = True) -> Analysis:
    """Bootstrap every stored evaluation; runs of one test set share their resamples.

    With ``resample_seeds`` (and 2+ seeds) each resample also draws the cell's seeds with
    replacement (a two-level bootstrap), so intervals and tests cover training randomness as
    well as the choice of test images; otherwise they hold the trained seeds fixed.

    Records with the same (dataset, protocol, detector, category, generator, seed) keep the last.
    Runs of one category must hold the same test images in the same order (else they cannot be
    paired, and this says which).
    """
    latest: dict[tuple, PerImage] = {}
    for record in records:
        latest[record.key()] = record
    # two setups of one generator (different config hashes) stay apart, labelled as the tables label them
    by_setup: dict[tuple, dict[str, dict]] = {}
    for record in latest.values():
        m = record.meta
        by_setup.setdefault((m["dataset"], m.get("detector"), m["generator"]), {})[str(m.get("config_hash"))] = m
    labels = {key: setup_labels(key[2], by_hash) for key, by_hash in by_setup.items() if len(by_hash) > 1}
    for record in latest.values():
        m = record.meta
        key = (m["dataset"], m.get("detector"), m["generator"])
        if key in labels:
            record.meta = dict(m, generator=labels[key][str(m.get("config_hash"))])
    by_test_set: dict[tuple, list[PerImage]] = {}
    for record in latest.values():
        m = record.meta
        by_test_set.setdefault((m["dataset"], m["protocol"], m["category"]), []).append(record)
    cells: dict[tuple, Cell] = {}
    for (dataset, protocol, category), group in sorted(by_test_set.items()):
        reference = group[0]
        for other in group[1:]:
            if other.names != reference.names or not np.array_equal(other.labels, reference.labels):
                raise AnobenchError(f"{dataset}/{category} ({protocol}): runs of {reference.meta['generator']} and "
                                    f"{other.meta['generator']} were scored on different test images; "
                                    "re-evaluate them on the same split")
        counts = resample_counts(reference.labels, n_resamples, seed=_test_set_seed(seed, dataset, protocol, category))
        runs: dict[tuple, list[tuple[int, BootstrapResult]]] = {}
        setups: dict[tuple, dict] = {}
        for record in group:
            m = record.meta
            setups.setdefault((m["detector"], m["generator"]), dict(m))
            runs.setdefault((m["detector"], m["generator"]), []).append(
                (int(m["seed"]), bootstrap_metrics(record, counts=counts)))
        for (detector, generator), results in runs.items():
            results.sort(key=lambda r: r[0])
            names = [k for k in DETECTION_METRICS if all(k in r.metrics for _, r in results)]
            draws = None
            if resample_seeds and len(results) > 1:
                rng = np.random.default_rng(_test_set_seed(seed, dataset, protocol, category, detector, generator))
                draws = rng.integers(0, len(results), size=(n_resamples, len(results)))
            cells[(dataset, protocol, detector, category, generator)] = Cell(
                dataset, protocol, detector, category, generator, [s for s, _ in results],
                {k: np.array([r.metrics[k] for _, r in results]) for k in names},
                {k: np.stack([r.samples[k] for _, r in results]) for k in names},
                setups[(detector, generator)], draws)
    return Analysis(cells, n_resamples, seed, resample_seeds)


def _test_set_seed(seed: int, *names: str) -> int:
    """Independent resamples per test set, the same for every run of that test set."""
    return int(zlib.crc32("/".join([str(seed), *names]).encode()))


def load_analysis(paths, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  resample_seeds: bool = True) -> Analysis | None:
    """:func:`analyse` over every ``maps-*.npz`` under ``paths``; None when there is none."""
    from anobench import perimage

    files = perimage.find(paths)
    return analyse([perimage.load(f) for f in files], n_resamples, seed, resample_seeds) if files else None


# --------------------------------------------------------------------------- paired comparisons

@dataclass
class PairedTest:
    """``a`` minus ``b`` on a metric: observed difference, its interval and a two-sided p-value."""

    a: str
    b: str
    metric: str
    delta: float
    low: float
    high: float
    p_value: float
    method: str = "paired bootstrap"
    p_adjusted: float | None = None

    def significant(self, alpha: float = ALPHA) -> bool:
        p = self.p_value if self.p_adjusted is None else self.p_adjusted
        return bool(p < alpha)


def paired_bootstrap(a_full: float, b_full: float, a_samples: np.ndarray, b_samples: np.ndarray,
                     level: float = LEVEL) -> tuple[float, float, float, float]:
    """(difference, low, high, p) from two metrics' values on the same resamples."""
    delta = float(a_full - b_full)
    d = np.asarray(a_samples, dtype=float) - np.asarray(b_samples, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0 or math.isnan(delta):
        return delta, math.nan, math.nan, math.nan
    low, high = percentile_interval(d, level)
    extreme = np.count_nonzero(np.abs(d - delta) >= abs(delta) - 1e-12)
    return delta, low, high, float((1 + extreme) / (1 + d.size))


def compare_cells(a: Cell, b: Cell, metric: str, level: float = LEVEL) -> PairedTest:
    """Paired bootstrap test of two generators on one category's test set."""
    if (a.dataset, a.protocol, a.category) != (b.dataset, b.protocol, b.category):
        raise AnobenchError("compare_cells: the cells are not on the same test set")
    delta, low, high, p = paired_bootstrap(a.mean(metric), b.mean(metric), a.resampled_mean(metric),
                                           b.resampled_mean(metric), level)
    return PairedTest(a.generator, b.generator, metric, delta, low, high, p)


def compare_over_categories(cells_a: Sequence[Cell], cells_b: Sequence[Cell], metric: str,
                            level: float = LEVEL) -> PairedTest:
    """Paired bootstrap of the difference of the mean over the categories both generators have."""
    a_by = {c.category: c for c in cells_a}
    b_by = {c.category: c for c in cells_b}
    shared = sorted(set(a_by) & set(b_by))
    if not shared:
        raise AnobenchError("compare_over_categories: no category in common")
    a_full = np.mean([a_by[c].mean(metric) for c in shared])
    b_full = np.mean([b_by[c].mean(metric) for c in shared])
    a_samples = np.mean([a_by[c].resampled_mean(metric) for c in shared], axis=0)
    b_samples = np.mean([b_by[c].resampled_mean(metric) for c in shared], axis=0)
    delta, low, high, p = paired_bootstrap(a_full, b_full, a_samples, b_samples, level)
    generator_a, generator_b = cells_a[0].generator, cells_b[0].generator
    return PairedTest(generator_a, generator_b, metric, delta, low, high, p,
                      method=f"paired bootstrap over {len(shared)} categor{'y' if len(shared) == 1 else 'ies'}")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# --------------------------------------------------------------------------- ranks across categories

@dataclass
class RankAnalysis:
    """Mean ranks (1 = best) over categories, Friedman test and Nemenyi critical difference."""

    metric: str
    generators: list[str]
    categories: list[str]
    mean_ranks: dict[str, float]
    friedman_statistic: float
    friedman_p: float
    critical_difference: float
    nemenyi_p: "pd.DataFrame | None" = None  # noqa: F821
    alpha: float = ALPHA

    def cliques(self) -> list[list[str]]:
        """Maximal groups of generators whose mean ranks lie within one critical difference."""
        ordered = sorted(self.generators, key=lambda g: self.mean_ranks[g])
        groups: list[list[str]] = []
        for i, g in enumerate(ordered):
            members = [h for h in ordered[i:] if self.mean_ranks[h] - self.mean_ranks[g] <= self.critical_difference]
            if len(members) > 1 and not any(set(members) <= set(grp) for grp in groups):
                groups.append(members)
        return groups


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi CD for ``k`` generators ranked on ``n`` categories (Demsar 2006, eq. for CD)."""
    from scipy import stats

    if k < 2 or n < 1:
        return math.nan
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def rank_analysis(table, metric: str = "", higher_is_better: bool = True, alpha: float = ALPHA) -> RankAnalysis:
    """Ranks of a categories x generators table of values (a DataFrame; rows with a NaN are dropped)."""
    import pandas as pd
    from scipy import stats

    table = pd.DataFrame(table).dropna(axis=0, how="any")
    generators, categories = [str(c) for c in table.columns], [str(i) for i in table.index]
    if len(generators) < 2 or len(categories) < 1:
        raise AnobenchError("rank analysis needs 2+ generators on 1+ categories with values for all")
    values = table.to_numpy(dtype=float)
    ranks = stats.rankdata(-values if higher_is_better else values, axis=1)  # ties share the mean rank
    mean_ranks = dict(zip(generators, ranks.mean(axis=0).tolist()))
    statistic = p = math.nan
    nemenyi = None
    if len(generators) >= 3 and len(categories) >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            statistic, p = stats.friedmanchisquare(*values.T)
        import scikit_posthocs as sp

        nemenyi = sp.posthoc_nemenyi_friedman(-values if higher_is_better else values)
        nemenyi.index, nemenyi.columns = generators, generators
    return RankAnalysis(metric, generators, categories, mean_ranks, float(statistic), float(p),
                        critical_difference(len(generators), len(categories), alpha), nemenyi, alpha)


def category_table(cells: Sequence[Cell], metric: str):
    """Categories x generators table of seed-mean values of one metric."""
    import pandas as pd

    frame = pd.DataFrame([{"category": c.category, "generator": c.generator, "value": c.mean(metric)}
                          for c in cells if metric in c.full])
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot(index="category", columns="generator", values="value").sort_index()


def rows_table(rows, metric: str, group: tuple[str, str, str] | None = None):
    """Categories x generators table of seed-mean values from tidy result rows."""
    sub = rows[(rows["metric"] == metric) & (rows["detector"] != "-")]
    if group is not None:
        sub = sub[(sub["dataset"] == group[0]) & (sub["protocol"] == group[1]) & (sub["detector"] == group[2])]
    sub = sub.drop_duplicates(subset=["category", "generator", "seed"], keep="last")
    return sub.groupby(["category", "generator"])["value"].mean().unstack("generator").sort_index()


# --------------------------------------------------------------------------- the verdict

@dataclass
class Verdict:
    """Which generator is best on ``metric``, or that no difference is significant."""

    metric: str
    best: str | None  # None: no significant winner
    leader: str | None  # highest mean, significant or not
    means: dict[str, float]  # generator -> mean over categories (and seeds)
    intervals: dict[str, tuple[float, float]]  # generator -> interval of that mean
    tests: list[PairedTest]  # leader vs each other generator
    ranks: RankAnalysis | None
    group: tuple[str, str, str]
    alpha: float = ALPHA
    method: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        return self.best is not None

    def text(self) -> str:
        """One plain sentence (values in percent), for the report's opening line."""
        from anobench.report_tables import METRIC_LABELS

        label = METRIC_LABELS.get(self.metric, self.metric)
        if self.leader is None:
            return f"No verdict on {label}: fewer than two generators."
        if self.best is not None:
            # the least certain comparison; among equal p values (the bootstrap's floor), the closest rival
            runner = max(self.tests, key=lambda t: (t.p_adjusted if t.p_adjusted is not None else t.p_value, -t.delta))
            return (f"Best on {label}: {self.best} ({_pct(self.means[self.best])}, "
                    f"{_pct_interval(self.intervals.get(self.best))}); ahead of {runner.b} by "
                    f"{_pct(runner.delta)} points ({_pct_interval((runner.low, runner.high))}), "
                    f"p = {_p(runner.p_adjusted if runner.p_adjusted is not None else runner.p_value)} "
                    f"({self.method}).")
        weakest = [t for t in self.tests if not t.significant(self.alpha)]
        shown = ", ".join(f"{t.b} (difference {_pct(t.delta)} points, "
                          f"p = {_p(t.p_adjusted if t.p_adjusted is not None else t.p_value)})" for t in weakest)
        return (f"No significant difference on {label} at alpha {self.alpha:g}: {self.leader} leads "
                f"({_pct(self.means[self.leader])}) but not significantly ahead of {shown or 'the others'} "
                f"({self.method}).")


def _pct(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _pct_interval(interval: tuple[float, float] | None) -> str:
    if interval is None or any(math.isnan(v) for v in interval):
        return "no interval"
    return f"95% CI {100 * interval[0]:.1f} to {100 * interval[1]:.1f}"


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "< 0.001")


def verdict(source, metric: str = "image_auroc", group: tuple[str, str, str] | None = None,
            alpha: float = ALPHA) -> Verdict:
    """Name the best generator on ``metric``, or say that no difference is significant.

    ``source`` is an :class:`Analysis` (per-image evidence: paired bootstrap over the test
    images, the mean over categories) or tidy result rows (no per-image data: paired t-test
    over the (category, seed) cells both generators share, ``scipy.stats.ttest_rel``).
    ``group`` picks one (dataset, protocol, detector); default: the first.
    """
    if isinstance(source, Analysis):
        return _verdict_from_analysis(source, metric, group, alpha)
    return _verdict_from_rows(source, metric, group, alpha)


def _verdict_from_analysis(analysis: Analysis, metric: str, group, alpha: float) -> Verdict:
    groups = analysis.groups()
    if not groups:
        raise AnobenchError("no stored evaluations to judge")
    group = group or groups[0]
    cells = [c for c in analysis.in_group(group) if metric in c.full]
    if not cells:
        raise AnobenchError(f"no {metric} values stored for {'/'.join(group)}")
    by_generator: dict[str, list[Cell]] = {}
    for c in cells:
        by_generator.setdefault(c.generator, []).append(c)
    all_categories = {c.category for c in cells}
    notes = []
    complete = {g: cs for g, cs in by_generator.items() if {c.category for c in cs} == all_categories}
    if len(complete) < len(by_generator):
        notes.append("left out (not on every category): " + ", ".join(sorted(set(by_generator) - set(complete))))
    means = {g: float(np.mean([c.mean(metric) for c in cs])) for g, cs in complete.items()}
    intervals = {g: percentile_interval(np.mean([c.resampled_mean(metric) for c in cs], axis=0))
                 for g, cs in complete.items()}
    table = category_table([c for cs in complete.values() for c in cs], metric)
    ranks = rank_analysis(table, metric, alpha=alpha) if len(complete) >= 2 else None
    if len(complete) < 2:
        leader = next(iter(complete), None)
        return Verdict(metric, None, leader, means, intervals, [], ranks, group, alpha, "", notes)
    leader = max(means, key=lambda g: means[g])
    tests = [compare_over_categories(complete[leader], complete[g], metric) for g in sorted(complete) if g != leader]
    for t, p in zip(tests, holm([t.p_value for t in tests])):
        t.p_adjusted = p
    method = f"{tests[0].method}, {analysis.n_resamples} resamples" + (", Holm-adjusted" if len(tests) > 1 else "")
    best = leader if all(t.significant(alpha) for t in tests) else None
    return Verdict(metric, best, leader, means, intervals, tests, ranks, group, alpha, method, notes)


def _verdict_from_rows(rows, metric: str, group, alpha: float) -> Verdict:
    from scipy import stats

    det = rows[(rows["detector"] != "-") & (rows["metric"] == metric)]
    if det.empty:
        raise AnobenchError(f"no {metric} rows to judge")
    groups = sorted({tuple(r) for r in det[list(GROUP_KEYS)].drop_duplicates().itertuples(index=False)})
    group = group or groups[0]
    sub = det[(det["dataset"] == group[0]) & (det["protocol"] == group[1]) & (det["detector"] == group[2])]
    sub = sub.drop_duplicates(subset=["category", "generator", "seed"], keep="last")
    cells = sub.pivot_table(index=["category", "seed"], columns="generator", values="value")
    table = rows_table(sub, metric)
    means = table.mean(axis=0).to_dict()
    intervals = {}
    for g in table.columns:
        s = seed_summary(sub[sub["generator"] == g].groupby("seed")["value"].mean())
        intervals[g] = (s.low, s.high)
    ranks = rank_analysis(table, metric, alpha=alpha) if table.shape[1] >= 2 and not table.dropna().empty else None
    if len(means) < 2:
        return Verdict(metric, None, next(iter(means), None), means, intervals, [], ranks, group, alpha, "")
    leader = max(means, key=lambda g: means[g])
    tests = []
    for g in sorted(means):
        if g == leader:
            continue
        pair = cells[[leader, g]].dropna()
        diff = pair[leader] - pair[g]
        if len(pair) >= 2 and diff.std() > 0:
            p = float(stats.ttest_rel(pair[leader], pair[g]).pvalue)
            low, high = stats.t.interval(LEVEL, len(diff) - 1, loc=diff.mean(), scale=diff.std(ddof=1) / math.sqrt(len(diff)))
        else:
            p, low, high = math.nan, math.nan, math.nan
        tests.append(PairedTest(leader, g, metric, float(diff.mean()) if len(diff) else math.nan, float(low),
                                float(high), p, method=f"paired t-test over {len(pair)} (category, seed) cells"))
    finite = [t for t in tests if not math.isnan(t.p_value)]
    for t, p in zip(finite, holm([t.p_value for t in finite])):
        t.p_adjusted = p
    best = leader if tests and all(not math.isnan(t.p_value) and t.significant(alpha) for t in tests) else None
    notes = ["no per-image maps stored: seed-level test only"]
    return Verdict(metric, best, leader, means, intervals, tests, ranks, group, alpha, tests[0].method, notes)


# --------------------------------------------------------------------------- quality vs detection

def quality_vs_detection(rows, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = LEVEL):
    """Spearman and Kendall correlations between each quality and each detection metric.

    Points are (generator, category) pairs of one dataset that have both values (means over
    seeds); the interval resamples those points with replacement. Returns a tidy DataFrame:
    quality, detection, n, spearman, spearman_low/high, spearman_p, kendall, kendall_low/high, kendall_p.
    """
    import pandas as pd
    from scipy import stats

    from anobench.report_tables import QUALITY_STYLE

    quality = rows[(rows["detector"] == "-") & rows["metric"].isin([m for m, s in QUALITY_STYLE.items() if s[2] is not None])]
    detection = rows[(rows["detector"] != "-") & rows["metric"].isin(DETECTION_METRICS)]
    q = quality.groupby(["dataset", "category", "generator", "metric"])["value"].mean().unstack("metric")
    d = detection.groupby(["dataset", "category", "generator", "metric"])["value"].mean().unstack("metric")
    joined = q.join(d, how="inner", lsuffix="_q")
    out = []
    rng = np.random.default_rng([seed, 13])
    for qm in q.columns:
        for dm in d.columns:
            pair = joined[[qm, dm]].dropna().to_numpy(dtype=float)
            n = len(pair)
            row = {"quality": qm, "detection": dm, "n": n}
            for name, fn in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
                if n < 3 or np.ptp(pair[:, 0]) == 0 or np.ptp(pair[:, 1]) == 0:
                    row.update({name: math.nan, f"{name}_p": math.nan, f"{name}_low": math.nan,
                                f"{name}_high": math.nan})
                    continue
                result = fn(pair[:, 0], pair[:, 1])
                boot = []
                for _ in range(n_resamples):
                    sample = pair[rng.integers(0, n, n)]
                    if np.ptp(sample[:, 0]) > 0 and np.ptp(sample[:, 1]) > 0:
                        boot.append(fn(sample[:, 0], sample[:, 1])[0])
                low, high = percentile_interval(np.array(boot), level)
                row.update({name: float(result[0]), f"{name}_p": float(result[1]), f"{name}_low": low,
                            f"{name}_high": high})
            out.append(row)
    return pd.DataFrame(out)


def find_runs(paths) -> list[Path]:
    """Run folders below ``paths`` that hold per-image evidence."""
    from anobench import perimage

    return sorted({p.parent for p in perimage.find(paths)})
