"""Progress that suits where it goes: a tqdm bar on a terminal, a few plain lines in a log.

A redirected tqdm bar fills a log file with carriage-return redraws. :func:`progress_bar` returns
tqdm when stderr is a terminal, else a :class:`LogProgress` that prints one line each time
another ``every`` percent is done (and one at the end). Both take tqdm's arguments and offer
``update``, ``set_postfix``, ``close``, iteration and use as a context manager, so call sites
stay tqdm-shaped. ``ANOBENCH_PROGRESS=bar|log|off`` overrides the choice.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

DEFAULT_EVERY = 10  # percent between two log lines


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0, desc: str = "",
                 unit: str = "it", disable: bool = False, every: int = DEFAULT_EVERY, stream=None, **tqdm_kwargs):
    """A tqdm bar on a terminal, a :class:`LogProgress` otherwise (``disable`` silences both)."""
    mode = os.environ.get("ANOBENCH_PROGRESS", "").strip().lower()
    stream = stream if stream is not None else sys.stderr
    if mode == "off":
        disable = True
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    terminal = mode == "bar" or (mode != "log" and _isatty(stream))
    if terminal:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream,
                    dynamic_ncols=True, **tqdm_kwargs)
    return LogProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable, every=every,
                       stream=stream)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """tqdm's interface, printing ``desc: 30% (36/120 step, 12 s, loss=0.1)`` every ``every`` percent."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", disable: bool = False, every: int = DEFAULT_EVERY, stream=None):
        self.iterable = iterable
        self.total = total
        self.n = initial
        self.initial = initial
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.every = max(1, int(every))
        self.stream = stream if stream is not None else sys.stderr
        self.postfix = ""
        self.started = time.perf_counter()
        self._last_bucket = self._bucket()
        self._closed = False

    def _bucket(self) -> int:
        if not self.total:
            return 0
        return int(100 * min(self.n, self.total) / self.total) // self.every

    def _line(self) -> str:
        seconds = time.perf_counter() - self.started
        if self.total:
            head = f"{100 * self.n / self.total:.0f}% ({self.n}/{self.total} {self.unit}"
        else:
            head = f"({self.n} {self.unit}"
        tail = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {head}, {seconds:.0f} s{tail})"

    def _print(self) -> None:
        if not self.disable:
            print(self._line(), file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        bucket = self._bucket()
        if bucket > self._last_bucket:
            self._last_bucket = bucket
            if not (self.total and self.n >= self.total):  # the final line comes from close()
                self._print()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def write(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self.initial:
                self._print()

    def __iter__(self):
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
