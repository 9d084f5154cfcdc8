"""Gather the per-job result CSVs into one tidy table and a readable Markdown pivot."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .atomic import write_text
from .paper import attach_paper

KEYS = ["dataset", "task", "label_set", "feature", "protocol", "metric"]


def gather(inputs: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in inputs if Path(p).stat().st_size > 0]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    sort = [c for c in ["dataset", "task", "label_set", "model", "feature", "metric", "seed"] if c in table]
    table = table.sort_values(sort, kind="stable").reset_index(drop=True)
    if "seed" in table:  # an integer, or empty where a task has none (not 0.0)
        table["seed"] = pd.to_numeric(table["seed"], errors="coerce").astype("Int64")
    table["paper"] = attach_paper(table)  # the reported value, empty in the CSV where none
    return table


def _cell(mean: float, std: float, count: int, paper: float) -> str:
    if pd.isna(mean):
        return "n/a"
    text = f"{mean:.1f}" if count < 2 else f"{mean:.1f} ± {std:.1f}"
    if pd.notna(paper):
        text += f" (paper {paper:.1f}, {mean - paper:+.1f})"
    return text


def pivot(table: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement, one column per model; several seeds show as mean ± std."""
    if "paper" not in table:
        table = table.assign(paper=attach_paper(table))
    grouped = table.groupby(KEYS + ["model"], dropna=False, sort=False)
    cell = grouped["value"].agg(["mean", "std", "count"]).join(grouped["paper"].first()).reset_index()
    cell["text"] = [_cell(*v) for v in zip(cell["mean"], cell["std"], cell["count"], cell["paper"])]
    wide = cell.pivot_table(index=KEYS, columns="model", values="text", aggfunc="first", sort=False)
    return wide.reset_index()


def to_markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _value(value: float, paper: float) -> str:
    if pd.isna(value):
        return "n/a"
    return f"{value:.1f}" + (f" (paper {paper:.1f})" if pd.notna(paper) else "")


def _rank(rank, paper_rank) -> str:
    if pd.isna(rank):
        return "-"
    return f"{int(rank)}" + (f" (paper {int(paper_rank)})" if pd.notna(paper_rank) else "")


def contrast_section(table: pd.DataFrame) -> str:
    """The part-vs-object section of table.md (the paper's Figure 6): per dataset with both an
    `object` and a `part` label set, per encoder: part and object mIoU and the rank at each level.
    Empty when no dataset has both."""
    from .figures.contrast import contrast_data, protocol_text

    data = contrast_data(table)
    if data.empty:
        return ""
    lines = ["", "## Part level vs object level (the paper's Figure 6)", "",
             "Segmentation mIoU (%) of each encoder on the same images with object labels and with part "
             "labels, and its rank among the encoders shown at each level (1 = best; mean over seeds). "
             "`(paper X)`: the value Zhu et al. report and the rank it gives among these encoders (part level: "
             "Table 4; their object-level values of Figure 6 are not in the readable text). The paper's "
             "finding: the supervised DeiT ranks higher at the object level than at the part level.", ""]
    for dataset, d in data.groupby("dataset", sort=False):
        lines += [f"### {dataset} ({protocol_text(d['protocol'].iloc[0])})", "",
                  "| model | part mIoU | object mIoU | part rank | object rank |", "|---|---|---|---|---|"]
        for _, r in d.iterrows():
            lines.append(f"| {r['model']} | {_value(r['part'], r['part_paper'])} | "
                         f"{_value(r['object'], r['object_paper'])} | {_rank(r['part_rank'], r['part_paper_rank'])} | "
                         f"{_rank(r['object_rank'], r['object_paper_rank'])} |")
        lines.append("")
    return "\n".join(lines)


def write_table(inputs: list[Path], csv_path: Path, md_path: Path) -> pd.DataFrame:
    table = gather(inputs)
    header = ("# partaware results\n\nValues in %. Models whose `weights` are `random` are "
              "random-initialised (pipeline demo), not pretrained encoders. `(paper X, ±d)`: the value "
              "Zhu et al. report for that model and measurement, and ours minus theirs (only where "
              "the model and dataset names are those of configs/paper.yaml; check the protocol "
              "column: only rows whose protocol starts with `paper` follow the paper's). `n/a`: the "
              "model lacks that feature (e.g. `proj` without a projection head).\n\n")
    write_text(md_path, header + to_markdown(pivot(table)) + contrast_section(table))
    write_text(csv_path, table.to_csv(index=False))
    return table


def write_skipped(stores: list[Path], path: Path) -> pd.DataFrame:
    """One row per image a store left out (`data.on_bad_image: skip`), with the reason."""
    from .store import open_store

    rows = []
    for store_path in stores:
        with open_store(store_path) as store:
            attrs = store.attrs
            for reason in attrs.get("skipped_images") or []:
                rows.append({"dataset": attrs.get("dataset"), "model": attrs.get("model"),
                             "split": attrs.get("split"), "store": str(store_path), "reason": reason})
    df = pd.DataFrame(rows, columns=["dataset", "model", "split", "store", "reason"])
    write_text(path, df.to_csv(index=False))
    return df

