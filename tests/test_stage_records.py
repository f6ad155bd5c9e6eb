"""The stage artifacts' typed records, their shared status field, and provenance edge cases.

Round trips as diffusers tests its configs: a record built with a value in every field survives
``to_dict`` / JSON / ``from_dict`` unchanged, and every file a stage writes reads back to the
same dict. Old status values read as their new equivalents, so old run folders still resume and
evaluate. A grid whose ``num`` shrank trains on exactly the first ``num`` samples, as a fresh
set of that size would; NSA/FPI manifests hold no absolute paths, so a moved folder resumes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from anobench.cli import cli
from anobench.errors import AnobenchError
from anobench.records import COMPLETE, CREATED, RUNNING, STATUSES, CheckpointRecord, DatasetRecord, RunRecord

RECORDS = (DatasetRecord, CheckpointRecord, RunRecord)
TINY = {"image_size": "64", "steps": "2", "batch_size": "4", "val_every": "2", "checkpoint_every": "1",
        "max_val_samples": "4", "channels_last": "false"}


def _value(hint, i: int):
    """A JSON value of a field's type, distinct per field (no field left at its default)."""
    import types

    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    base = typing.get_origin(hint) or hint
    return {str: f"text{i}", int: 100 + i, float: 0.5 + i, bool: True, dict: {"key": [i, "v"]},
            list: [i]}[base]


def _full(cls):
    hints = typing.get_type_hints(cls)
    values = {f.name: _value(hints[f.name], i) for i, f in enumerate(dataclasses.fields(cls))
              if f.name not in ("status", "extra")}
    return cls(**values, status=RUNNING)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.FILE)
def test_record_round_trips_exactly(cls):
    record = _full(cls)
    data = record.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(cls)} - {"extra"}
    again = cls.from_dict(json.loads(json.dumps(data)))
    assert again == record and again.to_dict() == data
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(data, sort_keys=True)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.FILE)
def test_unknown_keys_are_kept_verbatim(cls):
    data = {**_full(cls).to_dict(), "written_by_a_newer_anobench": {"x": [1, 2]}}
    record = cls.from_dict(data)
    assert record.extra == {"written_by_a_newer_anobench": {"x": [1, 2]}}
    assert record.to_dict() == data  # rewriting the file loses nothing
    assert record.replace(status=COMPLETE).to_dict()["written_by_a_newer_anobench"] == {"x": [1, 2]}


def _first_int_field(cls) -> str:
    hints = typing.get_type_hints(cls)
    return next(f.name for f in dataclasses.fields(cls) if _value(hints[f.name], 0) == 100)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.FILE)
@pytest.mark.parametrize("breakage, expected", [
    ("list", "expected a JSON object"),
    ("missing", "lacks generator"),
    ("wrong-type", "expected integer"),
    ("bad-status", "status is 'finished'"),
])
def test_malformed_files_are_one_line_errors(cls, breakage, expected, tmp_path):
    data = _full(cls).to_dict()
    if breakage == "list":
        data = [data]
    elif breakage == "missing":
        del data["generator"]
    elif breakage == "wrong-type":
        data[_first_int_field(cls)] = "zero"
    else:
        data["status"] = "finished"
    (tmp_path / cls.FILE).write_text(json.dumps(data))
    with pytest.raises(AnobenchError) as caught:
        cls.read(tmp_path)
    message = str(caught.value)
    assert expected in message and str(tmp_path / cls.FILE) in message and "\n" not in message


def test_a_bool_is_not_an_integer_and_an_integer_is_a_number():
    data = _full(RunRecord).to_dict()
    with pytest.raises(AnobenchError, match="seed is True"):
        RunRecord.from_dict({**data, "seed": True})
    assert RunRecord.from_dict({**data, "train_seconds": 3}).train_seconds == 3


def test_a_writer_cannot_store_an_unknown_status():
    with pytest.raises(ValueError):
        _full(DatasetRecord).replace(status="done")


# ----------------------------------------------------------------------------- one status field


@pytest.mark.parametrize("old, new", [("training", RUNNING), ("trained", COMPLETE), ("created", CREATED)])
def test_old_detector_run_statuses_read_as_the_new_ones(old, new):
    assert RunRecord.from_dict({**_full(RunRecord).to_dict(), "status": old}).status == new


