"""What the evaluation, segment and table jobs put in their closing line (`progress.closing_line`):
what was done, in the row vocabulary (rows computed, samples / queries / transfers scored,
images used), not just "done"."""
from __future__ import annotations

import math
import re

from .progress import note_work

# what a task's `n` counts (README: `n`); other tasks: samples
UNITS = {"retrieval": "queries", "knn": "queries", "correspondence": "keypoint transfers",
         "segmentation": "test images", "part_discovery": "test images"}


def note_rows(task: str, rows: list[dict], extra: str = "") -> None:
    """`evaluate: done, 12 result rows, logistic: 40 samples scored, resting on 6 images, 0.7 s`
    (the images of every store the rows read: a probe's train and test)."""
    valued = [r for r in rows if not (isinstance(r.get("value"), float) and math.isnan(r["value"]))]
    samples = max((int(r.get("n", 0)) for r in valued), default=0)
    images = max((int(r.get("images", -1)) for r in valued), default=-1)
    what = f"{samples} {UNITS.get(task.split()[0], 'samples')} scored"
    what += f", resting on {images} images" if images >= 0 else ""
    pairs = next((m.group(0) for r in rows for m in [re.search(r"\d+ pairs scored", str(r.get("notes", "")))] if m), "")
    what += f" ({pairs})" if pairs else ""
    blank = len(rows) - len(valued)
    detail = ", ".join(x for x in (f"{task}: {what}", f"{blank} rows n/a" if blank else "", extra) if x)
    note_work(len(rows), "result rows", max((int(r.get("skipped", 0)) for r in rows), default=0), detail,
              rate=False)


def note_table(table, files: int, thin: int, skipped=None) -> None:
    """`table: done, 412 result rows, from 14 files, 9 resting on too little, 3 n/a, 1.1 s`
    (`thin`: the rows `report.coverage` marks)."""
    blank = int(table["value"].isna().sum()) if len(table) else 0
    parts = [f"from {files} files", f"{thin} resting on too little (marked)" if thin else "",
             f"{blank} n/a" if blank else "",
             f"{len(skipped)} skipped images listed" if skipped is not None and len(skipped) else ""]
    note_work(len(table), "result rows", None, ", ".join(p for p in parts if p), rate=False)
