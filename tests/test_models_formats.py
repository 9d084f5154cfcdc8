"""Every official checkpoint layout loads exactly, head included.

For each format a small model of the same family (depth 2, width 192, 32x32 input) gets random
weights, is written in the official layout (prefixes, nesting, q/v biases, gamma names, shared
relative position table, weight-normed heads, momentum encoders, decoders, ...) and loaded back
through `build_encoder`. Every tensor must land on its timm key and the features must equal the
source model's. The reference heads here are written from the official code, independently of
`partaware.models.heads`. Training checkpoints hold what the released `main_*.py` scripts save
besides the weights (optimizer state with numpy-scalar learning rates, the loss scaler, the
`args` Namespace, the epoch, ...), pickled under numpy 2's module names and, as the 2021-22
releases were, numpy 1's; they load without any opt-in and without a warning.
"""

from __future__ import annotations

import argparse
import copy
import warnings
import zipfile

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from partaware.models import build_encoder

VIT = dict(arch="vit_tiny_patch16_224", img_size=32, timm_kwargs={"depth": 2})
BEIT = dict(arch="beit_base_patch16_224", img_size=32,
            timm_kwargs={"depth": 2, "embed_dim": 192, "num_heads": 3})
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------- source models

def _randomize(module: nn.Module, seed: int) -> nn.Module:
    """Distinct non-trivial values everywhere, so a tensor on the wrong key cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module.eval()


def sincos_pos_embed(grid: int, dim: int) -> torch.Tensor:
    """2-D sin-cos position embedding with a zero CLS slot (MoCo v3 / CAE construction)."""
    gw, gh = torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                            torch.arange(grid, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_w = gw.flatten()[:, None] * omega[None]
    out_h = gh.flatten()[:, None] * omega[None]
    pe = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), pe], dim=1)


def source_vit(seed=0, arch="vit_tiny_patch16_224", fixed_pos=False):
    model = timm.create_model(arch, num_classes=0, depth=2, img_size=32)
    _randomize(model, seed)
    if fixed_pos:
        with torch.no_grad():
            model.pos_embed.copy_(sincos_pos_embed(2, model.embed_dim))
    return model


def source_beit(seed=0, cae=False):
    kw = dict(use_abs_pos_emb=True, use_shared_rel_pos_bias=False) if cae else \
        dict(use_abs_pos_emb=False, use_shared_rel_pos_bias=True)
    model = timm.create_model("beit_base_patch16_224", num_classes=0, global_pool="", depth=2,
                              embed_dim=192, num_heads=3, img_size=32, use_rel_pos_bias=False,
                              init_values=0.1, **kw)
    _randomize(model, seed)
    if cae:
        with torch.no_grad():
            model.pos_embed.copy_(sincos_pos_embed(2, 192))
    return model


def mocov3_mlp(num_layers, in_dim, mlp_dim, out_dim, seed):
    """moco/builder.py `_build_mlp`, with random BN running statistics."""
    layers = []
    for i in range(num_layers):
        d1 = in_dim if i == 0 else mlp_dim
        d2 = out_dim if i == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(d1, d2, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d2), nn.ReLU(inplace=True)]
        else:
            layers.append(nn.BatchNorm1d(d2, affine=False))
    mlp = _randomize(nn.Sequential(*layers), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in mlp:
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(1000)
    return mlp


class RefDINOHead(nn.Module):
    """DINO's DINOHead (use_bn=False): MLP with GELU, L2 norm, weight-normed last layer."""

    def __init__(self, in_dim, out_dim, hidden=64, bottleneck=32, seed=0, patch_branch=None):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, bottleneck))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
            if patch_branch == "separate":  # iBOT, shared_head=False
                self.last_layer2 = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        _randomize(self, seed)
        if patch_branch == "shared":  # iBOT, shared_head=True: the same module twice
            self.last_layer2 = self.last_layer

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def prefixed(prefix, sd):
    return {prefix + k: v for k, v in sd.items()}


# --------------------------------------------------------------------------------- checking

