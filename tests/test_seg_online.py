"""The online segmentation probe: draws, learning under augmentation, one forward for all heads,
exact resume after SIGKILL, checkpoint keys, progress lines, slide evaluation below the crop."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from partaware.data.seg_pipeline import SegPipeline
from partaware.data.segfolder import list_samples
from partaware.models import build_encoder
from partaware.seg_online import (SegDraws, draw_loader, evaluate_online, image_of_draw, train_online)
from partaware.evals.seg_heads import STATE_FORMAT, HeadStateError
from workflow_runner import bench_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENCODER = {"arch": "vit_tiny_patch16_224", "img_size": 32, "weights": "random",
           "timm_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 8}}
BLOCKS = [1, 2]
DIRS = {"part": "ann", "object": "ann_object"}
SETS = {"part": 3, "object": 2}
COLOURS = np.array([(0, 0, 0), (220, 30, 30), (30, 200, 40), (40, 60, 230)], np.float64)
OBJECT_OF_PART = np.array([0, 1, 1, 2], np.uint8)  # background, red + green -> 1, blue -> 2
TRAIN = dict(blocks=BLOCKS, batch_size=4, lr=0.05, weight_decay=0.0, warmup_iters=5, device="cpu")


def pipeline(**kw):
    return SegPipeline(**{"crop": 32, "train_scale": (96, 64), "test_scale": (96, 64), "stride": 16, **kw})


def make_split(root, split, n, seed):
    """Colour-coded toy images 64-96 px: four cells of background (black) and red / green / blue
    parts; objects group red + green. Labels 0 = background, as the real PNGs."""
    rng = np.random.default_rng(seed)
    for d in ("img", "ann", "ann_object"):
        (root / d / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(64, 97, size=2))
        ys, xs = int(rng.integers(h // 3, 2 * h // 3)), int(rng.integers(w // 3, 2 * w // 3))
        lab = np.zeros((h, w), np.uint8)
        for c, (y1, y2, x1, x2) in zip(rng.permutation(4), [(0, ys, 0, xs), (0, ys, xs, w),
                                                           (ys, h, 0, xs), (ys, h, xs, w)]):
            lab[y1:y2, x1:x2] = c
        img = np.clip(COLOURS[lab] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "img" / split / f"{i:03d}.jpg", quality=95)
        Image.fromarray(lab).save(root / "ann" / split / f"{i:03d}.png")
        Image.fromarray(OBJECT_OF_PART[lab]).save(root / "ann_object" / split / f"{i:03d}.png")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toyseg")
    make_split(root, "train", 8, 0)
    make_split(root, "val", 4, 1)
    return root, list_samples(root, "train", DIRS), list_samples(root, "val", DIRS)


def encoder():
    return build_encoder(ENCODER)


def counting(enc):
    """Count the encoder's dense forwards."""
    calls = []
    dense = enc.dense
    enc.dense = lambda x, blocks: calls.append(tuple(x.shape)) or dense(x, blocks)
    return calls


def close_weights(a, b):
    """Equal up to float rounding: the heads of a run are one conv, whose matrix product may round
    a head's logits differently with more output channels beside them (tests/test_seg_heads.py)."""
    return sorted(a) == sorted(b) and all(
        torch.allclose(x, y, rtol=1e-5, atol=1e-6)
        for n in a for x, y in zip(a[n].state_dict().values(), b[n].state_dict().values()))


def same_weights(a, b):
    return sorted(a) == sorted(b) and all(
        torch.equal(x, y) for n in a for x, y in zip(a[n].state_dict().values(), b[n].state_dict().values()))


# ------------------------------------------------------------------------------------ draws

def test_draws_are_fixed_by_their_number_and_passes_are_shuffled(toy):
    _, train, _ = toy
    ds = SegDraws(train, SETS, pipeline(), seed=0)
    img, labels, hw = ds[13]
    img2, labels2, hw2 = ds[13]
    assert torch.equal(img, img2) and torch.equal(labels, labels2) and torch.equal(hw, hw2)
    assert img.shape == (32, 32, 3) and img.dtype == torch.uint8 and labels.shape == (2, 32, 32)
    h, w = hw.tolist()
    assert (labels[:, h:] == 255).all() and (labels[:, :, w:] == 255).all() and (img[h:] == 0).all()
    assert set(labels[0].unique().tolist()) <= {0, 1, 2, 255}
    assert set(labels[1].unique().tolist()) <= {0, 1, 255}
    # the same image drawn in another pass (draw 13 is in pass 1) gets another view
    again = next(d for d in range(0, 8) if image_of_draw(d, 8, 0) == image_of_draw(13, 8, 0))
    assert not torch.equal(ds[again][0], img)
    passes = [[image_of_draw(d, 8, 0) for d in range(p * 8, (p + 1) * 8)] for p in range(3)]
    assert all(sorted(p) == list(range(8)) for p in passes) and passes[0] != passes[1]
    assert passes[0] != list(range(8))


