"""Keypoint transfer figure: a few source/target pairs, and per encoder the predicted target
location of each source keypoint, with a line from source to prediction coloured by outcome:
green = correct (within alpha x max(target box h, w) of the true keypoint), orange = landed on
the mirrored part (left/right confusion), red = wrong. True target keypoints are open circles.

The pairs shown are those with the most keypoints visible in both images (ties: lowest pair id)
among the pairs every encoder scored (both images extracted), the same for every encoder; with
none, the figure is one line saying why; predictions come from the same cached dense maps the task scores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.images import load_rgb
from ..evals import correspondence as C
from .plotting import save_figure

COLOURS = {"correct": "#2ca02c", "mirrored": "#ff7f0e", "wrong": "#d62728"}
PANEL_H, DPI = 3.0, 100


def pick_pairs(pairs: pd.DataFrame, n: int) -> list[int]:
    """The `n` pair ids with the most keypoints visible in both images (ties: lowest id)."""
    counts = pairs[pairs["visible"]].groupby("pair").size()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [int(p) for p, _ in order[:n]]


def outcomes(pairs: pd.DataFrame, maps, sizes: dict, input_wh, patch: int, alpha: float,
             refine: str = "none") -> pd.DataFrame:
    """The visible rows of `pairs` with the prediction (`pred_x`, `pred_y`) and `outcome`
    (correct / mirrored / wrong at `alpha`) from one encoder's maps."""
    res = C.evaluate_pairs(pairs, maps, sizes, input_wh, patch, [alpha], alpha, refine)
    scored = pairs[pairs["visible"]].sort_values("pair", kind="stable")
    scored = scored[scored["pair"].isin(set(res.pair.tolist()))].copy()
    scored["pred_x"], scored["pred_y"] = res.pred[:, 0], res.pred[:, 1]
    scored["outcome"] = np.where(res.correct[:, 0], "correct", np.where(res.confused, "mirrored", "wrong"))
    return scored


def _side_by_side(src, trg):
    """One image of source | target at a common height, and the target's (scale, x offset)."""
    h = max(src.height, trg.height)
    s_src, s_trg = h / src.height, h / trg.height
    a = src.resize((round(src.width * s_src), h))
    b = trg.resize((round(trg.width * s_trg), h))
    canvas = np.zeros((h, a.width + b.width, 3), np.uint8)
    canvas[:, :a.width], canvas[:, a.width:] = np.asarray(a), np.asarray(b)
    return canvas, s_src, s_trg, a.width


def correspondence_figure(results: dict[str, pd.DataFrame], out: Path | str, pair_ids: list[int],
                          dpi: int = DPI) -> None:
    """Rows = pairs, columns = encoders; `results[model]` = `outcomes(...)` of that encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    fig, axes = plt.subplots(len(pair_ids), len(models), squeeze=False,
                             figsize=(2 * PANEL_H * len(models), PANEL_H * len(pair_ids)))
    images = {}
    for i, pair in enumerate(pair_ids):
        for j, model in enumerate(models):
            ax = axes[i][j]
            ax.axis("off")
            rows = results[model][results[model]["pair"] == pair]
            if rows.empty:
                ax.set_title(f"{model}: pair {pair} not scored", fontsize=8)
                continue
            first = rows.iloc[0]
            for path in (first.src_path, first.trg_path):
                if path not in images:
                    images[path] = load_rgb(path)
            canvas, s_src, s_trg, off = _side_by_side(images[first.src_path], images[first.trg_path])
            ax.imshow(canvas)
            for r in rows.itertuples():
                colour = COLOURS[r.outcome]
                ax.plot([r.src_x * s_src, off + r.pred_x * s_trg], [r.src_y * s_src, r.pred_y * s_trg],
                        color=colour, linewidth=1)
                ax.scatter([off + r.trg_x * s_trg], [r.trg_y * s_trg], s=14, facecolors="none",
                           edgecolors="white", linewidths=0.8)
            share = (rows["outcome"] == "correct").mean()
            ax.set_title(f"{model} · pair {pair} · {100 * share:.0f}% correct", fontsize=8)
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, out, dpi)


def draw_from_stores(cfg: dict, pairs: pd.DataFrame, stores: dict, out: Path | str, n_pairs: int = 3,
                     dpi: int = DPI) -> list[int]:
    """The figure of `n_pairs` pairs from each encoder's dense-map store (`stores[model]`, the
    task's store), scored as the task scores them (final tokens, `correspondence.*` settings);
    returns the pair ids shown."""
    from ..tasks.correspondence import FINAL, StoreMaps

    cc = cfg["correspondence"]
    maps = {model: StoreMaps(store, FINAL) for model, store in stores.items()}
    usable = set.intersection(*(set(m.row) for m in maps.values())) if maps else set()
    drawable = pairs[pairs["src_image"].isin(usable) & pairs["trg_image"].isin(usable)]
    shown = pick_pairs(drawable, n_pairs)
    if not shown:
        why = (f"none of the {pairs['pair'].nunique()} pairs has a visible keypoint and both images extracted "
               f"for every encoder ({len(usable)} images usable in all stores)")
        message_figure(out, f"no pair to draw: {why}", dpi)
        return []
    subset = pairs[pairs["pair"].isin(shown)]
    results = {}
    for model, store in stores.items():
        keys = list(store.attrs["image_keys"])
        sizes = dict(zip(keys, map(tuple, store.read("size").tolist())))
        size = int(store.attrs.get("input_size", cc["size"]))
        results[model] = outcomes(subset, maps[model], sizes, (size, size), int(store.attrs["patch_size"]),
                                  cc["confusion_alpha"], cc["refine"])
    correspondence_figure(results, out, shown, dpi)
    return shown


def message_figure(out: Path | str, text: str, dpi: int = DPI) -> None:
    """A figure that is one line of text: why there is nothing to draw (not blank panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 1))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True)
    save_figure(fig, out, dpi)
