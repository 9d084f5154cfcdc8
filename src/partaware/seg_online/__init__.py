"""The paper's segmentation protocol on a frozen encoder (PROTOCOL.md section 5, issue 16).

`train_online` trains one linear head per label set from augmented views drawn every iteration
(mmseg 0.x's pipeline, `partaware.data.seg_pipeline`), one frozen encoder forward per batch for
all heads, checkpointing so a killed run resumes to the same weights; `evaluate_online` scores
them with slide inference at the test scale against the original label maps.
"""
from .draws import SegDraws, draw_loader, epoch_order, image_of_draw, view_rng
from .infer import evaluate_online
from .train import train_online

__all__ = ["SegDraws", "draw_loader", "epoch_order", "evaluate_online", "image_of_draw",
           "train_online", "view_rng"]
