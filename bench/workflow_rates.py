#!/usr/bin/env python
"""Each GPU job's rate in a finished workflow, beside the bench's for the same setting.

Reads the job logs under RESULTS/logs: an `extract` job's end line (`done, N rows in S s,
R patches/s`, the rate over its whole loop, as the bench's `b_patches_per_s`, and what the loop
waited on: loader, step, device, store) and a `segment`
job's progress lines (`i/n iterations, ... img/s, P% of the time waiting on the loader`), whose
steady rate is taken between its first and last line (the warm-up before the first line left out). Bench JSON lines (bench/extract.py,
bench/segmentation_paper.py) given with --bench are matched by kind; prints ONE JSON line.

    python bench/workflow_rates.py WORKDIR/results --bench OUT/bench.jsonl --wall-s 181
"""
from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
EXTRACT_START = re.compile(r"extract (\S+)(?: shard \d+)?: start on (\S+), precision (\S+), batch (\d+) images, "
                           r"(\d+) loader workers")
EXTRACT_DONE = re.compile(r"extract \S+(?: shard \d+)?: done, (\d+) rows in ([\d.]+) s, ([\d.]+) patches/s")
EXTRACT_WAITS = re.compile(r"waited on the loader ([\d.]+) s, the step ([\d.]+) s, the device ([\d.]+) s, "
                           r"the store ([\d.]+) s")
SEG_STEP = re.compile(STAMP + r"INFO partaware\.seg_online\.train: (\d+)/(\d+) iterations,")
SEG_START = re.compile(r"stride \d+; device (\S+), (\d+) loader workers")
SEG_WAIT = re.compile(r"(\d+)% of the time waiting on the loader")


def extract_rate(text: str) -> dict | None:
    """The extract job's settings and whole-loop rate, or None when it did not finish."""
    start, done = EXTRACT_START.search(text), EXTRACT_DONE.search(text)
    if not (start and done):
        return None
    waits = EXTRACT_WAITS.search(text)
    return {"device": start[2], "precision": start[3], "batch_images": int(start[4]), "workers": int(start[5]),
            "rows": int(done[1]), "seconds": float(done[2]), "patches_per_s": float(done[3]),
            **({"waited_s": dict(zip(("loader", "step", "device", "store"), map(float, waits.groups())))}
               if waits else {})}


def steady_images_per_s(text: str, batch: int) -> float | None:
    """Images/s between the first and the last progress line (None with fewer than two)."""
    steps = [(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), int(m[2]))
             for m in map(SEG_STEP.match, text.splitlines()) if m]
    if len(steps) < 2 or steps[-1][0] <= steps[0][0]:
        return None
    (t0, i0), (t1, i1) = steps[0], steps[-1]
    return (i1 - i0) * batch / (t1 - t0).total_seconds()


def _round(x):
    return None if x is None else round(x, 1)


def job_rates(results: Path, seg_batch: int) -> dict:
    out = {}
    for log in sorted((results / "logs" / "extract").rglob("*.log")):
        rate = extract_rate(log.read_text(errors="replace"))
        if rate:
            out[f"extract {log.relative_to(results / 'logs' / 'extract').with_suffix('')}"] = rate
    for log in sorted((results / "logs" / "segment").rglob("*.log")):
        text = log.read_text(errors="replace")
        start, waits = SEG_START.search(text), SEG_WAIT.findall(text)
        out[f"segment {log.relative_to(results / 'logs' / 'segment').with_suffix('')}"] = {
            "device": start[1] if start else None, "workers": int(start[2]) if start else None,
            "batch": seg_batch, "steady_images_per_s": _round(steady_images_per_s(text, seg_batch)),
            "loader_wait_pct": int(waits[-1]) if waits else None}  # of the whole run, at its last line
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="the workflow's results/ folder")
    p.add_argument("--bench", type=Path, help="bench JSON lines (bench/extract.py, bench/segmentation_paper.py)")
    p.add_argument("--seg-batch", type=int, default=16, help="segmentation.batch_size of the run")
    p.add_argument("--wall-s", type=float, help="the workflow's wall time, reported as is")
    args = p.parse_args(argv)
    jobs = job_rates(args.results, args.seg_batch)
    benches = [json.loads(line) for line in args.bench.read_text().splitlines() if line.startswith("{")] \
        if args.bench and args.bench.is_file() else []
    ext = next((b for b in benches if b.get("bench") == "extract"), None)
    seg = next((b for b in benches if b.get("bench") == "segmentation_paper"), None)
    for name, job in jobs.items():
        if name.startswith("extract") and ext:
            job["bench_patches_per_s"] = ext["b_patches_per_s"]
            job["ratio_to_bench"] = round(job["patches_per_s"] / ext["b_patches_per_s"], 3)
        if name.startswith("segment") and seg and job["steady_images_per_s"]:
            job["bench_images_per_s"] = seg["images_per_s"]
            job["ratio_to_bench"] = round(job["steady_images_per_s"] / seg["images_per_s"], 3)
    print(json.dumps({"check": "workflow", "wall_s": args.wall_s, "jobs": jobs,
                      "bench_extract": ext and {k: ext.get(k) for k in ("a_patches_per_s", "b_patches_per_s",
                                                                        "ratio_b_a", "batch_size", "workers")},
                      "bench_segment": seg and {k: seg.get(k) for k in ("preset", "images_per_s", "workers",
                                                                        "batch", "step_s")}}), flush=True)


if __name__ == "__main__":
    main()
