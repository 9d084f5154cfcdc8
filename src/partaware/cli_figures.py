"""`partaware figure-grid | figure-patches | figure-maps | figure-correspondence | figure-part-discovery |
figure-summary | figure-contrast | figure-depth`: the figure jobs of rules/figures.smk.

Kept apart from cli.py so the figure commands can change without touching the core CLI;
`cli.build_parser` calls `add_figure_commands(sub)`. Like the other jobs, rules pass the config
a figure depends on as `--spec` JSON (its `figures` key holds `figures.figure_settings`).
"""
from __future__ import annotations

import json
from pathlib import Path

from . import config as C


def _settings(args) -> tuple[dict, dict]:
    from .figures import figure_settings

    spec = C.fill_spec(json.loads(args.spec))
    return spec, {**figure_settings({}), **(spec.get("figures") or {})}


def _done(out, text: str, drawn: int = 1) -> None:
    """Print what the figure shows, and say it in the job's closing line."""
    from .progress import note_work

    print(f"{out}: {text}")
    note_work(drawn, "figure drawn" if drawn == 1 else "figures drawn", detail=text if len(text) <= 120
              else text[:117] + "...", rate=False)


def _models(args) -> list[str]:
    """Row/column names: --models, else each store's model folder (results/features/D/M/...)."""
    if args.models:
        if len(args.models) != len(args.stores):
            raise ValueError(f"--models names {len(args.models)} models for {len(args.stores)} stores")
        return list(args.models)
    return [Path(p).parent.name for p in args.stores]


def cmd_figure_grid(args):
    from .figures.retrieval_grid import retrieval_grid

    _, fs = _settings(args)
    res = retrieval_grid(args.index, dict(zip(_models(args), args.stores)), args.out, k=fs["k"],
                         n_queries=fs["n_queries"], queries=fs["queries"], seed=fs["seed"],
                         tile=fs["tile"], features=fs["features"], title=f"{args.dataset}: retrieval")
    _done(args.out, f"{len(res['queries'])} queries (rows {res['queries']}), {len(res['rows'])} grid rows")


def cmd_figure_maps(args):
    from . import config as C
    from .figures.feature_maps import feature_maps

    spec, fs = _settings(args)
    ds = spec["datasets"][args.dataset]
    split = args.split or C.task_splits(ds, "segmentation")[-1]
    from . import kinds

    res = feature_maps(ds["root"], split, ds["label_sets"], dict(zip(_models(args), args.stores)), args.out,
                       size=ds["size"], blocks=ds.get("blocks"), n_images=fs["n_images"], seed=fs["seed"],
                       cell=fs["cell"], samples=kinds.of(ds).samples(ds, split))
    _done(args.out, f"images {res['rows']} of {split}, arrays {res['arrays']}")


def cmd_figure_patches(args):
    from . import kinds
    from .data.patchgrid import Grid
    from .figures.patch_retrieval import patch_retrieval, patch_retrieval_projected

    spec, fs = _settings(args)
    ds = spec["datasets"][args.dataset]
    images, grid, models = kinds.of(ds).images(ds), Grid.of(ds), _models(args)
    common = dict(k=fs["patch_k"], n_queries=fs["n_queries"], queries=fs["patch_queries"], seed=fs["seed"],
                  tile=fs["patch_tile"])
    if args.projected:
        if len(models) != 1:
            raise ValueError(f"--projected draws one encoder; got {len(models)} stores")
        res = patch_retrieval_projected(images, grid, models[0], args.stores[0], args.out,
                                        title=f"{args.dataset}: encoded vs projected", **common)
    else:
        res = patch_retrieval(images, grid, dict(zip(models, args.stores)), args.out, features=fs["patch_features"],
                              title=f"{args.dataset}: patch retrieval", **common)
    drawn = [f"{r.model} {r.feature}" + ("" if r.rows is not None else " (absent)") for r in res["rows"]]
    _done(args.out, f"queries (rows) {res['queries']}; rows: {', '.join(drawn)}")


