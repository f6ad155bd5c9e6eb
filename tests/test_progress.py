"""Progress that suits a log: tqdm on a terminal, one plain line per N% otherwise."""

from __future__ import annotations

import io

import pytest

from anobench.progress import LogProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_ten_percent_and_no_carriage_returns(monkeypatch):
    monkeypatch.delenv("ANOBENCH_PROGRESS", raising=False)
    stream = io.StringIO()
    bar = progress_bar(total=200, desc="train unet/disc", unit="step", stream=stream)
    assert isinstance(bar, LogProgress)
    for _ in range(200):
        bar.set_postfix(loss="0.1000", refresh=False)
        bar.update(1)
    bar.close()
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 10
    assert lines[0].startswith("train unet/disc: 10% (20/200 step, ") and lines[0].endswith("loss=0.1000)")
    assert lines[-1].startswith("train unet/disc: 100% (200/200 step")


def test_a_resumed_bar_counts_from_its_start_and_iterables_work(monkeypatch):
    monkeypatch.delenv("ANOBENCH_PROGRESS", raising=False)
    stream = io.StringIO()
    for _ in progress_bar(range(50), desc="read", unit="img", stream=stream, every=25, leave=False):
        pass
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == ["read: 26%", "read: 50%", "read: 76%",
                                                                                    "read: 100%"]
    stream = io.StringIO()
    bar = progress_bar(total=10, initial=10, desc="gen", stream=stream)  # nothing left to do
    bar.close()
    assert stream.getvalue() == ""


def test_a_terminal_gets_tqdm_and_the_switch_overrides(monkeypatch):
    from tqdm import tqdm

    monkeypatch.delenv("ANOBENCH_PROGRESS", raising=False)
    bar = progress_bar(total=3, desc="x", stream=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setenv("ANOBENCH_PROGRESS", "log")
    assert isinstance(progress_bar(total=3, stream=_Terminal()), LogProgress)
    monkeypatch.setenv("ANOBENCH_PROGRESS", "off")
    stream = io.StringIO()
    bar = progress_bar(total=3, stream=stream)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""


@pytest.mark.parametrize("command", ["generate", "train-detector"])
def test_commands_write_plain_progress_lines_to_a_redirected_log(command, demo_root, tmp_path, monkeypatch, capfd):
    from click.testing import CliRunner

    from anobench.cli import cli

    monkeypatch.delenv("ANOBENCH_PROGRESS", raising=False)
    gen = ["generate", "-g", "crop_paste", "--data-root", str(demo_root), "--category", "disc", "--num", "10",
           "--out", str(tmp_path / "gen"), "--image-size", "64"]
    runner = CliRunner()
    args = gen
    if command == "train-detector":
        assert runner.invoke(cli, gen + ["-q"]).exit_code == 0
        args = ["train-detector", "--data-root", str(demo_root), "--category", "disc", "--generated",
                str(tmp_path / "gen" / "crop_paste" / "disc"), "--out", str(tmp_path / "run"),
                "--encoder-weights", "none", "--set", "image_size=64", "--set", "steps=10", "--set", "batch_size=4",
                "--set", "val_every=10", "--set", "max_val_samples=4", "--set", "channels_last=false"]
    result = runner.invoke(cli, args)  # CliRunner's stderr is not a terminal, like a log file
    assert result.exit_code == 0, result.output
    text = result.output
    assert "\r" not in text
    progress = [line for line in text.splitlines() if "%" in line and "(" in line]
    assert progress and progress[-1].split(": ", 1)[1].startswith("100% (10/10 ")
