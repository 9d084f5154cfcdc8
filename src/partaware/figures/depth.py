"""Where part-awareness lives: retrieval AP and logistic-probe accuracy against block depth.

Reads the per-block rows of `results/table.csv` (features `block k mean`, `block k cls`, from
`extract.blocks_summary`). One row of panels per dataset; one column per measurement and
summary present (retrieval AP of the block's patch-token mean, of its CLS token; logistic top-1
of each), one line per encoder (mean over seeds) with a band: the bootstrap interval over images
where the table has one (`ci_low`, `ci_high`, mean over seeds), else the spread over seeds.
The summaries are raw block outputs; both measurements are scale-free (cosine similarity,
standardised features), so the curves compare depths without a normalisation of their own.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..blocks import parse_feature
from .summary import _model_order
from .plotting import save_figure

# (task, metric) drawn -> panel label; summaries in column order
MEASURES = {("retrieval", "AP"): "retrieval AP (%)", ("logistic", "top1"): "logistic top-1 (%)"}
SUMMARY_ORDER = ("mean", "cls")
PANEL_W, PANEL_H, DPI = 400, 320, 100
COLUMNS = ["dataset", "measure", "summary", "model", "block", "value", "std", "ci_low", "ci_high"]


def depth_data(table: pd.DataFrame) -> pd.DataFrame:
    """The plotted points: dataset, measure, summary, model, block, value and interval bounds (means
    over seeds; NaN where the table has no interval), std over seeds."""
    if table.empty or "feature" not in table:
        return pd.DataFrame(columns=COLUMNS)
    parsed = table["feature"].map(parse_feature)
    picked = []
    for (task, metric), measure in MEASURES.items():
        keep = (table["task"] == task) & (table["metric"] == metric) & parsed.notna()
        if keep.any():
            part = table[keep].assign(measure=measure, block=[p[0] for p in parsed[keep]],
                                      summary=[p[1] for p in parsed[keep]])
            picked.append(part)
    if not picked:
        return pd.DataFrame(columns=COLUMNS)
    rows = pd.concat(picked, ignore_index=True)
    for col in ("ci_low", "ci_high"):
        rows[col] = pd.to_numeric(rows[col], errors="coerce") if col in rows else np.nan
    g = rows.groupby(["dataset", "measure", "summary", "model", "block"], sort=False)
    out = g["value"].agg(["mean", "std"]).join(g[["ci_low", "ci_high"]].mean()).reset_index()
    out = out.rename(columns={"mean": "value"})
    return out.sort_values(["dataset", "measure", "summary", "model", "block"], kind="stable")[COLUMNS]


def panel_columns(data: pd.DataFrame) -> list[tuple[str, str]]:
    """(measure, summary) columns present, retrieval before logistic, mean before cls."""
    present = set(zip(data["measure"], data["summary"]))
    return [(m, s) for m in MEASURES.values() for s in SUMMARY_ORDER if (m, s) in present]


def figure_size(n_datasets: int, n_columns: int) -> tuple[int, int]:
    """Pixel size of the depth figure: one row per dataset, one column per measure x summary."""
    return max(n_columns, 1) * PANEL_W, max(n_datasets, 1) * PANEL_H


def depth_plot(table_csv, out) -> pd.DataFrame:
    """Draw `results/figures/depth.png` from `results/table.csv`; returns the plotted data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    path = Path(table_csv)
    table = pd.read_csv(path) if path.stat().st_size > 0 else pd.DataFrame()
    data = depth_data(table)
    datasets = list(dict.fromkeys(data["dataset"]))
    columns = panel_columns(data)
    width, height = figure_size(len(datasets), len(columns))
    fig, axes = plt.subplots(max(len(datasets), 1), max(len(columns), 1), squeeze=False,
                             figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    models = _model_order(data["model"])
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    if data.empty:
        axes[0, 0].text(0.5, 0.5, "no per-block results in the table\n(set extract.blocks_summary)",
                        ha="center", va="center")
        axes[0, 0].axis("off")
    for r, dataset in enumerate(datasets):
        for c, (measure, summary) in enumerate(columns):
            ax = axes[r, c]
            d = data[(data["dataset"] == dataset) & (data["measure"] == measure) & (data["summary"] == summary)]
            if d.empty:
                ax.axis("off")
                continue
            for model in models:
                line = d[d["model"] == model]
                if line.empty:
                    continue
                x, y = line["block"].to_numpy(), line["value"].to_numpy(float)
                ax.plot(x, y, marker="o", markersize=3, color=colours[model])
                low, high = line["ci_low"].to_numpy(float), line["ci_high"].to_numpy(float)
                if not np.isfinite(low).any():  # no intervals: the spread over seeds, if any
                    low, high = y - line["std"].to_numpy(float), y + line["std"].to_numpy(float)
                if np.isfinite(low).any():
                    ax.fill_between(x, low, high, color=colours[model], alpha=0.15, linewidth=0)
            blocks = sorted(set(d["block"]))
            step = max(1, math.ceil(len(blocks) / 12))
            ax.set_xticks(blocks[::step])
            ax.set_xlabel("block")
            ax.set_ylabel(measure)
            ax.set_title(f"{dataset}: {measure.split(' (')[0]}, block {summary}", fontsize=10)
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[m], marker="o", markersize=3, label=m) for m in models]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8)
    save_figure(fig, out, DPI)
    return data
