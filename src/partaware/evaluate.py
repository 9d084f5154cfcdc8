"""Glue between the feature stores and the pure evaluation functions in `evals/`.

Each function reads what its task needs from published stores (never an encoder), runs the
evaluation and returns tidy result rows: one per (feature, metric[, seed, epoch kind]).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .devices import resolve_device
from .intervals import attach, settings as stats_settings
from .results import context, result_row, segmentation_protocol  # noqa: F401 - context: this module's API
from .results import segmentation_rows as seg_result_rows
from .coverage import combined, min_class_count, store_coverage
from .store import FeatureStore

log = logging.getLogger(__name__)

def _valid(store: FeatureStore) -> np.ndarray:
    return store.read("valid").astype(bool)


def _image_ids(cfg: dict, ctx: dict, store: FeatureStore, valid: np.ndarray) -> np.ndarray | None:
    """The image id of each valid row, which the bootstrap resamples: the `image` array of a part
    kind's store (its rows are patches); kinds without a part index store one row per image, so
    there `row` is the image. None (no interval, said once) for a part store extracted before
    stores held `image`."""
    from . import kinds

    names = store.array_names()
    if "image" in names:
        return store.read("image")[valid]
    ds = cfg["datasets"].get(ctx["dataset"], {})
    if "row" in names and "kind" in ds and not kinds.of(ds).has_index:
        return store.read("row")[valid]
    log.info("%s holds no image ids (extracted before stores kept them): no confidence intervals from it; "
             "delete the store and rerun the workflow to get them", store.paths[0])
    return None


def retrieval_rows(cfg: dict, ctx: dict, store: FeatureStore) -> list[dict]:
    from .blocks import array_of, features as block_features
    from .evals.retrieval import average_precision_per_query, degenerate_note, summarise_checked

    rc = cfg["retrieval"]
    valid = _valid(store)
    labels = store.read("label")[valid]
    protocol = "query excluded" if rc["exclude_self"] else "paper (query included)"
    images, stats = _image_ids(cfg, ctx, store, valid), stats_settings(cfg)
    degenerate, note = degenerate_note(labels, rc["exclude_self"])
    cover = {**store_coverage(store, valid), "min_class_n": min_class_count(labels)}
    if note:  # the rows count them in `degenerate`
        log.warning("%s: %s", store.paths[0], note)
    rows = []
    for feature in rc["features"] + block_features(store.array_names()):  # then `block k mean`, ...
        if array_of(feature) not in store.array_names():  # e.g. `proj` of a model without a projection head
            log.warning("%s has no %r array (the model does not give that feature): its rows say n/a",
                        store.paths[0], feature)
            rows += [result_row(ctx, "retrieval", feature, metric, float("nan"), 0, protocol=protocol, **cover)
                     for metric in ("AP", "mAP")]
            continue
        feats = store.read_checked(array_of(feature), valid=valid)[valid].astype(np.float32)
        ap = average_precision_per_query(feats, labels, exclude_self=rc["exclude_self"],
                                         memory_mb=rc["memory_mb"], device=resolve_device(cfg["device"]))
        summary = summarise_checked(ap, labels)
        rows += attach([result_row(ctx, "retrieval", feature, metric, 100 * summary[metric], len(labels),
                                   protocol=protocol, degenerate=degenerate, **cover)
                        for metric in ("AP", "mAP")],
                       _sums("retrieval", images if degenerate < len(labels) else None, ap, labels), stats)
    return rows


def _sums(kind: str, images, *values):
    """Per-image sums for the bootstrap (`evals.bootstrap`), None without image ids."""
    from .evals import bootstrap as BS

    if images is None:
        return None
    if kind == "retrieval":
        return BS.retrieval_sums(values[0], images, values[1])
    if kind == "accuracy":
        return BS.accuracy_sums(values[0], images)
    return BS.segmentation_sums(**values[0], image_ids=images)


def _split_xy(store: FeatureStore, feature: str):
    valid = _valid(store)
    feats = store.read_checked(feature, valid=valid)[valid].astype(np.float32)
    return feats, store.read("label")[valid], store_coverage(store, valid)


def _num_classes(cfg: dict, dataset: str, stores, *label_arrays) -> int:
    """The probe's output size: the configured parts, else the class list the stores record (an
    image folder's class folders, some of which may hold no row), else the largest label + 1."""
    parts = cfg["datasets"][dataset].get("parts")
    if parts:
        return len(parts)
    recorded = [len(s.attrs["classes"]) for s in stores if s.attrs.get("classes")]
    return max(recorded) if recorded else int(max(int(a.max()) for a in label_arrays) + 1)


