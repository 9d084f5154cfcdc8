"""The tidy result rows every evaluation writes (one per feature x metric [x seed, epoch kind]),
so cached and online evaluations fill the same columns of results/table.csv."""
from __future__ import annotations

COLUMNS = ("dataset", "task", "model", "group", "weights", "feature", "label_set", "protocol", "notes",
           "metric", "value", "n", "seed", "skipped", "ci_low", "ci_high", "images", "skipped_rows",
           "min_class_n", "ci_images")

# The `protocol` column: how a row was measured, as a word readers filter on (only `paper` rows
# are compared with the paper's numbers); the free-text `notes` column says the details.
PROTOCOLS = {
    "paper": "measured the paper's way (PROTOCOL.md): compared with its reported numbers",
    "cached": "a fast screen on one stored fixed view per image, not the paper's protocol",
    "variant": "the paper's data and models, measured another way (the notes say how)",
    "exact": "an exact measurement with no training and no counterpart in the paper",
}


def context(cfg: dict, dataset: str, model: str) -> dict:
    m = cfg["models"][model]
    return {"dataset": dataset, "model": model, "group": m.get("group", ""), "weights": m["weights"]}


def result_row(ctx: dict, task: str, feature: str, metric: str, value: float, n: int, **extra) -> dict:
    """One tidy row; `ci_low` / `ci_high` (the bootstrap interval, `intervals.attach`) NaN until set.
    `protocol` is one of PROTOCOLS (default `paper`), `notes` free text."""
    protocol = extra.pop("protocol", "paper")
    if protocol not in PROTOCOLS:
        raise ValueError(f"result protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}; "
                         "put the details in `notes` (partaware.results.PROTOCOLS)")
    return {"dataset": ctx["dataset"], "task": task, "model": ctx["model"], "group": ctx["group"],
            "weights": ctx["weights"], "feature": feature, "label_set": extra.pop("label_set", "part"),
            "protocol": protocol, "notes": extra.pop("notes", ""), "metric": metric, "value": float(value),
            "n": int(n), "seed": extra.pop("seed", ""), "skipped": extra.pop("skipped", 0),
            "ci_low": float(extra.pop("ci_low", "nan")), "ci_high": float(extra.pop("ci_high", "nan")), **extra}


def segmentation_rows(ctx: dict, label_set: str, metrics: dict, *, blocks, n: int, protocol: str,
                      seed: int, skipped: int = 0, notes: str = "", **cover) -> tuple[list[dict], list[dict]]:
    """mIoU / mAcc / aAcc rows and the per-class IoU rows of one label set's probe; `cover`: the
    rows' `images` and `skipped_rows` (`coverage`), where known."""
    feature = "blocks " + "+".join(str(b) for b in blocks)
    rows = [result_row(ctx, "segmentation", feature, metric, 100 * metrics[metric], n, label_set=label_set,
                       protocol=protocol, notes=notes, seed=seed, skipped=skipped, **cover)
            for metric in ("mIoU", "mAcc", "aAcc")]
    per_class = [{**ctx, "label_set": label_set, "protocol": protocol, "class": c + 1, "IoU": 100 * float(iou)}
                 for c, iou in enumerate(metrics["iou"])]
    return rows, per_class


def segmentation_protocol(sc: dict, protocol: str) -> tuple[str, str]:
    """The protocol and notes of a segmentation row: what was run, and where it departs from the paper."""
    if protocol == "paper":
        text = "augmented online training, slide inference at full resolution"
    else:
        text = "one fixed view per image, shuffled (a fast screen, not the paper's protocol)"
    text += "; 1x1 conv head" if sc["head"] == "conv" else "; BatchNorm + 1x1 conv head (variant)"
    if (sc["iters"], sc["batch_size"]) != (160000, 16):
        text += f"; {sc['iters']} iterations of batch {sc['batch_size']} (paper: 160000 of 16)"
    return protocol, text
