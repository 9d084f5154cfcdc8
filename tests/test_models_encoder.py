"""Encoder contract: features, dense maps, seeding, strict loading and its error messages."""

from __future__ import annotations

import pytest
import timm
import torch

from partaware.models import CheckpointError, build_encoder

TINY = dict(arch="vit_tiny_patch16_224", img_size=32, timm_kwargs={"depth": 2})
TINY12 = dict(arch="vit_tiny_patch16_224", img_size=32)  # all 12 blocks


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(size=32, batch=2, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _source(img_size=32, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=img_size)
    return model.eval()


def _save(tmp_path, sd, name="mae.pth"):
    path = tmp_path / name
    torch.save({"model": sd}, path)
    return path


def _mae_cfg(**extra):
    return {**TINY, "weights": "checkpoint", "format": "mae", **extra}


# ------------------------------------------------------------------------------ features

def test_feature_shapes_and_attributes():
    enc = build_encoder(TINY)
    feats = enc(_x())
    assert feats["cls"].shape == (2, 192) and feats["mean"].shape == (2, 192)
    assert feats["tokens"].shape == (2, 5, 192) and "proj" not in feats
    assert (enc.embed_dim, enc.patch_size, enc.num_prefix_tokens) == (192, 16, 1)
    assert enc.has_proj is False and enc.proj_dim is None
    assert enc.mean_std == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert enc.info["weights"] == "random" and enc.checkpoint_sha256 is None
    torch.testing.assert_close(feats["mean"], feats["tokens"][:, 1:].mean(1))
    torch.testing.assert_close(feats["cls"], feats["tokens"][:, 0])


def test_mean_std_override():
    enc = build_encoder({**TINY, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert enc.mean_std == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_frozen_and_always_eval():
    enc = build_encoder(TINY)
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(42)
    before = torch.random.get_rng_state()
    a, b = build_encoder(TINY), build_encoder({**TINY, "seed": 0})
    c = build_encoder({**TINY, "seed": 1})
    assert torch.equal(torch.random.get_rng_state(), before)
    x = _x()
    assert torch.equal(a(x)["cls"], b(x)["cls"])
    assert not torch.allclose(a(x)["cls"], c(x)["cls"])


def test_distilled_deit_drops_both_prefix_tokens():
    enc = build_encoder({"arch": "deit_tiny_distilled_patch16_224", "img_size": 32,
                         "timm_kwargs": {"depth": 2}})
    feats = enc(_x())
    assert enc.num_prefix_tokens == 2 and feats["tokens"].shape == (2, 6, 192)
    torch.testing.assert_close(feats["mean"], feats["tokens"][:, 2:].mean(1))
    assert enc.dense(_x(), [2])[2].shape == (2, 192, 2, 2)


# ---------------------------------------------------------------------------------- dense

def test_dense_shapes():
    enc = build_encoder(TINY12)
    maps = enc.dense(_x(), [4, 6, 8, 12])
    assert sorted(maps) == [4, 6, 8, 12]
    assert all(m.shape == (2, 192, 2, 2) for m in maps.values())
    big = build_encoder({**TINY12, "img_size": 64})
    assert big.dense(_x(64), [12])[12].shape == (2, 192, 4, 4)


def test_dense_block_12_is_the_pre_norm_final_output():
    enc = build_encoder(TINY12)
    seen = {}
    hook = enc.backbone.norm.register_forward_pre_hook(
        lambda m, args: seen.update(pre=args[0]))  # returns None: the input is left alone
    x = _x()
    feats, maps = enc.forward_all(x, [12])
    hook.remove()
    pre = seen["pre"]  # what the final LayerNorm received: the output of block 12
    b, d = pre.shape[0], pre.shape[2]
    expected = pre[:, 1:].transpose(1, 2).reshape(b, d, 2, 2)
    torch.testing.assert_close(maps[12], expected, atol=0, rtol=0)
    # spatial order: map[:, :, i, j] is patch token i * w + j
    torch.testing.assert_close(maps[12][:, :, 1, 0], pre[:, 1 + 2])
    normed = enc.backbone.norm(maps[12].flatten(2).transpose(1, 2))
    torch.testing.assert_close(normed, feats["tokens"][:, 1:], atol=1e-6, rtol=0)


def test_forward_all_matches_separate_calls():
    enc = build_encoder(TINY12)
    x = _x()
    feats, maps = enc.forward_all(x, [12, 3, 3])
    assert sorted(maps) == [3, 12]
    alone = enc(x)
    for k in alone:
        torch.testing.assert_close(feats[k], alone[k], atol=1e-6, rtol=0)
    torch.testing.assert_close(maps[3], enc.dense(x, [3])[3], atol=1e-6, rtol=0)


def test_dense_on_beit():
    enc = build_encoder({"arch": "beit_base_patch16_224", "img_size": 32,
                         "timm_kwargs": {"depth": 2, "embed_dim": 192, "num_heads": 3}})
    feats, maps = enc.forward_all(_x(), [1, 2])
    assert maps[2].shape == (2, 192, 2, 2) and feats["tokens"].shape == (2, 5, 192)


@pytest.mark.parametrize("blocks", [[0], [13], [-1]])
def test_dense_rejects_blocks_out_of_range(blocks):
    with pytest.raises(ValueError, match=r"1\.\.12"):
        build_encoder(TINY12).dense(_x(), blocks)


# --------------------------------------------------------------------------- arch errors

def test_unknown_arch_names_the_model_and_suggests_list_models():
    with pytest.raises(ValueError) as err:
        build_encoder({"arch": "vit_bsae_patch16_224"})
    msg = str(err.value)
    assert "vit_bsae_patch16_224" in msg and "timm.list_models('*vit*')" in msg


def test_non_vit_arch_is_refused():
    with pytest.raises(ValueError, match="CLS token"):
        build_encoder({"arch": "resnet18"})


def test_bad_weights_and_format():
    with pytest.raises(ValueError, match="weights"):
        build_encoder({**TINY, "weights": "imagenet"})
    with pytest.raises(ValueError, match="format"):
        build_encoder({**TINY, "weights": "checkpoint", "format": "simclr"}, "x.pth")
    with pytest.raises(ValueError, match="checkpoint path"):
        build_encoder({**TINY, "weights": "checkpoint", "format": "mae"})


def test_beit_format_needs_a_beit_arch(tmp_path):
    path = _save(tmp_path, {"cls_token": torch.zeros(1, 1, 192)})
    with pytest.raises(ValueError, match="Beit"):
        build_encoder({**TINY, "weights": "checkpoint", "format": "beit"}, path)


# ------------------------------------------------------------------------- strict loading

def test_checkpoint_path_from_config_and_sha256_recorded(tmp_path):
    from partaware.models import sha256_file

    path = _save(tmp_path, _source().state_dict())
    enc = build_encoder(_mae_cfg(checkpoint=str(path), sha256=sha256_file(path).upper()))
    assert enc.checkpoint_sha256 == sha256_file(path)
    assert enc.info["format"] == "mae"


def test_missing_key_is_listed(tmp_path):
    sd = _source().state_dict()
    del sd["blocks.1.norm1.weight"]
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError) as err:
        build_encoder(_mae_cfg(), path)
    assert "blocks.1.norm1.weight" in str(err.value) and str(path) in str(err.value)
    assert "missing" in str(err.value)


def test_unexpected_key_is_listed(tmp_path):
    sd = {**_source().state_dict(), "blocks.0.attn.rel_bias": torch.zeros(3)}
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[blocks\.0\.attn\.rel_bias\]"):
        build_encoder(_mae_cfg(), path)


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    sd = _source().state_dict()
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(700, 192)
    path = _save(tmp_path, sd)
    with pytest.raises(CheckpointError) as err:
        build_encoder(_mae_cfg(), path)
    msg = str(err.value)
    assert "blocks.0.mlp.fc1.weight" in msg and "(700, 192)" in msg and "(768, 192)" in msg


def test_wrong_head_shape_is_reported(tmp_path):
    src = _source()
    head = {"mlp.0.weight": torch.randn(16, 192), "mlp.0.bias": torch.randn(16),
            "mlp.2.weight": torch.randn(8, 16), "mlp.2.bias": torch.randn(9),
            "last_layer.weight_g": torch.rand(12, 1), "last_layer.weight_v": torch.randn(12, 8)}
    ckpt = {"teacher": {**{"backbone." + k: v for k, v in src.state_dict().items()},
                        **{"head." + k: v for k, v in head.items()}}}
    path = tmp_path / "dino.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"mlp\.2\.bias.*\(9,\).*\(8,\)"):
        build_encoder({**TINY, "weights": "checkpoint", "format": "dino"}, path)


def test_wrong_layout_for_the_format(tmp_path):
    path = _save(tmp_path, _source().state_dict())  # a MAE-style file read as MoCo v3
    cfg = {**TINY, "weights": "checkpoint", "format": "mocov3"}
    with pytest.raises(CheckpointError, match=r"no state dict under \['state_dict'\].*\['model'\]"):
        build_encoder(cfg, path)
    torch.save({"state_dict": _source().state_dict()}, path)
    with pytest.raises(CheckpointError, match="module.base_encoder"):
        build_encoder(cfg, path)


def test_explicit_checkpoint_key_must_exist(tmp_path):
    path = tmp_path / "dino.pth"
    torch.save({"teacher": {"backbone." + k: v for k, v in _source().state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match="'student'"):
        build_encoder({**TINY, "weights": "checkpoint", "format": "dino",
                       "checkpoint_key": "student"}, path)


def test_wrong_hash_in_config(tmp_path):
    path = _save(tmp_path, _source().state_dict())
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        build_encoder(_mae_cfg(sha256="0" * 64), path)
    assert str(path) in str(err.value) and "0" * 64 in str(err.value)


def test_truncated_checkpoint(tmp_path):
    path = _save(tmp_path, _source().state_dict())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        build_encoder(_mae_cfg(), path)


def test_html_instead_of_checkpoint(tmp_path):
    path = tmp_path / "mae.pth"
    path.write_text("<!DOCTYPE html><html><body>Google Drive quota exceeded</body></html>")
    with pytest.raises(CheckpointError, match="HTML"):
        build_encoder(_mae_cfg(), path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_encoder(_mae_cfg(), tmp_path / "nope.pth")


def test_position_table_is_resampled_for_another_input_size(tmp_path):
    src = _source(img_size=32)
    path = _save(tmp_path, src.state_dict())
    enc = build_encoder(_mae_cfg(img_size=64), path)
    assert enc.backbone.pos_embed.shape == (1, 17, 192)
    torch.testing.assert_close(enc.backbone.pos_embed[:, 0], src.pos_embed[:, 0])
    assert enc(_x(64))["tokens"].shape == (2, 17, 192)
    # other weights are untouched
    assert torch.equal(enc.backbone.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_beit_relative_table_is_resized_for_another_input_size(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("beit_base_patch16_224", num_classes=0, global_pool="", depth=2,
                            embed_dim=192, num_heads=3, img_size=32, use_abs_pos_emb=False,
                            use_rel_pos_bias=False, use_shared_rel_pos_bias=True, init_values=0.1)
    path = _save(tmp_path, src.state_dict(), "beit.pth")
    enc = build_encoder({"arch": "beit_base_patch16_224", "img_size": 64,
                         "timm_kwargs": {"depth": 2, "embed_dim": 192, "num_heads": 3},
                         "weights": "checkpoint", "format": "beit"}, path)
    assert enc.backbone.rel_pos_bias.relative_position_bias_table.shape == (7 * 7 + 3, 3)
    assert enc(_x(64))["tokens"].shape == (2, 17, 192)


# ------------------------------------------------------------- dense at another input size
# A slide-inference window smaller than the crop runs the encoder below its built size. The
# released DINO segmentation backbone floors to whole patches and resamples its position table
# (`interpolate_pos_encoding`); relative position tables only need the smaller grid's entries.

def _dino_interpolate_pos_encoding(pos_embed, height, width, patch):
    """The released DINO backbone's interpolate_pos_encoding, written as it is there (square grid)."""
    N = pos_embed.shape[1] - 1
    class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = height // patch + 0.1, width // patch + 0.1  # DINO's names: w0 follows dim 2 (rows)
    patch_pos_embed = torch.nn.functional.interpolate(
        patch_pos_embed.reshape(1, int(N ** 0.5), int(N ** 0.5), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / N ** 0.5, h0 / N ** 0.5), mode="bicubic")
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def test_dense_below_the_built_size_floors_and_resamples_positions_like_dino():
    enc = build_encoder({**TINY, "img_size": 64})  # a 4 x 4 grid
    pos = enc.backbone.pos_embed
    before = pos.detach().clone()
    x = _x(64)[:, :, :50, :45]  # 3 x 2 whole patches, the rest dropped as a stride-16 conv does
    maps = enc.dense(x, [1, 2])
    assert maps[2].shape == (2, 192, 3, 2)
    assert enc.backbone.pos_embed is pos and torch.equal(pos, before)  # put back afterwards
    torch.testing.assert_close(enc.dense(x[:, :, :48, :32], [2])[2], maps[2], atol=0, rtol=0)
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=(48, 32)).eval()
    sd = dict(enc.backbone.state_dict())
    sd["pos_embed"] = _dino_interpolate_pos_encoding(sd["pos_embed"], 48, 32, 16)
    ref.load_state_dict(sd)
    _, want = ref.forward_intermediates(x[:, :, :48, :32], indices=[0, 1], norm=False, output_fmt="NCHW")
    torch.testing.assert_close(maps[1], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps[2], want[1], atol=1e-5, rtol=1e-5)
    # at the built size nothing is resampled: the result is timm's own forward
    full = enc.dense(_x(64), [2])[2]
    _, own = enc.backbone.forward_intermediates(_x(64), indices=[1], norm=False, output_fmt="NCHW")
    torch.testing.assert_close(full, own[0], atol=0, rtol=0)


def _offset_table(table, big, small):
    """A relative position table for the `small` window holding the `big` table's entry for every
    offset (dy, dx), plus the three CLS entries: what a bias that depends only on offsets gives."""
    (bh, bw), (sh, sw) = big, small
    out = table.new_empty(((2 * sh - 1) * (2 * sw - 1) + 3, table.shape[1]))
    for dy in range(-(sh - 1), sh):
        for dx in range(-(sw - 1), sw):
            big_row = (dy + bh - 1) * (2 * bw - 1) + dx + bw - 1
            out[(dy + sh - 1) * (2 * sw - 1) + dx + sw - 1] = table[big_row]
    out[-3:] = table[-3:]
    return out


@pytest.mark.parametrize("shared", [False, True])
def test_beit_dense_below_the_built_size_uses_the_smaller_grids_offsets(shared):
    kw = dict(depth=2, embed_dim=192, num_heads=3, use_abs_pos_emb=False, init_values=0.1,
              use_rel_pos_bias=not shared, use_shared_rel_pos_bias=shared)
    enc = build_encoder({"arch": "beit_base_patch16_224", "img_size": 64, "timm_kwargs": kw})
    with torch.no_grad():  # timm zero-inits the tables; give them values so the check can fail
        for name, p in enc.backbone.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 1.0, generator=torch.Generator().manual_seed(len(name)))
    x = _x(64)[:, :, :48, :32]
    maps = enc.dense(x, [2])
    ref = timm.create_model("beit_base_patch16_224", num_classes=0, img_size=(48, 32), **kw).eval()
    sd = {k: (_offset_table(v, (4, 4), (3, 2)) if k.endswith("relative_position_bias_table") else v)
          for k, v in enc.backbone.state_dict().items()}
    ref.load_state_dict(sd)
    _, want = ref.forward_intermediates(x, indices=[1], norm=False, output_fmt="NCHW")
    torch.testing.assert_close(maps[2], want[0], atol=1e-5, rtol=1e-5)
    # the built-size forward is untouched afterwards
    _, own = enc.backbone.forward_intermediates(_x(64), indices=[1], norm=False, output_fmt="NCHW")
    torch.testing.assert_close(enc.dense(_x(64), [2])[2], own[0], atol=0, rtol=0)


def test_relative_tables_cannot_cover_a_larger_grid():
    enc = build_encoder({"arch": "beit_base_patch16_224", "img_size": 32,
                         "timm_kwargs": {"depth": 2, "embed_dim": 192, "num_heads": 3}})
    with pytest.raises(ValueError, match="img_size"):
        enc.dense(_x(48), [2])


def test_input_smaller_than_a_patch_is_refused():
    with pytest.raises(ValueError, match="smaller than one 16 x 16 patch"):
        build_encoder(TINY).dense(_x(32)[:, :, :8], [1])
