"""The command line's parser: every `partaware` command, its arguments and their help. The
commands themselves are `cmd_*` functions of `partaware.cli`, which builds this parser.
"""
from __future__ import annotations

import argparse

from . import __version__, kinds, tasks  # __version__: the installed metadata's (read on first use)
from .cli_explore import add_explore_command
from .cli_figures import add_figure_commands

DESCRIPTION = "`partaware`: the one command-line entry point, for the Snakemake rules and for people."
DATASET_HELP = "a dataset name of the spec's `datasets`"
MODEL_HELP = "a model name of the spec's `models`"


def build_parser_for(commands) -> argparse.ArgumentParser:
    """The parser of every command; `commands` holds the `cmd_*` functions (partaware.cli), looked
    up when the parser is built."""
    p = argparse.ArgumentParser(prog="partaware", description=DESCRIPTION,
                                epilog=f"dataset kinds: {', '.join(kinds.names())}; tasks: {', '.join(tasks.names())}")
    p.add_argument("--version", action="version", version=f"partaware {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def job(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", required=True, help="JSON config subset this job depends on")
        s.add_argument("--runtime", default=None, help="JSON run-time knobs (device, batch size, workers); default: $PARTAWARE_RUNTIME")
        s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
        s.set_defaults(fn=fn)
        return s

    s = sub.add_parser("check-config", help="validate a config file")
    s.add_argument("config", help="the YAML config file (e.g. config.yaml, configs/paper.yaml)")
    s.set_defaults(fn=commands.cmd_check_config)
    s = job("demo-data", commands.cmd_demo_data, "generate a demo dataset")
    s.add_argument("--dataset", required=True, help=DATASET_HELP)
    s.add_argument("--out", required=True, help="the folder to generate (replaced as a whole)")
    s = job("index", commands.cmd_index, "build the part index of a dataset")
    s.add_argument("--dataset", required=True, help=DATASET_HELP)
    s.add_argument("--outdir", required=True, help="folder for <split>.parquet (results/index/<dataset>)")
    s.add_argument("--splits", nargs="+", default=["all", "train", "test"],
                   help="index files to write: all (the retrieval set), train, test")
    s = job("pairs", commands.cmd_pairs, "build the keypoint pair table of a dataset (the correspondence task)")
    s.add_argument("--dataset", required=True, help=DATASET_HELP)
    s.add_argument("--out", required=True, help="the pair table to write (results/index/<dataset>/pairs.parquet)")
    s = job("fetch", commands.cmd_fetch, "download or verify a checkpoint")
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--out", required=True, help="where the checkpoint goes (a link when the model has a `path`)")
    s = job("extract", commands.cmd_extract, "extract features into a store")
    s.add_argument("--dataset", required=True, help=DATASET_HELP)
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--split", required=True, help="the split to extract (all, train, test; val for segmentation)")
    s.add_argument("--out", required=True, help="the store to write (.zarr or .h5); resumes a .partial one")
    s.add_argument("--index", default=None, help="the split's part index (part datasets)")
    s.add_argument("--checkpoint", default=None, help="the fetched checkpoint (weights: checkpoint)")
    s.add_argument("--shard", type=int, default=0, help="which of extract.shards row ranges (0-based)")
    s = sub.add_parser("gather-shards", help="publish the manifest of a sharded store")
    s.add_argument("--out", required=True, help="the manifest to write (<split>.shards.json)")
    s.add_argument("shards", nargs="+", help="the shard stores, in row order")
    s.set_defaults(fn=commands.cmd_gather_shards)
    s = job("evaluate", commands.cmd_evaluate, "run one evaluation task from cached stores")
    s.add_argument("--task", required=True, help="the evaluation to run: a task of partaware.tasks ("
                   + ", ".join(tasks.evaluated()) + ")")
    s.add_argument("--dataset", required=True, help=DATASET_HELP)
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--out", required=True, help="the result CSV (results/evals/<dataset>/<model>/<task>.csv)")
    s.add_argument("--index-dir", default=None, help="the dataset's index folder, for tasks that read one (default: "
                                                     "results/index/<dataset> beside the --out tree)")
    s.add_argument("stores", nargs="+", help="the stores the task reads (retrieval: all; probes: train test; "
                                             "segmentation: train val)")
    s = job("segment", commands.cmd_segment, "the paper's segmentation protocol: online training on the frozen "
                                    "encoder, slide inference")
    s.add_argument("--dataset", required=True, help=DATASET_HELP)
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--checkpoint", default=None, help="the fetched checkpoint (weights: checkpoint)")
    s.add_argument("--state", required=True, help="the training state file: written every "
                   "segmentation.checkpoint_every iterations, resumed from on a rerun")
    s.add_argument("--out", required=True, help="the result CSV (results/evals/<dataset>/<model>/"
                                                "segmentation_paper.csv; per-class IoU beside it)")
    s = sub.add_parser("table", help="gather evaluation CSVs into results/table.csv and table.md")
    s.add_argument("--csv", required=True, help="the tidy table to write")
    s.add_argument("--md", required=True, help="the readable pivot to write")
    s.add_argument("--spec", default=None, help="JSON config subset: its `report` section (default: the schema's)")
    s.add_argument("--skipped", default=None, help="also list the images the stores skipped (CSV)")
    s.add_argument("--stores", nargs="*", default=[], help="the stores whose skipped images to list")
    s.add_argument("inputs", nargs="+", help="the evaluation CSVs")
    s.set_defaults(fn=commands.cmd_table)
    s = sub.add_parser("convert-pascal-part", help="raw Pascal-Part .mat + VOC JPEGs -> 193-part / 16-object folders")
    s.add_argument("--annotations", required=True, help="the Annotations_Part folder of .mat files")
    s.add_argument("--images", required=True, help="VOC2010 JPEGImages folder")
    s.add_argument("--out", required=True, help="output root (img/, ann/, ann_object/)")
    s.add_argument("--split", action="append", required=True, help="NAME=FILE of image ids, e.g. train=train.txt")
    s.set_defaults(fn=commands.cmd_convert_pascal_part)
    s = sub.add_parser("inspect", help="show what a cached store holds; --verify checks it")
    s.add_argument("store", help="a .zarr / .h5 store or a .shards.json manifest")
    s.add_argument("--verify", action="store_true", help="check finite values, row count, labels")
    s.add_argument("--rows", type=int, default=0, help="print this many sample rows")
    s.add_argument("--stats", action="store_true", help="per-array mean, norm and NaN counts")
    s.set_defaults(fn=commands.cmd_inspect)
    add_figure_commands(sub)
    add_explore_command(sub)
    return p


