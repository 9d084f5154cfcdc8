"""The table.md section of the correspondence task's reporting splits (`tasks.correspondence_splits`):
per dataset and feature, one line per encoder with its PCK by difficulty bucket and on the
geometry-aware subset (SPair-71k), or its CC / SOC / cross-SOC scores (SOCO). Every value is in
table.csv, where `notes` names the threshold and averaging of each row."""
from __future__ import annotations

import re

import pandas as pd

_ORDER = ["per pair", "viewpoint_variation", "scale_variation", "truncation", "occlusion", "geo-aware", "SOC", "CC",
          "cross-SOC", "cross-CC"]
_SPLIT = re.compile(r"^(?P<base>\S+)( \[(?P<subset>[^\]]+)\])?(?P<rest>( per (pair|point))?)$")


def is_split_metric(metric) -> bool:
    """A reporting split's metric (`PCK@0.1 [geo-aware]`, `PCK@0.1 per pair`), not a task's plain one."""
    return isinstance(metric, str) and (" [" in metric or metric.endswith((" per pair", " per point")))


def _shown(metrics: list[str], alpha: str) -> list[str]:
    """The default-convention split metrics of one PCK threshold (and the geometry-aware confusion)."""
    keep = []
    for m in metrics:
        found = _SPLIT.match(m)
        if not found or found["rest"] == " per point":
            continue
        if found["base"] in (alpha, "left_right_confusion"):
            keep.append(m)
    return sorted(keep, key=_order)


def _order(metric: str) -> tuple:
    """Columns: all pairs, the buckets by field then value, the subsets, the confusion last."""
    found = _SPLIT.match(metric)
    subset = found["subset"] or "per pair"
    field, _, value = subset.partition("=")
    rank = _ORDER.index(field) if field in _ORDER else len(_ORDER)
    return (found["base"] == "left_right_confusion", rank, int(value) if value.isdigit() else 0, subset)


def splits_section(table: pd.DataFrame, cell) -> str:
    """`cell(value, low, high)` formats one value. Empty without split rows."""
    if "metric" not in table or "task" not in table:
        return ""
    rows = table[(table["task"] == "correspondence") & table["metric"].map(is_split_metric)]
    if rows.empty:
        return ""
    lines = ["", "## Part correspondence by difficulty and subset", "",
             "SPair-71k: PCK by the pair files' difficulty buckets (`viewpoint_variation`, `scale_variation`: 0 easy - "
             "2 hard; `truncation`, `occlusion`: 0 none, 1 source, 2 target, 3 both) and on the geometry-aware subset "
             "(keypoints with a symmetric or repeated counterpart, two of their group visible in the target; "
             "\"Telling Left from Right\"), err <= alpha x max(h, w) of the target box, mean over pairs; pooled "
             "over keypoints in table.csv (`... per point`). SOCO: CC (any instance of the concept), SOC (the exact "
             "keypoint), cross-SOC (exact, across related categories) as SOCO scores them (err < 0.1 x the "
             "target box's longest side; per pair, per pair_group, then over groups).", ""]
    for (dataset, feature), d in rows.groupby(["dataset", "feature"], sort=False):
        metrics = list(dict.fromkeys(d["metric"]))
        pcks = [m.split(" ", 1)[0] for m in metrics if m.startswith("PCK@")]
        alpha = "PCK@0.1" if "PCK@0.1" in pcks else (pcks[0] if pcks else "")
        shown = _shown(metrics, alpha)
        head = [m.replace(f"{alpha} ", "").replace("left_right_confusion", "L/R confusion") for m in shown]
        lines += [f"### {dataset}: {feature} ({alpha})", "", "| model | " + " | ".join(head) + " |",
                  "|---|" + "---|" * len(shown)]
        for model, m in d.groupby("model", sort=False):
            by = m.drop_duplicates("metric").set_index("metric")
            cells = [cell(by.at[k, "value"], by.at[k, "ci_low"], by.at[k, "ci_high"]) if k in by.index else "n/a"
                     for k in shown]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
