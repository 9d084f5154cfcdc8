"""The `partaware segment` job: the paper's segmentation protocol for one (dataset, model).

Builds the frozen encoder at the dataset's crop size, trains one head per label set online
(`train.py`, resumable from `state`), scores them with slide inference on the evaluated split
(`infer.py`) and returns the same tidy rows as the cached protocol, labelled `paper: ...`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from .. import kinds, roles
from ..data import segfolder
from ..data.errors import DataError
from ..devices import autocast_dtype, resolve_device
from ..evals.bootstrap import segmentation_sums
from ..intervals import attach, settings as stats_settings
from ..job_threads import loader_workers
from ..results import context, segmentation_protocol, segmentation_rows
from ..specs import segment_state_key
from .infer import evaluate_online
from .train import train_online

log = logging.getLogger(__name__)


def screen(samples: list[dict], on_bad_image: str) -> tuple[list[dict], list[str]]:
    """Samples whose image opens and meets the minimum size (read from the header only); the
    others are an error naming the file, or with `skip` left out and listed."""
    kept, skipped = [], []
    for sample in samples:
        try:
            try:
                with Image.open(sample["img"]) as im:
                    size = im.size
            except OSError as err:
                raise DataError(f"{sample['img']}: image unreadable ({err}); restore the file, or set "
                                "`data.on_bad_image: skip` to leave it out") from None
            segfolder.check_size(sample["img"], size)
        except DataError as err:
            if on_bad_image != "skip":
                raise
            skipped.append(str(err))
            continue
        kept.append(sample)
    return kept, skipped


def run_segment(cfg: dict, dataset: str, model: str, state: Path, checkpoint: Path | None = None):
    """Train and evaluate; returns (result rows, per-class IoU rows)."""
    from ..models.encoder import build_encoder

    ds, sc, mcfg = cfg["datasets"][dataset], cfg["segmentation"], cfg["models"][model]
    kind = kinds.of(ds)
    pipeline = kind.pipeline(ds)
    device = resolve_device(cfg["device"])
    amp = autocast_dtype(cfg["extract"]["precision"], device)
    encoder = build_encoder({**mcfg, "img_size": pipeline.crop}, checkpoint).to(device).eval()
    train_split, val_split = roles.task_splits(kind, ds, "segmentation")
    train, skipped_train = screen(kind.samples(ds, train_split), cfg["data"]["on_bad_image"])
    val, skipped_val = screen(kind.samples(ds, val_split), cfg["data"]["on_bad_image"])
    for reason in skipped_train + skipped_val:
        log.warning("skipped: %s", reason)
    label_sets = {name: spec["classes"] for name, spec in ds["label_sets"].items()}
    workers = loader_workers(sc["num_workers"])  # auto: the job's threads - 1
    log.info("%s / %s: %d training images, %d evaluated; crop %d, train scale %s, test scale %s, stride %d; "
             "device %s, %d loader workers", dataset, model, len(train), len(val), pipeline.crop,
             pipeline.train_scale, pipeline.test_scale, pipeline.stride, device, workers)
    heads = train_online(
        encoder, train, label_sets, pipeline, blocks=ds["blocks"], iters=sc["iters"],
        batch_size=sc["batch_size"], lr=sc["lr"], weight_decay=sc["weight_decay"],
        warmup_iters=sc["warmup_iters"], power=sc["power"], avg_non_ignore=sc["avg_non_ignore"],
        head=sc["head"], seed=cfg["seed"], device=device, amp=amp, num_workers=workers,
        state_path=state, save_every=sc["checkpoint_every"],
        resume_key=segment_state_key(cfg, dataset, model, encoder.checkpoint_sha256 or ""),
        log_every_s=sc["log_every_s"], forward_batch=sc["forward_batch"], compile=sc["compile"])
    metrics = evaluate_online(encoder, heads, val, label_sets, pipeline, ds["blocks"], device=device, amp=amp,
                              num_workers=workers, window_batch=sc["window_batch"], log_every_s=sc["log_every_s"])
    ctx, (protocol, notes) = context(cfg, dataset, model), segmentation_protocol(sc, "paper")
    notes = "; ".join(filter(None, [notes, getattr(kind, "label_note", "")]))  # a kind's labelling choices
    images = [s.get("row", i) for i, s in enumerate(val)]  # the evaluated images, in the order scored
    rows, per_class = [], []
    skipped = len(skipped_train) + len(skipped_val)
    cover = {"images": len(train) + len(val), "skipped_rows": skipped}  # as the cached rows count (train + val)
    for name in label_sets:
        r, pc = segmentation_rows(ctx, name, metrics[name], blocks=ds["blocks"], n=len(val), protocol=protocol,
                                  notes=notes, seed=cfg["seed"], skipped=skipped, **cover)
        rows += attach(r, segmentation_sums(**metrics[name]["per_image"], image_ids=images), stats_settings(cfg))
        per_class += pc
    return rows, per_class