def _input(seed=123, size=32):
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_loaded(enc, source, ref_head=None, x=None):
    """Same tensors on the same keys, and the same features on the same input."""
    got, want = enc.backbone.state_dict(), source.state_dict()
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    x = _input() if x is None else x
    feats = enc(x)
    with torch.no_grad():
        tokens = source.forward_features(x)
    torch.testing.assert_close(feats["tokens"], tokens, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats["cls"], tokens[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(feats["mean"], tokens[:, 1:].mean(1), atol=ATOL, rtol=0)
    if ref_head is None:
        assert "proj" not in feats and not enc.has_proj and enc.proj_dim is None
    else:
        with torch.no_grad():
            proj = ref_head.eval()(tokens[:, 0])
        assert enc.has_proj and enc.proj_dim == proj.shape[1]
        torch.testing.assert_close(feats["proj"], proj, atol=ATOL, rtol=0)
    return feats


def as_numpy1_pickle(path):
    """Rewrite a torch.save file as numpy 1 pickled it (`numpy.core.multiarray.scalar`; numpy 2
    writes `numpy._core...`), the module name inside the official releases."""
    with zipfile.ZipFile(path) as src:
        records = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info, data in records:
            if info.filename.endswith("/data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            out.writestr(info, data)


def load(tmp_path, obj, fmt, base=VIT, name="ckpt.pth", numpy1=False, **extra):
    """Save `obj` as the release did and build the encoder from it: no opt-in, no warning."""
    path = tmp_path / name
    torch.save(obj, path)
    if numpy1:
        as_numpy1_pickle(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build_encoder({**base, "weights": "checkpoint", "format": fmt, **extra}, path)


def training_entries(source: nn.Module, epoch: int, numpy_schedule: bool, **args) -> dict:
    """What the released training scripts save besides the weights: the AdamW state after a step,
    in their two param groups (decay / no decay); with `numpy_schedule` the lr and weight decay
    are numpy float64 scalars, as DINO, iBOT, BEiT and CAE set them from numpy schedules every
    iteration; the AMP loss scaler's state; the argparse Namespace; the epoch. (The step runs on a
    copy: `source`'s weights stay those the test saves.)"""
    model = copy.deepcopy(source)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if numpy_schedule:
        lr_schedule, wd_schedule = np.linspace(0, 1.5e-3, 10), np.linspace(0.04, 0.4, 10)
        for i, group in enumerate(opt.param_groups):
            group["lr"] = lr_schedule[7] * (1.0 if i == 0 else 0.65)
            if i == 0:
                group["weight_decay"] = wd_schedule[7]
    namespace = argparse.Namespace(batch_size_per_gpu=64, lr=5e-4, epochs=epoch + 1, patch_size=16,
                                   betas=(0.9, 0.999), output_dir="./out", use_fp16=True, seed=0,
                                   dist_url="env://", resume="", gpu=0, **args)
    return {"optimizer": opt.state_dict(), "scaler": torch.amp.GradScaler("cpu").state_dict(),
            "args": namespace, "epoch": epoch}


# ------------------------------------------------------------------------------------ tests

def test_deit(tmp_path):
    src = source_vit(1, arch="deit_tiny_patch16_224")
    sd = {**src.state_dict(), "head.weight": torch.randn(10, 192), "head.bias": torch.randn(10)}
    enc = load(tmp_path, {"model": sd}, "deit", base={**VIT, "arch": "deit_tiny_patch16_224"})
    assert_loaded(enc, src)


def test_deit_training_checkpoint(tmp_path):
    """deit/main.py: model, optimizer, lr_scheduler (timm's), epoch, model_ema, scaler, args."""
    from timm.scheduler import CosineLRScheduler

    src = source_vit(1, arch="deit_tiny_patch16_224")
    sd = {**src.state_dict(), "head.weight": torch.randn(10, 192), "head.bias": torch.randn(10)}
    train = training_entries(src, 299, numpy_schedule=False, model="deit_tiny_patch16_224")
    opt = torch.optim.AdamW(src.parameters())
    ckpt = {"model": sd, **train,
            "lr_scheduler": CosineLRScheduler(opt, t_initial=300, warmup_t=5).state_dict(),
            "model_ema": source_vit(3, arch="deit_tiny_patch16_224").state_dict()}
    enc = load(tmp_path, ckpt, "deit", base={**VIT, "arch": "deit_tiny_patch16_224"})
    assert_loaded(enc, src)


def test_mocov3_with_projector(tmp_path):
    src = source_vit(2, fixed_pos=True)
    head = mocov3_mlp(3, 192, 64, 32, seed=3)
    momentum = source_vit(4, fixed_pos=True)
    sd = {**prefixed("module.base_encoder.", src.state_dict()),
          **prefixed("module.base_encoder.head.", head.state_dict()),
          **prefixed("module.momentum_encoder.", momentum.state_dict()),
          **prefixed("module.momentum_encoder.head.", mocov3_mlp(3, 192, 64, 32, 5).state_dict()),
          **prefixed("module.predictor.", mocov3_mlp(2, 32, 64, 32, 6).state_dict())}
    train = training_entries(src, 300, numpy_schedule=False)  # main_moco.py: the lr is a float
    ckpt = {"epoch": 300, "arch": "vit_base", "state_dict": sd, "optimizer": train["optimizer"],
            "scaler": train["scaler"]}
    enc = load(tmp_path, ckpt, "mocov3")
    assert_loaded(enc, src, head)
    got = enc.head.state_dict()
    for k, v in head.state_dict().items():  # official layout kept: 0.weight, 1.running_mean...
        assert torch.equal(got[k], v), k
    assert enc.proj_dim == 32
    assert torch.equal(enc.backbone.pos_embed, sincos_pos_embed(2, 192))


def _dino_full(src, head, student, student_head):
    """main_dino.py's save_dict: student, teacher, optimizer, epoch, args, dino_loss, fp16_scaler."""
    train = training_entries(student, 100, numpy_schedule=True, arch="vit_base", out_dim=48)
    return {"teacher": {**prefixed("backbone.", src.state_dict()),
                        **prefixed("head.", head.state_dict())},
            "student": {**prefixed("module.backbone.", student.state_dict()),
                        **prefixed("module.head.", student_head.state_dict())},
            "optimizer": train["optimizer"], "epoch": train["epoch"], "args": train["args"],
            "dino_loss": {"center": torch.zeros(1, 48)}, "fp16_scaler": train["scaler"]}


@pytest.mark.parametrize("numpy1", [False, True])
def test_dino_full_checkpoint_teacher_and_student(tmp_path, numpy1):
    src, head = source_vit(7), RefDINOHead(192, 48, seed=8)
    student, student_head = source_vit(9), RefDINOHead(192, 48, seed=10)
    assert "last_layer.weight_g" in head.state_dict()
    ckpt = _dino_full(src, head, student, student_head)
    assert isinstance(ckpt["optimizer"]["param_groups"][0]["lr"], np.float64)
    assert_loaded(load(tmp_path, ckpt, "dino", numpy1=numpy1), src, head)
    assert_loaded(load(tmp_path, ckpt, "dino", name="s.pth", numpy1=numpy1, checkpoint_key="student"),
                  student, student_head)


def test_dino_backbone_only_file(tmp_path):
    src = source_vit(11)
    assert_loaded(load(tmp_path, src.state_dict(), "dino"), src)


def test_dino_head_weight_is_folded(tmp_path):
    src, head = source_vit(7), RefDINOHead(192, 48, seed=8)
    enc = load(tmp_path, _dino_full(src, head, src, head), "dino")
    g, v = head.last_layer.weight_g, head.last_layer.weight_v
    torch.testing.assert_close(enc.head.last_layer.weight, g * v / v.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("patch_branch", ["shared", "separate"])
def test_ibot_full_checkpoint(tmp_path, patch_branch):
    src, head = source_vit(12), RefDINOHead(192, 40, seed=13, patch_branch=patch_branch)
    assert "last_layer2.weight_v" in head.state_dict()
    backbone = {**src.state_dict(), "masked_embed": torch.randn(1, 192)}
    ckpt = {"teacher": {**prefixed("backbone.", backbone), **prefixed("head.", head.state_dict())},
            "student": {**prefixed("module.backbone.", backbone),
                        **prefixed("module.head.", head.state_dict())},
            "ibot_loss": {"center": torch.zeros(1, 40), "center2": torch.zeros(1, 1, 40)}}
    train = training_entries(src, 400, numpy_schedule=True, shared_head=patch_branch == "shared",
                             pred_ratio=[0.0, 0.3])  # main_ibot.py's save_dict
    ckpt.update(optimizer=train["optimizer"], epoch=400, args=train["args"], fp16_scaler=train["scaler"])
    enc = load(tmp_path, ckpt, "ibot", numpy1=patch_branch == "separate")
    assert_loaded(enc, src, head)
    assert enc.proj_dim == 40


def test_ibot_backbone_only_file(tmp_path):
    src = source_vit(14)
    ckpt = {"state_dict": {**src.state_dict(), "masked_embed": torch.randn(1, 192)}}
    assert_loaded(load(tmp_path, ckpt, "ibot"), src)


def test_beit_shared_relative_position_table(tmp_path):
    from timm.models.beit import gen_relative_position_index

    src = source_beit(15)
    sd = src.state_dict()
    assert "rel_pos_bias.relative_position_bias_table" in sd and "blocks.0.attn.q_bias" in sd
    assert "blocks.0.gamma_1" in sd and "pos_embed" not in sd
    official = {**sd, "rel_pos_bias.relative_position_index": gen_relative_position_index((2, 2)),
                "mask_token": torch.randn(1, 1, 192), "lm_head.weight": torch.randn(64, 192),
                "lm_head.bias": torch.randn(64),
                "cls_pt_layers.0.norm1.weight": torch.randn(192)}
    # beit/utils.py save_model: model, optimizer, epoch, scaler, args
    ckpt = {"model": official, **training_entries(src, 799, numpy_schedule=True, window_size=(2, 2),
                                                    model="beit_base_patch16_224_8k_vocab")}
    enc = load(tmp_path, ckpt, "beit", base=BEIT, numpy1=True)
    assert type(enc.backbone).__name__ == "Beit" and enc.backbone.pos_embed is None
    assert enc.backbone.rel_pos_bias is not None
    assert all(b.attn.relative_position_bias_table is None for b in enc.backbone.blocks)
    assert_loaded(enc, src)


def test_beit_rejects_a_foreign_relative_position_index(tmp_path):
    from partaware.models import CheckpointError

    src = source_beit(15)
    bad = torch.zeros(5, 5, dtype=torch.long)
    ckpt = {"model": {**src.state_dict(), "rel_pos_bias.relative_position_index": bad}}
    with pytest.raises(CheckpointError, match="relative position index"):
        load(tmp_path, ckpt, "beit", base=BEIT)


@pytest.mark.parametrize("with_decoder", [False, True])
def test_mae(tmp_path, with_decoder):
    """The release holds `model` only; the training checkpoint (util/misc.py save_model) also
    the optimizer, epoch, scaler and args."""
    src = source_vit(16, fixed_pos=True)
    sd = src.state_dict()
    if with_decoder:  # the visualisation checkpoints also hold the decoder
        sd = {**sd, "mask_token": torch.randn(1, 1, 64),
              "decoder_embed.weight": torch.randn(64, 192),
              "decoder_pos_embed": torch.randn(1, 5, 64), "decoder_norm.weight": torch.randn(64),
              "decoder_blocks.0.norm1.weight": torch.randn(64),
              "decoder_pred.weight": torch.randn(768, 64)}
    obj = {"model": sd, **training_entries(src, 799, numpy_schedule=False)} if with_decoder else {"model": sd}
    enc = load(tmp_path, obj, "mae")
    assert_loaded(enc, src)
    assert torch.equal(enc.backbone.pos_embed, sincos_pos_embed(2, 192))


@pytest.mark.parametrize("cls_slot", [True, False])
@pytest.mark.parametrize("teacher_name", ["teacher", "alignment_encoder"])
def test_cae(tmp_path, cls_slot, teacher_name):
    src = source_beit(17, cae=True)
    enc_sd = src.state_dict()
    assert "pos_embed" in enc_sd and "rel_pos_bias.relative_position_bias_table" not in enc_sd
    if not cls_slot:
        enc_sd = {**enc_sd, "pos_embed": enc_sd["pos_embed"][:, 1:]}
    teacher = source_beit(18, cae=True).state_dict()
    official = {**prefixed("encoder.", enc_sd), **prefixed(teacher_name + ".", teacher),
                "mask_token": torch.randn(1, 1, 192),
                "pretext_neck.regressor_blocks.0.norm1_q.weight": torch.randn(192),
                "pretext_neck.decoder_blocks.0.gamma_1": torch.randn(192),
                "pretext_neck.head.weight": torch.randn(64, 192),
                "encoder_to_decoder.weight": torch.randn(192, 192)}
    # the BEiT-derived save_model: model, optimizer, epoch, scaler, args
    ckpt = {"model": official, **training_entries(src, 1599, numpy_schedule=True, model="cae_base_patch16_224")}
    enc = load(tmp_path, ckpt, "cae", base=BEIT, numpy1=cls_slot)
    assert type(enc.backbone).__name__ == "Beit" and enc.backbone.rel_pos_bias is None
    assert_loaded(enc, src)
    assert torch.equal(enc.backbone.pos_embed[:, 0], torch.zeros(1, 192))


@pytest.mark.parametrize("wrap", ["flat", "model", "state_dict_module"])
def test_timm_format(tmp_path, wrap):
    src = source_vit(19)
    sd = {**src.state_dict(), "head.weight": torch.randn(10, 192), "head.bias": torch.randn(10)}
    obj = {"flat": sd, "model": {"model": sd},
           "state_dict_module": {"state_dict": prefixed("module.", sd)}}[wrap]
    assert_loaded(load(tmp_path, obj, "timm"), src)


def test_projection_head_runs_on_a_single_image(tmp_path):
    """BatchNorm in the MoCo projector uses running statistics: batch size 1 must work."""
    src, head = source_vit(2), mocov3_mlp(3, 192, 64, 32, seed=3)
    sd = {**prefixed("module.base_encoder.", src.state_dict()),
          **prefixed("module.base_encoder.head.", head.state_dict())}
    enc = load(tmp_path, {"state_dict": sd}, "mocov3")
    enc.train()  # must stay in eval mode
    assert not enc.training and not enc.head.training
    one = enc(_input()[:1])
    assert one["proj"].shape == (1, 32)
    torch.testing.assert_close(one["proj"], enc(_input())["proj"][:1], atol=ATOL, rtol=0)
