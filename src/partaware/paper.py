"""The numbers Zhu et al. report (PROTOCOL.md section 6), as data for the comparison column.

Keyed like the rows of `results/table.csv`: (dataset, task, label_set, feature, metric, model).
The paper's names map onto the table's as follows:

- retrieval AP: "enc" is the mean of the patch tokens (feature `mean`), "proj" the projection
  head's output (feature `proj`); the paper's "-" (no head) means no value.
- part classification: "lin" is the linear probe on CLS (`linear`, `cls`), "att" the attentive
  probe on the tokens (`attentive`, `tokens`); both are the best test epoch (`top1_best_epoch`).
- part segmentation mIoU: label set `part` of ade20k, pascal_part and lip, with the paper's
  blocks 4, 6, 8, 12 (feature `blocks 4+6+8+12`).
- object segmentation (Table 2): ADE20K with its 150 classes (ADEChallengeData2016), dataset
  `ade20k150`, label set `object`: mIoU, mAcc and aAcc, same feature.
- ImageNet-1k top-1 (Table 1): dataset `imagenet` (kind imagefolder), label set `object`, the
  linear probe on CLS (`linear`, `cls`) and the attentive probe (`attentive`, `tokens`), best
  epoch (`top1_best_epoch`). Ours read one cached fixed view (no augmentation) and the attentive
  probe a per-class subset; the protocol column says so.

Left out on purpose: our `ade20k` `object` label set is ADE20K-Object (the 59 parents of the
parts), a different task from the 150 classes; its values and Pascal-Object's are only in the
paper's appendix (Figure 6), which could not be read.

Only results whose model and dataset names are those of configs/paper.yaml pick a value up.
"""
from __future__ import annotations

import pandas as pd

MODELS = ("deit", "mocov3", "dino", "beit", "mae", "cae", "ibot")
KEY = ["dataset", "task", "label_set", "feature", "metric", "model"]
SEG_FEATURE = "blocks 4+6+8+12"

_NA = None
# model: CUB enc, CUB proj, COCO enc, COCO proj, CUB lin, CUB att, COCO lin, COCO att
_PART = {
    "deit": (35.0, _NA, 44.1, _NA, 90.9, 92.9, 88.5, 91.4),
    "mocov3": (50.8, 28.4, 52.3, 36.8, 93.8, 96.0, 92.4, 95.3),
    "dino": (48.9, 31.7, 51.8, 41.2, 93.2, 95.2, 91.7, 94.5),
    "beit": (27.9, _NA, 35.3, _NA, 55.4, 86.5, 69.3, 86.5),
    "mae": (28.5, _NA, 37.1, _NA, 86.9, 92.8, 88.0, 93.9),
    "cae": (58.0, _NA, 57.0, _NA, 89.5, 95.8, 91.1, 95.5),
    "ibot": (49.3, 31.2, 59.2, 41.5, 93.8, 95.8, 92.1, 95.1),
}
_PART_COLUMNS = [  # (dataset, task, feature, metric) of each column above
    ("cub", "retrieval", "mean", "AP"), ("cub", "retrieval", "proj", "AP"),
    ("coco", "retrieval", "mean", "AP"), ("coco", "retrieval", "proj", "AP"),
    ("cub", "linear", "cls", "top1_best_epoch"), ("cub", "attentive", "tokens", "top1_best_epoch"),
    ("coco", "linear", "cls", "top1_best_epoch"), ("coco", "attentive", "tokens", "top1_best_epoch"),
]
# model: ADE20K-Part, Pascal-Part, LIP part segmentation mIoU
_SEG = {
    "deit": (27.3, 27.4, 41.4), "mocov3": (27.1, 27.1, 41.9), "dino": (28.9, 27.8, 41.0),
    "beit": (18.6, 14.8, 27.2), "mae": (26.3, 24.3, 38.2), "cae": (28.4, 27.8, 43.7),
    "ibot": (32.2, 30.7, 44.6),
}
_SEG_DATASETS = ("ade20k", "pascal_part", "lip")
# model: ADE20K-150 object segmentation (Table 2), one value per metric below
_SEG150 = {
    "deit": (34.9, 44.2, 75.4), "mocov3": (34.7, 43.9, 75.9), "dino": (34.5, 43.5, 76.1),
    "beit": (17.8, 23.7, 64.9), "mae": (27.1, 34.8, 71.6), "cae": (32.6, 42.2, 75.2),
    "ibot": (38.3, 47.4, 78.1),
}
_SEG150_METRICS = ("mIoU", "mAcc", "aAcc")
# model: ImageNet-1k top-1 (Table 1), linear probe on CLS, attentive probe on the tokens
_IMAGENET = {
    "deit": (81.8, 81.8), "mocov3": (76.2, 77.0), "dino": (77.3, 77.8), "beit": (41.8, 51.9),
    "mae": (67.8, 74.2), "cae": (70.4, 77.1), "ibot": (79.5, 79.8),
}
_IMAGENET_COLUMNS = (("linear", "cls"), ("attentive", "tokens"))


def _build() -> dict[tuple, float]:
    out = {}
    for model, values in _PART.items():
        for (dataset, task, feature, metric), value in zip(_PART_COLUMNS, values):
            if value is not None:
                out[(dataset, task, "part", feature, metric, model)] = value
    for model, values in _SEG.items():
        for dataset, value in zip(_SEG_DATASETS, values):
            out[(dataset, "segmentation", "part", SEG_FEATURE, "mIoU", model)] = value
    for model, values in _SEG150.items():
        for metric, value in zip(_SEG150_METRICS, values):
            out[("ade20k150", "segmentation", "object", SEG_FEATURE, metric, model)] = value
    for model, values in _IMAGENET.items():
        for (task, feature), value in zip(_IMAGENET_COLUMNS, values):
            out[("imagenet", task, "object", feature, "top1_best_epoch", model)] = value
    return out


PAPER: dict[tuple, float] = _build()


def paper_value(dataset, task, label_set, feature, metric, model) -> float | None:
    """The reported value for one table cell, or None where the paper has none."""
    return PAPER.get((dataset, task, label_set, feature, metric, model))


def paper_table() -> pd.DataFrame:
    """The reported values as a tidy frame: the KEY columns plus `paper`."""
    return pd.DataFrame([(*k, v) for k, v in PAPER.items()], columns=[*KEY, "paper"])


def attach_paper(table: pd.DataFrame) -> pd.Series:
    """The paper value of every row of a tidy results table (NaN where none applies).

    Rows of random-initialised models never match, whatever they are called, and neither do rows
    whose protocol is not the paper's (e.g. the cached segmentation screen, or `query excluded`).
    """
    keyed = table.reindex(columns=KEY)
    keyed["label_set"] = keyed["label_set"].fillna("part")  # rows written before label sets
    values = [PAPER.get(k) for k in keyed.astype(str).itertuples(index=False, name=None)]
    out = pd.Series(values, index=table.index, dtype="float64")
    if "weights" in table:
        out[table["weights"].astype(str) == "random"] = float("nan")
    if "protocol" in table:  # only a measurement made the paper's way is compared with the paper
        out[table["protocol"].astype(str) != "paper"] = float("nan")  # the enum (results.PROTOCOLS)
    return out