def test_batches_do_not_depend_on_workers_or_the_start(toy):
    _, train, _ = toy
    ds = SegDraws(train, SETS, pipeline(), seed=1)
    serial = list(draw_loader(ds, 4, 0, 3, num_workers=0))
    parallel = list(draw_loader(ds, 4, 0, 3, num_workers=2))
    late = list(draw_loader(ds, 4, 2, 3))  # a resume at iteration 2 gets batch 2 as before
    for a, b in zip(serial, parallel):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(late) == 1 and all(torch.equal(x, y) for x, y in zip(late[0], serial[2]))


# --------------------------------------------------------------------------------- training

def test_probe_learns_separable_toy_problem_under_augmentation(toy):
    _, train, val = toy
    enc = encoder()
    heads = train_online(enc, train, SETS, pipeline(), iters=60, **TRAIN)
    assert all(not any(isinstance(m, torch.nn.BatchNorm2d) for m in h.modules()) for h in heads.values())
    m = evaluate_online(enc, heads, val, SETS, pipeline(), BLOCKS, device="cpu")
    assert m["part"]["mIoU"] > 0.8 and m["object"]["mIoU"] > 0.8, m  # chance is ~0.2 / ~0.33
    assert m["part"]["iou"].shape == (3,) and m["object"]["iou"].shape == (2,)


@pytest.mark.parametrize("alone,cat_max_ratio", [("part", 0.75), ("object", 1.0)])
def test_one_forward_serves_all_heads_and_equals_each_head_alone(toy, alone, cat_max_ratio):
    """The first label set steers RandomCrop, so a head alone sees the same draws when it is that
    set, or when the crop check is off (cat_max_ratio 1)."""
    _, train, _ = toy
    pipe = pipeline(cat_max_ratio=cat_max_ratio)
    enc = encoder()
    calls = counting(enc)
    both = train_online(enc, train, SETS, pipe, iters=6, **TRAIN)
    assert len(calls) == 6  # one encoder forward per iteration for both heads
    single = train_online(encoder(), train, {alone: SETS[alone]}, pipe, iters=6, **TRAIN)
    assert close_weights({alone: both[alone]}, single)


def test_bn_conv_head_is_a_variant(toy):
    _, train, _ = toy
    heads = train_online(encoder(), train, {"part": 3}, pipeline(), iters=2, head="bn_conv", **TRAIN)
    assert isinstance(heads["part"].bn, torch.nn.BatchNorm2d)


CHILD = r"""
import json, sys, time, pathlib, torch
from partaware.data.seg_pipeline import SegPipeline
from partaware.data.segfolder import list_samples
from partaware.models import build_encoder
from partaware.seg_online import train_online
torch.set_num_threads(1)
cfg = json.loads(sys.argv[1])
enc = build_encoder(cfg["encoder"])
dense, calls = enc.dense, []
def hang_after_checkpoint(x, blocks):
    calls.append(1)
    if len(calls) == cfg["hang_at"]:  # past the first checkpoint: say so, then wait to be killed
        pathlib.Path(cfg["marker"]).write_text("ready")
        time.sleep(600)
    return dense(x, blocks)
enc.dense = hang_after_checkpoint
train_online(enc, list_samples(cfg["root"], "train", cfg["dirs"]), cfg["sets"],
             SegPipeline(**cfg["pipeline"]), state_path=cfg["ckpt"], resume_key="k1", **cfg["train"])
"""


