"""The tidy result rows every evaluation writes (one per feature x metric [x seed, epoch kind]),
so cached and online evaluations fill the same columns of results/table.csv."""
from __future__ import annotations

COLUMNS = ("dataset", "task", "model", "group", "weights", "feature", "label_set", "protocol",
           "metric", "value", "n", "seed", "skipped", "ci_low", "ci_high", "images", "skipped_rows",
           "min_class_n", "ci_images")


def context(cfg: dict, dataset: str, model: str) -> dict:
    m = cfg["models"][model]
    return {"dataset": dataset, "model": model, "group": m.get("group", ""), "weights": m["weights"]}


def result_row(ctx: dict, task: str, feature: str, metric: str, value: float, n: int, **extra) -> dict:
    """One tidy row; `ci_low` / `ci_high` (the bootstrap interval, `intervals.attach`) NaN until set."""
    return {"dataset": ctx["dataset"], "task": task, "model": ctx["model"], "group": ctx["group"],
            "weights": ctx["weights"], "feature": feature, "label_set": extra.pop("label_set", "part"),
            "protocol": extra.pop("protocol", "paper"), "metric": metric, "value": float(value),
            "n": int(n), "seed": extra.pop("seed", ""), "skipped": extra.pop("skipped", 0),
            "ci_low": float(extra.pop("ci_low", "nan")), "ci_high": float(extra.pop("ci_high", "nan")), **extra}


def segmentation_rows(ctx: dict, label_set: str, metrics: dict, *, blocks, n: int, protocol: str,
                      seed: int, skipped: int, **cover) -> tuple[list[dict], list[dict]]:
    """mIoU / mAcc / aAcc rows and the per-class IoU rows of one label set's probe; `cover`: the
    rows' `images` and `skipped_rows` (`coverage`), where known."""
    feature = "blocks " + "+".join(str(b) for b in blocks)
    rows = [result_row(ctx, "segmentation", feature, metric, 100 * metrics[metric], n, label_set=label_set,
                       protocol=protocol, seed=seed, skipped=skipped, **cover) for metric in ("mIoU", "mAcc", "aAcc")]
    per_class = [{**ctx, "label_set": label_set, "protocol": protocol, "class": c + 1, "IoU": 100 * float(iou)}
                 for c, iou in enumerate(metrics["iou"])]
    return rows, per_class


def segmentation_protocol(sc: dict, protocol: str) -> str:
    """The protocol column of a segmentation row: what was run, and where it departs from the paper."""
    if protocol == "paper":
        text = "paper: augmented online training, slide inference at full resolution"
    else:
        text = "cached: one fixed view per image, shuffled (a fast screen, not the paper's protocol)"
    text += "; 1x1 conv head" if sc["head"] == "conv" else "; BatchNorm + 1x1 conv head (variant)"
    if (sc["iters"], sc["batch_size"]) != (160000, 16):
        text += f"; {sc['iters']} iterations of batch {sc['batch_size']} (paper: 160000 of 16)"
    return text