@pytest.fixture(scope="module")
def stages(demo_root, tmp_path_factory):
    """One of each stage output, made the ordinary way: a generated set, a detector run, a checkpoint."""
    from anobench.detectors.train import train_detector
    from anobench.generation import generate_dataset
    from anobench.generator_training import train_generator

    out = tmp_path_factory.mktemp("stages")
    gen = generate_dataset("draem", "mvtec_ad", demo_root, "disc", 6, out / "gen", image_size=64,
                           progress=False).folder
    run = out / "run"
    train_detector("mvtec_ad", demo_root, "disc", gen, run, encoder_weights="none", overrides=dict(TINY),
                   progress=False)
    ckpt = out / "ckpt"
    tiny = {"resolution": "16", "patch_size": "2", "block_out_channels": "8,16", "attention_heads": "2",
            "text_dim": "16", "batch_size": "2", "checkpoint_every": "1", "ema_decay": "0"}
    train_generator("dhdiff", "mvtec_ad", demo_root, "disc", ckpt, steps=1, overrides=tiny, image_size=64,
                    device="cpu", progress=False)
    return {DatasetRecord: gen, RunRecord: run, CheckpointRecord: ckpt}


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.FILE)
def test_every_stage_writes_its_record_and_the_same_finished_status(stages, cls):
    folder = stages[cls]
    data = json.loads((folder / cls.FILE).read_text())
    record = cls.read(folder)
    assert record.to_dict() == data and not record.extra  # every key the stage writes is a typed field
    assert data["status"] == COMPLETE and data["status"] in STATUSES


def test_an_old_finished_run_still_evaluates_and_is_not_retrained(stages, tmp_path):
    from anobench.detectors.train import train_detector
    from anobench.evaluation import evaluate
    from anobench.runner import _trained

    run = tmp_path / "old"
    shutil.copytree(stages[RunRecord], run)
    data = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**data, "status": "trained"}))  # as older anobench wrote it
    assert _trained(run)
    before = (run / "last.pt").read_bytes()
    summary = train_detector(None, None, None, stages[DatasetRecord], run, encoder_weights="none",
                             overrides=dict(TINY), progress=False)
    assert summary.resumed_from == summary.steps == 2 and (run / "last.pt").read_bytes() == before
    assert evaluate(run, heatmaps=0, progress=False, device="cpu").n_images > 0


def test_an_old_unfinished_run_resumes(stages, tmp_path):
    from anobench.detectors.train import train_detector

    run = tmp_path / "old"
    train_detector(None, None, None, stages[DatasetRecord], run, encoder_weights="none", overrides=dict(TINY),
                   progress=False, max_steps=1)
    data = json.loads((run / "run.json").read_text())
    assert data["status"] == RUNNING
    (run / "run.json").write_text(json.dumps({**data, "status": "training"}))
    summary = train_detector(None, None, None, stages[DatasetRecord], run, encoder_weights="none",
                             overrides=dict(TINY), progress=False)
    assert summary.resumed_from == 1 and json.loads((run / "run.json").read_text())["status"] == COMPLETE


# ----------------------------------------------------------------------------- a grid whose num shrank


def _grid(demo_root: Path, out: Path, num: int) -> Path:
    path = out.parent / f"{out.name}-grid.yaml"
    path.write_text(yaml.safe_dump({
        "out": str(out), "dataset": "mvtec_ad", "data_root": str(demo_root), "categories": ["disc"], "seeds": [0],
        "generators": [{"name": "draem", "num": num}],
        "train": {"profile": "quick", "encoder_weights": "none", "set": {k: yaml.safe_load(v) for k, v in TINY.items()}},
        "evaluate": {"test_sets": ["protocol"], "heatmaps": 0},
    }))
    return path