def test_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(toy, tmp_path, caplog):
    root, train, _ = toy
    pipe = dict(crop=32, train_scale=[96, 64], test_scale=[96, 64], stride=16)
    kw = dict(TRAIN, iters=12, save_every=4)
    ckpt, marker = tmp_path / "seg.ckpt", tmp_path / "ready"
    cfg = dict(encoder=ENCODER, root=str(root), dirs=DIRS, sets=SETS, pipeline=pipe, train=kw,
               ckpt=str(ckpt), marker=str(marker), hang_at=7)
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"the training child exited early ({child.returncode}): {child.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("the training child never reached its 7th iteration")
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    state = torch.load(ckpt, weights_only=True)
    assert state["iteration"] == 4 and state["format"] == STATE_FORMAT
    assert not list(tmp_path.glob(".seg.ckpt.tmp*"))  # published whole, no leftovers

    enc = encoder()
    calls = counting(enc)
    with caplog.at_level("INFO", logger="partaware.seg_online.train"):
        resumed = train_online(enc, train, SETS, pipeline(), state_path=ckpt, resume_key="k1", **kw)
    assert "resuming" in caplog.text and "iteration 4" in caplog.text and len(calls) == 8
    uninterrupted = train_online(encoder(), train, SETS, pipeline(), **kw)
    assert same_weights(resumed, uninterrupted)  # bitwise
    assert torch.load(ckpt, weights_only=True)["iteration"] == 12


def test_checkpoint_of_another_run_is_ignored_and_a_finished_one_is_reused(toy, tmp_path, caplog):
    _, train, _ = toy
    ckpt = tmp_path / "seg.ckpt"
    kw = dict(TRAIN, iters=4, save_every=2, state_path=ckpt)
    first = train_online(encoder(), train, {"part": 3}, pipeline(), resume_key="run-a", **kw)
    with caplog.at_level("INFO", logger="partaware.seg_online.train"):
        other = train_online(encoder(), train, {"part": 3}, pipeline(), resume_key="run-b", seed=5, **kw)
    assert "ignoring head state" in caplog.text and "run-a" in caplog.text
    fresh = train_online(encoder(), train, {"part": 3}, pipeline(), seed=5, iters=4, **TRAIN)
    assert same_weights(other, fresh)
    assert not same_weights(first, other)
    enc = encoder()
    calls = counting(enc)
    again = train_online(enc, train, {"part": 3}, pipeline(), resume_key="run-b", seed=5, **kw)
    assert calls == [] and same_weights(again, other)  # finished: loaded, nothing retrained
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(HeadStateError, match="delete it"):
        train_online(encoder(), train, {"part": 3}, pipeline(), resume_key="run-b", **kw)


def test_progress_lines_give_iteration_loss_rate_and_eta(toy, caplog):
    _, train, _ = toy
    with caplog.at_level("INFO", logger="partaware.seg_online.train"):
        train_online(encoder(), train, SETS, pipeline(), iters=3, log_every_s=0, **TRAIN)
    lines = [r.getMessage() for r in caplog.records if " iterations" in r.getMessage() and "loss" in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == [f"{i}/3 iterations" for i in (1, 2, 3)]
    assert all("loss part " in s and " object " in s and "img/s" in s and "ETA" in s for s in lines)
    waiting = [int(s.split("% of the time waiting on the loader")[0].rsplit(" ", 1)[1]) for s in lines]
    assert all(0 <= w <= 100 for w in waiting)  # says whether the loader or the step holds it back
    # the lines as a job writes them (cli.py's format) are what bench/workflow_rates.py reads
    job_format = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    text = "\n".join(job_format.format(r) for r in caplog.records)
    rates = bench_module("workflow_rates")
    assert [int(m[2]) for m in map(rates.SEG_STEP.match, text.splitlines()) if m] == [1, 2, 3]
    assert rates.SEG_WAIT.findall(text) == [str(w) for w in waiting]
    caplog.clear()
    with caplog.at_level("INFO", logger="partaware.seg_online.train"):
        train_online(encoder(), train, SETS, pipeline(), iters=3, log_every_s=3600, **TRAIN)
    quiet = [r.getMessage() for r in caplog.records if " iterations" in r.getMessage() and "loss" in r.getMessage()]
    assert [line.split(",")[0] for line in quiet] == ["3/3 iterations"]  # only the end


# ------------------------------------------------------------------------------- evaluation

def test_evaluation_runs_windows_smaller_than_the_crop(toy):
    """A test scale below the crop gives windows of the whole (smaller) side, run unpadded."""
    _, train, val = toy
    enc = encoder()
    heads = train_online(enc, train, SETS, pipeline(), iters=30, **TRAIN)
    calls = counting(enc)
    small = pipeline(test_scale=(40, 24))
    m = evaluate_online(enc, heads, val, SETS, small, BLOCKS, device="cpu", window_batch=1)
    assert calls and all(c[2] < 32 for c in calls)  # every window is shorter than the crop
    assert all(np.isfinite(m[n]["mIoU"]) and m[n]["aAcc"] > 0.5 for n in SETS), m
