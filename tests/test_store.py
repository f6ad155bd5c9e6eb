"""The generated-dataset store: atomic files, resume, torn manifests, refusal of mismatched settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anobench.errors import AnobenchError
from anobench.store import DatasetWriter, GeneratedSet

META = {"generator": "g", "generator_version": "1", "config": {"a": 1}, "dataset": "d", "category": "c",
        "seed": 0, "image_size": 8, "protocol": {"name": "thirds"}}


def _sample(i):
    image = np.full((8, 8, 3), i, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[i % 8, :] = True
    return image, mask


def test_write_and_read_back(tmp_path):
    writer = DatasetWriter(tmp_path / "set", META)
    for i in range(3):
        writer.add(i, *_sample(i), {"source": f"train/good/{i}.png", "defect_type": "x", "seconds": 0.1})
    writer.write_meta(status="complete")
    writer.close()
    gen = GeneratedSet.open(tmp_path / "set")
    assert len(gen) == 3 and gen.record.status == "complete"
    image, mask = gen.load(2)
    assert (image == 2).all() and mask[2].all() and mask.sum() == 8
    row = gen.rows[1]
    assert row["files"] == {"image": "images/00001.png", "mask": "masks/00001.png"}
    assert len(row["sha256"]["image"]) == 64
    assert not list((tmp_path / "set").rglob("*.tmp"))


def test_resume_drops_torn_manifest_line(tmp_path):
    writer = DatasetWriter(tmp_path / "set", META)
    for i in range(2):
        writer.add(i, *_sample(i), {})
    manifest = tmp_path / "set" / "manifest.jsonl"
    with open(manifest, "a") as handle:
        handle.write('{"id": "00002", "index": 2, "fi')  # killed mid-append
    (tmp_path / "set" / "images" / ".00003.png.abc.tmp").write_bytes(b"partial")
    writer.close()
    resumed = DatasetWriter(tmp_path / "set", META)
    assert resumed.done == {0, 1}
    assert manifest.read_text().count("\n") == 2
    assert not list((tmp_path / "set").rglob("*.tmp"))


def test_other_settings_are_refused(tmp_path):
    with DatasetWriter(tmp_path / "set", META) as writer:
        writer.add(0, *_sample(0), {})
    with pytest.raises(AnobenchError, match="seed differ"):
        DatasetWriter(tmp_path / "set", {**META, "seed": 1})


def test_a_failed_start_does_not_block_the_corrected_command(tmp_path):
    DatasetWriter(tmp_path / "set", META).close()  # e.g. the generator's setup failed next
    with DatasetWriter(tmp_path / "set", {**META, "seed": 1}) as writer:
        assert writer.record.seed == 1 and writer.record.status == "created"


def test_one_writer_per_folder_names_the_holder(tmp_path):
    import os
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from anobench.artifacts import FolderLock; "
        f"held = FolderLock(__import__('pathlib').Path({str(tmp_path / 'set')!r})).acquire(); "
        "print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AnobenchError, match=f"in use by pid {holder.pid} on "):
            DatasetWriter(tmp_path / "set", META)
    finally:
        holder.kill()
        holder.wait()
    with DatasetWriter(tmp_path / "set", META) as writer:  # the kernel dropped the dead holder's lock
        assert writer.done == set() and os.getpid() > 0


def test_resume_remakes_missing_and_with_verify_damaged_samples(tmp_path):
    with DatasetWriter(tmp_path / "set", META) as writer:
        for i in range(3):
            writer.add(i, *_sample(i), {})
    (tmp_path / "set" / "images" / "00000.png").unlink()
    (tmp_path / "set" / "masks" / "00002.png").write_bytes(b"garbage")
    with DatasetWriter(tmp_path / "set", META) as writer:
        assert writer.done == {1, 2} and writer.dropped == [0]  # missing: always remade
    with DatasetWriter(tmp_path / "set", META, verify=True) as writer:
        assert writer.done == {1} and writer.dropped == [2]  # damaged: remade under --verify
    assert [json.loads(line)["index"] for line in (tmp_path / "set" / "manifest.jsonl").read_text().splitlines()] == [1]


def test_broken_and_empty_sets_are_named(tmp_path):
    with pytest.raises(AnobenchError, match="not a generated set"):
        GeneratedSet.open(tmp_path)
    writer = DatasetWriter(tmp_path / "set", META)
    with pytest.raises(AnobenchError, match="empty"):
        GeneratedSet.open(tmp_path / "set")
    writer.add(0, *_sample(0), {})
    writer.add(1, *_sample(1), {})
    writer.close()
    manifest = tmp_path / "set" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("garbage\n" + lines[1] + "\n")
    with pytest.raises(AnobenchError, match="manifest.jsonl:1: broken manifest row"):
        GeneratedSet.open(tmp_path / "set")
    manifest.write_text("\n".join(lines) + "\n")
    (tmp_path / "set" / "masks" / "00001.png").unlink()
    with pytest.raises(AnobenchError, match="00001.png: listed in manifest.jsonl but missing"):
        GeneratedSet.open(tmp_path / "set")


def test_anomalib_folder_reads_a_generated_set(tmp_path, demo_root):
    """DESIGN: anomalib's Folder format can read it (images/ and masks/ with the same names)."""
    from anomalib.data.datasets.image.folder import make_folder_dataset

    from anobench.generation import generate_dataset

    generate_dataset("draem", "mvtec_ad", demo_root, "disc", 3, tmp_path, image_size=64, progress=False)
    folder = tmp_path / "draem" / "disc"
    samples = make_folder_dataset(normal_dir=demo_root / "disc" / "train" / "good", root=None,
                                  abnormal_dir=folder / "images", mask_dir=folder / "masks")
    abnormal = samples[samples.label_index == 1]
    assert len(abnormal) == 3
    assert all(m.endswith(i.rsplit("/", 1)[-1]) for i, m in zip(abnormal.image_path, abnormal.mask_path))
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["generator"] == "draem" and meta["protocol"]["name"] == "thirds" and meta["status"] == "complete"
