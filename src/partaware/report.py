"""Gather the per-job result CSVs into one tidy table and a readable Markdown pivot."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .atomic import write_text
from .blocks import is_block_feature
from .paper import attach_paper
from .results import COLUMNS

KEYS = ["dataset", "task", "label_set", "feature", "protocol", "metric"]


def gather(inputs: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in inputs if Path(p).stat().st_size > 0]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    sort = [c for c in ["dataset", "task", "label_set", "model", "feature", "metric", "seed"] if c in table]
    table = table.sort_values(sort, kind="stable").reset_index(drop=True)
    if "seed" in table:  # an integer, or empty where a task has none (not 0.0)
        table["seed"] = pd.to_numeric(table["seed"], errors="coerce").astype("Int64")
    for c in ("ci_low", "ci_high"):  # the bootstrap interval; NaN in CSVs written without one
        table[c] = pd.to_numeric(table[c], errors="coerce") if c in table else float("nan")
    table["paper"] = attach_paper(table)  # the reported value, empty in the CSV where none
    return table


def _cell(mean: float, std: float, count: int, paper: float, low: float = float("nan"),
          high: float = float("nan")) -> str:
    """`50.3 [49.8, 50.9]`: one value and its bootstrap interval; several seeds: mean ± std over
    them, without an interval (each seed's is in table.csv)."""
    if pd.isna(mean):
        return "n/a"
    text = f"{mean:.1f}" if count < 2 else f"{mean:.1f} ± {std:.1f}"
    if count < 2 and pd.notna(low) and pd.notna(high):
        text += f" [{low:.1f}, {high:.1f}]"
    if pd.notna(paper):
        text += f" (paper {paper:.1f}, {mean - paper:+.1f})"
    return text


def pivot(table: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement, one column per model; several seeds show as mean ± std."""
    if "paper" not in table:
        table = table.assign(paper=attach_paper(table))
    table = table.assign(**{c: table[c] if c in table else float("nan") for c in ("ci_low", "ci_high")})
    grouped = table.groupby(KEYS + ["model"], dropna=False, sort=False)
    cell = (grouped["value"].agg(["mean", "std", "count"]).join(grouped["paper"].first())
            .join(grouped[["ci_low", "ci_high"]].first()).reset_index())
    cell["text"] = [_cell(*v) for v in zip(cell["mean"], cell["std"], cell["count"], cell["paper"],
                                           cell["ci_low"], cell["ci_high"])]
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


def pairwise_section(inputs: list[Path]) -> str:
    """The pairwise section of table.md: per dataset, task, feature and metric, a matrix of the
    differences between encoders (row minus column, points) from the per-image statistics the
    evaluation jobs left beside their CSVs (`<task>_stats.npz`), `*` where the paired
    bootstrap interval of the difference excludes zero. Empty without such files. Per-block
    features (`block k mean`) are left out here (their intervals are in table.csv)."""
    from .blocks import is_block_feature
    from .intervals import pairwise, read_sidecars

    stats, found = read_sidecars(inputs)
    if stats is None:
        return ""
    pairs = pairwise(found, stats, skip_feature=is_block_feature)
    if pairs.empty:
        return ""
    pct = f"{100 * stats['level']:g}%"
    lines = ["", "## Pairwise differences (paired bootstrap over images)", "",
             f"Each cell: the row encoder minus the column encoder, in points, and the {pct} interval of that "
             f"difference from {stats['bootstrap']} resamples of the images (seed {stats['seed']}), all encoders "
             "resampled alike on the images they share; `*`: the interval excludes zero. Probes: the lowest seed "
             "all encoders share (seeds are a separate spread, not resampled).", ""]
    keys = ["dataset", "task", "label_set", "feature", "protocol", "metric"]
    for key, d in pairs.groupby(keys, sort=False):
        models = list(dict.fromkeys(list(d["model_a"]) + list(d["model_b"])))
        cells = {(r.model_a, r.model_b): f"{r.diff:+.1f} [{r.low:+.1f}, {r.high:+.1f}]{'*' if r.excludes_zero else ''}"
                 for r in d.itertuples()}
        seed = d["seed"].iloc[0]
        lines += [f"### {key[0]}: {key[1]} {key[5]}, {key[3]} ({key[2]}; {key[4]}"
                  + (f"; seed {seed}" if seed not in ("", "nan") else "") + f"; {d['n_images'].iloc[0]} images)", "",
                  "| | " + " | ".join(models[1:]) + " |", "|---|" + "---|" * (len(models) - 1)]
        for a in models[:-1]:
            lines.append(f"| {a} | " + " | ".join(cells.get((a, b), "") for b in models[1:]) + " |")
        lines.append("")
    return "\n".join(lines)


def write_table(inputs: list[Path], csv_path: Path, md_path: Path) -> pd.DataFrame:
    table = gather(inputs)
    header = ("# partaware results\n\nValues in %. Models whose `weights` are `random` are "
              "random-initialised (pipeline demo), not pretrained encoders. `(paper X, ±d)`: the value "
              "Zhu et al. report for that model and measurement, and ours minus theirs (only where "
              "the model and dataset names are those of configs/paper.yaml; check the protocol "
              "column: only rows whose protocol is `paper` follow the paper's; table.csv `notes` says how "
              "each row was measured). `n/a`: the "
              "model lacks that feature (e.g. `proj` without a projection head). `[lo, hi]`: the "
              "bootstrap confidence interval over images (table.csv `ci_low`, `ci_high`; config `stats`); "
              "several seeds show mean ± std instead. Per-block rows (`block k mean`, `block k cls`) "
              "are in table.csv and figures/depth.png.\n\n")
    final = table[~table["feature"].astype(str).map(is_block_feature)] if len(table) else table
    write_text(md_path, header + to_markdown(pivot(final)) + contrast_section(table) + pairwise_section(inputs))
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

