"""`partaware explore`: write the explorer page of each dataset with a dense store
(`results/explore/<dataset>.html`, see `partaware.explore`).

People give `--config config.yaml` (the stores are found under `--results`); the workflow's rule
gives the `--spec` JSON its job depends on. Kept apart from cli.py, which only registers it.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import config as C


def _config(args) -> dict:
    if (args.config is None) == (args.spec is None):
        raise C.ConfigError("partaware explore: give --config FILE (or the workflow's --spec JSON), one of them")
    if args.config is not None:
        return C.load(args.config)
    return C.fill_spec(json.loads(args.spec))


def cmd_explore(args):
    # here, not at the top: every `partaware` command builds the parser, and only this one needs
    # the page builder (pandas, Pillow, the figures it reuses)
    from .explore.build import build
    from .explore.plan import page_path, planned, require

    cfg = _config(args)
    datasets = args.dataset or planned(cfg)
    if not datasets:
        raise C.ConfigError("config key datasets: no dataset has a dense store to explore (tasks correspondence, "
                            "or segmentation with the cached protocol)")
    if args.out and len(datasets) != 1:
        raise ValueError(f"--out names one page, but {len(datasets)} datasets are explored ({', '.join(datasets)}); "
                         "use --outdir, or one --dataset")
    sources = [require(cfg, d) for d in datasets]  # every name checked before any page is built
    for src in sources:
        out = Path(args.out) if args.out else page_path(src.dataset, args.outdir)
        res = build(cfg, src, out, Path(args.results))
        print(f"{out}: {len(res['images'])} images, blocks {res['blocks']}, {len(res['left_out'])} left out, "
              f"{res['bytes'] / 2**20:.2f} MB")


def add_explore_command(sub) -> None:
    s = sub.add_parser("explore", help="an HTML page per dataset: click a point, see every encoder's matches")
    s.add_argument("--config", default=None, help="the YAML config (e.g. config.yaml)")
    s.add_argument("--spec", default=None, help="the workflow job's JSON config subset (instead of --config)")
    s.add_argument("--dataset", action="append", default=None,
                   help="a dataset with a dense store (repeatable; default: every such dataset)")
    s.add_argument("--results", default="results", help="the workflow's results folder holding the stores")
    s.add_argument("--out", default=None, help="the page to write (one dataset only)")
    s.add_argument("--outdir", default="results/explore", help="folder of <dataset>.html (default results/explore)")
    s.set_defaults(fn=cmd_explore)
