"""The Markdown sections of table.md beyond the pivot (`report.write_table` appends them): part
versus object (the paper's Figure 6), correspondence per part, and the pairwise differences
between encoders with their bootstrap intervals.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .report_splits import is_split_metric


def _cell(mean: float, std: float, count: int, paper: float, low: float = float("nan"),
          high: float = float("nan"), ci_images: float = float("nan"), thin: str = "") -> str:
    """`50.3 [49.8, 50.9]`: one value and its bootstrap interval (`[n/a]` where it rests on one
    image, which has no spread to resample); several seeds: mean ± std over them, without an
    interval (each seed's is in table.csv). `thin`: why the value rests on too little."""
    if pd.isna(mean):
        return "n/a"
    text = f"{mean:.1f}" if count < 2 else f"{mean:.1f} ± {std:.1f}"
    if count < 2 and pd.notna(low) and pd.notna(high):
        text += f" [{low:.1f}, {high:.1f}]"
    elif count < 2 and pd.notna(ci_images) and ci_images < 2:
        text += " [n/a]"
    if pd.notna(paper):
        text += f" (paper {paper:.1f}, {mean - paper:+.1f})"
    return text + (f" ({thin})" if thin else "")


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(table[name], errors="coerce") if name in table else pd.Series(float("nan"), table.index)


def _span(values) -> str:
    """`29`, or `27-29` where the models of one row differ."""
    values = sorted({int(v) for v in values if pd.notna(v)})
    if not values:
        return ""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


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


def _per_part(inputs: list[Path], detail: str = "correspondence_per_part.csv") -> pd.DataFrame:
    """The correspondence jobs' per-part rows (`<task>_per_part.csv` beside their CSVs)."""
    paths = [Path(p).with_name(detail) for p in inputs if Path(p).name == "correspondence.csv"]
    frames = [pd.read_csv(p) for p in paths if p.is_file() and p.stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _most_confused(parts: pd.DataFrame, shown: int = 2) -> str:
    """`left leg 31.0 (n=40)`: the parts most often transferred onto their left/right counterpart,
    among those confused at all and on enough chances (`correspondence.min_chances`), else `none`."""
    if parts.empty or "left_right_confusion" not in parts:
        return ""
    rated = confusable(parts).sort_values("left_right_confusion", ascending=False, kind="stable")
    text = ", ".join(f"{r.part} {r.left_right_confusion:.1f} (n={int(r.n_mirror)})" for r in rated.head(shown).itertuples())
    return text or "none"


def confusable(parts: pd.DataFrame, default_min: int = 10) -> pd.DataFrame:
    """The per-part rows fit for "most confused": confusion above zero, not marked `thin` by the
    task (files written before that column: at least `default_min` visible counterparts)."""
    confusion, n_mirror = _column(parts, "left_right_confusion"), _column(parts, "n_mirror")
    if "thin" in parts:
        enough = ~parts["thin"].fillna("").astype(str).str.contains("confusion on")
    else:
        enough = n_mirror >= default_min
    return parts[(confusion > 0) & (n_mirror > 0) & enough]


def correspondence_section(table: pd.DataFrame, inputs: list[Path]) -> str:
    """The keypoint-correspondence section of table.md (task `correspondence`): per dataset and
    feature, each encoder's PCK@alpha and left/right confusion with their intervals over pairs,
    and the parts it confuses most (from `correspondence_per_part.csv`). Empty without such rows."""
    rows = table[table["task"] == "correspondence"] if "task" in table else table.iloc[:0]
    rows = rows[~rows["metric"].map(is_split_metric)]  # their own section (`report_splits`)
    if rows.empty:
        return ""
    parts = _per_part(inputs)
    lines = ["", "## Part correspondence (keypoint transfer; not in the paper)", "",
             "Zero-shot transfer of each keypoint from a source image to a target image of the same class by the "
             "best cosine match in the encoder's dense tokens. `PCK@a`: the share of transfers within a x max(h, w) "
             "of the target's object box; `left_right_confusion`: among keypoints whose left/right counterpart is "
             "visible in the target, the share that land on the counterpart instead. `[lo, hi]`: bootstrap "
             "interval over pairs. Most confused: the parts with the highest left/right confusion above zero, "
             "on at least `correspondence.min_chances` visible counterparts (per-part values in "
             "`correspondence_per_part.csv`, those on fewer marked in its `thin` column).", ""]
    for (dataset, feature), d in rows.groupby(["dataset", "feature"], sort=False):
        metrics = list(dict.fromkeys(d["metric"]))
        pairs = _span(_column(d[d["metric"] != "left_right_confusion"], "n").dropna())
        lines += [f"### {dataset}: {feature} ({pairs} transfers)", "",
                  "| model | " + " | ".join(metrics) + " | most confused |", "|---|" + "---|" * (len(metrics) + 1)]
        for model, m in d.groupby("model", sort=False):
            by_metric = m.drop_duplicates("metric").set_index("metric")
            cells = [_cell(by_metric.at[k, "value"], float("nan"), 1, float("nan"), by_metric.at[k, "ci_low"],
                           by_metric.at[k, "ci_high"]) for k in metrics if k in by_metric.index]
            own = parts[(parts["dataset"] == dataset) & (parts["model"] == model) & (parts["feature"] == feature)] \
                if not parts.empty else parts
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {_most_confused(own)} |")
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
             "resampled alike on the images they share; `*`: the interval excludes zero; `[n/a]`: one shared "
             "image, so no interval and no mark. Digits: as many as the difference needs. Probes: the lowest seed "
             "all encoders share (seeds are a separate spread, not resampled).", ""]
    keys = ["dataset", "task", "label_set", "feature", "protocol", "metric"]
    for key, d in pairs.groupby(keys, sort=False):
        models = list(dict.fromkeys(list(d["model_a"]) + list(d["model_b"])))
        cells = {(r.model_a, r.model_b): _difference(r.diff, r.low, r.high, r.excludes_zero) for r in d.itertuples()}
        seed = d["seed"].iloc[0]
        lines += [f"### {key[0]}: {key[1]} {key[5]}, {key[3]} ({key[2]}; {key[4]}"
                  + (f"; seed {seed}" if seed not in ("", "nan") else "") + f"; {d['n_images'].iloc[0]} images)", "",
                  "| | " + " | ".join(models[1:]) + " |", "|---|" + "---|" * (len(models) - 1)]
        for a in models[:-1]:
            lines.append(f"| {a} | " + " | ".join(cells.get((a, b), "") for b in models[1:]) + " |")
        lines.append("")
    return "\n".join(lines)


def _decimals(diff: float) -> int:
    """Decimals that show a difference's first significant digit (1 to 3): +5.2, +0.4, +0.03."""
    if not diff or not math.isfinite(diff):
        return 1
    return int(min(3, max(1, -math.floor(math.log10(abs(diff))))))


def _difference(diff: float, low: float, high: float, excludes_zero: bool) -> str:
    """`+0.03 [+0.01, +0.05]*`; without an interval (one shared image) `+0.4 [n/a]`, never starred."""
    d = _decimals(diff)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{diff:+.{d}f} [n/a]"
    return f"{diff:+.{d}f} [{low:+.{d}f}, {high:+.{d}f}]{'*' if excludes_zero else ''}"


