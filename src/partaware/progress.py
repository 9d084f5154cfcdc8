"""Progress lines for long jobs: done/total, rate and ETA (once a rate is known), at a steady pace."""
from __future__ import annotations

import logging
import time


def progress_line(done: int, total: int, seconds: float, unit: str) -> str:
    """`done/total unit, rate unit/s, ETA s`; the rate and ETA only once something is done."""
    line = f"{done}/{total} {unit}"
    if done > 0 and seconds > 0:
        rate = done / seconds
        line += f", {rate:.1f} {unit}/s, ETA {(total - done) / rate:.0f} s"
    return line


class Progress:
    """Logs `progress_line` (plus any extra text) at most every `every` seconds, and at the end."""

    def __init__(self, log: logging.Logger, total: int, unit: str, every: float = 30.0, start: int = 0):
        self.log, self.total, self.unit, self.every = log, total, unit, every
        self.start = start
        self.t0 = self.last = time.time()

    def due(self, done: int) -> bool:
        """Whether `update(done)` would log now (check it before building costly extra text,
        e.g. a loss that would make the GPU wait)."""
        return time.time() - self.last >= self.every or done >= self.total

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.time()
        if force or self.due(done):
            text = progress_line(done - self.start, self.total - self.start, now - self.t0, self.unit)
            self.log.info("%s%s", text, f", {extra}" if extra else "")
            self.last = now
