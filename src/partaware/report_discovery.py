"""The part-discovery section of table.md (task `part_discovery`, issue 36): per dataset and
feature, each encoder's NMI, ARI and keypoint regression error at every K with its bootstrap
interval over test images. Kept apart from report.py, which only appends it."""
from __future__ import annotations

import math

import pandas as pd

TASK = "part_discovery"
_ORDER = ("NMI", "ARI", "keypoint_error")


def _cell(value, low, high) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    interval = f" [{low:.1f}, {high:.1f}]" if not (math.isnan(low) or math.isnan(high)) else ""
    return f"{value:.1f}{interval}"


def _key(metric: str) -> tuple[int, int]:
    name, k = metric.split("@", 1)
    return int(k), _ORDER.index(name) if name in _ORDER else len(_ORDER)


def part_discovery_section(table: pd.DataFrame) -> str:
    """Empty without part_discovery rows."""
    rows = table[table["task"] == TASK] if "task" in table else table.iloc[:0]
    if rows.empty:
        return ""
    lines = ["", "## Part discovery (k-means of the encoder's own tokens; not in the paper)", "",
             "Nothing trained on the encoder: k-means (K clusters) of L2-normalised dense tokens of box-cropped "
             "train images, every test token assigned to its nearest centroid. `NMI@K`, `ARI@K` (higher is "
             "better): the clusters of the token cells holding the test keypoints against the keypoint identity "
             "(left and right differ), all keypoints pooled (Choudhury et al. 2021, FG variant). "
             "`keypoint_error@K` (**lower is better**): Huang & Li's (2020) linear regression from the clusters' "
             "centroids to the keypoints, mean L2 error x 100 in box units. `[lo, hi]`: bootstrap interval over "
             "test images. Detail per keypoint: `part_discovery_keypoints.csv`.", ""]
    for (dataset, feature), d in rows.groupby(["dataset", "feature"], sort=False):
        metrics = sorted(dict.fromkeys(d["metric"]), key=_key)
        n = d.loc[d["metric"].str.startswith("NMI@"), "n"]
        lines += [f"### {dataset}: {feature} ({int(n.max()) if len(n) else 0} test keypoints)", "",
                  "| model | " + " | ".join(m + (" ↓" if m.startswith("keypoint_error") else "") for m in metrics)
                  + " |", "|---|" + "---|" * len(metrics)]
        for model, m in d.groupby("model", sort=False):
            by = m.drop_duplicates("metric").set_index("metric")
            cells = [_cell(float(by.at[k, "value"]), float(by.at[k, "ci_low"]), float(by.at[k, "ci_high"]))
                     if k in by.index else "n/a" for k in metrics]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
