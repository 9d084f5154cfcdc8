"""The segmentation loss: bilinear resizing in its dense and two-tap forms, and the fused Triton
cross entropy against F.interpolate + F.cross_entropy (run by Triton's interpreter on the CPU,
compiled for Hopper without a GPU, and on a real GPU when there is one)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from packaging.version import Version

from partaware.evals.resize import bilinear_resize, interp_matrix, resize_taps
from partaware.evals.resized_ce import resized_cross_entropy

# (batch, classes, grid h, grid w, label H, label W): non-integer, integer (x16, as 32 -> 512),
# identity and downscaling factors
SHAPES = [(2, 5, 4, 3, 13, 9), (1, 7, 2, 2, 32, 32), (1, 3, 6, 5, 6, 5), (2, 4, 8, 8, 5, 3),
          (1, 20, 3, 4, 48, 64)]


def reference_loss(logits, labels, ignore_index=255):
    resized = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(resized, labels, ignore_index=ignore_index)


def make_case(shape, seed=0, dtype=torch.float64):
    B, K, h, w, H, W = shape
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, K, h, w, generator=g)).to(dtype)
    labels = torch.randint(0, K, (B, H, W), generator=g)
    labels[:, 0, :2] = 255
    labels[-1, -1] = 255
    return logits, labels


def test_bilinear_resize_equals_interpolate():
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64, requires_grad=True)
    for size in [(37, 29), (128, 96), (8, 6), (3, 2)]:
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = bilinear_resize(x, size)
        assert torch.allclose(out, ref, atol=1e-12)
        g = torch.randn_like(ref)
        (gr,) = torch.autograd.grad((ref * g).sum(), x)
        (go,) = torch.autograd.grad((out * g).sum(), x)
        assert torch.allclose(go, gr, atol=1e-12)


@pytest.mark.parametrize("n_in,n_out", [(32, 512), (4, 13), (6, 6), (8, 5), (1, 7), (7, 1)])
def test_resize_taps_rebuild_the_dense_matrix(n_in, n_out):
    taps = resize_taps(n_in, n_out)
    dense = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_in):
        for o in range(int(taps.run_start[i]), int(taps.run_start[i + 1])):
            dense[o, i] += taps.weight[o, 0]
            dense[o, min(i + 1, n_in - 1)] += taps.weight[o, 1]
    assert int(taps.run_start[-1]) == n_out
    assert taps.longest_run == int(taps.run_start.diff().max())
    assert torch.allclose(dense, interp_matrix(n_in, n_out, dtype=torch.float64), atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
def test_unfused_loss_equals_interpolate_then_cross_entropy(shape):
    logits, labels = make_case(shape)
    logits.requires_grad_()
    ref = reference_loss(logits, labels)
    out = resized_cross_entropy(logits, labels, avg_non_ignore=True, fused=False)
    assert torch.allclose(out, ref, atol=1e-12)
    (gr,) = torch.autograd.grad(ref, logits)
    (go,) = torch.autograd.grad(out, logits)
    assert torch.allclose(go, gr, atol=1e-12)


def test_default_average_counts_ignored_pixels_as_mmseg_0x():
    """mmseg before 0.23 (the paper's code) divides the summed loss by all label pixels."""
    logits, labels = make_case(SHAPES[0])
    valid = int((labels != 255).sum())
    assert valid < labels.numel()
    mean_valid = resized_cross_entropy(logits, labels, avg_non_ignore=True, fused=False)
    mean_all = resized_cross_entropy(logits, labels, fused=False)
    assert torch.allclose(mean_all, mean_valid * valid / labels.numel(), atol=1e-12)
    labels[:] = 255  # nothing to learn from: no loss, no gradient (not NaN)
    x = logits.clone().requires_grad_()
    loss = resized_cross_entropy(x, labels, fused=False)
    loss.backward()
    assert loss.item() == 0.0 and not x.grad.any()


@pytest.mark.parametrize("fused", [False, True])
def test_out_of_range_label_is_named(fused):
    logits, labels = make_case(SHAPES[0])
    labels[0, 3, 3] = 5  # 5 classes: 0..4
    with pytest.raises(ValueError, match="label value 5 out of range.*5 classes"):
        resized_cross_entropy(logits.float(), labels, fused=fused)


INTERPRETED = """
import json, sys, torch
sys.path[:0] = [{tests!r}]
from test_resized_ce import SHAPES, make_case
from partaware.evals.resized_ce import resized_cross_entropy
report = []
for shape in SHAPES:
    for dtype in (torch.float32, torch.bfloat16):
        logits, labels = make_case(shape, seed=len(report), dtype=dtype)
        ref_in = logits.double().requires_grad_()
        ref = 3 * resized_cross_entropy(ref_in, labels, fused=False)
        (ref_grad,) = torch.autograd.grad(ref, ref_in)
        x = logits.requires_grad_()
        out = 3 * resized_cross_entropy(x, labels, fused=True)
        (grad,) = torch.autograd.grad(out, x)
        report.append(dict(shape=shape, dtype=str(dtype), grad_dtype=str(grad.dtype),
                           loss_err=abs(float(out) - float(ref)),
                           grad_err=float((grad.double() - ref_grad).abs().max()),
                           grad_scale=float(ref_grad.abs().max())))
print(json.dumps(report))
"""


def test_fused_kernels_equal_the_reference_in_triton_interpreter():
    """The Triton kernels themselves, run by Triton's CPU interpreter: loss and gradient."""
    triton = pytest.importorskip("triton")
    if Version(triton.__version__) < Version("3.7"):
        pytest.skip(f"Triton {triton.__version__}'s CPU interpreter cannot take a loaded value as a "
                    "loop bound (3.7 can); its compiled kernels can: the GPU test covers them")
    tests = os.path.dirname(__file__)
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", INTERPRETED.format(tests=tests)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report) == 2 * len(SHAPES)
    for case in report:
        bf16 = "bfloat16" in case["dtype"]
        assert case["grad_dtype"] == case["dtype"], case
        # bf16 inputs are exact in fp32, the gradient is rounded to bf16 on the way out
        assert case["loss_err"] < 1e-5, case
        assert case["grad_err"] < (1e-2 if bf16 else 1e-6) * case["grad_scale"], case


def _signature(kernel) -> dict:
    ints = {"y_ptr", "row_run_ptr", "col_run_ptr"}
    return {name: ("constexpr" if name.startswith("BLOCK") else
                   "*i64" if name in ints else "*fp32" if name.endswith("_ptr") else "i32")
            for name in kernel.arg_names}


@pytest.mark.parametrize("kernel", ["_resized_ce_fwd", "_resized_ce_bwd"])
def test_fused_kernels_compile_for_hopper(kernel):
    """CI has no GPU: compile each kernel to an sm_90 cubin, as a first run on an H100 would."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from partaware.evals import resized_ce

    fn = getattr(resized_ce, kernel)
    source = ASTSource(fn=fn, signature=_signature(fn), constexprs={"BLOCK_C": 16, "BLOCK_K": 256})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    assert compiled.asm["cubin"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_equals_unfused_on_gpu_at_ade20k_part_size():
    """209 classes, a 32 x 32 grid resized to 512 x 512, as the benchmark runs it."""
    torch.manual_seed(0)
    logits = torch.randn(2, 209, 32, 32, device="cuda")
    labels = torch.randint(0, 209, (2, 512, 512), device="cuda")
    labels[:, :40] = 255
    grads = []
    for fused in (False, True):
        x = logits.clone().requires_grad_()
        loss = resized_cross_entropy(x, labels, avg_non_ignore=True, fused=fused)
        loss.backward()
        grads.append((loss.detach(), x.grad))
    x = logits.clone().requires_grad_()
    resized_cross_entropy(x, labels, avg_non_ignore=True, fused=True).backward()
    (ref, ref_grad), (out, grad) = grads
    assert torch.allclose(out, ref, rtol=1e-5)
    assert torch.allclose(grad, ref_grad, atol=1e-5 * float(ref_grad.abs().max()))
    assert torch.equal(x.grad, grad)  # no atomics: a rerun gives the same bits
