"""Progress lines for long jobs: done/total, rate and ETA (once a rate is known), at a steady pace;
and the one closing line every job prints, however short it was (`closing_line`)."""
from __future__ import annotations

import logging
import time

# What this process's job has done so far: the latest count of its latest unit of work, and
# the images it skipped. Fed by `Progress.update` and `note_work`; read by `closing_line`.
_WORK = {"done": None, "unit": "", "skipped": 0, "detail": "", "rate": True}


def note_work(done: int, unit: str, skipped: int | None = None, detail: str = "", rate: bool = True) -> None:
    """Record how much the job has done (and skipped), for its closing line: `done` `unit` (the
    rate's numerator: only what was computed), `detail` (what else it did, e.g. "180 parts"),
    `rate` False where a rate over the whole job would mislead (a figure, a trained probe)."""
    _WORK.update(done=int(done), unit=unit, detail=detail, rate=rate)
    if skipped is not None:
        _WORK["skipped"] = int(skipped)


def reset_work() -> None:
    _WORK.update(done=None, unit="", skipped=0, detail="", rate=True)


def closing_line(command: str, seconds: float) -> str:
    """`extract: done, 1200 rows computed, 3 images skipped, 4.2 s, 285.7 rows computed/s`;
    without counted work (a job with no loop, e.g. `fetch`) just the time, so even a 2-second
    job says it ended."""
    line = f"{command}: done"
    if _WORK["done"] is not None:
        line += f", {_WORK['done']} {_WORK['unit']}"
    if _WORK["detail"]:
        line += f", {_WORK['detail']}"
    if _WORK["skipped"]:
        line += f", {_WORK['skipped']} images skipped"
    line += f", {seconds:.1f} s"
    if _WORK["done"] and seconds > 0 and _WORK["rate"]:
        line += f", {_WORK['done'] / seconds:.1f} {_WORK['unit']}/s"
    return line


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
        note_work(done - self.start, self.unit)
        now = time.time()
        if force or self.due(done):
            text = progress_line(done - self.start, self.total - self.start, now - self.t0, self.unit)
            self.log.info("%s%s", text, f", {extra}" if extra else "")
            self.last = now


class Waited:
    """Iterates `iterable`, adding up in `seconds` the time spent waiting for each item: a loop's
    wait on its DataLoader, which says whether the loader or the loop's own work holds it back."""

    def __init__(self, iterable):
        self.items, self.seconds = iter(iterable), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.seconds += time.perf_counter() - t
