"""The one head trainer (evals/seg_heads.py) and the frozen forward's speed-ups (seg_online/forward.py,
prefetch.py): each is the same computation as the plain path it replaces, up to float rounding."""
import pytest
import torch

from partaware.evals.resized_ce import resized_cross_entropy
from partaware.evals.seg_heads import (HeadStateError, HeadTrainer, SegHeads, SegProbe, load_state, poly_lr,
                                       save_state)
from partaware.models import build_encoder
from partaware.seg_online.forward import FrozenForward, block_maps, lowp_weights
from partaware.seg_online.prefetch import on_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

C, SETS, SEEDS = 24, {"part": 7, "object": 3}, {"part": 11, "object": 5}
ITERS, LR, WARMUP = 8, 0.05, 3


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        feats = torch.randn(4, C, 4, 4, generator=g)
        labels = torch.stack([torch.randint(0, k, (4, 16, 16), generator=g) for k in SETS.values()], dim=1)
        labels[:, :, :3] = 255  # some ignored pixels, as padding gives
        out.append((feats, labels.to(torch.uint8)))
    return out


def separate_heads(head, data):
    """The reference: one SegProbe and one AdamW per label set, stepped one after the other."""
    probes = {n: SegProbe(C, k, torch.Generator().manual_seed(SEEDS[n]), head=head) for n, k in SETS.items()}
    opts = {n: torch.optim.AdamW(p.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=0.05)
            for n, p in probes.items()}
    for it, (feats, labels) in enumerate(data):
        for i, n in enumerate(SETS):
            for group in opts[n].param_groups:
                group["lr"] = poly_lr(LR, it, ITERS, WARMUP)
            loss = resized_cross_entropy(probes[n](feats), labels[:, i].long(), 255)
            opts[n].zero_grad()
            loss.backward()
            opts[n].step()
    return probes


def fused_heads(head, data):
    trainer = HeadTrainer(SegHeads(C, SETS, SEEDS, head=head), ITERS, LR, warmup_iters=WARMUP)
    for it, (feats, labels) in enumerate(data):
        trainer.step(feats, labels, it)
    return trainer


@pytest.mark.parametrize("head", ["conv", "bn_conv"])
def test_one_conv_one_optimiser_equals_separate_heads(head):
    data = batches(ITERS)
    ref, fused = separate_heads(head, data), fused_heads(head, data).heads.probes()
    assert list(fused) == list(SETS)
    for n in SETS:
        a, b = ref[n].state_dict(), fused[n].state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-7), (n, k)
        assert not torch.equal(a["conv.weight"], SegProbe(C, SETS[n], torch.Generator().manual_seed(SEEDS[n]),
                                                          head=head).conv.weight)  # it trained


def test_head_state_resumes_bit_exactly_and_refuses_other_formats(tmp_path):
    data, path = batches(ITERS), tmp_path / "heads.state"
    whole = fused_heads("conv", data)
    half = HeadTrainer(SegHeads(C, SETS, SEEDS), ITERS, LR, warmup_iters=WARMUP)
    for it in range(4):
        half.step(*data[it], it)
    save_state(path, "key", 4, half)
    resumed = HeadTrainer(SegHeads(C, SETS, SEEDS), ITERS, LR, warmup_iters=WARMUP)
    assert load_state(path, "other", resumed) == (0, "it belongs to another run (resume key 'key', this run 'other')")
    assert load_state(path, "key", resumed) == (4, "resumed")
    for it in range(4, ITERS):
        resumed.step(*data[it], it)
    assert all(torch.equal(a, b) for a, b in zip(whole.heads.state_dict().values(),
                                                  resumed.heads.state_dict().values()))
    other_sets = HeadTrainer(SegHeads(C, {"part": 7}, SEEDS), ITERS)
    with pytest.raises(HeadStateError, match="label sets"):
        load_state(path, "key", other_sets)
    torch.save({"format": "partaware-seg-online/1", "resume_key": "key"}, path)  # saved before one trainer
    with pytest.raises(HeadStateError, match="partaware-seg-online/1.*delete it"):
        load_state(path, "key", resumed)


ENCODER = {"arch": "vit_tiny_patch16_224", "img_size": 32, "weights": "random",
           "timm_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 8}}


def test_micro_batched_forward_trains_the_same_heads():
    enc = build_encoder(ENCODER)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (6, 1, 32, 32), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    whole, micro = FrozenForward(enc, [1, 2], None), FrozenForward(enc, [1, 2], None, forward_batch=4)
    maps = whole(x)
    assert maps.dtype == torch.float32 and maps.shape == (6, 96, 4, 4)
    assert torch.allclose(micro(x), maps, rtol=1e-5, atol=1e-6)
    trained = []
    for forward in (whole, micro):
        trainer = HeadTrainer(SegHeads(96, {"part": 3}, {"part": 0}), 4, lr=0.05, warmup_iters=1)
        for it in range(4):
            trainer.step(forward(x), labels, it)  # the heads see all 6 images in one step either way
        trained.append(trainer.heads.weight.detach())
    assert torch.allclose(trained[0], trained[1], rtol=1e-4, atol=1e-6)


def test_auto_forward_batch_halves_on_out_of_memory(caplog):
    enc = build_encoder(ENCODER)
    dense, sizes = enc.dense, []

    def small_device(x, blocks):
        sizes.append(len(x))
        if len(x) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return dense(x, blocks)

    enc.dense = small_device
    x = torch.randn(8, 3, 32, 32)
    forward = FrozenForward(enc, [2], None)
    with caplog.at_level("INFO", logger="partaware.seg_online.forward"):
        maps = forward(x)
    assert sizes == [8, 4, 2, 2, 2, 2] and forward.micro == 2 and "micro-batches of 2" in caplog.text
    assert torch.allclose(maps, block_maps(build_encoder(ENCODER), x, [2], None), rtol=1e-5, atol=1e-6)
    sizes.clear()
    forward(x)
    assert sizes == [2, 2, 2, 2]  # the size that fitted is kept
    fixed = FrozenForward(enc, [2], None, forward_batch=8)
    with pytest.raises(torch.OutOfMemoryError):  # a fixed size is what the user asked for: no fallback
        fixed(x)
    with pytest.raises(ValueError, match="forward_batch"):
        FrozenForward(enc, [2], None, forward_batch=0)


def test_weights_cast_once_give_the_autocast_forward():
    """autocast casts each Linear/Conv weight to bf16 on every forward; casting them once gives the
    same maps, and the encoder gets its float32 weights back afterwards."""
    enc = build_encoder(ENCODER)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    plain = block_maps(enc, x, [1, 2], torch.bfloat16)
    with lowp_weights(enc, torch.bfloat16):
        assert enc.backbone.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
        assert enc.backbone.blocks[0].norm1.weight.dtype == torch.float32
        cast = block_maps(enc, x, [1, 2], torch.bfloat16)
    assert torch.equal(plain, cast)
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in enc.state_dict().items())
    with lowp_weights(enc, None):  # fp32 runs leave the weights alone
        assert enc.backbone.blocks[0].attn.qkv.weight.dtype == torch.float32


def test_batches_reach_the_device_unchanged():
    data = [(torch.arange(6).view(2, 3), torch.ones(2, dtype=torch.uint8)) for _ in range(3)]
    moved = list(on_device(data, torch.device("cpu")))
    assert len(moved) == 3 and all(torch.equal(a, b) for m, d in zip(moved, data) for a, b in zip(m, d))
