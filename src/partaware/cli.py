"""`partaware`: the one command-line entry point, for the Snakemake rules and for people.

Rules pass the part of the config a job depends on as `--spec` JSON (so Snakemake reruns a job
exactly when that part changes). The spec is the complete job: what it leaves out takes the
schema's defaults, and run-time knobs that do not change results (device, batch size, workers)
may be overridden by `--runtime` or `$PARTAWARE_RUNTIME`, so a printed command runs by hand.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from . import config as C
from . import kinds
from . import specs as S
from .atomic import write_csv, write_text
from .cli_parser import build_parser_for
from .closing import note_rows, note_table
from .intervals import settings as stats_settings, write_results


def _spec(args) -> dict:
    """The job's config: the spec (validated by the Snakefile), run-time overrides, then defaults."""
    spec = json.loads(args.spec)
    runtime = getattr(args, "runtime", None) or os.environ.get("PARTAWARE_RUNTIME")
    runtime = json.loads(runtime) if runtime else {}
    for key, value in runtime.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    spec = C.fill_spec(spec)
    for key, section in (("dataset", "datasets"), ("model", "models")):
        name = getattr(args, key, None)
        if name is not None and name not in (spec.get(section) or {}):
            raise C.ConfigError(f"--{key} {name}: not in the spec's {section} ({', '.join(spec.get(section) or {})}"
                                f"); name one of them, or add it to the --spec JSON")
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    return spec


# --------------------------------------------------------------------------------- commands
def cmd_check_config(args):
    cfg = C.load(args.config)
    print(f"{args.config}: OK ({len(cfg['datasets'])} datasets, {len(cfg['models'])} models)")


