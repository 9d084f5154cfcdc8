"""The table as bar charts: retrieval AP, probe accuracy and segmentation mIoU per encoder.

One panel per (dataset, metric family); inside it one group of bars per task and feature
(retrieval: mean / cls / proj; accuracy: linear / attentive / logistic; mIoU: the label sets,
each protocol apart: `part (paper)`, `part (cached)`),
one bar per model (mean over seeds, with their spread). Where the paper reports a value for the
same measurement (`paper.py`), a black tick marks it on the bar. A hatched bar rests on too
little (table.md's mark); a panel without a value says why (`summary_marks`); k-NN follows the
config's k.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..paper import MODELS as PAPER_MODELS
from ..paper import attach_paper
from .plotting import save_figure
from .summary_marks import empty_text, headline_rows, marks


def headline() -> dict:
    """(task, metric) shown -> their family (one panel per dataset and family) and the group
    label: what each task declares (`Task.headline`, partaware.tasks)."""
    from .. import tasks

    return {(name, metric): shown for name in tasks.names() for metric, shown in tasks.get(name).headline.items()}


PANEL_W, PANEL_H, DPI, MAX_COLS = 480, 360, 100, 3


def summary_data(table: pd.DataFrame) -> pd.DataFrame:
    """The plotted numbers: dataset, family, group, model, value (mean over seeds), std, paper."""
    cols = ["dataset", "family", "group", "model", "value", "std", "paper", "thin", "why"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    table = table.copy()
    if "feature" in table:  # per-block rows belong to figures/depth.py
        from ..blocks import is_block_feature

        table = table[~table["feature"].astype(str).map(is_block_feature)]
    if "label_set" not in table:
        table["label_set"] = "part"
    table["label_set"] = table["label_set"].fillna("part")
    if "paper" not in table:
        table["paper"] = attach_paper(table)
    picked = []
    for (task, metric), (family, group) in headline().items():
        part = headline_rows(table, task, metric)  # knn: the config's k where it is not the headline's
        if part.empty:
            continue
        part = part.join(marks(part))
        part["family"] = family
        protocols = part["protocol"].astype(str) if "protocol" in part else pd.Series("", index=part.index)
        part["group"] = [group.format(feature=f, label_set=s, protocol=k) + x
                         for f, s, k, x in zip(part["feature"], part["label_set"], protocols, part["suffix"])]
        picked.append(part)
    if not picked:
        return pd.DataFrame(columns=cols)
    rows = pd.concat(picked, ignore_index=True)
    g = rows.groupby(["dataset", "family", "group", "model"], sort=False)
    out = (g["value"].agg(["mean", "std"]).join(g["paper"].first())
           .join(g["thin"].agg(lambda t: next((x for x in t if x), ""))).join(g["why"].first()).reset_index())
    return out.rename(columns={"mean": "value"})[cols]


def _model_order(models) -> list[str]:
    rank = {m: i for i, m in enumerate(PAPER_MODELS)}
    return sorted(set(models), key=lambda m: (rank.get(m, len(rank)), m))


def figure_size(n_panels: int) -> tuple[int, int]:
    """Pixel size of the summary for `n_panels` panels (at least one)."""
    cols = min(MAX_COLS, max(n_panels, 1))
    return cols * PANEL_W, math.ceil(max(n_panels, 1) / cols) * PANEL_H


def tick_label(group: str, width: int = 10) -> str:
    """A group name broken into lines of about `width` characters at spaces, so neighbouring
    labels (`part (paper)`, `part (cached)`, ...) never run together."""
    lines, line = [], ""
    for word in group.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join(lines + [line])


def summary_plot(table_csv, out) -> pd.DataFrame:
    """Draw `results/figures/summary.png` from `results/table.csv`; returns the plotted data."""
    path = Path(table_csv)
    table = pd.read_csv(path) if path.stat().st_size > 0 else pd.DataFrame()
    data = summary_data(table)
    save_figure(draw_summary(data), out, DPI)
    return data


def _thin(rec) -> bool:
    """Whether a bar rests on too little (table.md's mark; data without the column: no)."""
    return isinstance(rec.get("thin"), str) and bool(rec.get("thin"))


def draw_summary(data: pd.DataFrame):
    """The summary figure of `summary_data` (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = list(data.groupby(["dataset", "family"], sort=False)) if len(data) else []
    width, height = figure_size(len(panels))
    cols = min(MAX_COLS, max(len(panels), 1))
    fig, axes = plt.subplots(math.ceil(max(len(panels), 1) / cols), cols, squeeze=False,
                             figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    models = _model_order(data["model"])
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no results in the table yet", ha="center", va="center")
    for ax, ((dataset, family), d) in zip(axes.ravel(), panels):
        groups = sorted(dict.fromkeys(d["group"]), key=lambda g: g != "part")  # part first
        w = 0.8 / max(d.groupby("group")["model"].nunique().max(), 1)
        for gi, group in enumerate(groups):
            cells = d[d["group"] == group].set_index("model")
            present = [m for m in models if m in cells.index]
            for mi, model in enumerate(present):  # the group's bars, centred on its tick
                rec = cells.loc[model]
                x = gi + w * (mi - (len(present) - 1) / 2)
                err = rec["std"] if pd.notna(rec["std"]) else None
                ax.bar(x, rec["value"], w * 0.9, color=colours[model], yerr=err, capsize=2,
                       hatch="//" if _thin(rec) else None, edgecolor="black" if _thin(rec) else None)
                if pd.notna(rec["paper"]):
                    ax.hlines(rec["paper"], x - w * 0.45, x + w * 0.45, colors="black", linewidth=2.5)
        ax.set_xticks(np.arange(len(groups)), [tick_label(g) for g in groups], fontsize=8)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(f"{dataset}: {family}", fontsize=10)
        heights = np.r_[d["value"].to_numpy(float), d["paper"].to_numpy(float)]
        top = np.nanmax(heights) if np.isfinite(heights).any() else np.nan  # an empty panel: no value, no warning
        ax.set_ylim(0, min(100, max(10, top * 1.12)) if np.isfinite(top) else 100)
        ax.grid(axis="y", alpha=0.3)
        if d["value"].isna().all():
            ax.text(0.5, 0.5, empty_text(d), ha="center", va="center", fontsize=7, wrap=True, transform=ax.transAxes)
    handles = [Patch(color=colours[m], label=m) for m in models]
    if "thin" in data and data["thin"].fillna("").astype(bool).any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="rests on too little (table.md)"))
    if data["paper"].notna().any():
        handles.append(Line2D([], [], color="black", linewidth=2.5, label="paper (Zhu et al.)"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8)
    return fig
