"""The command line as a user meets it: summaries, one-line errors, determinism, resume after kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ANOBENCH = [sys.executable, "-m", "anobench.cli"]


def run(*args, env=None, check=False):
    proc = subprocess.run([*ANOBENCH, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode:
        raise AssertionError(proc.stderr)
    return proc


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def gen_args(root, out, *extra):
    return ["generate", "-g", "draem", "--data-root", root, "--category", "disc", "-n", 12, "-o", out,
            "--image-size", 64, "-q", *extra]


def test_list_shows_builtin_generators():
    out = run("list", check=True).stdout
    for name in ("draem", "crop_paste"):
        assert name in out
    assert "few-shot reference anomalies" in out


def test_generate_summary_and_determinism(demo_root, tmp_path):
    first = run(*gen_args(demo_root, tmp_path / "a"), check=True)
    assert "12 images (12 new)" in first.stdout and "images/s" in first.stdout
    run(*gen_args(demo_root, tmp_path / "b"), check=True)
    a, b = digests(tmp_path / "a" / "draem" / "disc"), digests(tmp_path / "b" / "draem" / "disc")
    assert len(a) == 24 and a == b
    run(*gen_args(demo_root, tmp_path / "c", "--seed", 1), check=True)
    assert digests(tmp_path / "c" / "draem" / "disc") != a
    again = run(*gen_args(demo_root, tmp_path / "a"), check=True)
    assert "12 images (0 new)" in again.stdout


def test_resume_after_kill_9_gives_identical_files(demo_root, tmp_path):
    args = ["generate", "-g", "crop_paste", "--data-root", demo_root, "--category", "disc", "-n", 400,
            "--image-size", 64, "--batch-size", 1, "-q"]
    run(*args, "-o", tmp_path / "clean", check=True)
    proc = subprocess.Popen([*ANOBENCH, *map(str, args), "-o", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = tmp_path / "killed" / "crop_paste" / "disc" / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = manifest.read_text().count("\n")
    assert 20 <= done_before < 400, "the run should have been killed midway"
    resumed = run(*args, "-o", tmp_path / "killed", check=True)
    assert f"({400 - done_before} new)" in resumed.stdout or f"({399 - done_before} new)" in resumed.stdout
    clean = digests(tmp_path / "clean" / "crop_paste" / "disc")
    killed = digests(tmp_path / "killed" / "crop_paste" / "disc")
    assert len(clean) == 800 and killed == clean
    rows = manifest.read_text().splitlines()
    assert len(rows) == 400 and len({r.split('"id": ')[1][:7] for r in rows}) == 400


def _bad_cases(demo_root: Path, tmp: Path):
    broken = tmp / "broken"
    shutil.copytree(demo_root / "disc", broken / "disc")
    (broken / "disc" / "ground_truth" / "hole" / "001_mask.png").unlink()
    sized = tmp / "sized"
    shutil.copytree(demo_root / "disc", sized / "disc")
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(sized / "disc" / "ground_truth" / "hole" / "000_mask.png")
    unreadable = tmp / "unreadable"
    shutil.copytree(demo_root / "disc", unreadable / "disc")
    (unreadable / "disc" / "train" / "good").joinpath("000.png").write_bytes(b"\x89PNG garbage")
    empty = tmp / "empty"
    shutil.copytree(demo_root / "disc", empty / "disc")
    shutil.rmtree(empty / "disc" / "train" / "good")
    (empty / "disc" / "train" / "good").mkdir()
    norefs = tmp / "norefs"
    for sub in ("train", "test/good"):
        shutil.copytree(demo_root / "disc" / sub, norefs / "disc" / sub)
    def gen(root, *extra, generator="draem", category="disc", n=2):
        return ["generate", "-g", generator, "--data-root", root, "--category", category, "-n", n,
                "-o", tmp / "out", "--image-size", 64, "-q", *extra]

    return {
        "root": (gen(tmp / "nope"), "nope: data root does not exist"),
        "category": (gen(demo_root, category="nope"), "category 'nope' not found"),
        "empty": (gen(empty), "no training normal images"),
        "mask": (gen(broken), "001.png: missing mask"),
        "mask-size": (gen(sized, generator="crop_paste"), "000_mask.png: mask is 10x10"),
        # 40 samples pick every training image, the broken one included
        "unreadable": (gen(unreadable, n=40), "000.png: unreadable image"),
        "num0": (gen(demo_root, n=0), "--num"),
        "generator": (gen(demo_root, generator="nosuch"), "unknown generator 'nosuch'"),
        "set-key": (gen(demo_root, "--set", "nosuch=1"), "unknown --set key 'nosuch'"),
        "set-value": (gen(demo_root, "--set", "threshold=high"), "threshold must be a number"),
        "no-refs": (gen(norefs, generator="crop_paste"), "needs few-shot reference anomalies"),
        "split": (gen(demo_root, "--split", "quarters"), "unknown protocol"),
        "source": (gen(demo_root, "--anomaly-source", tmp / "nope"), "--anomaly-source is not a folder"),
        "check": (["datasets", "check", broken], "001.png: missing mask"),
        "check-size": (["datasets", "check", sized], "000_mask.png: mask is 10x10"),
    }


def test_bad_input_gives_one_line_and_nonzero_exit(demo_root, tmp_path):
    for name, (args, expected) in _bad_cases(demo_root, tmp_path).items():
        proc = run(*args)
        assert proc.returncode != 0, name
        text = proc.stdout + proc.stderr
        assert expected in text, f"{name}: {text}"
        assert "Traceback" not in text, name
        if name not in ("check", "check-size", "num0"):
            assert len(proc.stderr.strip().splitlines()) == 1, f"{name}: {proc.stderr}"


def test_bad_input_does_not_lose_written_samples(demo_root, tmp_path):
    run(*gen_args(demo_root, tmp_path / "a"), check=True)
    before = digests(tmp_path / "a" / "draem" / "disc")
    proc = run(*gen_args(demo_root, tmp_path / "a", "--set", "threshold=0.6"))  # other settings, same folder
    assert proc.returncode == 2 and "other settings" in proc.stderr
    assert digests(tmp_path / "a" / "draem" / "disc") == before


def test_datasets_check_counts(demo_root):
    proc = run("datasets", "check", demo_root, check=True)
    assert "disc: train good 6, test good 3, anomalies 9 (hole 3, scratch 3, stain 3)" in proc.stdout
    assert "no problems found" in proc.stdout


def test_entry_point_plugin_is_listed_and_runs(demo_root, tmp_path):
    plugin = tmp_path / "site"
    (plugin / "mygen").mkdir(parents=True)
    (plugin / "mygen" / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        import numpy as np
        from anobench.generators import Generator, GeneratorNeeds, GeneratedSample

        @dataclass
        class Cfg:
            value: int = 255

        class Square(Generator):
            name = "square"
            description = "a white square"
            config_class = Cfg
            needs = GeneratorNeeds()

            def generate(self, requests):
                out = []
                for r in requests:
                    img, mask = r.source.copy(), np.zeros(r.source.shape[:2], bool)
                    mask[4:12, 4:12] = True
                    img[mask] = self.config.value
                    out.append(GeneratedSample(img, mask, "square"))
                return out
    '''))
    dist = plugin / "mygen-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mygen\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[anobench.generators]\nsquare = mygen:Square\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}
    assert "square" in run("list", env=env, check=True).stdout
    run("generate", "-g", "square", "--data-root", demo_root, "--category", "disc", "-n", 2, "-o", tmp_path / "o",
        "--image-size", 64, "-q", env=env, check=True)
    assert len(digests(tmp_path / "o" / "square" / "disc")) == 4


def test_real_bottle_masks_align_with_changes(shared_data, tmp_path):
    for name, extra in (("draem", ["--anomaly-source", shared_data / "dtd" / "images"]), ("crop_paste", [])):
        run("generate", "-g", name, "--data-root", shared_data / "mvtec_ad", "--category", "bottle", "-n", 6,
            "-o", tmp_path, "-q", *extra, check=True)
        folder = tmp_path / name / "bottle"
        rows = [__import__("json").loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        for row in rows:
            image = np.asarray(Image.open(folder / row["files"]["image"]))
            mask = np.asarray(Image.open(folder / row["files"]["mask"])) > 0
            source = np.asarray(Image.open(shared_data / "mvtec_ad" / "bottle" / row["source"]).convert("RGB").resize((256, 256), Image.BILINEAR))
            changed = (image != source).any(axis=2)
            assert mask.any() and not (changed & ~mask).any()


def test_datasets_check_lists_duplicate_pixels(demo_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    Image.open(root / "disc" / "train" / "good" / "000.png").save(root / "disc" / "train" / "good" / "900.png",
                                                                 compress_level=0)
    result = run("datasets", "check", root, "--category", "disc")
    assert "duplicate pixels: train/good/000.png = train/good/900.png" in result.stdout, result.stdout


def test_score_generation_takes_the_folder_alone(demo_root, tmp_path):
    from anobench.generation import generate_dataset

    folder = generate_dataset("draem", "mvtec_ad", demo_root, "disc", 3, tmp_path, image_size=64,
                              progress=False).folder
    result = run("score-generation", folder, "--metrics", "mask_stats,cost", "-q")
    assert result.returncode == 0, result.stderr
    assert "for draem/disc appended to" in result.stdout


def test_a_failed_generate_start_does_not_block_the_corrected_command(demo_root, tmp_path):
    bad = run(*gen_args(demo_root, tmp_path / "out", "--seed", "-1"))
    assert bad.returncode == 2 and "--seed must be a non-negative integer" in bad.stderr
    bad = run(*gen_args(demo_root, tmp_path / "out", "--model", "/no/such/weights", "--set", "num_augmenters=99"))
    assert bad.returncode == 2
    good = run(*gen_args(demo_root, tmp_path / "out"))
    assert good.returncode == 0, good.stderr


def test_generate_refuses_a_duplicate_across_the_split_and_drops_it_on_request(demo_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(demo_root / "disc", root / "disc")
    holes = root / "disc" / "test" / "hole"
    Image.open(holes / "000.png").save(holes / "002.png", compress_level=0)  # the reference's pixels, other bytes
    bad = run(*gen_args(root, tmp_path / "out"))
    assert bad.returncode == 2 and "same pixels as reference test/hole/000.png" in bad.stderr
    assert "--drop-duplicates" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    good = run(*gen_args(root, tmp_path / "out", "--drop-duplicates"))
    assert good.returncode == 0, good.stderr
    assert "1 test image(s) duplicating a reference dropped" in good.stdout
    meta = json.loads((tmp_path / "out" / "draem" / "disc" / "dataset.json").read_text())
    assert meta["protocol"]["dropped"] == [{"test": "test/hole/002.png", "duplicate_of": "test/hole/000.png"}]
    assert "test/hole/002.png" not in meta["protocol"]["test"]