def cmd_demo_data(args):
    import shutil

    cfg = _spec(args)
    ds = cfg["datasets"][args.dataset]
    out = Path(args.out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    kinds.of(ds).generate_demo(ds, tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def cmd_index(args):
    cfg = _spec(args)
    ds = dict(cfg["datasets"][args.dataset])
    if cfg["data"]["on_bad_image"] == "skip":
        # a missing image is then a bad image like any other: extraction skips and lists it
        ds.setdefault("check_files", False)
    kinds.of(ds).build_index(ds, Path(args.outdir), args.splits)


def cmd_pairs(args):
    cfg = _spec(args)
    ds = cfg["datasets"][args.dataset]
    kind = kinds.of(ds)
    if not hasattr(kind, "build_pairs"):
        raise C.ConfigError(f"--dataset {args.dataset}: kind {kind.name} has no keypoint pairs; use a dataset of "
                            f"kind {' or '.join(n for n in kinds.names() if hasattr(kinds.get(n), 'build_pairs'))}")
    kind.build_pairs(ds, cfg, Path(args.out))


def cmd_fetch(args):
    from .models.checkpoints import fetch_checkpoint, verify_checkpoint

    cfg = _spec(args)
    model = cfg["models"][args.model]
    out = Path(args.out)
    if "url" in model:
        fetch_checkpoint(model["url"], out, model.get("sha256"))
    else:
        verify_checkpoint(Path(model["path"]), model.get("sha256"))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() or out.is_symlink():
            out.unlink()
        out.symlink_to(Path(model["path"]).resolve())


def _take_gpu(cfg: dict, job: str) -> None:
    """A workstation GPU job takes a free GPU for its life, before CUDA starts (`gpu_slots`)."""
    from .gpu_slots import take_gpu

    cfg["device"] = take_gpu(cfg["device"], job, cfg["gpu_wait_s"])


def cmd_extract(args):
    from .extract import extract

    cfg = _spec(args)
    _take_gpu(cfg, f"extract {args.dataset}/{args.model}/{args.split} shard {args.shard}")
    extract(cfg, args.dataset, args.model, args.split, Path(args.index) if args.index else None,
            Path(args.out), Path(args.checkpoint) if args.checkpoint else None, shard=args.shard)


def cmd_gather_shards(args):
    from .store import open_store

    out = Path(args.out)
    for shard in args.shards:
        open_store(shard).close()  # refuses an incomplete shard
    manifest = {"shards": [os.path.relpath(s, out.parent) for s in args.shards]}
    write_text(out, json.dumps(manifest, indent=1))


def cmd_evaluate(args):
    from . import tasks
    from .results import context
    from .store import open_store

    task = tasks.get(args.task)  # an unknown task: one config error naming the known ones
    if not task.runs_from_stores:
        raise C.ConfigError(f"--task {args.task}: computes no result rows (figures only); use one of "
                            f"{', '.join(tasks.evaluated())}")
    cfg = _spec(args)
    ctx = context(cfg, args.dataset, args.model)
    ds = cfg["datasets"].get(args.dataset, {})
    ctx["rows_are_images"] = "kind" in ds and not kinds.of(ds).has_index  # a row is an image: `row` is its id
    # results/evals/<dataset>/<model>/<task>.csv -> results/index/<dataset> (a task's pair table)
    ctx["index_dir"] = Path(args.index_dir) if args.index_dir else \
        Path(args.out).absolute().parents[3] / "index" / args.dataset
    expect = _expected_hashes(cfg, args.dataset, args.model, args.task, len(args.stores))
    stores = [open_store(p, expect_hash=h) for p, h in zip(args.stores, expect)]
    rows, per_class = task.rows(cfg, ctx, stores)
    if per_class:
        write_csv(pd.DataFrame(per_class), Path(args.out).with_name(f"{args.task}_{task.detail}.csv"))
    write_results(rows, Path(args.out), stats_settings(cfg))  # the CSV and its <task>_stats.npz
    note_rows(args.task, rows)


def cmd_segment(args):
    from .seg_online.job import run_segment

    cfg = _spec(args)
    _take_gpu(cfg, f"segment {args.dataset}/{args.model}")
    rows, per_class = run_segment(cfg, args.dataset, args.model, Path(args.state),
                                  Path(args.checkpoint) if args.checkpoint else None)
    out = Path(args.out)
    write_csv(pd.DataFrame(per_class), out.with_name(out.stem + "_per_class.csv"))
    write_results(rows, out, stats_settings(cfg))  # the CSV and its segmentation_paper_stats.npz
    note_rows("segmentation (paper protocol)", rows, f"{cfg['segmentation']['iters']} iterations trained")


def _expected_hashes(cfg: dict, dataset: str, model: str, task: str, n: int) -> list:
    """The config hash each input store must carry: that of the extraction this spec implies.

    A store built under another config (copied in, touched, or cached by an older partaware
    whose signature differs) is then refused naming both hashes, instead of being scored.
    """
    splits = C.task_splits(cfg["datasets"][dataset], task, cfg)
    if len(splits) != n:  # stores given by hand in another arrangement: nothing to compare with
        return [None] * n
    return [C.digest(S.store_signature(cfg, dataset, model, split)) for split in splits]


def cmd_table(args):
    from .report import coverage, write_skipped, write_table

    settings = C.fill_spec(json.loads(args.spec))["report"] if args.spec else None
    table = write_table([Path(p) for p in args.inputs], Path(args.csv), Path(args.md), settings)
    skipped = write_skipped([Path(p) for p in args.stores], Path(args.skipped)) if args.skipped else None
    thin = int((coverage(table, settings)["thin"] != "").sum()) if len(table) else 0
    note_table(table, len(args.inputs), thin, skipped)


def cmd_convert_pascal_part(args):
    from .data.pascal_part import convert_pascal_part

    split_ids = {}
    for item in args.split:
        name, _, path = item.partition("=")
        if not path:
            raise ValueError(f"--split {item!r}: expected NAME=FILE, e.g. train=ImageSets/Main/train.txt")
        split_ids[name] = [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]
    counts = convert_pascal_part(args.annotations, args.images, args.out, split_ids)
    print(", ".join(f"{k}: {v} images" for k, v in counts.items()))


def cmd_inspect(args):
    from .inspect_store import inspect

    sys.exit(inspect(Path(args.store), check=args.verify, rows=args.rows, show_stats=args.stats))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (`cli_parser`), each command bound to its `cmd_*` function of this module."""
    return build_parser_for(sys.modules[__name__])


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: the commands, kinds and tasks
        parser.print_help(sys.stderr)
        sys.exit(2)
    args = parser.parse_args(argv)
    if hasattr(args, "spec"):  # a workflow job: it ends when its Snakemake does
        from .watchdog import watch_snakemake

        watch_snakemake()
    from .progress import closing_line, reset_work

    reset_work()
    t0 = time.time()
    try:
        args.fn(args)
    except (ValueError, OSError) as err:  # our errors name the file/key and the fix
        err = unwrap_worker_error(err)
        if os.environ.get("PARTAWARE_DEBUG"):
            raise
        print(f"partaware {args.command}: error: {_describe(err, args)}", file=sys.stderr)
        sys.exit(1)
    if args.command not in ("check-config", "inspect"):  # every workflow job's log ends with what it did
        logging.getLogger("partaware").info("%s", closing_line(args.command, time.time() - t0))


def unwrap_worker_error(err: Exception) -> Exception:
    """The error a DataLoader worker raised, as its own one-line message.

    torch re-raises a worker's exception as the same type with the message "Caught DataError in
    DataLoader worker process 0." and the worker's traceback, whose last line holds what the user
    needs. The traceback is kept in the log only with $PARTAWARE_DEBUG set.
    """
    text = str(err)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return err
    if os.environ.get("PARTAWARE_DEBUG"):
        logging.getLogger("partaware").error("%s", text)
    last = [line for line in text.splitlines() if line.strip()][-1]
    name, sep, message = last.partition(": ")
    message = message if sep and name.replace(".", "").replace("_", "").isalnum() else last
    try:
        return type(err)(message)
    except TypeError:  # an exception type whose constructor takes other arguments
        return ValueError(message)


def _describe(err: Exception, args) -> str:
    """The error's own message; a full disk also gets the path being written and the fix."""
    if isinstance(err, OSError) and (err.errno == errno.ENOSPC or "No space left" in str(err)):
        where = getattr(args, "out", None) or getattr(args, "csv", None) or getattr(args, "outdir", None)
        return (f"no space left on device{f' while writing {where}' if where else ''} ({err}); free "
                "space (or point results/ at a larger disk) and rerun: nothing half-written was "
                "published, and an interrupted extraction resumes from its last finished chunk")
    return str(err)


if __name__ == "__main__":
    main()
