"""The part-vs-object contrast (the paper's Figure 6): per encoder, segmentation mIoU at the
object level and at the part level on the same images, and the encoders' ranking at each level.

The paper's claim is a contrast: the supervised DeiT wins at the object level and loses at the
part level. A dataset takes part when the table holds both its `object` and its `part` label set
(one dataset: the same images, one run). Per dataset one protocol is shown: the paper's where
the table has paper-protocol rows of both levels, else the cached screen, and the data say which.
The paper's values are marked where it reports them (Table 4: part mIoU); its Figure 6 object
values are not in the readable text, so none are marked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..paper import MODELS as PAPER_MODELS
from ..paper import attach_paper
from .plotting import save_figure

LEVELS = ("object", "part")
COLUMNS = ["dataset", "protocol", "model", "object", "part", "object_std", "part_std", "object_rank",
           "part_rank", "object_paper", "part_paper", "object_paper_rank", "part_paper_rank"]
PANEL_W, PANEL_H, DPI = 520, 380, 100


def _ranks(values: pd.Series) -> pd.Series:
    """1 = the highest value; ties share the better rank; missing values get no rank."""
    return values.rank(ascending=False, method="min").astype("Int64")


def _protocol(rows: pd.DataFrame) -> str:
    """`paper` when some model has paper-protocol mIoU at both levels, else `cached`."""
    paper = rows[rows["kind"] == "paper"]
    both = paper.groupby("model")["label_set"].nunique()
    return "paper" if (both == len(LEVELS)).any() else "cached"


def contrast_data(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset with both levels, encoder): mean mIoU over seeds at each level, the
    spread over seeds, the rank at each level, the paper's value and its rank among the encoders
    shown where it reports one. `protocol` is `paper` or `cached` (see the module doc)."""
    need = {"dataset", "task", "metric", "label_set", "model", "value"}
    if table.empty or not need <= set(table.columns):
        return pd.DataFrame(columns=COLUMNS)
    rows = table[(table["task"] == "segmentation") & (table["metric"] == "mIoU")
                 & table["label_set"].isin(LEVELS)].copy()
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    if "paper" not in rows:
        rows["paper"] = attach_paper(rows)
    protocol = rows["protocol"].astype(str) if "protocol" in rows else pd.Series("paper", index=rows.index)
    rows["kind"] = np.where(protocol == "cached", "cached", "paper")  # the protocol enum (results.PROTOCOLS)
    out = []
    for dataset, d in rows.groupby("dataset", sort=True):
        if set(d["label_set"]) != set(LEVELS):
            continue
        kind = _protocol(d)
        d = d[d["kind"] == kind]
        g = d.groupby(["model", "label_set"])
        cells = g["value"].agg(["mean", "std"]).join(g["paper"].first())
        wide = cells.unstack("label_set")
        frame = pd.DataFrame({"dataset": dataset, "protocol": kind, "model": wide.index})
        for level in LEVELS:
            for col, name in (("mean", level), ("std", f"{level}_std"), ("paper", f"{level}_paper")):
                frame[name] = wide[(col, level)].to_numpy(float) if (col, level) in wide.columns else np.nan
            frame[f"{level}_rank"] = _ranks(frame[level])
            frame[f"{level}_paper_rank"] = _ranks(frame[f"{level}_paper"])
        order = {m: i for i, m in enumerate(PAPER_MODELS)}
        frame = frame.sort_values("model", key=lambda s: s.map(lambda m: (order.get(m, len(order)), m)))
        out.append(frame[COLUMNS])
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=COLUMNS)


def protocol_text(kind: str) -> str:
    return "paper protocol" if kind == "paper" else "cached screen, not the paper's protocol"


def contrast_size(n_datasets: int) -> tuple[int, int]:
    """Pixel size of the figure: two panels (scores, ranks) per dataset row."""
    return 2 * PANEL_W, max(n_datasets, 1) * PANEL_H


def _colours(models, plt) -> dict:
    return {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}


