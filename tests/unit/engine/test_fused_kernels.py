"""The fused Triton kernels (trtx.engine.triton_fused) against the torch ops they replace
(engine/layers.py's CPU path). Without a GPU they run in Triton's interpreter on CPU tensors
(tests/unit/conftest.py). In bf16, the serving dtype, rotary must give the torch ops' exact bits
(on an H100 a kernel that did not cost 5 points of top-1 agreement with transformers); otherwise
results may differ in the last bit (fused multiply-adds, the norm's summation order, exp)."""
from __future__ import annotations

import pytest
import torch

from trtx.engine.layers import RMSNorm, rotary_, silu_and_mul
from trtx.engine.triton_fused import add_rms_norm

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [torch.float32, torch.bfloat16]


def _ulps(dtype):    # two units in the last place, relative: a rounding apart before and after the weight
    return {torch.float32: 2.4e-7, torch.bfloat16: 1.6e-2}[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rms_norm_matches_torch(dtype, with_residual):
    g = torch.Generator().manual_seed(0)
    hidden = 96                                        # not a power of two: the masked tail
    norm = RMSNorm(hidden, 1e-5, dtype).to(DEVICE)
    norm.weight.copy_(torch.rand(hidden, generator=g) * 2)
    x = (torch.randn(7, hidden, generator=g) * 3).to(DEVICE, dtype)
    residual = torch.randn(7, hidden, generator=g).to(DEVICE, dtype) if with_residual else None
    want, want_sum = norm.add(x, residual, triton=False)
    got, got_sum = add_rms_norm(x, residual, norm.weight, norm.eps)
    assert torch.equal(got_sum, want_sum)              # the residual sum rounds as torch's add does
    torch.testing.assert_close(got, want, rtol=_ulps(dtype), atol=1e-6)
    if residual is None:
        assert got_sum is x


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_matches_torch_on_a_strided_view(dtype):
    g = torch.Generator().manual_seed(1)
    tokens, heads, kv_heads, dim = 5, 6, 2, 32
    # The layout of Attention.forward: q and k heads are a view into the fused qkv rows.
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, generator=g).to(DEVICE, dtype)
    cos = torch.randn(tokens, 1, dim, generator=g).to(DEVICE, dtype)
    sin = torch.randn(tokens, 1, dim, generator=g).to(DEVICE, dtype)
    want, got = qkv.clone(), qkv.clone()
    rotary_(want[:, :(heads + kv_heads) * dim].view(tokens, heads + kv_heads, dim), cos, sin, triton=False)
    rotary_(got[:, :(heads + kv_heads) * dim].view(tokens, heads + kv_heads, dim), cos, sin, triton=True)
    if dtype == torch.bfloat16:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=_ulps(dtype), atol=1e-6)
    n = (heads + kv_heads) * dim
    assert torch.equal(got[:, n:], qkv[:, n:])         # v, past the view, untouched


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul_matches_torch(dtype):
    g = torch.Generator().manual_seed(2)
    gate_up = (torch.randn(4, 2 * 1500, generator=g) * 4).to(DEVICE, dtype)     # two column blocks, a tail
    want = silu_and_mul(gate_up, triton=False)
    got = silu_and_mul(gate_up, triton=True)
    assert got.shape == (4, 1500)
    # exp may differ by an ulp between libraries; rounding to the dtype hides it almost always
    torch.testing.assert_close(got, want, rtol=_ulps(dtype), atol=1e-6)


def test_empty_batches():
    x = torch.empty(0, 64, device=DEVICE)
    w = torch.ones(64, device=DEVICE)
    out, total = add_rms_norm(x, x, w, 1e-6)
    assert out.shape == total.shape == (0, 64)
    assert silu_and_mul(torch.empty(0, 64, device=DEVICE), triton=True).shape == (0, 32)
    rotary_(torch.empty(0, 2, 8, device=DEVICE), torch.empty(0, 1, 8, device=DEVICE),
            torch.empty(0, 1, 8, device=DEVICE), triton=True)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")     # the interpreter's inf * 0
def test_bf16_rounding_by_hand_keeps_nan_and_inf():
    """A blown-up activation must stay visible: NaN stays NaN and inf stays inf through the
    kernels' bf16 rounding (on CUDA the canonical NaN would otherwise wrap to -0.0)."""
    norm = RMSNorm(4, 1e-6, torch.bfloat16).to(DEVICE)
    x = torch.tensor([[float("inf"), 1.0, -2.0, 3.0]], device=DEVICE, dtype=torch.bfloat16)
    out, total = add_rms_norm(x, torch.zeros_like(x), norm.weight, norm.eps)
    want, _ = norm.add(x, torch.zeros_like(x), triton=False)          # inf * rsqrt(inf): NaN, the rest 0
    assert torch.isinf(total[0, 0]) and torch.isnan(out[0, 0])
    torch.testing.assert_close(out, want, equal_nan=True, rtol=0, atol=0)
    gate_up = torch.tensor([[float("nan"), 1.0, 2.0, 3.0]], device=DEVICE, dtype=torch.bfloat16)
    assert torch.isnan(silu_and_mul(gate_up, triton=True)[0, 0])


def test_fp16_keeps_the_torch_ops():
    """fp16 is not rounded by hand in the kernels: the layers run the torch ops for it."""
    g = torch.Generator().manual_seed(3)
    gate_up = torch.randn(3, 64, generator=g).to(DEVICE, torch.float16)
    assert torch.equal(silu_and_mul(gate_up, triton=True), silu_and_mul(gate_up, triton=False))
    x = torch.randn(3, 4, 16, generator=g).to(DEVICE, torch.float16)
    cos, sin = (torch.randn(3, 1, 16, generator=g).to(DEVICE, torch.float16) for _ in range(2))
    a, b = x.clone(), x.clone()
    rotary_(a, cos, sin, triton=True)
    rotary_(b, cos, sin, triton=False)
    assert torch.equal(a, b)
