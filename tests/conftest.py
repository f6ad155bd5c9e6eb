"""Shared fixtures: small MVTec-layout data made on the fly, and the real shared data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# ../shared beside the repository; ANOBENCH_SHARED points elsewhere (a worktree outside the checkout)
SHARED = Path(os.environ.get("ANOBENCH_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real MVTec AD bottle, Magnetic-tile, DTD)."""
    if not (SHARED_DATA / "mvtec_ad" / "bottle").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (needs ../shared/data/mvtec_ad/bottle)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small procedural MVTec-layout dataset: 3 categories, 64 px."""
    from anobench.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=0, size=64, n_train=6, n_test_good=3, n_per_defect=3)
    return root