def _as_stored(rows: list[dict], store: FeatureStore) -> list[dict]:
    """Rows with what the store says of its rows (`kinds` put it there): their label set, and a
    note on the view they were cached at for the protocol column (e.g. an image folder's crop)."""
    attrs = store.attrs
    note, label_set = attrs.get("protocol_note"), attrs.get("label_set")
    return [{**row, **({"label_set": label_set} if label_set else {}),
             **({"protocol": f"{row['protocol']}; {note}"} if note else {})} for row in rows]


def linear_rows(cfg: dict, ctx: dict, train: FeatureStore, test: FeatureStore) -> list[dict]:
    from .evals.probes import train_linear

    pc = cfg["linear"]
    xtr, ytr, sk1 = _split_xy(train, "cls")
    xte, yte, sk2 = _split_xy(test, "cls")
    classes = _num_classes(cfg, ctx["dataset"], (train, test), ytr, yte)
    images = _image_ids(cfg, ctx, test, _valid(test))
    rows = []
    for seed in pc["seeds"]:
        res = train_linear(xtr, ytr, xte, yte, classes, epochs=pc["epochs"], batch_size=pc["batch_size"],
                           lr=pc["lr"], momentum=pc["momentum"], weight_decay=pc["weight_decay"],
                           seed=seed, device=resolve_device(cfg["device"]))
        rows += _probe_rows(ctx, "linear", "cls", res, len(yte), seed,
                            {**combined(sk1, sk2), "min_class_n": min_class_count(yte)}, images, stats_settings(cfg))
    return _as_stored(rows, train)


def _probe_rows(ctx, task, feature, res, n, seed, cover, images=None, stats=None) -> list[dict]:
    """Best- and last-epoch rows, each with the interval of its own test correctness; `cover`:
    what the rows rest on (`coverage`)."""
    best = result_row(ctx, task, feature, "top1_best_epoch", 100 * res["best_acc"], n, seed=seed, **cover,
                      protocol="paper (best test epoch)")
    last = result_row(ctx, task, feature, "top1_last_epoch", 100 * res["last_acc"], n, seed=seed, **cover,
                      protocol="last epoch")
    if stats is None:
        return [best, last]
    return (attach([best], _sums("accuracy", images, res["best_correct"]), stats)
            + attach([last], _sums("accuracy", images, res["last_correct"]), stats))


def _token_batches(store: FeatureStore, batch_size: int, memory_mb: float, device: torch.device):
    """Token batches of the valid rows (see `store_batches.StoreBatches`): per-sample shuffled
    with `.epochs(seed)`, in stored order with `.epochs(None)`."""
    from .store_batches import StoreBatches

    return StoreBatches(store, "tokens", batch_size, memory_mb=memory_mb, pin_memory=device.type == "cuda")


def attentive_rows(cfg: dict, ctx: dict, train: FeatureStore, test: FeatureStore) -> list[dict]:
    from .evals.attentive import train_attentive

    pc = cfg["attentive"]
    bn_group, memory_mb = pc["bn_group"], pc["memory_mb"]
    device = resolve_device(cfg["device"])
    ytr, yte = train.read("label"), test.read("label")
    classes = _num_classes(cfg, ctx["dataset"], (train, test), ytr, yte)
    dim = train.info("tokens")["shape"][-1]
    cover = {**combined(store_coverage(train, _valid(train)), store_coverage(test, _valid(test))),
             "min_class_n": min_class_count(yte[_valid(test)])}
    # memory_mb is shared: the training tokens first (read every epoch in a new order), then the test's.
    train_batches = _token_batches(train, pc["batch_size"], memory_mb, device)
    test_batches = _token_batches(test, 256, memory_mb - train_batches.in_memory * train_batches.nbytes / 2**20,
                                  device)
    bn = "BN over the whole batch" if bn_group is None else f"BN over groups of {bn_group}"
    images = _image_ids(cfg, ctx, test, _valid(test))  # the test batches serve the valid rows in stored order
    rows = []
    for seed in pc["seeds"]:
        res = train_attentive(train_batches.epochs(seed), test_batches.epochs(None), classes, dim,
                              epochs=pc["epochs"], lr=pc["lr"], batch_size=pc["batch_size"],
                              momentum=pc["momentum"], weight_decay=pc["weight_decay"], seed=seed,
                              device=device, bn_group=bn_group)
        rows += _probe_rows(ctx, "attentive", "tokens", res, len(test_batches), seed, cover, images,
                            stats_settings(cfg))
    return _as_stored([{**row, "protocol": f"{row['protocol']}; {bn}"} for row in rows], train)


