"""The verdict that opens a report: ranking on the primary metric, intervals hook, warnings, display names."""

from __future__ import annotations

import pandas as pd
import pytest

from anobench.errors import AnobenchError
from anobench.report import render_report
from anobench.report_context import CONTEXT_COLUMNS
from anobench.report_verdict import verdict_tables


def rows():
    """pixel AP favours crop_paste, AUPRO favours draem (the quickstart's split verdict)."""
    values = {("bottle", "draem"): (0.40, 0.92), ("bottle", "crop_paste"): (0.55, 0.88),
              ("cable", "draem"): (0.30, 0.90), ("cable", "crop_paste"): (0.35, 0.85),
              ("bottle", "deltadeno"): (0.10, 0.70)}
    out = []
    for (category, generator), (ap, pro) in values.items():
        for metric, value in (("pixel_ap", ap), ("aupro", pro)):
            out.append(dict(dataset="mvtec_ad", category=category, generator=generator, detector="unet", seed=0,
                            protocol="thirds", metric=metric, value=value, config_hash="ab12cd34ef56", version="0.1.0"))
    return pd.DataFrame(out)


def context(anomalies=12, references=6):
    out = []
    for category in ("bottle", "cable"):
        for generator, refs in (("draem", 0), ("crop_paste", references)):
            out.append(dict(dataset="mvtec_ad", category=category, generator=generator, seed=0, protocol="thirds",
                            n_test=anomalies + 10, n_anomalies=anomalies, n_normals=10, references=refs,
                            zero_shot=refs == 0, seconds_per_sample=0.01, peak_memory_mb=900.0, device="cpu",
                            train_minutes=2.0, n_samples=160, demo_data=False))
    return pd.DataFrame(out, columns=list(CONTEXT_COLUMNS))


def markdown_rows(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_the_report_opens_with_the_ranking_on_pixel_ap():
    text = render_report(rows(), "markdown", verdict=True, context=context())
    assert text.startswith("**Verdict: Crop&Paste ranks first on pixel AP")  # the report opens with it
    assert "verdict, generators ranked by pixel AP" in text.split("\n\n")[1]
    table = markdown_rows(text)
    assert table[0][:3] == ["Rank", "Generator", "mean pixel AP"]
    assert table[1][:3] == ["1", "Crop&Paste (6 real reference defects per category)", "**45.0**"]
    assert table[2][:3] == ["2", "DRAEM (zero-shot)", "35.0"]
    assert table[3][0] == "–" and table[3][1].startswith("DeltaDeno")  # one category only: not ranked
    assert table[1][4] == "2 of 2" and table[2][4] == "0 of 2"
    assert "Verdict: Crop&Paste ranks first on pixel AP (mean 45.0 over 2 categories, 10.0 points ahead of DRAEM)" in text
    assert "Not ranked (missing categories): DeltaDeno." in text


def test_primary_metric_is_an_option():
    text = render_report(rows(), "markdown", verdict=True, primary="aupro", context=context())
    assert markdown_rows(text)[1][:3] == ["1", "DRAEM (zero-shot)", "**91.0**"]
    with pytest.raises(AnobenchError, match="--primary: unknown detection metric 'accuracy'"):
        render_report(rows(), "markdown", verdict=True, primary="accuracy")


def test_intervals_come_from_the_statistics_hook():
    def intervals(part, metric):
        assert metric == "pixel_ap" and set(part["metric"]) == {"pixel_ap"}
        return {"crop_paste": (0.40, 0.50)}

    table = verdict_tables(rows(), context(), intervals=intervals)[0]
    assert table.rows[0].cells[1].text == "40.0 to 50.0" and table.rows[1].cells[1].text == "–"
    assert not any("No intervals" in n for n in table.notes)
    plain = verdict_tables(rows(), context(), intervals=lambda part, metric: {})[0]
    assert any("No intervals" in n for n in plain.notes)


def test_warnings_for_few_test_anomalies_and_few_references():
    text = render_report(rows(), "markdown", verdict=True, context=context(anomalies=4, references=1))
    assert "Warning: bottle has only 4 test anomalies (fewer than 5)" in text
    assert "Warning: cable: Crop&Paste learnt from only 1 real reference defect (fewer than 3)" in text
    calm = render_report(rows(), "markdown", verdict=True, context=context())
    assert "Warning" not in calm


def test_test_set_sizes_and_cost_tables():
    text = render_report(rows(), "markdown", verdict=True, context=context())
    table = markdown_rows(text[text.index("test set per category"):])
    assert table[0] == ["Category", "test images", "anomalies", "normals", "Crop&Paste references"]
    assert table[1] == ["bottle", "22", "12", "10", "6"]
    cost = markdown_rows(text[text.index("cost per generator"):])
    assert cost[0] == ["Generator", "generation s/sample", "generation peak MiB", "device", "training min", "samples"]
    assert cost[1] == ["Crop&Paste", "0.01", "900", "cpu", "2", "160"]


def test_the_statistics_verdict_opens_the_report_when_given():
    class Judged:  # the shape of anobench.statistics.Verdict the report reads
        means = {"crop_paste": 0.45, "draem": 0.35}
        intervals = {"crop_paste": (0.41, 0.49), "draem": (float("nan"), float("nan"))}
        notes = ["no per-image maps stored: seed-level test only"]

        def text(self):
            return "Best on pixel AP: crop_paste (45.0, 95% CI 41.0 to 49.0); ahead of draem by 10.0 points."

    seen = []

    def judge(group, metric):
        seen.append((group, metric))
        return Judged()

    text = render_report(rows(), "markdown", verdict=True, context=context(), judge=judge)
    assert seen == [(("mvtec_ad", "thirds", "unet"), "pixel_ap")]
    assert text.startswith("**Verdict: Best on pixel AP: Crop&Paste (45.0, 95% CI 41.0 to 49.0); ahead of DRAEM by "
                           "10.0 points.**")
    notes = [line for line in text.splitlines() if line.startswith("_")]
    assert notes[0].startswith("_Ranking: Crop&Paste ranks first")
    table = markdown_rows(text)
    assert table[1][3] == "41.0 to 49.0" and table[2][3] == "–"  # NaN interval shows a dash


def test_two_setups_of_one_generator_get_their_own_context_rows():
    """The cost and test-set tables name two setups of one generator as the metric tables do."""
    first, second = rows(), rows()
    second = second[second["generator"] == "draem"].assign(config_hash="ff99ee88dd77", n_generated="60")
    first = first.assign(n_generated="800")
    ctx = context().assign(config_hash="ab12cd34ef56")
    extra = ctx[ctx["generator"] == "draem"].assign(config_hash="ff99ee88dd77", seconds_per_sample=0.5,
                                                   n_samples=60)
    text = render_report(pd.concat([first, second]), "markdown", verdict=True,
                         context=pd.concat([ctx, extra], ignore_index=True))
    cost = text[text.index("cost per generator"):]
    cost_rows = {r[0]: r for r in markdown_rows(cost)[1:5]}
    assert cost_rows["DRAEM (n_generated=60)"][1] == "0.5" and cost_rows["DRAEM (n_generated=60)"][5] == "60"
    assert cost_rows["DRAEM (n_generated=800)"][1] == "0.01" and cost_rows["DRAEM (n_generated=800)"][5] == "160"
    ranking = markdown_rows(text)
    assert "DRAEM (n_generated=60) (zero-shot)" in [r[1] for r in ranking]