def cmd_figure_correspondence(args):
    from .data.pairs import read_pairs
    from .figures.correspondence import draw_from_stores
    from .store import open_store

    spec, _ = _settings(args)
    stores = {m: open_store(p) for m, p in zip(_models(args), args.stores)}
    pairs = read_pairs(args.pairs)
    shown = draw_from_stores(spec, pairs, stores, args.out)
    if not shown:
        _done(args.out, f"no pair drawn: none of the {pairs['pair'].nunique()} pairs has both images extracted "
              "for every encoder (the figure says so)")
    else:
        _done(args.out, f"{len(shown)} scored pairs drawn {shown}, {len(stores)} encoders")


def cmd_figure_part_discovery(args):
    from .figures.part_discovery import draw_from_stores
    from .store import open_store

    spec, _ = _settings(args)
    models = args.models or [Path(p).parent.name for p in args.stores[::2]]
    if len(args.stores) != 2 * len(models):
        raise ValueError(f"figure-part-discovery: {len(args.stores)} stores for {len(models)} models; give each "
                         "model's train_crop and test_crop store, in that order")
    stores = {m: (open_store(args.stores[2 * i]), open_store(args.stores[2 * i + 1])) for i, m in enumerate(models)}
    shown = draw_from_stores(spec, stores, args.out)
    print(f"{args.out}: test images {', '.join(shown)}, {len(stores)} encoders")


def cmd_figure_summary(args):
    from .figures.summary import summary_plot

    data = summary_plot(args.table, args.out)
    _done(args.out, f"{len(data)} bars, {int(data['paper'].notna().sum())} with a paper value")


def cmd_figure_contrast(args):
    from .figures.contrast import contrast_plot, contrast_rows

    data = contrast_plot(args.table, args.out)
    _done(args.out, f"{data['dataset'].nunique()} datasets with object and part labels, "
          f"{contrast_rows(data)} encoders with both, protocols {sorted(set(data['protocol']))}")


def cmd_figure_depth(args):
    from .figures.depth import depth_plot

    data = depth_plot(args.table, args.out)
    _done(args.out, f"{data['dataset'].nunique()} datasets, {data['model'].nunique()} encoders, "
          f"blocks {sorted(set(data['block']))}")


def add_figure_commands(sub) -> None:
    """Register the figure subcommands on the `partaware` subparsers."""
    def figure(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", required=True, help="JSON config subset this figure depends on")
        s.add_argument("--dataset", required=True, help="a dataset name of the spec's `datasets`")
        s.add_argument("--out", required=True, help="the PNG to write")
        s.add_argument("--models", nargs="+", default=None,
                       help="names of the stores' models (default: each store's parent folder)")
        s.add_argument("stores", nargs="+", help="one store (or .shards.json) per model, in row order")
        s.set_defaults(fn=fn)
        return s

    s = figure("figure-grid", cmd_figure_grid, "retrieval grid: query patches and their nearest neighbours")
    s.add_argument("--index", required=True, help="the part index of the stores (results/index/D/all.parquet)")
    s = figure("figure-patches", cmd_figure_patches,
               "patch retrieval over a patchgrid set: one row per encoder, or --projected: mean vs proj")
    s.add_argument("--projected", action="store_true",
                   help="one store: its encoded (mean) vs projected (proj) neighbours (the paper's Figure 4)")
    s = figure("figure-maps", cmd_figure_maps, "PCA of a block's token maps beside image and part labels")
    s.add_argument("--split", default=None, help="default: the dataset's last split (val)")
    s = figure("figure-correspondence", cmd_figure_correspondence,
               "keypoint transfer: source/target pairs with each encoder's predicted vs true keypoints")
    s.add_argument("--pairs", required=True, help="the pair table (results/index/D/pairs.parquet)")
    figure("figure-part-discovery", cmd_figure_part_discovery,
           "part discovery: the same test images per encoder, tokens coloured by their (matched) cluster")
    s = sub.add_parser("figure-summary", help="bar charts of results/table.csv with the paper's values")
    s.add_argument("--table", required=True, help="results/table.csv")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.set_defaults(fn=cmd_figure_summary)
    s = sub.add_parser("figure-contrast", help="object vs part mIoU per encoder and their rankings (Figure 6)")
    s.add_argument("--table", required=True, help="results/table.csv")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.set_defaults(fn=cmd_figure_contrast)
    s = sub.add_parser("figure-depth", help="retrieval AP and logistic accuracy against block depth per encoder")
    s.add_argument("--table", required=True, help="results/table.csv")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.set_defaults(fn=cmd_figure_depth)