def logistic_rows(cfg: dict, ctx: dict, train: FeatureStore, test: FeatureStore) -> list[dict]:
    from .blocks import array_of, features as block_features
    from .evals.probes import train_logistic

    lc = cfg["logistic"]
    images = _image_ids(cfg, ctx, test, _valid(test))
    rows = []
    # the final `cls` (the paper's), then each block summary both stores hold (`block k mean`, `block k cls`)
    for feature in ["cls"] + [f for f in block_features(train.array_names()) if array_of(f) in test.array_names()]:
        xtr, ytr, sk1 = _split_xy(train, array_of(feature))
        xte, yte, sk2 = _split_xy(test, array_of(feature))
        res = train_logistic(xtr, ytr, xte, yte, Cs=lc["Cs"], val_fraction=lc["val_fraction"], seed=cfg["seed"])
        rows += attach([result_row(ctx, "logistic", feature, "top1", 100 * res["acc"], len(yte), seed=cfg["seed"],
                                   **combined(sk1, sk2), min_class_n=min_class_count(yte),
                                   protocol=f"L2 logistic regression, C={res['C']} chosen on a train split")],
                       _sums("accuracy", images, res["correct"]), stats_settings(cfg))
    return _as_stored(rows, train)


def _seg_batches(store: FeatureStore, blocks: list[int], label_set: str, batch_size: int,
                 memory_mb: int = 2048, seed: int | None = None):
    """(features, labels) batches of valid rows.

    Training (`seed` given): a callable taking the pass number, every pass in its own seeded
    order (`evals.segmentation.shuffled_batches`): single rows when the store fits in
    `memory_mb` (read once, revisited many times), else stored runs of `batch_size` rows shuffled
    as blocks, so disk reads stay sequential. Testing (`seed` None): store order.
    """
    from .evals.segmentation import pass_order, shuffled_batches

    valid = _valid(store)
    names = [f"layers/{b}" for b in blocks] + [f"labels/{label_set}"]
    row_bytes = sum(np.prod(store.info(n)["shape"][1:]) * np.dtype(store.info(n)["dtype"]).itemsize
                    for n in names)
    cached = None
    if row_bytes * store.n_rows <= memory_mb * 2**20:
        cached = {n: store.read_checked(n, valid=valid)[valid] for n in names}
    n_rows = int(valid.sum()) if cached is not None else store.n_rows

    def pack(part):
        feats = np.concatenate([part[n] for n in names[:-1]], axis=1)
        return torch.from_numpy(feats), torch.from_numpy(part[names[-1]])

    def read(lo, hi):
        if cached is not None:
            return {n: a[lo:hi] for n, a in cached.items()}
        keep = valid[lo:hi]
        return {n: store.read_checked(n, lo, hi, valid=keep)[keep] for n in names}

    def in_order(starts):
        for lo in starts:
            part = read(lo, min(lo + batch_size, n_rows))
            if len(part[names[-1]]):
                yield pack(part)

    starts = list(range(0, n_rows, batch_size))
    if seed is None:
        return lambda: in_order(starts)
    if cached is not None:
        return shuffled_batches(lambda rows: pack({n: a[rows] for n, a in cached.items()}),
                                n_rows, batch_size, seed)
    return lambda epoch: in_order([starts[i] for i in pass_order(len(starts), epoch, seed)])


def segmentation_rows(cfg: dict, ctx: dict, train: FeatureStore, val: FeatureStore) -> list[dict]:
    """The cached protocol: a probe per label set on the stored fixed views, shuffled per pass."""
    from .evals.segmentation import evaluate_seg_probe, train_seg_probe

    ds, sc = cfg["datasets"][ctx["dataset"]], cfg["segmentation"]
    device = resolve_device(cfg["device"])
    protocol = segmentation_protocol(sc, "cached")
    n = int(_valid(val).sum())
    cover = combined(store_coverage(train, _valid(train)), store_coverage(val, _valid(val)))
    # one row per image; the test batches serve the valid rows in stored order
    images = val.read("row")[_valid(val)] if "row" in val.array_names() else np.flatnonzero(_valid(val))
    rows, per_class = [], []
    for label_set, spec in ds["label_sets"].items():
        torch.manual_seed(cfg["seed"])
        model = train_seg_probe(_seg_batches(train, ds["blocks"], label_set, sc["batch_size"], seed=cfg["seed"]),
                                num_classes=spec["classes"], iters=sc["iters"], lr=sc["lr"],
                                weight_decay=sc["weight_decay"], warmup_iters=sc["warmup_iters"],
                                power=sc["power"], avg_non_ignore=sc["avg_non_ignore"], seed=cfg["seed"],
                                device=device, reduce_zero_label=True, head=sc["head"],
                                log_every_s=sc["log_every_s"])
        metrics = evaluate_seg_probe(model, _seg_batches(val, ds["blocks"], label_set, sc["batch_size"]),
                                     num_classes=spec["classes"], reduce_zero_label=True, device=device)
        r, pc = seg_result_rows(ctx, label_set, metrics, blocks=ds["blocks"], n=n, protocol=protocol,
                                seed=cfg["seed"], **cover)
        rows += attach(r, _sums("segmentation", images, metrics["per_image"]), stats_settings(cfg))
        per_class += pc
    return rows, per_class