def test_a_grid_whose_num_shrank_trains_on_the_first_num_samples(demo_root, tmp_path):
    from anobench.results import read_results

    runner = CliRunner()
    big = tmp_path / "big"
    first = runner.invoke(cli, ["run", str(_grid(demo_root, big, 8)), "-q"])
    assert first.exit_code == 0, first.output
    shutil.rmtree(big / "runs")  # keep the 8-sample set, train again with num 4
    shrunk = runner.invoke(cli, ["run", str(_grid(demo_root, big, 4)), "-q"])
    assert shrunk.exit_code == 0, shrunk.output
    fresh = tmp_path / "fresh"
    straight = runner.invoke(cli, ["run", str(_grid(demo_root, fresh, 4)), "-q"])
    assert straight.exit_code == 0, straight.output

    assert len((big / "generated/seed0/draem/disc/manifest.jsonl").read_text().splitlines()) == 8  # kept whole
    runs = [RunRecord.read(root / "runs/draem/disc/seed0") for root in (big, fresh)]
    assert [r.generated_samples for r in runs] == [4, 4]
    assert runs[0].identity() == runs[1].identity()
    assert runs[0].training_split == runs[1].training_split  # the same samples (index and pixel hash)
    indices = [e["index"] for key in ("train_synthetic", "val_synthetic") for e in runs[0].training_split[key]]
    assert sorted(indices) == [0, 1, 2, 3]
    rows = [read_results(root / "runs/draem/disc/seed0/results.csv").sort_values("metric") for root in (big, fresh)]
    assert set(rows[0]["n_generated"].astype(str)) == {"4"}
    assert rows[0]["value"].tolist() == rows[1]["value"].tolist()
    assert rows[0]["config_hash"].tolist() == rows[1]["config_hash"].tolist()


def test_train_detector_num_takes_the_first_samples_or_says_there_are_too_few(stages, tmp_path):
    result = CliRunner().invoke(cli, ["train-detector", "--generated", str(stages[DatasetRecord]), "--out",
                                      str(tmp_path / "r"), "--num", "9", "-q", "--encoder-weights", "none",
                                      *[f"--set={k}={v}" for k, v in TINY.items()]])
    assert result.exit_code == 2 and "holds 6 of samples 0..8, 9 asked for" in result.output
    result = CliRunner().invoke(cli, ["train-detector", "--generated", str(stages[DatasetRecord]), "--out",
                                      str(tmp_path / "r"), "--num", "3", "-q", "--encoder-weights", "none",
                                      *[f"--set={k}={v}" for k, v in TINY.items()]])
    assert result.exit_code == 0, result.output
    record = RunRecord.read(tmp_path / "r")
    assert record.generated_samples == 3 and record.split["train_synthetic"] + record.split["val_synthetic"] == 3


# ----------------------------------------------------------------------------- no absolute paths in records


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _rows(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # timing differs run to run


@pytest.mark.parametrize("generator", ["nsa", "fpi"])
def test_a_moved_folder_resumes_and_records_no_absolute_path(generator, demo_root, tmp_path):
    from anobench.generation import generate_dataset

    def generate(root: Path, num: int):
        return generate_dataset(generator, "mvtec_ad", root / "data", "disc", num, root / "out", image_size=64,
                                progress=False)

    first = tmp_path / "first"
    shutil.copytree(demo_root, first / "data")
    generate(first, 2)
    moved = tmp_path / "moved"
    first.rename(moved)
    summary = generate(moved, 3)
    assert summary.generated == 1 and summary.total == 3  # resumed, not refused or remade
    other = tmp_path / "elsewhere"
    shutil.copytree(demo_root, other / "data")
    generate(other, 3)
    folder = moved / "out" / generator / "disc"
    rows = _rows(folder)
    assert all(not s.startswith("/") and str(tmp_path) not in s for s in _strings(rows))
    assert all(row["extra"]["patch_source"].startswith("disc/train/") for row in rows)
    assert rows == _rows(other / "out" / generator / "disc")  # the same records wherever the data lives


def test_the_dhdiff_preset_trains_the_detector_as_anomalydiffusion_does():
    from anobench.presets import PRESETS

    dhdiff, anodiff = PRESETS["dhdiff"], PRESETS["anomalydiffusion"]
    assert dhdiff.train == anodiff.train
    assert (dhdiff.epochs, dhdiff.epoch_samples) == (anodiff.epochs, anodiff.epoch_samples)
