"""Hostile inputs and faults against the command line: no traceback, exit 2 with a named cause, no byte lost.

Each case builds a small broken world in its own folder (a copy of a tiny dataset, generated set
or trained run, then one thing broken), runs one command in-process, and checks:

* the exit status is 2 (user error), never 1 with ``error: <ExceptionClass>`` or a traceback;
* the message names the cause (the file or option at fault);
* every file that existed before the command has the same bytes after it.

Faults the machine does not give on demand (full disk, read-only disk) are injected by
patching the OS calls for one folder. Kills and concurrent writers run real processes and are
in the slow suite.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from anobench.cli import cli

TINY = {"image_size": 64, "steps": 3, "batch_size": 4, "val_every": 3, "checkpoint_every": 3,
        "max_val_samples": 4, "channels_last": False}
TINY_SET = [f"--set={k}={v}" for k, v in TINY.items()]
CATEGORY = "disc"


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    data: Path  # a demo MVTec-layout root (weave, grain, disc at 64 px)
    generated: Path  # a finished crop_paste set for disc
    run: Path  # a finished tiny detector run on it
    sums: dict  # digests of all three, checked unchanged after every case


@pytest.fixture(scope="module")
def world(demo_root, tmp_path_factory) -> World:
    from anobench.detectors.train import train_detector
    from anobench.generation import generate_dataset

    out = tmp_path_factory.mktemp("fuzzworld")
    gen = generate_dataset("crop_paste", "mvtec_ad", demo_root, CATEGORY, 8, out / "gen", seed=0, image_size=64,
                           progress=False)
    run = out / "run"
    train_detector("mvtec_ad", demo_root, CATEGORY, gen.folder, run, encoder_weights="none",
                   overrides={k: str(v) for k, v in TINY.items()}, progress=False)
    return World(demo_root, gen.folder, run, digests(demo_root, gen.folder, run))


def _copy(src, dst):
    if src.endswith(".pt"):  # checkpoints are hard links (cheap); cases replace them, never write into them
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=_copy)
    return dst


def digests(*roots: Path) -> dict[str, str]:
    found = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file() and not p.is_symlink():
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def invoke(args: list) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, [str(a) for a in args])


CLASS_ERROR = re.compile(r"error: [A-Z]\w*(Error|Exception|Warning)\b")


def assert_user_error(result, *causes: str) -> None:
    """Exit 2, a one-line message naming every cause, no traceback, no exception class as the message."""
    text = result.stderr if result.stderr else result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}\n{text}")
    assert result.exit_code == 2, f"exit {result.exit_code}: {text}"
    assert "Traceback" not in result.output and "Traceback" not in text
    assert not CLASS_ERROR.search(text), text
    assert "error:" in text.lower(), text
    for cause in causes:
        assert cause in text, f"{cause!r} not named in: {text}"


# --------------------------------------------------------------------------- hostile files


def png_header_bomb(path: Path, width: int = 40000, height: int = 40000) -> None:
    """A valid-looking PNG that claims width x height pixels (more than PIL's bomb limit), in ~100 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def data_copy(tmp: Path, w: World) -> Path:
    root = tmp / "data"
    copy_tree(w.data, root)
    return root


def gen_copy(tmp: Path, w: World) -> Path:
    return copy_tree(w.generated, tmp / "gen" / "crop_paste" / CATEGORY)


def run_copy(tmp: Path, w: World) -> Path:
    return copy_tree(w.run, tmp / "run")


def gen_args(root, out, *extra):
    return ["generate", "-g", "crop_paste", "--data-root", root, "--category", CATEGORY, "-n", 4, "-o", out,
            "--image-size", 64, "-q", *extra]


def train_args(root, generated, out, *extra):
    return ["train-detector", "--data-root", root, "--category", CATEGORY, "--generated", generated, "-o", out,
            "--encoder-weights", "none", "-q", *TINY_SET, *extra]


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def write_yaml(tmp: Path, w: World, text: str) -> Path:
    path = tmp / "grid.yaml"
    path.write_text(f"out: {tmp / 'grid'}\ndata_root: {w.data}\ncategories: [disc]\n"
                    "generators: [crop_paste]\n" + text)
    return path


# Each case: (id, build(tmp, world) -> args, causes named in the message).
Case = tuple[str, Callable[[Path, World], list], tuple[str, ...]]


def _seed_negative(tmp, w):
    return gen_args(w.data, tmp / "out", "--seed", -1)


def _train_seed_negative(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--seed", -3)


def _demo_seed_negative(tmp, w):
    return ["demo-data", tmp / "demo", "--seed", -2]


def _train_generator_seed_negative(tmp, w):
    return ["train-generator", "-g", "dhdiff", "--data-root", w.data, "--category", CATEGORY, "-o", tmp / "ckpt",
            "--seed", -1]


def _absolute_category(tmp, w):
    other = tmp / "other"
    other.mkdir()
    return ["generate", "-g", "crop_paste", "--data-root", w.data, "--category", str(other), "-n", 2,
            "-o", tmp / "out", "--image-size", 64, "-q"]


def _dotdot_category(tmp, w):
    return ["generate", "-g", "crop_paste", "--data-root", w.data / "disc", "--category", "../grain", "-n", 2,
            "-o", tmp / "out", "--image-size", 64, "-q"]


def _nested_category(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--category", "disc/train")


def _huge_image_size(tmp, w):
    return gen_args(w.data, tmp / "out", "--image-size", 100000)


def _huge_train_size(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--set", "image_size=1048576")


def _huge_num(tmp, w):
    return ["generate", "-g", "crop_paste", "--data-root", w.data, "--category", CATEGORY, "-n", 10**15,
            "-o", tmp / "out", "--image-size", 64, "-q"]


def _steps_inf(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--set", "steps=1e400")


def _steps_text(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--set", "steps=many")


def _set_unknown(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--set", "stepz=3")


def _set_no_equals(tmp, w):
    return gen_args(w.data, tmp / "out", "--set", "variant")


def _batch_zero(tmp, w):
    return train_args(w.data, w.generated, tmp / "run", "--set", "batch_size=0")


def _gen_out_is_file(tmp, w):
    (tmp / "out").write_text("not a folder")
    return gen_args(w.data, tmp / "out")


def _gen_out_below_a_file(tmp, w):
    (tmp / "out").write_text("not a folder")
    return gen_args(w.data, tmp / "out" / "deeper")


def _gen_out_in_data_root(tmp, w):
    root = data_copy(tmp, w)
    return gen_args(root, root / "grain")


def _train_out_is_file(tmp, w):
    (tmp / "run").write_text("x")
    return train_args(w.data, w.generated, tmp / "run")


def _train_out_in_data_root(tmp, w):
    root = data_copy(tmp, w)
    return train_args(root, w.generated, root / "disc" / "run")


def _train_out_is_generated(tmp, w):
    gen = gen_copy(tmp, w)
    return train_args(w.data, gen, gen)


def _train_out_in_generated(tmp, w):
    gen = gen_copy(tmp, w)
    return train_args(w.data, gen, gen / "run")


def _data_root_is_file(tmp, w):
    (tmp / "root").write_text("x")
    return gen_args(tmp / "root", tmp / "out")


def _data_root_missing(tmp, w):
    return gen_args(tmp / "nowhere", tmp / "out")


def _anomaly_source_is_file(tmp, w):
    (tmp / "textures").write_text("x")
    return ["generate", "-g", "draem", "--data-root", w.data, "--category", CATEGORY, "-n", 2, "-o", tmp / "out",
            "--image-size", 64, "-q", "--anomaly-source", tmp / "textures"]


def _dataset_json_list(tmp, w):
    gen = gen_copy(tmp, w)
    (gen / "dataset.json").write_text("[1, 2]")
    return train_args(w.data, gen, tmp / "run")


def _dataset_json_null(tmp, w):
    gen = gen_copy(tmp, w)
    (gen / "dataset.json").write_text("null")
    return train_args(w.data, gen, tmp / "run")


def _dataset_json_list_on_resume(tmp, w):
    gen = gen_copy(tmp, w)
    (gen / "dataset.json").write_text("[]")
    return ["generate", "-g", "crop_paste", "--data-root", w.data, "--category", CATEGORY, "-n", 8,
            "-o", tmp / "gen", "--image-size", 64, "-q"]


def _dataset_json_garbage(tmp, w):
    gen = gen_copy(tmp, w)
    (gen / "dataset.json").write_bytes(b"\xff\xfe{not json")
    return train_args(w.data, gen, tmp / "run")


def _dataset_json_no_generator(tmp, w):
    gen = gen_copy(tmp, w)
    edit_json(gen / "dataset.json", lambda d: d.pop("generator"))
    return train_args(w.data, gen, tmp / "run")


def _manifest_broken_row(tmp, w):
    gen = gen_copy(tmp, w)
    lines = (gen / "manifest.jsonl").read_text().splitlines(keepends=True)
    (gen / "manifest.jsonl").write_text(lines[0] + "{broken\n" + "".join(lines[1:]))
    return train_args(w.data, gen, tmp / "run")


def _manifest_escapes(tmp, w):
    gen = gen_copy(tmp, w)
    rows = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines()]
    rows[0]["files"]["image"] = "../../../../etc/hostname"
    (gen / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train_args(w.data, gen, tmp / "run")


def _manifest_missing_image(tmp, w):
    gen = gen_copy(tmp, w)
    (gen / "images" / "00003.png").unlink()
    return train_args(w.data, gen, tmp / "run")


def _generated_not_a_set(tmp, w):
    (tmp / "empty").mkdir()
    return train_args(w.data, tmp / "empty", tmp / "run")


def _run_json_no_dataset(tmp, w):
    run = run_copy(tmp, w)
    edit_json(run / "run.json", lambda d: d.pop("dataset"))
    return ["evaluate", run, "-q"]


def _run_json_list(tmp, w):
    run = run_copy(tmp, w)
    (run / "run.json").write_text("[]")
    return ["evaluate", run, "-q"]


def _run_json_seed_text(tmp, w):
    run = run_copy(tmp, w)
    edit_json(run / "run.json", lambda d: d.update(seed="zero"))
    return ["evaluate", run, "-q"]


def _run_json_bad_config(tmp, w):
    run = run_copy(tmp, w)
    edit_json(run / "run.json", lambda d: d["config"].update(warp=9))
    return ["evaluate", run, "-q"]


def _run_not_a_run(tmp, w):
    (tmp / "somewhere").mkdir()
    return ["evaluate", tmp / "somewhere", "-q"]


def _best_pt_garbage(tmp, w):
    run = run_copy(tmp, w)
    (run / "best.pt").unlink()
    (run / "best.pt").write_bytes(os.urandom(2048))
    return ["evaluate", run, "-q", "--heatmaps", 0]


def _best_pt_foreign_object(tmp, w):
    import torch

    run = run_copy(tmp, w)
    (run / "best.pt").unlink()
    torch.save([1, 2, 3], run / "best.pt")
    return ["evaluate", run, "-q", "--heatmaps", 0]


def _best_pt_other_architecture(tmp, w):
    import torch

    run = run_copy(tmp, w)
    (run / "best.pt").unlink()
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}, "step": 3}, run / "best.pt")
    return ["evaluate", run, "-q", "--heatmaps", 0]


def _last_pt_foreign(tmp, w):
    import torch

    run = run_copy(tmp, w)
    edit_json(run / "run.json", lambda d: d.update(status="training"))
    (run / "last.pt").unlink()
    torch.save({"weights": [0.0]}, run / "last.pt")
    return train_args(w.data, w.generated, run)


def _last_pt_truncated(tmp, w):
    run = run_copy(tmp, w)
    edit_json(run / "run.json", lambda d: d.update(status="training"))
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").unlink()
    (run / "last.pt").write_bytes(data[: len(data) // 3])
    return train_args(w.data, w.generated, run)


def _results_foreign_header(tmp, w):
    (tmp / "r.csv").write_text("a,b\n1,2\n")
    return ["evaluate", w.run, "-q", "--results", tmp / "r.csv"]


def _results_is_folder(tmp, w):
    (tmp / "r").mkdir()
    return ["evaluate", w.run, "-q", "--results", tmp / "r"]


def _results_in_data_root(tmp, w):
    return ["evaluate", w.run, "-q", "--results", w.data / "disc" / "results.csv"]


def _results_below_a_file(tmp, w):
    (tmp / "f").write_text("x")
    return ["evaluate", w.run, "-q", "--results", tmp / "f" / "results.csv"]


def _evaluate_data_root_gone(tmp, w):
    return ["evaluate", w.run, "-q", "--data-root", tmp / "moved"]


def _report_onto_results(tmp, w):
    _rows(tmp / "run" / "results.csv")
    return ["report", tmp / "run" / "results.csv", "--out", tmp / "run" / "results.csv"]


def _report_csv_onto_results(tmp, w):
    _rows(tmp / "results.csv")
    return ["report", tmp / "results.csv", "--format", "csv", "--out", tmp / "results.csv"]


def _report_onto_results_via_folder(tmp, w):
    _rows(tmp / "run" / "results.csv")
    return ["report", tmp / "run", "--format", "csv", "--out", tmp / "run" / "results.csv"]


def _report_onto_results_via_symlink(tmp, w):
    _rows(tmp / "results.csv")
    (tmp / "link.csv").symlink_to(tmp / "results.csv")
    return ["report", tmp / "results.csv", "--out", tmp / "link.csv"]


def _report_out_is_folder(tmp, w):
    _rows(tmp / "results.csv")
    (tmp / "dir").mkdir()
    return ["report", tmp / "results.csv", "--out", tmp / "dir"]


def _report_non_utf8(tmp, w):
    _rows(tmp / "results.csv")
    with open(tmp / "results.csv", "ab") as handle:
        handle.write("mvtec_ad,disc,draem,unet,0,thirds,image_auroc,0.5,abc,0.1.0\n".encode("utf-16"))
    return ["report", tmp / "results.csv"]


def _report_empty(tmp, w):
    (tmp / "results.csv").write_text("")
    return ["report", tmp / "results.csv"]


def _report_bad_value(tmp, w):
    _rows(tmp / "results.csv")
    with open(tmp / "results.csv", "a") as handle:
        handle.write("mvtec_ad,disc,draem,unet,0,thirds,pixel_ap,high,abc,0.1.0\n")
    return ["report", tmp / "results.csv"]


def _report_bad_layout(tmp, w):
    _rows(tmp / "results.csv")
    return ["report", tmp / "results.csv", "--layout", "sideways"]


def _yaml_train_list(tmp, w):
    return ["run", write_yaml(tmp, w, "train: [1, 2]\n"), "-q"]


def _yaml_evaluate_scalar(tmp, w):
    return ["run", write_yaml(tmp, w, "evaluate: 3\n"), "-q"]


def _yaml_seed_negative(tmp, w):
    return ["run", write_yaml(tmp, w, "seeds: [-1]\n"), "-q"]


def _yaml_num_inf(tmp, w):
    path = tmp / "grid.yaml"
    path.write_text(f"out: {tmp / 'grid'}\ndata_root: {w.data}\ncategories: [disc]\n"
                    "generators: [{name: crop_paste, num: .inf}]\n")
    return ["run", path, "-q"]


def _yaml_heatmaps_text(tmp, w):
    return ["run", write_yaml(tmp, w, "evaluate: {heatmaps: many}\n"), "-q"]


def _yaml_demo_list(tmp, w):
    return ["run", write_yaml(tmp, w, "demo_data: [1]\n"), "-q"]


def _yaml_a_list(tmp, w):
    (tmp / "grid.yaml").write_text("- 1\n- 2\n")
    return ["run", tmp / "grid.yaml", "-q"]


def _yaml_non_utf8(tmp, w):
    (tmp / "grid.yaml").write_bytes(b"out: \xff\xfe\n")
    return ["run", tmp / "grid.yaml", "-q"]


def _yaml_is_folder(tmp, w):
    (tmp / "grid.yaml").mkdir()
    return ["run", tmp / "grid.yaml", "-q"]


def _yaml_absolute_category(tmp, w):
    path = tmp / "grid.yaml"
    path.write_text(f"out: {tmp / 'grid'}\ndata_root: {w.data}\ncategories: [{w.data / 'grain'}]\n"
                    "generators: [crop_paste]\n")
    return ["run", path, "-q"]


def _visa_non_utf8(tmp, w):
    root = tmp / "visa"
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_bytes("object,split,label,image,mask\ncand\xe9,train,normal,a.png,\n"
                                                  .encode("latin-1"))
    return ["datasets", "check", root, "--dataset", "visa"]


def _visa_missing_columns(tmp, w):
    root = tmp / "visa"
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("object,image\ncandle,a.png\n")
    return ["generate", "-g", "crop_paste", "--dataset", "visa", "--data-root", root, "--category", "candle",
            "-n", 2, "-o", tmp / "out", "-q"]


def _bomb_in_train(tmp, w):
    root = data_copy(tmp, w)
    png_header_bomb(root / CATEGORY / "train" / "good" / "000.png.tmp")
    os.replace(root / CATEGORY / "train" / "good" / "000.png.tmp", root / CATEGORY / "train" / "good" / "000.png")
    return ["generate", "-g", "draem", "--data-root", root, "--category", CATEGORY, "-n", 40, "-o", tmp / "out",
            "--image-size", 64, "-q", "--batch-size", 40]


def _garbage_png_in_train(tmp, w):
    root = data_copy(tmp, w)
    target = root / CATEGORY / "train" / "good" / "001.png"
    target.unlink()
    target.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    return ["generate", "-g", "draem", "--data-root", root, "--category", CATEGORY, "-n", 40, "-o", tmp / "out",
            "--image-size", 64, "-q", "--batch-size", 40]


def _folder_named_png(tmp, w):
    root = data_copy(tmp, w)
    (root / CATEGORY / "train" / "good" / "999.png").mkdir()
    return ["generate", "-g", "draem", "--data-root", root, "--category", CATEGORY, "-n", 60, "-o", tmp / "out",
            "--image-size", 64, "-q", "--batch-size", 60]


def _bomb_reference_mask(tmp, w):
    root = data_copy(tmp, w)
    mask = sorted((root / CATEGORY / "ground_truth").rglob("*.png"))[0]
    mask.unlink()
    png_header_bomb(mask)
    return ["generate", "-g", "crop_paste", "--data-root", root, "--category", CATEGORY, "-n", 2, "-o", tmp / "out",
            "--image-size", 64, "-q"]


def _score_generation_not_a_set(tmp, w):
    (tmp / "x").mkdir()
    return ["score-generation", tmp / "x", "--data-root", w.data, "--category", CATEGORY, "--metrics", "mask_stats"]


def _rows(path: Path, n: int = 2) -> None:
    from anobench.results import append_rows

    append_rows(path, [{"dataset": "mvtec_ad", "category": "disc", "generator": "draem", "detector": "unet",
                        "seed": s, "protocol": "thirds", "metric": "image_auroc", "value": 0.5 + s / 10,
                        "config_hash": "abc", "version": "0.1.0"} for s in range(n)])


CASES: list[Case] = [
    ("seed-negative", _seed_negative, ("--seed",)),
    ("train-seed-negative", _train_seed_negative, ("--seed",)),
    ("demo-data-seed-negative", _demo_seed_negative, ("--seed", "-2")),
    ("train-generator-seed-negative", _train_generator_seed_negative, ("--seed",)),
    ("category-absolute", _absolute_category, ("--category",)),
    ("category-dotdot", _dotdot_category, ("--category", "../grain")),
    ("category-nested", _nested_category, ("disc/train",)),
    ("image-size-huge", _huge_image_size, ("--image-size 100000", "memory")),
    ("train-image-size-huge", _huge_train_size, ("image_size 1048576", "memory")),
    ("num-huge", _huge_num, ("--num 1000000000000000", "disk")),
    ("set-steps-inf", _steps_inf, ("steps", "1e400")),
    ("set-steps-text", _steps_text, ("steps",)),
    ("set-unknown-key", _set_unknown, ("stepz",)),
    ("set-no-equals", _set_no_equals, ("--set", "variant")),
    ("set-batch-zero", _batch_zero, ("batch_size",)),
    ("generate-out-is-file", _gen_out_is_file, ("--out", "is a file")),
    ("generate-out-below-file", _gen_out_below_a_file, ("--out", "is a file")),
    ("generate-out-in-data-root", _gen_out_in_data_root, ("--out", "--data-root")),
    ("train-out-is-file", _train_out_is_file, ("--out", "is a file")),
    ("train-out-in-data-root", _train_out_in_data_root, ("--out", "--data-root")),
    ("train-out-is-generated", _train_out_is_generated, ("--out", "--generated")),
    ("train-out-in-generated", _train_out_in_generated, ("--out", "--generated")),
    ("data-root-is-file", _data_root_is_file, ("root", "not a folder")),
    ("data-root-missing", _data_root_missing, ("nowhere",)),
    ("anomaly-source-is-file", _anomaly_source_is_file, ("--anomaly-source",)),
    ("dataset-json-list", _dataset_json_list, ("dataset.json", "JSON object")),
    ("dataset-json-null", _dataset_json_null, ("dataset.json", "JSON object")),
    ("dataset-json-list-on-resume", _dataset_json_list_on_resume, ("dataset.json", "JSON object")),
    ("dataset-json-garbage", _dataset_json_garbage, ("dataset.json",)),
    ("dataset-json-no-generator", _dataset_json_no_generator, ("dataset.json", "generator")),
    ("manifest-broken-row", _manifest_broken_row, ("manifest.jsonl:2",)),
    ("manifest-escapes-the-set", _manifest_escapes, ("manifest.jsonl", "outside")),
    ("manifest-missing-image", _manifest_missing_image, ("00003.png", "missing")),
    ("generated-not-a-set", _generated_not_a_set, ("not a generated set",)),
    ("run-json-no-dataset", _run_json_no_dataset, ("run.json", "dataset")),
    ("run-json-list", _run_json_list, ("run.json", "list")),
    ("run-json-seed-text", _run_json_seed_text, ("run.json", "seed")),
    ("run-json-bad-config", _run_json_bad_config, ("run.json", "warp")),
    ("run-not-a-run", _run_not_a_run, ("not a detector run",)),
    ("best-pt-garbage", _best_pt_garbage, ("best.pt",)),
    ("best-pt-foreign-object", _best_pt_foreign_object, ("best.pt", "not an anobench checkpoint")),
    ("best-pt-other-architecture", _best_pt_other_architecture, ("best.pt", "do not fit")),
    ("last-pt-foreign", _last_pt_foreign, ("last.pt", "not an anobench checkpoint")),
    ("last-pt-truncated", _last_pt_truncated, ("last.pt",)),
    ("results-foreign-header", _results_foreign_header, ("r.csv", "unknown columns")),
    ("results-is-folder", _results_is_folder, ("--results", "is a folder")),
    ("results-in-data-root", _results_in_data_root, ("--results", "--data-root")),
    ("results-below-a-file", _results_below_a_file, ("f",)),
    ("evaluate-data-root-gone", _evaluate_data_root_gone, ("moved",)),
    ("report-onto-results", _report_onto_results, ("--out", "results.csv")),
    ("report-csv-onto-results", _report_csv_onto_results, ("--out", "results.csv")),
    ("report-onto-results-in-folder", _report_onto_results_via_folder, ("--out", "results.csv")),
    ("report-onto-results-via-symlink", _report_onto_results_via_symlink, ("--out", "link.csv")),
    ("report-out-is-folder", _report_out_is_folder, ("--out", "is a folder")),
    ("report-non-utf8", _report_non_utf8, ("results.csv",)),
    ("report-empty-file", _report_empty, ("results.csv", "empty")),
    ("report-bad-value", _report_bad_value, ("results.csv", "line 4", "high")),
    ("report-bad-layout", _report_bad_layout, ("--layout", "sideways")),
    ("yaml-train-list", _yaml_train_list, ("grid.yaml", "train")),
    ("yaml-evaluate-scalar", _yaml_evaluate_scalar, ("grid.yaml", "evaluate")),
    ("yaml-seed-negative", _yaml_seed_negative, ("grid.yaml", "seeds")),
    ("yaml-num-inf", _yaml_num_inf, ("grid.yaml", "num")),
    ("yaml-heatmaps-text", _yaml_heatmaps_text, ("grid.yaml", "heatmaps")),
    ("yaml-demo-data-list", _yaml_demo_list, ("grid.yaml", "demo_data")),
    ("yaml-a-list", _yaml_a_list, ("grid.yaml", "mapping")),
    ("yaml-non-utf8", _yaml_non_utf8, ("grid.yaml",)),
    ("yaml-is-folder", _yaml_is_folder, ("grid.yaml",)),
    ("yaml-absolute-category", _yaml_absolute_category, ("grid.yaml", "categories")),
    ("visa-non-utf8-csv", _visa_non_utf8, ("1cls.csv", "UTF-8")),
    ("visa-missing-columns", _visa_missing_columns, ("1cls.csv", "split")),
    ("bomb-png-in-train", _bomb_in_train, ("000.png", "too large")),
    ("garbage-png-in-train", _garbage_png_in_train, ("001.png", "unreadable")),
    ("folder-named-png", _folder_named_png, ("999.png", "folder")),
    ("bomb-reference-mask", _bomb_reference_mask, ("too large",)),
    ("score-generation-not-a-set", _score_generation_not_a_set, ("not a generated set",)),
]


@pytest.mark.parametrize("build,causes", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_a_named_user_error(build, causes, world, tmp_path):
    args = build(tmp_path, world)
    before = digests(tmp_path)
    started = time.perf_counter()
    result = invoke(args)
    assert_user_error(result, *causes)
    after = digests(tmp_path)
    lost = {p for p, h in before.items() if after.get(p) != h}
    assert not lost, f"changed or removed: {sorted(lost)}"
    assert digests(world.data, world.generated, world.run) == world.sums
    assert time.perf_counter() - started < 60


def test_there_are_at_least_fifty_cases():
    assert len(CASES) + len(FAULTS) >= 50
    assert len({c[0] for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- injected faults


@contextlib.contextmanager
def unwritable(monkeypatch, folder: Path, code: int = errno.EROFS, after: int = 0):
    """Writes under ``folder`` fail with ``code`` (after ``after`` successful file creations)."""
    prefix = os.path.realpath(folder)
    count = {"n": 0}
    real = {"open": builtins.open, "os_open": os.open, "mkdir": os.mkdir, "replace": os.replace,
            "access": os.access, "mkstemp": tempfile.mkstemp}

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        full = os.path.realpath(os.fspath(path))
        return full == prefix or full.startswith(prefix + os.sep)

    def fail(path):
        count["n"] += 1
        if count["n"] > after:
            raise OSError(code, os.strerror(code), os.fspath(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and under(file):
            fail(file)
        return real["open"](file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            fail(path)
        return real["os_open"](path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if under(path) and not os.path.isdir(path):
            fail(path)
        return real["mkdir"](path, *args, **kwargs)

    def fake_access(path, mode, *args, **kwargs):
        if mode & os.W_OK and under(path) and count["n"] >= after:
            return False
        return real["access"](path, mode, *args, **kwargs)

    def fake_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and under(dir):
            fail(dir)
        return real["mkstemp"](*args, dir=dir, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "access", fake_access)
    monkeypatch.setattr(tempfile, "mkstemp", fake_mkstemp)
    try:
        yield
    finally:
        monkeypatch.undo()


def _fault_generate_read_only(tmp, w, mp):
    (tmp / "out").mkdir()
    return unwritable(mp, tmp / "out"), gen_args(w.data, tmp / "out"), ("out", "read-only")


def _fault_generate_permission(tmp, w, mp):
    (tmp / "out").mkdir()
    return unwritable(mp, tmp / "out", errno.EACCES), gen_args(w.data, tmp / "out"), ("out", "permission denied")


def _fault_generate_disk_full(tmp, w, mp):
    (tmp / "out").mkdir()
    return (unwritable(mp, tmp / "out", errno.ENOSPC, after=5), gen_args(w.data, tmp / "out"),
            ("no space left", "re-run"))


def _fault_train_disk_full(tmp, w, mp):
    (tmp / "run").mkdir()
    return (unwritable(mp, tmp / "run", errno.ENOSPC, after=2), train_args(w.data, w.generated, tmp / "run"),
            ("run", "no space left"))


def _fault_evaluate_read_only_run(tmp, w, mp):
    run = run_copy(tmp, w)
    return unwritable(mp, run), ["evaluate", run, "-q"], ("run", "--results")


def _fault_evaluate_results_read_only(tmp, w, mp):
    (tmp / "ro").mkdir()
    return (unwritable(mp, tmp / "ro"), ["evaluate", w.run, "-q", "--results", tmp / "ro" / "r.csv"],
            ("--results", "ro"))


def _fault_results_disk_full(tmp, w, mp):
    run = run_copy(tmp, w)
    _rows(tmp / "store" / "results.csv")
    return (unwritable(mp, tmp / "store", errno.ENOSPC, after=1),
            ["evaluate", run, "-q", "--heatmaps", 0, "--results", tmp / "store" / "results.csv"],
            ("results.csv", "no space left"))


def _fault_report_read_only(tmp, w, mp):
    _rows(tmp / "results.csv")
    (tmp / "ro").mkdir()
    return (unwritable(mp, tmp / "ro"), ["report", tmp / "results.csv", "--out", tmp / "ro" / "report.md"],
            ("report.md", "read-only"))


def _fault_score_generation_read_only(tmp, w, mp):
    gen = gen_copy(tmp, w)
    # refused before any scoring (rows are stored per metric); like evaluate, the store is named
    return (unwritable(mp, tmp / "gen"), ["score-generation", gen, "--data-root", w.data, "--category", CATEGORY,
                                          "--metrics", "mask_stats", "-q"], ("--results", "results.csv"))


def _fault_datasets_check_unreadable(tmp, w, mp):
    root = data_copy(tmp, w)
    mask = sorted((root / CATEGORY / "ground_truth").rglob("*.png"))[0]
    real_open = builtins.open

    def no_read(file, mode="r", *args, **kwargs):
        if os.fspath(file) == str(mask):
            raise OSError(errno.EIO, "Input/output error", str(mask))
        return real_open(file, mode, *args, **kwargs)

    @contextlib.contextmanager
    def patched():
        mp.setattr(builtins, "open", no_read)
        try:
            yield
        finally:
            mp.undo()

    return patched(), ["generate", "-g", "crop_paste", "--data-root", root, "--category", CATEGORY, "-n", 2,
                       "-o", tmp / "out", "--image-size", 64, "-q"], (mask.name,)


FAULTS = [
    ("generate-read-only", _fault_generate_read_only),
    ("generate-permission-denied", _fault_generate_permission),
    ("generate-disk-full", _fault_generate_disk_full),
    ("train-disk-full", _fault_train_disk_full),
    ("evaluate-read-only-run", _fault_evaluate_read_only_run),
    ("evaluate-results-read-only", _fault_evaluate_results_read_only),
    ("results-append-disk-full", _fault_results_disk_full),
    ("report-read-only", _fault_report_read_only),
    ("score-generation-read-only", _fault_score_generation_read_only),
    ("input-io-error", _fault_datasets_check_unreadable),
]


@pytest.mark.parametrize("build", [f[1] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_injected_fault_is_a_named_user_error(build, world, tmp_path, monkeypatch):
    fault, args, causes = build(tmp_path, world, monkeypatch)
    before = digests(tmp_path)
    with fault:
        result = invoke(args)
    assert_user_error(result, *causes)
    after = digests(tmp_path)
    lost = {p for p, h in before.items() if after.get(p) != h}
    assert not lost, f"changed or removed: {sorted(lost)}"
    assert digests(world.data, world.generated, world.run) == world.sums


def test_disk_full_mid_generation_resumes_to_the_same_bytes(world, tmp_path, monkeypatch):
    """ENOSPC after a few files: exit 2, finished samples kept; after space is freed, the same bytes."""
    (tmp_path / "a").mkdir()
    with unwritable(monkeypatch, tmp_path / "a", errno.ENOSPC, after=12):
        assert_user_error(invoke(gen_args(world.data, tmp_path / "a", "--batch-size", 1)), "no space left")
    folder = tmp_path / "a" / "crop_paste" / CATEGORY
    kept = digests(folder / "images")
    assert 0 < len(kept) < 4
    assert invoke(gen_args(world.data, tmp_path / "a")).exit_code == 0
    assert invoke(gen_args(world.data, tmp_path / "b")).exit_code == 0
    a = {Path(p).name: h for p, h in digests(folder / "images", folder / "masks").items()}
    b = {Path(p).name: h for p, h in digests(tmp_path / "b" / "crop_paste" / CATEGORY / "images",
                                              tmp_path / "b" / "crop_paste" / CATEGORY / "masks").items()}
    assert a == b and len(a) == 4
    assert all(digests(folder / "images")[p] == h for p, h in kept.items())


def test_a_read_only_run_is_evaluated_with_results_elsewhere(world, tmp_path, monkeypatch):
    from anobench.results import read_results

    run = run_copy(tmp_path, world)
    before = digests(run)
    with unwritable(monkeypatch, run):
        result = invoke(["evaluate", run, "-q", "--results", tmp_path / "elsewhere" / "results.csv"])
    assert result.exit_code == 0, result.output
    assert "read-only" in result.stderr
    assert digests(run) == before
    rows = read_results(tmp_path / "elsewhere" / "results.csv")
    assert set(rows["metric"]) >= {"image_auroc", "pixel_ap"}


def test_evaluate_refuses_a_bad_results_file_before_any_work(world, tmp_path, monkeypatch):
    """Cheap checks first: a foreign --results is refused before the model or the test images are read."""
    import anobench.datasets
    import anobench.detectors.run

    calls = []
    monkeypatch.setattr(anobench.detectors.run.TrainedRun, "load_model", lambda self: calls.append("model"))
    real_load = anobench.datasets.load_category
    monkeypatch.setattr(anobench.datasets, "load_category", lambda *a, **k: calls.append("data") or real_load(*a, **k))
    (tmp_path / "r.csv").write_text("a,b\n")
    assert_user_error(invoke(["evaluate", world.run, "-q", "--results", tmp_path / "r.csv"]), "r.csv")
    assert calls == []


def test_datasets_check_lists_a_bomb_and_goes_on(world, tmp_path):
    root = data_copy(tmp_path, world)
    bomb = sorted((root / "grain" / "ground_truth").rglob("*.png"))[0]
    bomb.unlink()
    png_header_bomb(bomb)
    result = invoke(["datasets", "check", root])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"PROBLEM {bomb}: image too large" in result.output
    for category in ("weave", "grain", "disc"):  # every category is still checked and counted
        assert f"{category}: train good" in result.output


# --------------------------------------------------------------------------- the results store under stress


def test_symlinked_results_get_the_rows_and_keep_the_link_and_mode(tmp_path):
    from anobench.results import read_results

    target = tmp_path / "real" / "results.csv"
    _rows(target, 1)
    os.chmod(target, 0o600)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    _rows(link, 3)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target.stat().st_mode & 0o777) == 0o600
    assert len(read_results(target)) == 4


def test_a_torn_last_row_is_never_data_nor_made_permanent(tmp_path):
    from anobench.results import read_results

    path = tmp_path / "results.csv"
    _rows(path, 2)
    with open(path, "a") as handle:
        handle.write("mvtec_ad,disc,draem,unet,9,thirds,pixel_au")  # killed mid-append
    with pytest.warns(UserWarning, match="line 4 has no line end"):
        df = read_results(path)
    assert list(df["metric"]) == ["image_auroc"] * 2
    _rows(path, 1)
    text = path.read_text()
    assert "pixel_au" not in text and text.count("\n") == 4
    assert len(read_results(path)) == 3


def test_a_torn_row_is_dropped_in_reports(tmp_path):
    path = tmp_path / "results.csv"
    _rows(path, 2)
    with open(path, "a") as handle:
        handle.write("mvtec_ad,disc,draem,unet,9,thirds,pixel_ap,0.9")
    result = invoke(["report", path, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "no line end" in result.stderr and "pixel_ap" not in result.stdout


def test_folder_store_merges_parts_and_starts_empty(tmp_path):
    from anobench.results import append_rows, read_rows, store_parts

    store = tmp_path / "results.d"
    assert len(read_rows(store)) == 0 if store.exists() else True
    store.mkdir()
    assert len(read_rows(store)) == 0
    _rows(store, 2)
    _rows(store, 3)
    assert len(store_parts(store)) == 2
    assert len(read_rows(store)) == 5
    assert len(read_rows(tmp_path)) == 5  # a folder holding a store is searched too
    # an unfinished append (temp file) is never read
    (store / ".part-x.csv.tmp").write_text("garbage")
    assert len(read_rows(store)) == 5
    append_rows(store, [])
    assert len(read_rows(store)) == 5


def _append_worker(store: str, worker: int, n: int) -> None:
    from anobench.results import append_rows

    for i in range(n):
        append_rows(store, [{"dataset": "d", "category": "c", "generator": "g", "detector": "unet",
                             "seed": worker * 1000 + i, "protocol": "thirds", "metric": "m", "value": 0.5,
                             "config_hash": "h", "version": "v"}])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["results.csv", "results.d", "link.csv"])
def test_many_processes_append_without_loss(tmp_path, kind):
    from anobench.results import read_rows

    store = tmp_path / kind
    if kind == "link.csv":
        (tmp_path / "target.csv").write_text("")
        store.symlink_to(tmp_path / "target.csv")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_worker, args=(str(store), w, 25)) for w in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
        assert w.exitcode == 0
    seeds = sorted(read_rows(tmp_path / "target.csv" if kind == "link.csv" else store)["seed"])
    assert seeds == sorted(w * 1000 + i for w in range(6) for i in range(25))


def _kill_loop(store: str) -> None:
    _append_worker(store, os.getpid() % 997, 10**6)


@pytest.mark.slow
def test_kill_9_during_appends_leaves_only_whole_rows(tmp_path):
    """Writers killed at random moments: every stored row is whole, and later appends stay readable."""
    from anobench.results import read_rows

    store = tmp_path / "results.csv"
    context = multiprocessing.get_context("spawn")
    for _ in range(4):
        proc = context.Process(target=_kill_loop, args=(str(store),))
        proc.start()
        time.sleep(2.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    before = len(read_rows(store))
    assert before > 0
    _rows(store, 2)
    after = read_rows(store)
    assert len(after) == before + 2 and after["metric"].isin(["m", "image_auroc"]).all()


@pytest.mark.slow
def test_kill_9_during_evaluate_keeps_earlier_results(world, tmp_path):
    """A killed evaluate leaves the earlier results file byte for byte (or with whole new rows appended)."""
    run = run_copy(tmp_path, world)
    results = tmp_path / "results.csv"
    _rows(results, 3)
    before = results.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (1.0, 3.0):
        proc = subprocess.Popen([sys.executable, "-m", "anobench.cli", "evaluate", str(run), "-q",
                                 "--results", str(results)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert results.read_bytes().startswith(before)
    done = subprocess.run([sys.executable, "-m", "anobench.cli", "evaluate", str(run), "-q", "--results",
                           str(results)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert results.read_bytes().startswith(before)


@pytest.mark.slow
def test_concurrent_reports_and_appends_never_see_a_torn_file(tmp_path):
    """Readers running while writers append always read a valid table."""
    from anobench.results import read_rows

    store = tmp_path / "results.csv"
    _rows(store, 1)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_worker, args=(str(store), w, 40)) for w in range(3)]
    for w in workers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in workers):
        df = read_rows(store)
        assert df["value"].notna().all()
        reads += 1
    for w in workers:
        w.join()
    assert reads > 0 and len(read_rows(store)) == 121


def test_size_checks_refuse_before_allocating_and_count_what_is_left(tmp_path, monkeypatch):
    """The estimates refuse in milliseconds; a resume is charged only for the samples still to make."""
    import anobench.safety as safety
    from anobench.errors import AnobenchError

    started = time.perf_counter()
    with pytest.raises(AnobenchError, match="--image-size 100000 .* memory"):
        safety.check_generation_size(100000, 8, 1, tmp_path)
    assert time.perf_counter() - started < 1
    monkeypatch.setattr(safety, "free_disk", lambda path: 10 * 64 * 64)  # room for 10 more samples
    with pytest.raises(AnobenchError, match="disk"):
        safety.check_generation_size(64, 1, 11, tmp_path)
    safety.check_generation_size(64, 1, 11, tmp_path, existing=1)
    safety.check_training_size(256, 8)  # the default profiles fit this machine
