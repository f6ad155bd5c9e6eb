"""`anobench run --executor local|ray`: failing cells, progress, resources, and Ray against local."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from anobench.cli import cli

TINY = {"image_size": 64, "steps": 2, "batch_size": 4, "val_every": 2, "checkpoint_every": 2,
        "max_val_samples": 4, "channels_last": False}


def _grid(demo_root: Path, out: Path, categories=("disc",), generators=None, train=None) -> dict:
    return {
        "out": str(out), "dataset": "mvtec_ad", "data_root": str(demo_root), "categories": list(categories),
        "seeds": [0],
        "generators": generators or [{"name": "draem", "num": 6}, {"name": "crop_paste", "num": 6}],
        "train": {"profile": "quick", "encoder_weights": "none", "set": {**TINY, **(train or {})}},
        "evaluate": {"test_sets": ["protocol"], "heatmaps": 1},
        "report": {"format": "markdown", "layout": "table2"},
    }


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / f"grid-{len(list(tmp_path.glob('grid-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rows(out: Path):
    from anobench.results import read_results

    frame = read_results(out / "runs")
    return frame.sort_values(["generator", "category", "seed", "protocol", "metric"]).reset_index(drop=True)


def test_a_failing_cell_is_listed_and_the_others_finish(demo_root, tmp_path):
    bad = [{"name": "draem", "num": 6}, {"name": "crop_paste", "num": 6, "set": {"blend": "nonsense"}}]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, out, generators=bad))), "-q"])
    assert result.exit_code == 2, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith("failed: crop_paste/disc/seed0: ") and "blend" in failed[0]
    assert "error: 1 of 2 cells failed" in result.output
    assert "Traceback" not in result.output
    # the good cell finished, its rows are stored and the report shows it
    assert set(_rows(out)["generator"]) == {"draem"}
    assert "DRAEM" in (out / "report.md").read_text()  # reports show display names
    # progress counts: the last line before the summary says 1 done, 1 failed of 2
    counts = [line.split("]")[0] + "]" for line in result.output.splitlines() if line.startswith("[")]
    assert counts[-1] == "[1/2 done, 0 running, 1 failed]"
    # a re-run skips the finished cell and retries only the failed one
    again = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, out, generators=bad))), "-q"])
    assert again.exit_code == 2 and "draem/disc/seed0: done, skipped" in again.output


def test_progress_lines_count_done_running_failed():
    from anobench.executors import CellOutcome, GridProgress

    lines: list[str] = []
    seen: list[str] = []
    tracker = GridProgress(3, lines.append, [lambda o: seen.append(o.status)])
    tracker.finish(CellOutcome(("a", "c", 0), "skipped"))
    tracker.started(("b", "c", 0))
    tracker.started(("d", "c", 0))
    tracker.finish(CellOutcome(("b", "c", 0), "done", 12.4, "6 samples"))
    tracker.finish(CellOutcome(("d", "c", 0), "failed", 3.0, "boom"))
    assert lines == ["[1/3 done, 0 running, 0 failed] a/c/seed0: done, skipped",
                     "[2/3 done, 1 running, 0 failed] b/c/seed0: 6 samples (12 s)",
                     "[2/3 done, 0 running, 1 failed] d/c/seed0: FAILED after 3 s: boom"]
    assert seen == ["skipped", "done", "failed"] and [o.cell for o in tracker.failures] == [("d", "c", 0)]


def test_heartbeat_prints_the_counts_between_finished_cells():
    import re

    from anobench.executors import CellOutcome, GridProgress, Heartbeat

    lines: list[str] = []
    tracker = GridProgress(3, lines.append)
    tracker.started(("a", "c", 0))
    with Heartbeat(tracker, 0.05, started=time.perf_counter() - 150):
        time.sleep(0.3)
        tracker.finish(CellOutcome(("a", "c", 0), "done", 1.0, "ok"))
        time.sleep(0.3)
    beats = [line for line in lines if line.startswith("heartbeat ")]
    assert len(beats) >= 4 and all("\r" not in line and "\n" not in line for line in beats)
    pattern = r"heartbeat \[(\d)/3 done, (\d) running, 0 failed\] of 3 cells, (\d+\.\d) min elapsed"
    seen = [re.fullmatch(pattern, line).groups() for line in beats]
    assert seen[0][:2] == ("0", "1") and seen[-1][:2] == ("1", "0")  # the counts of the moment
    assert all(float(minutes) >= 2.5 for _, _, minutes in seen)  # elapsed since the grid started
    assert re.search(r", \d+ s elapsed$", Heartbeat(tracker, 1).line())  # seconds while under two minutes
    count = len(lines)
    time.sleep(0.2)
    assert len(lines) == count  # stopped with the block
    with Heartbeat(tracker, 0):  # 0: off
        time.sleep(0.1)
    assert len(lines) == count


def test_stage_resources_ask_for_a_gpu_only_where_the_stage_runs_on_cuda(tmp_path, demo_root):
    from anobench.executors import stage_resources
    from anobench.runner import parse_run_config

    gens = [{"name": "draem", "device": "cuda"}, {"name": "deltadeno", "device": "cuda"},
            {"name": "dhdiff", "device": "auto"}]
    config = parse_run_config(_grid(demo_root, tmp_path, generators=gens), tmp_path)
    res = {g["name"]: stage_resources(config, (g["name"], "disc", 0), "generate", 2, cluster_gpus=1)
           for g in gens}
    assert res["draem"] == {"num_cpus": 2, "num_gpus": 0}  # procedural: CPUs even on cuda
    assert res["deltadeno"]["num_gpus"] == 1 and res["dhdiff"]["num_gpus"] == 1
    assert stage_resources(config, ("dhdiff", "disc", 0), "generate", 1, cluster_gpus=0)["num_gpus"] == 0
    assert stage_resources(config, ("draem", "disc", 0), "evaluate", 1, cluster_gpus=1)["num_gpus"] == 0
    config.train["set"]["device"] = "cuda:0"
    assert stage_resources(config, ("draem", "disc", 0), "train", 1, cluster_gpus=1)["num_gpus"] == 1
    config.train["set"]["device"] = "cpu"
    assert stage_resources(config, ("draem", "disc", 0), "train", 1, cluster_gpus=1)["num_gpus"] == 0


def test_unknown_executor_is_a_one_line_error(tmp_path, demo_root):
    result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, tmp_path / "o"))),
                                      "--executor", "spark"])
    assert result.exit_code == 2 and "spark" in result.output
    result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, tmp_path / "o"))),
                                      "--address", "auto"])
    assert result.exit_code == 2 and "error: --address and --max-parallel need --executor ray" in result.output


# --- Ray: a local instance with 2 CPUs, shared by the tests below ---

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_grid_gives_the_rows_of_the_local_grid(demo_root, tmp_path, local_ray):
    import torch

    config = lambda out: _grid(demo_root, out, categories=("disc", "weave"))  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks train with one thread each
    try:
        local = CliRunner().invoke(cli, ["run", str(_write(tmp_path, config(tmp_path / "local"))), "-q"])
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 0, local.output
    distributed = CliRunner().invoke(cli, ["run", str(_write(tmp_path, config(tmp_path / "ray"))), "-q",
                                           "--executor", "ray", "--max-parallel", "2"])
    assert distributed.exit_code == 0, distributed.output
    assert "[4/4 done, 0 running, 0 failed]" in distributed.output
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(a) == 4 * 7 and set(a["category"]) == {"disc", "weave"}  # 7 metrics per cell
    assert a.equals(b)  # value for value, config hashes included
    # the generated images are byte-identical too
    for generator in ("draem", "crop_paste"):
        images = Path("generated/seed0") / generator / "disc" / "images"
        files = sorted(p.name for p in (tmp_path / "local" / images).glob("*.png"))
        assert len(files) == 6
        assert all((tmp_path / "local" / images / f).read_bytes() == (tmp_path / "ray" / images / f).read_bytes()
                   for f in files)
    # a second Ray run does nothing
    again = CliRunner().invoke(cli, ["run", str(_write(tmp_path, config(tmp_path / "ray"))), "-q",
                                     "--executor", "ray"])
    assert again.exit_code == 0 and again.output.count("done, skipped") == 4


def _kill_when_training(title: str, checkpoint: Path, killed: list, stop: threading.Event) -> None:
    """Kill -9 the Ray worker whose title is ``title`` once it has written ``checkpoint``."""
    while not stop.is_set():
        if checkpoint.exists():
            ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
            pids = [int(line.split()[0]) for line in ps.splitlines() if line.strip().endswith(title)]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_retries_a_killed_training_and_reports_a_user_error(demo_root, tmp_path, local_ray):
    from anobench.detectors.train import LAST_CHECKPOINT

    gens = [{"name": "draem", "num": 6}, {"name": "crop_paste", "num": 6, "set": {"blend": "nonsense"}}]
    out = tmp_path / "out"
    grid = _grid(demo_root, out, generators=gens, train={"steps": 40, "val_every": 40, "checkpoint_every": 2})
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_when_training, daemon=True, args=(
        "ray::train draem/disc/seed0", out / "runs" / "draem" / "disc" / "seed0" / LAST_CHECKPOINT, killed, stop))
    watcher.start()
    try:
        result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, grid)), "-q", "--executor", "ray"])
    finally:
        stop.set()
        watcher.join()
    assert killed, "the training task was never seen running"
    assert result.exit_code == 2, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith("failed: crop_paste/disc/seed0: ") and "blend" in failed[0]
    assert "draem/disc/seed0: 6 samples, 40 steps" in result.output  # retried after the kill, and finished
    rows = _rows(out)
    assert set(rows["generator"]) == {"draem"} and len(rows) == 7  # 7 metrics


def test_rows_are_stored_per_cell_as_it_finishes_and_report_reads_them_mid_grid(demo_root, tmp_path):
    from anobench.runner import parse_run_config, run_grid

    config = parse_run_config(_grid(demo_root, tmp_path / "out"), tmp_path)
    seen = []

    def report_now(outcome):  # what `anobench report OUT/runs` shows while the grid still runs
        result = CliRunner().invoke(cli, ["report", str(config.out / "runs"), "--layout", "per-metric"])
        assert result.exit_code == 0, result.output
        seen.append((outcome.cell[0], "DRAEM" in result.output, "Crop&Paste" in result.output))  # display names

    run_grid(config, progress=False, echo=lambda line: None, listeners=[report_now])
    assert seen == [("draem", True, False), ("crop_paste", True, True)]


def test_a_node_that_cannot_see_out_stops_the_run_before_any_task(tmp_path):
    """check_shared_filesystem with a stand-in for Ray: node b reads the probe on its own disk."""
    pytest.importorskip("ray")
    A = "a" * 56  # node ids are hex
    from anobench.errors import AnobenchError
    from anobench.executors import check_shared_filesystem

    class Remote:
        def __init__(self, fn, node=None):
            self.fn, self.node = fn, node

        def options(self, scheduling_strategy=None, **_):
            return Remote(self.fn, scheduling_strategy.node_id)

        def remote(self, path, token):
            host, ok = self.fn(path if self.node == A else str(tmp_path / "elsewhere" / Path(path).name), token)
            return (self.node[:1], ok)

    class FakeRay:
        def remote(self, **_):
            return lambda fn: Remote(fn)

        def nodes(self):
            return [{"NodeID": A, "Alive": True}, {"NodeID": "b" * 56, "Alive": True}, {"NodeID": "c" * 56, "Alive": False}]

        def get(self, refs):
            return refs

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AnobenchError, match=r"out is not visible on Ray node\(s\) b: .*shared"):
        check_shared_filesystem(FakeRay(), out)
    assert list(out.iterdir()) == []  # the probe is removed
    (tmp_path / "elsewhere").symlink_to(out)  # now b sees the same folder
    check_shared_filesystem(FakeRay(), out)


def test_a_cell_trained_on_another_sample_count_fails_instead_of_being_skipped(demo_root, tmp_path):
    grid = _grid(demo_root, tmp_path / "out", generators=[{"name": "draem", "num": 6}])
    assert CliRunner().invoke(cli, ["run", str(_write(tmp_path, grid)), "-q"]).exit_code == 0
    grid["generators"] = [{"name": "draem", "num": 8}]
    result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, grid)), "-q"])
    assert result.exit_code == 2, result.output
    assert "[0/1 done, 0 running, 1 failed] draem/disc/seed0: FAILED" in result.output
    assert "trained on 6 generated samples, the config asks for 8" in result.output


# --- a generated set shared by several cells is made once, and every training waits for it ---

SHARING = {"sweep": {"synthetic_fraction": [0.5], "mix": [{"draem": 0.5, "crop_paste": 0.5}]}}
MIX_LABEL = "mix[draem=0.5,crop_paste=0.5]"


def test_cells_that_share_a_generated_set_name_one_set(tmp_path, demo_root):
    """The plan: 5 cells (2 listed, 2 swept synthetic_fraction, 1 mixture) need 2 generated sets."""
    from anobench.executors import cell_set
    from anobench.runner import cell_set_dir, parse_run_config

    config = parse_run_config({**_grid(demo_root, tmp_path / "out"), **SHARING}, tmp_path)
    made, calls, composed = {}, [], []

    def generate(key):
        calls.append(key)
        return {"key": key}

    plans = {cell[0]: cell_set(config, cell, made, generate, lambda cell, parts: composed.append(parts) or parts)
             for cell in config.cells()}
    assert sorted(calls) == [("crop_paste", "disc", 0, 6), ("draem", "disc", 0, 6)]  # once each
    assert plans["draem[synthetic_fraction=0.5]"] is plans["draem"]  # the same result (a Ray ref: one task)
    assert composed == [[plans["draem"], plans["crop_paste"]]]  # the mixture depends on both sets
    assert cell_set_dir(config, ("draem[synthetic_fraction=0.5]", "disc", 0)) == tmp_path / "out/generated/seed0/draem/disc"
    assert cell_set_dir(config, (MIX_LABEL, "disc", 0)) == tmp_path / f"out/generated/seed0/{MIX_LABEL}/disc"


def test_a_mixture_needing_more_samples_than_listed_gets_its_own_set(tmp_path, demo_root):
    """draem num 6 in a 10-sample 0.9/0.1 mixture needs 9 draem samples: a num9 set, the listed 6 untouched."""
    from anobench.runner import parse_run_config, set_dir, set_keys

    grid = _grid(demo_root, tmp_path / "out", generators=[{"name": "draem", "num": 6}, {"name": "crop_paste", "num": 10}])
    config = parse_run_config({**grid, "sweep": {"mix": [{"draem": 0.9, "crop_paste": 0.1}]}}, tmp_path)
    keys = set_keys(config, ("mix[draem=0.9,crop_paste=0.1]", "disc", 0))
    assert keys == [("draem", "disc", 0, 9), ("crop_paste", "disc", 0, 10)]
    assert [set_dir(config, k) for k in keys] == [tmp_path / "out/generated/seed0/num9/draem/disc",
                                                  tmp_path / "out/generated/seed0/crop_paste/disc"]
    assert set_keys(config, ("draem", "disc", 0)) == [("draem", "disc", 0, 6)]


def _run_sharing_grid(demo_root, out: Path, **executor) -> dict:
    from anobench.runner import parse_run_config, run_grid

    config = parse_run_config({**_grid(demo_root, out), **SHARING}, out.parent)
    outcomes = []
    run_grid(config, progress=False, echo=lambda line: None, listeners=[outcomes.append], **executor)
    assert [o.status for o in outcomes] == ["done"] * 5, [(o.cell, o.text) for o in outcomes]
    return {o.cell[0]: o.stages for o in outcomes}


def _assert_made_once(out: Path, stages: dict) -> None:
    """Each set has one generation id (one execution) shared by every cell that trained on it."""
    draem, crop = stages["draem"]["generations"], stages["crop_paste"]["generations"]
    assert len(draem) == 1 and len(crop) == 1 and draem != crop
    assert stages["draem[synthetic_fraction=0.5]"]["generations"] == draem
    assert stages["crop_paste[synthetic_fraction=0.5]"]["generations"] == crop
    assert stages[MIX_LABEL]["generations"] == draem + crop
    assert stages["draem[synthetic_fraction=0.5]"]["folder"] == stages["draem"]["folder"]
    assert sorted(p.parent.parent.name for p in (out / "generated").rglob("dataset.json")) == \
        ["crop_paste", "draem", MIX_LABEL]


def test_local_executor_makes_a_shared_set_once(demo_root, tmp_path):
    _assert_made_once(tmp_path / "out", _run_sharing_grid(demo_root, tmp_path / "out"))


@pytest.mark.slow
def test_ray_makes_a_shared_set_once_and_gives_the_local_rows(demo_root, tmp_path, local_ray):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks train with one thread each
    try:
        _assert_made_once(tmp_path / "local", _run_sharing_grid(demo_root, tmp_path / "local"))
    finally:
        torch.set_num_threads(threads)
    _assert_made_once(tmp_path / "ray", _run_sharing_grid(demo_root, tmp_path / "ray", executor="ray"))
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(a) == 5 * 7 and a.equals(b)  # 7 metrics per cell


# --- two setups of one generator in one grid: `label:` names an entry's folders and cells ---

LABELLED = [{"name": "draem", "num": 6}, {"name": "draem", "label": "draem_fg", "num": 6, "set": {"foreground": True}}]


@pytest.mark.parametrize("generators, message", [
    ([{"name": "draem"}, {"name": "draem", "set": {"foreground": True}}],
     r"draem is listed twice; give each entry of draem its own `label:`"),
    ([{"name": "draem", "label": "x"}, {"name": "crop_paste", "label": "x"}],
     r"x is listed twice; give each entry of crop_paste and draem its own `label:`"),
    ([{"name": "draem", "label": "a/b"}], r"generators\[0\]: label 'a/b' must be one folder name"),
    ([{"name": "draem", "label": "d[1]"}], r"label 'd\[1\]' must be one folder name"),
    ([{"name": "draem", "label": "num5"}], r"not num<N>"),
])
def test_two_entries_of_one_generator_need_distinct_labels(tmp_path, demo_root, generators, message):
    from anobench.errors import AnobenchError
    from anobench.runner import parse_run_config

    with pytest.raises(AnobenchError, match=message):
        parse_run_config(_grid(demo_root, tmp_path, generators=generators), tmp_path)
    result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, tmp_path, generators=generators)))])
    assert result.exit_code == 2 and "Traceback" not in result.output and "error: " in result.output


def test_labelled_entries_name_their_folders_sweeps_and_mixtures(tmp_path, demo_root):
    from anobench.executors import stage_resources
    from anobench.runner import cell_set_dir, parse_run_config, set_dir, set_keys

    sweep = {"num": [4], "synthetic_fraction": [0.5], "mix": [{"draem": 0.5, "draem_fg": 0.5}]}
    config = parse_run_config({**_grid(demo_root, tmp_path / "out", generators=LABELLED), "sweep": sweep}, tmp_path)
    labels = [cell[0] for cell in config.cells()]
    assert labels == ["draem", "draem_fg", "draem[num=4]", "draem_fg[num=4]", "draem[synthetic_fraction=0.5]",
                      "draem_fg[synthetic_fraction=0.5]", "mix[draem=0.5,draem_fg=0.5]"]
    out = tmp_path / "out" / "generated" / "seed0"
    assert set_dir(config, set_keys(config, ("draem_fg", "disc", 0))[0]) == out / "draem_fg" / "disc"
    assert cell_set_dir(config, ("draem_fg[synthetic_fraction=0.5]", "disc", 0)) == out / "draem_fg" / "disc"
    assert cell_set_dir(config, ("draem_fg[num=4]", "disc", 0)) == out / "num4" / "draem_fg" / "disc"
    assert set_keys(config, ("mix[draem=0.5,draem_fg=0.5]", "disc", 0)) == [("draem", "disc", 0, 6),
                                                                           ("draem_fg", "disc", 0, 6)]
    assert config.run_dir("draem_fg", "disc", 0) == tmp_path / "out" / "runs" / "draem_fg" / "disc" / "seed0"
    # rows: a listed entry keeps the registered name, a swept cell its label; curves group by the entry
    setups = {label: config.variant(label).setup() for label in labels}
    assert setups["draem_fg"]["label"] == "draem" and setups["draem_fg"]["base_generator"] == "draem_fg"
    assert setups["draem_fg[num=4]"]["label"] == "draem_fg[num=4]"
    assert config.spec("draem_fg").overrides == {"foreground": "true"} and config.spec("draem").overrides == {}
    # Ray resources come from the registered generator behind a label
    gpu = parse_run_config(_grid(demo_root, tmp_path, generators=[
        {"name": "deltadeno", "label": "dd", "device": "cuda"}]), tmp_path)
    assert stage_resources(gpu, ("dd", "disc", 0, 300), "generate", 1, cluster_gpus=1)["num_gpus"] == 1


def _assert_two_setups(out: Path, output: str) -> None:
    """Two labelled draem entries: two sets, two runs, rows named draem with two config hashes."""
    from anobench.records import DatasetRecord

    plain, fg = (DatasetRecord.read(out / "generated" / "seed0" / g / "disc") for g in ("draem", "draem_fg"))
    assert plain.generator == fg.generator == "draem"
    assert plain.config["foreground"] is False and fg.config["foreground"] is True
    rows = _rows(out)
    assert set(rows["generator"]) == {"draem"} and len(rows) == 2 * 7  # 7 metrics per cell
    assert rows.groupby("config_hash")["generator"].count().tolist() == [7, 7]
    assert (out / "runs" / "draem_fg" / "disc" / "seed0" / "results.csv").is_file()
    assert re.search(r"^\[\d/2 done, \d running, 0 failed\] draem_fg/disc/seed0: 6 samples", output, re.M), output
    # `anobench report` shows them as two columns
    report = CliRunner().invoke(cli, ["report", str(out / "runs"), "--layout", "table2"])
    assert report.exit_code == 0, report.output
    header = next(line for line in report.output.splitlines() if line.startswith("| Category | DRAEM"))
    assert header.count("DRAEM (") == 2, header


def test_two_labelled_setups_of_draem_run_side_by_side_and_resume(demo_root, tmp_path):
    out = tmp_path / "out"
    config = _write(tmp_path, _grid(demo_root, out, generators=LABELLED))
    result = CliRunner().invoke(cli, ["run", str(config), "-q", "--heartbeat", "0.2"])
    assert result.exit_code == 0, result.output
    _assert_two_setups(out, result.output)
    assert any(line.startswith("heartbeat [") for line in result.output.splitlines())
    again = CliRunner().invoke(cli, ["run", str(config), "-q"])
    assert again.exit_code == 0 and "draem/disc/seed0: done, skipped" in again.output
    assert "draem_fg/disc/seed0: done, skipped" in again.output


@pytest.mark.slow
def test_ray_runs_two_labelled_setups_as_local_does(demo_root, tmp_path, local_ray):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks train with one thread each
    try:
        local = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, tmp_path / "local",
                                                                           generators=LABELLED))), "-q"])
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 0, local.output
    distributed = CliRunner().invoke(cli, ["run", str(_write(tmp_path, _grid(demo_root, tmp_path / "ray",
                                                                             generators=LABELLED))), "-q",
                                           "--executor", "ray", "--heartbeat", "0.5"])
    assert distributed.exit_code == 0, distributed.output
    assert any(line.startswith("heartbeat [") for line in distributed.output.splitlines())
    _assert_two_setups(tmp_path / "ray", distributed.output)
    _assert_two_setups(tmp_path / "local", local.output)
    assert _rows(tmp_path / "local").equals(_rows(tmp_path / "ray"))


def test_a_num_sweep_over_two_labelled_setups_draws_one_curve_per_entry(demo_root, tmp_path):
    from anobench.report_stats import sweep_points
    from anobench.statistics import load_analysis

    out = tmp_path / "out"
    grid = {**_grid(demo_root, out, generators=LABELLED), "sweep": {"num": [4]}}
    result = CliRunner().invoke(cli, ["run", str(_write(tmp_path, grid)), "-q"])
    assert result.exit_code == 0, result.output
    assert set(_rows(out)["generator"]) == {"draem", "draem[num=4]", "draem_fg[num=4]"}
    assert (out / "generated" / "seed0" / "num4" / "draem_fg" / "disc" / "dataset.json").is_file()
    points = sweep_points(load_analysis([out / "runs"], n_resamples=20), "image_auroc", "num")
    curves = points.groupby("generator")["value"].apply(sorted).to_dict()
    assert curves == {"draem": [4.0, 6.0], "draem_fg": [4.0, 6.0]}  # the unswept cells join their own entry
