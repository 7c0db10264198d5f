"""Progress a person can read: a bar per stage with an ETA on a terminal, plain lines in a log.

Producers call `report(log, stage, done, total, unit)`; `log` is the caller's line printer. When it
also has a `progress` method (the CLI's `ConsoleLog`), that draws the bars; otherwise each finished
layer becomes one line (`quantize: layer 3/28`), which is what CI logs and the tests read.
"""
from __future__ import annotations

import sys
from typing import Callable

from tqdm import tqdm

LINE_UNITS = ("layer",)  # units that also print a plain line when there is no terminal


def report(log: Callable[[str], None], stage: str, done: int, total: int, unit: str = "layer") -> None:
    fn = getattr(log, "progress", None)
    if fn is not None:
        fn(stage, done, total, unit)
    elif unit in LINE_UNITS:
        log(f"{stage}: {unit} {done}/{total}")


class ConsoleLog:
    """Lines to stderr; bars (tqdm, with rate and ETA) per stage when stderr is a terminal."""

    def __init__(self, stream=None, bars: bool | None = None):
        self._stream, self._bars = stream, bars
        self._open: dict[str, tqdm] = {}

    @property
    def stream(self):
        return self._stream or sys.stderr  # looked up per call: a test runner may swap sys.stderr

    @property
    def bars(self) -> bool:
        return self.stream.isatty() if self._bars is None else self._bars

    def __call__(self, message: str) -> None:
        if self._open:
            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def progress(self, stage: str, done: int, total: int, unit: str = "layer") -> None:
        if not self.bars:
            if unit in LINE_UNITS:
                self(f"{stage}: {unit} {done}/{total}")
            return
        bar = self._open.get(stage)
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = self._open[stage] = tqdm(total=total, desc=stage, unit=unit, file=self.stream, leave=unit == "layer",
                                           dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._open[stage]
