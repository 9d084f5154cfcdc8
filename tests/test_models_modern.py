"""Today's encoders (configs/modern.yaml): every architecture, built small with random weights, gives
`cls`, `mean` and dense maps without its prefix tokens, extracts a shard, and round-trips through
`weights: file` (.safetensors and .pth); patch-14 grids work in the online segmentation protocol."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from partaware import extract as E
from partaware.data.demo import generate_demo_cub
from partaware.data.images import crop_patch, load_rgb, patch_transform
from partaware.data.parts import select_split, write_index
from partaware.kinds import build_part_index
from partaware.models import CheckpointError, build_encoder, sha256_file
from partaware.store import open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
# arch -> (patch size, prefix tokens, cls source); real patch size, prefix tokens, registers and norm
# layout, shrunk in depth and width
ARCHS = {
    "vit_base_patch14_dinov2.lvd142m": (14, 1, "token"),
    "vit_base_patch14_reg4_dinov2.lvd142m": (14, 5, "token"),
    "vit_base_patch16_clip_224.openai": (16, 1, "token"),
    "vit_base_patch16_siglip_224.webli": (16, 0, "pooled"),
    "eva02_base_patch14_224.mim_in22k": (14, 1, "token"),
    "deit3_base_patch16_224.fb_in1k": (16, 1, "token"),
    "vit_large_patch16_224.mae": (16, 1, "token"),
    "vit_large_patch14_dinov2.lvd142m": (14, 1, "token"),
}
SMALL = {"depth": 2, "embed_dim": 48, "num_heads": 2}
GRID = 4  # tokens per side at the built size


def small_cfg(arch: str, **extra) -> dict:
    """The model as configs/modern.yaml has it (its timm_kwargs too), shrunk, with random weights."""
    modern = {m["arch"]: m for m in yaml.safe_load((REPO / "configs" / "modern.yaml").read_text())["models"].values()}
    kwargs = {**(modern[arch].get("timm_kwargs") or {}), **SMALL}
    return {"arch": arch, "weights": "random", "seed": 3, "img_size": GRID * ARCHS[arch][0],
            "timm_kwargs": kwargs, **extra}


def _x(size, batch=2, seed=0):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_every_modern_arch_is_listed_and_known_to_timm():
    models = yaml.safe_load((REPO / "configs" / "modern.yaml").read_text())["models"]
    timm_archs = {m["arch"] for m in models.values() if m["weights"] == "timm"}
    assert timm_archs == set(ARCHS)
    pretrained = set(timm.list_models(pretrained=True))
    assert timm_archs <= pretrained, timm_archs - pretrained


# ------------------------------------------------------------------------------ features
@pytest.mark.parametrize("arch", ARCHS)
def test_features_leave_prefix_tokens_out(arch):
    patch, prefix, source = ARCHS[arch]
    enc = build_encoder(small_cfg(arch))
    assert (enc.patch_size, enc.num_prefix_tokens, enc.cls_source, enc.embed_dim) == (patch, prefix, source, 48)
    side = GRID * patch
    x = _x((side, side))
    seen = {}
    enc.backbone.blocks[-1].register_forward_hook(lambda m, i, out: seen.update(last=out))
    feats, maps = enc.forward_all(x, [1, 2])
    bb = enc.backbone
    with torch.inference_mode():
        toks = bb.forward_features(x)
        if isinstance(bb.norm, torch.nn.Identity):  # EVA-02: the final norm sits after pooling (fc_norm)
            toks = bb.fc_norm(toks)
    n = GRID * GRID
    assert toks.shape == (2, prefix + n, 48) and feats["tokens"].shape == toks.shape
    torch.testing.assert_close(feats["mean"], toks[:, prefix:].mean(1), atol=1e-5, rtol=1e-5)
    if prefix:  # the prefix tokens would change the mean: leaving them out is visible
        assert not torch.allclose(feats["mean"], toks.mean(1), atol=1e-4)
    if source == "token":
        torch.testing.assert_close(feats["cls"], toks[:, 0], atol=1e-5, rtol=1e-5)
    else:  # SigLIP: the attention-pooled output stands for the CLS token it does not have
        with torch.inference_mode():
            pooled = bb.forward_head(bb.forward_features(x), pre_logits=True)
        torch.testing.assert_close(feats["cls"], pooled, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(feats["cls"], feats["mean"], atol=1e-3)
    # dense maps: the raw last-block output, prefix tokens dropped, row-major on the patch grid
    assert all(m.shape == (2, 48, GRID, GRID) for m in maps.values())
    last = seen["last"][:, prefix:].transpose(1, 2).reshape(2, 48, GRID, GRID)
    torch.testing.assert_close(maps[2], last, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_dense_floors_to_whole_patches_and_runs_on_smaller_windows(arch):
    patch = ARCHS[arch][0]
    enc = build_encoder(small_cfg(arch))
    side = GRID * patch
    x = _x((side + patch // 2, side + patch - 1))  # partial patches past the grid are dropped
    maps = enc.dense(x, [2])
    torch.testing.assert_close(maps[2], enc.dense(x[..., :side, :side], [2])[2], atol=0, rtol=0)
    small = enc.dense(x[..., :3 * patch + 5, :2 * patch], [1, 2])  # a slide window below the crop
    assert small[2].shape == (2, 48, 3, 2) and torch.isfinite(small[2]).all()


def test_rotary_model_needs_dynamic_img_size_for_another_grid():
    arch = "eva02_base_patch14_224.mim_in22k"
    enc = build_encoder(small_cfg(arch, timm_kwargs=SMALL))  # without modern.yaml's dynamic_img_size
    assert enc.dense(_x((56, 56)), [2])[2].shape == (2, 48, 4, 4)  # the built grid runs
    with pytest.raises(ValueError, match="dynamic_img_size"):
        enc.dense(_x((42, 28)), [2])


# ----------------------------------------------------------------------------- extraction
def _cub_cfg(root: Path, arch: str) -> dict:
    size = GRID * ARCHS[arch][0]
    model = small_cfg(arch)
    del model["img_size"]  # as in a config: the dataset's size sets it
    return {
        "seed": 0, "device": "cpu",
        "cache": {"format": "hdf5", "dtype": "float16", "chunk_rows": 4},
        "extract": {"batch_size": 8, "num_workers": 0, "shards": 2, "precision": "fp32"},
        "data": {"on_bad_image": "error"},
        "datasets": {"parts": {"kind": "cub", "name": "parts", "root": str(root / "cub"), "parts": [11, 12, 9, 14],
                               "size": size, "resize": size + size // 8, "blocks": [1], "tasks": ["retrieval"]}},
        "models": {"m": model},
    }


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("modern_cub")
    generate_demo_cub(root / "cub", 4, image_size=(160, 120))
    index = select_split(build_part_index(_cub_cfg(root, next(iter(ARCHS)))["datasets"]["parts"]), "all")
    write_index(index, root / "all.parquet")
    return root, index


@pytest.mark.parametrize("arch", ARCHS)
def test_a_shard_of_extraction(cub, tmp_path, arch):
    root, index = cub
    cfg = _cub_cfg(root, arch)
    out = E.extract(cfg, "parts", "m", "all", root / "all.parquet", tmp_path / "s1.h5", shard=1)
    lo = int(np.linspace(0, len(index), 3).round()[1])
    rows = index.iloc[lo:]
    with open_store(out) as store:
        got = {name: store.read(name) for name in ("row", "cls", "mean")}
        assert store.attrs["arch"] == arch
    assert np.array_equal(got["row"], rows["row"]) and got["mean"].shape == (len(rows), 48)
    size = cfg["datasets"]["parts"]["size"]
    transform = patch_transform("eval", size=size, resize=size + size // 8)
    x = torch.stack([transform(crop_patch(load_rgb(r.image_path), (r.x0, r.y0, r.x1, r.y1)))
                     for r in rows.itertuples()])
    with torch.inference_mode():
        feats = build_encoder({**cfg["models"]["m"], "img_size": size})(x)
    for name in ("cls", "mean"):
        np.testing.assert_allclose(got[name].astype(np.float32), feats[name].numpy(), atol=3e-3, rtol=3e-3)


# ------------------------------------------------------------------------------ weights: file
def _file_cfg(arch, path, **extra):
    return {**small_cfg(arch), "weights": "file", "path": str(path), **extra}


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_file_round_trips_safetensors_and_pth(tmp_path, arch):
    src = build_encoder(small_cfg(arch, seed=11))
    sd = {k: v.contiguous() for k, v in src.backbone.state_dict().items()}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save({"model": sd}, tmp_path / "w.pth")
    link = tmp_path / "m.pth"  # what the workflow passes: a link named .pth to the real file
    link.symlink_to(tmp_path / "w.safetensors")
    renamed = tmp_path / "copy.bin"  # a safetensors file under another name: known by its content
    renamed.write_bytes((tmp_path / "w.safetensors").read_bytes())
    x = _x((GRID * ARCHS[arch][0],) * 2)
    want = src.forward_all(x, [2])
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pth", link, renamed):
        enc = build_encoder(_file_cfg(arch, path, sha256=sha256_file(path)))
        assert enc.info["weights"] == "file" and enc.checkpoint_sha256 == sha256_file(path)
        got = enc.forward_all(x, [2])
        for k in want[0]:
            assert torch.equal(got[0][k], want[0][k]), (path.name, k)
        assert torch.equal(got[1][2], want[1][2])
    # the random init of another seed differs, so the equality above is the file's doing
    assert not torch.equal(build_encoder(small_cfg(arch, seed=12))(x)["mean"], want[0]["mean"])


def _tiny_sd(arch="vit_base_patch14_reg4_dinov2.lvd142m", seed=11):
    return build_encoder(small_cfg(arch, seed=seed)).backbone.state_dict()


def test_classifier_keys_are_dropped_and_listed(tmp_path, caplog):
    arch = "deit3_base_patch16_224.fb_in1k"
    sd = {**_tiny_sd(arch), "head.weight": torch.zeros(10, 48), "head.bias": torch.zeros(10),
          "fc.weight": torch.zeros(3, 48)}
    save_file(sd, tmp_path / "w.safetensors")
    with caplog.at_level(logging.INFO, logger="partaware.models.encoder"):
        build_encoder(_file_cfg(arch, tmp_path / "w.safetensors"))
    assert "dropped 3 classifier keys (fc.weight, head.bias, head.weight)" in caplog.text


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = _tiny_sd()
    del sd["blocks.1.norm1.weight"]
    sd["blocks.0.attn.extra"] = torch.zeros(3)
    save_file(sd, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as err:
        build_encoder(_file_cfg("vit_base_patch14_reg4_dinov2.lvd142m", tmp_path / "w.safetensors"))
    msg = str(err.value)
    assert "missing keys [blocks.1.norm1.weight]" in msg and "unexpected keys [blocks.0.attn.extra]" in msg
    assert str(tmp_path / "w.safetensors") in msg


def test_sha256_mismatch_and_missing_file(tmp_path):
    save_file(_tiny_sd(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        build_encoder(_file_cfg("vit_base_patch14_reg4_dinov2.lvd142m", tmp_path / "w.safetensors", sha256="0" * 64))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_encoder(_file_cfg("vit_base_patch14_reg4_dinov2.lvd142m", tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match="needs `path`"):
        build_encoder({**small_cfg("vit_base_patch14_reg4_dinov2.lvd142m"), "weights": "file"})


def test_checkpoint_key_selects_an_entry_or_a_key_prefix(tmp_path):
    arch = "vit_base_patch14_reg4_dinov2.lvd142m"
    sd = _tiny_sd()
    x = _x((56, 56))
    want = build_encoder(small_cfg(arch, seed=11))(x)["mean"]
    torch.save({"teacher": {**{"module.backbone." + k: v for k, v in sd.items()}, "module.head.w": torch.ones(2)},
                "epoch": 3}, tmp_path / "full.pth")
    got = build_encoder(_file_cfg(arch, tmp_path / "full.pth", checkpoint_key="teacher.module.backbone"))(x)
    assert torch.equal(got["mean"], want)
    save_file({"student." + k: v for k, v in sd.items()}, tmp_path / "flat.safetensors")
    assert torch.equal(build_encoder(_file_cfg(arch, tmp_path / "flat.safetensors",
                                               checkpoint_key="student"))(x)["mean"], want)
    with pytest.raises(CheckpointError, match=r"'student'.*teacher"):
        build_encoder(_file_cfg(arch, tmp_path / "full.pth", checkpoint_key="student"))
    with pytest.raises(CheckpointError, match="checkpoint_key"):
        build_encoder(_file_cfg(arch, tmp_path / "full.pth"))  # no state dict at the top or under model


def test_official_dinov2_layout_and_another_input_size_load_through_timms_conversion(tmp_path):
    """DINOv2's own release layout (register_tokens, mask_token, CLS position row) saved at another
    grid: timm's conversion for the architecture maps and resamples it, as pretrained=True would."""
    arch = "vit_base_patch14_reg4_dinov2.lvd142m"
    src = build_encoder(small_cfg(arch, seed=11, img_size=112))  # an 8 x 8 grid
    with torch.no_grad():  # timm inits it at ~1e-6, where float rounding of the CLS row would show
        src.backbone.cls_token.normal_(generator=torch.Generator().manual_seed(4))
    sd = dict(src.backbone.state_dict())
    row = torch.randn(1, 1, 48, generator=torch.Generator().manual_seed(5))
    official = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    official.update(register_tokens=sd["reg_token"], cls_token=sd["cls_token"] - row,
                    pos_embed=torch.cat([row, sd["pos_embed"]], dim=1), mask_token=torch.zeros(1, 48))
    torch.save(official, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    same = build_encoder(_file_cfg(arch, tmp_path / "dinov2_vits14_reg4_pretrain.pth", img_size=112))
    x = _x((112, 112))
    torch.testing.assert_close(same(x)["tokens"], src(x)["tokens"], atol=1e-5, rtol=1e-5)
    small = build_encoder(_file_cfg(arch, tmp_path / "dinov2_vits14_reg4_pretrain.pth"))  # 56: a 4 x 4 grid
    assert small.backbone.pos_embed.shape == (1, 16, 48) and small(_x((56, 56)))["tokens"].shape == (2, 21, 48)


@pytest.mark.parametrize("arch", ["vit_base_patch14_reg4_dinov2.lvd142m", "deit3_base_patch16_224.fb_in1k"])
def test_checkpoint_position_table_without_prefix_rows_is_resampled(tmp_path, arch):
    """Models whose pos_embed has no rows for the prefix tokens (registers, DeiT III) load a file
    saved for another input size through `weights: checkpoint` too."""
    src = build_encoder(small_cfg(arch, img_size=8 * ARCHS[arch][0]))
    torch.save({"model": src.backbone.state_dict()}, tmp_path / "w.pth")
    enc = build_encoder({**small_cfg(arch), "weights": "checkpoint", "format": "timm"}, tmp_path / "w.pth")
    assert src.backbone.pos_embed.shape == (1, 64, 48) and enc.backbone.pos_embed.shape == (1, 16, 48)
    assert torch.equal(enc.backbone.cls_token, src.backbone.cls_token)
    assert enc(_x((GRID * ARCHS[arch][0],) * 2))["tokens"].shape == (2, enc.num_prefix_tokens + 16, 48)


# ------------------------------------------------------------------ online segmentation, patch 14
@pytest.mark.parametrize("arch", ["vit_base_patch14_reg4_dinov2.lvd142m", "eva02_base_patch14_224.mim_in22k"])
def test_online_segmentation_with_patch_14_crops_and_windows(tmp_path, arch):
    """A 32 crop is no multiple of 14 (a 2 x 2 grid, 4 pixels unused) and the test windows are
    smaller than the crop: training and slide inference run, one dense forward per step."""
    from test_seg_online import DIRS, SETS, make_split

    from partaware.data.seg_pipeline import SegPipeline
    from partaware.data.segfolder import list_samples
    from partaware.seg_online import evaluate_online, train_online

    make_split(tmp_path, "train", 4, 0)
    make_split(tmp_path, "val", 2, 1)
    train, val = list_samples(tmp_path, "train", DIRS), list_samples(tmp_path, "val", DIRS)
    enc = build_encoder(small_cfg(arch, img_size=32))
    shapes = []
    dense = enc.dense

    def counted(x, blocks):
        maps = dense(x, blocks)
        shapes.append((tuple(x.shape[-2:]), tuple(maps[2].shape[-2:])))
        return maps

    enc.dense = counted
    pipe = SegPipeline(crop=32, train_scale=(96, 64), test_scale=(40, 24), stride=16)
    heads = train_online(enc, train, SETS, pipe, blocks=[1, 2], iters=3, batch_size=2, lr=0.05,
                         weight_decay=0.0, warmup_iters=1, device="cpu")
    assert shapes and all(s == ((32, 32), (2, 2)) for s in shapes)
    shapes.clear()
    m = evaluate_online(enc, heads, val, SETS, pipe, [1, 2], device="cpu", window_batch=1)
    assert shapes and all(hw[0] < 32 and grid == (hw[0] // 14, hw[1] // 14) for hw, grid in shapes)
    assert all(np.isfinite(m[name]["mIoU"]) for name in SETS)