def _scores(ax, d: pd.DataFrame, colours: dict) -> None:
    """Paired bars per encoder: object (hatched) beside part; black ticks: the paper's values."""
    x = np.arange(len(d))
    w = 0.38
    for offset, level, hatch in ((-w / 2, "object", "//"), (w / 2, "part", None)):
        values = d[level].to_numpy(float)
        ax.bar(x + offset, np.nan_to_num(values), w * 0.95, color=[colours[m] for m in d["model"]],
               alpha=0.55 if level == "object" else 1.0, hatch=hatch, edgecolor="white",
               yerr=d[f"{level}_std"].to_numpy(float), capsize=2)
        paper = d[f"{level}_paper"].to_numpy(float)
        ok = np.isfinite(paper)
        ax.hlines(paper[ok], (x + offset - w * 0.47)[ok], (x + offset + w * 0.47)[ok], colors="black", linewidth=2.5)
    ax.set_xticks(x, d["model"], rotation=30 if len(d) > 4 else 0, fontsize=8)
    top = np.nanmax(np.r_[d[list(LEVELS)].to_numpy(float).ravel(),
                          d[[f"{lv}_paper" for lv in LEVELS]].to_numpy(float).ravel(), 1.0])
    ax.set_ylim(0, min(100, max(10, top * 1.15)))
    ax.set_ylabel("mIoU (%)")
    ax.grid(axis="y", alpha=0.3)


def _ranks_panel(ax, d: pd.DataFrame, colours: dict) -> None:
    """Slope chart: each encoder's rank at the object level (left) and the part level (right)."""
    n = len(d)
    for xpos, level, ha in ((-0.06, "object", "right"), (1.06, "part", "left")):  # tied encoders share a label
        for rank, names in d.dropna(subset=[f"{level}_rank"]).groupby(f"{level}_rank")["model"]:
            ax.text(xpos, float(rank), ", ".join(names), ha=ha, va="center", fontsize=8)
    for _, r in d.iterrows():
        ys = [float(v) if pd.notna(v) else np.nan for v in (r["object_rank"], r["part_rank"])]
        ax.plot([0, 1], ys, "-o", color=colours[r["model"]], linewidth=2, markersize=6)
        if pd.notna(r["part_paper_rank"]):  # the paper's part rank, a hollow black ring
            ax.plot([1], [float(r["part_paper_rank"])], "o", markerfacecolor="none", markeredgecolor="black",
                    markersize=11)
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(n + 0.5, 0.5)
    ax.set_xticks([0, 1], ["object rank", "part rank"])
    ax.set_yticks(range(1, n + 1))
    ax.grid(axis="y", alpha=0.2)


def contrast_plot(table_csv, out) -> pd.DataFrame:
    """Draw `results/figures/contrast.png` from `results/table.csv`; returns the plotted data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    path = Path(table_csv)
    table = pd.read_csv(path) if path.stat().st_size > 0 else pd.DataFrame()
    data = contrast_data(table)
    datasets = list(dict.fromkeys(data["dataset"]))
    width, height = contrast_size(len(datasets))
    fig, axes = plt.subplots(max(len(datasets), 1), 2, squeeze=False, figsize=(width / DPI, height / DPI),
                             dpi=DPI, layout="constrained")
    if not datasets:
        for ax in axes.ravel():
            ax.axis("off")
        axes[0, 0].text(0.5, 0.5, "no dataset with both an object and a part label set in the table yet",
                        ha="center", va="center", transform=axes[0, 0].transAxes)
    models = list(dict.fromkeys(data["model"]))
    colours = _colours(models, plt)
    for row, dataset in enumerate(datasets):
        d = data[data["dataset"] == dataset].reset_index(drop=True)
        kind = protocol_text(d["protocol"].iloc[0])
        _scores(axes[row, 0], d, colours)
        axes[row, 0].set_title(f"{dataset}: object vs part mIoU ({kind})", fontsize=10)
        _ranks_panel(axes[row, 1], d, colours)
        axes[row, 1].set_title(f"{dataset}: ranking of the encoders (1 = best)", fontsize=10)
    handles = [Patch(facecolor="grey", alpha=0.55, hatch="//", label="object"), Patch(color="grey", label="part")]
    if data[["object_paper", "part_paper"]].notna().any().any():
        handles += [Line2D([], [], color="black", linewidth=2.5, label="paper's mIoU (Zhu et al.)"),
                    Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="black",
                           label="paper's part rank")]
    if datasets:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    save_figure(fig, out, DPI)
    return data


def contrast_rows(data: pd.DataFrame) -> int:
    """How many (dataset, encoder) rows have both levels (what the CLI reports)."""
    return int(data[list(LEVELS)].notna().all(axis=1).sum()) if len(data) else 0


__all__ = ["COLUMNS", "LEVELS", "contrast_data", "contrast_plot", "contrast_size", "contrast_rows",
           "protocol_text"]
