"""Specs for flash_attention: `pytest exercises/flash_attention` (`--impl=solutions`: reference)."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from graders.checks import assert_close, describe, fail

# The online softmax adds the same terms in another order than torch does, and rescales partial
# sums: float64 stays near 1e-15, float32 near 1e-6 (values of order 1, up to ~60 keys).
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 2e-5),
    torch.float16: (1e-2, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}

shapes = st.tuples(
    st.integers(1, 2),  # batch
    st.integers(1, 2),  # heads
    st.integers(1, 40),  # T_q
    st.integers(1, 40),  # T_k
    st.integers(1, 12),  # d
    st.integers(1, 12),  # d_v
)
blocks = st.tuples(st.integers(1, 17), st.integers(1, 17))  # block_q, block_k: ragged tiles


def qkv(shape, dtype, device, seed=0, scale=1.0):
    B, H, T_q, T_k, d, d_v = shape
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(B, H, *s, generator=g, dtype=torch.float64)
        for s in [(T_q, d), (T_k, d), (T_k, d_v)]
    )
    return (q * scale).to(device, dtype), (k * scale).to(device, dtype), v.to(device, dtype)


def dtypes(device):
    """float32 and float64 everywhere; half precisions on CUDA, where their kernels are tuned."""
    return [torch.float32, torch.float64] + (
        [torch.float16, torch.bfloat16] if device == "cuda" else []
    )


def true_lse(q, k, is_causal):
    """The log-sum-exp of each query's scaled scores, from the full matrix (the oracle may)."""
    s = (q.double() @ k.double().transpose(-2, -1)) / q.shape[-1] ** 0.5
    if is_causal:
        keep = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return s.logsumexp(-1)


def check_forward(impl, device, shape, block_q, block_k, is_causal):
    for dtype in dtypes(device):
        q, k, v = qkv(shape, dtype, device)
        what = (
            f"flash_attention_forward({describe(q=q, k=k, v=v)}, is_causal={is_causal}, "
            f"block_q={block_q}, block_k={block_k})"
        )
        result = impl.flash_attention_forward(q, k, v, is_causal, block_q, block_k)
        if not isinstance(result, tuple) or len(result) != 2:
            fail(f"{what} should return a pair (o, lse); got {type(result).__name__}")
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        rtol, atol = TOL[dtype]
        assert_close(result[0], expected, what=what + "[0] (o)", rtol=rtol, atol=atol)


@given(shape=shapes, block=blocks)
def test_forward_matches_torch(impl, device, shape, block):
    check_forward(impl, device, shape, *block, is_causal=False)


@given(shape=shapes, block=blocks)
def test_causal_forward_matches_torch(impl, device, shape, block):
    check_forward(impl, device, shape, *block, is_causal=True)


@pytest.mark.parametrize("is_causal", [False, True])
@given(shape=shapes, block=blocks)
def test_lse_is_the_log_sum_exp(impl, device, is_causal, shape, block):
    q, k, v = qkv(shape, torch.float64, device)
    _, lse = impl.flash_attention_forward(q, k, v, is_causal, *block)
    assert_close(
        lse,
        true_lse(q, k, is_causal),
        rtol=1e-10,
        atol=1e-10,
        what=f"flash_attention_forward({describe(q=q, k=k)}, is_causal={is_causal}, "
        f"block_q={block[0]}, block_k={block[1]})[1] (lse = log sum_j exp(q.k_j / sqrt(d)))",
    )


def test_large_logits_stay_finite(impl, device):
    q, k, v = qkv((2, 1, 23, 31, 8, 8), torch.float32, device, seed=1, scale=40.0)  # logits ~1e4
    o, _ = impl.flash_attention_forward(q, k, v, False, 8, 8)
    assert_close(
        o,
        F.scaled_dot_product_attention(q, k, v),
        rtol=1e-4,
        atol=1e-4,
        what=f"flash_attention_forward with logits near 1e4 ({describe(q=q, k=k, v=v)}, "
        "block_q=8, block_k=8)",
    )


@given(shape=shapes, cut=st.integers(0, 39), block=blocks)
def test_causal_ignores_the_future(impl, device, shape, cut, block):
    B, H, T, _, d, d_v = shape
    q, k, v = qkv((B, H, T, T, d, d_v), torch.float64, device)
    cut = min(cut, T - 1)
    k2, v2 = k.clone(), v.clone()
    k2[..., cut + 1 :, :] += 10.0  # change only positions after `cut`
    v2[..., cut + 1 :, :] -= 10.0
    before = impl.flash_attention_forward(q, k, v, True, *block)[0][..., : cut + 1, :]
    after = impl.flash_attention_forward(q, k2, v2, True, *block)[0][..., : cut + 1, :]
    assert_close(
        after,
        before,
        rtol=0,
        atol=1e-12,
        what=f"flash_attention_forward(is_causal=True, block_q={block[0]}, block_k={block[1]}): "
        f"outputs at positions 0..{cut} after changing keys and values at positions > {cut}",
    )


def torch_gradients(q, k, v, do, is_causal):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return torch.autograd.grad(o, (q, k, v), do)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("is_causal", [False, True])
@given(shape=shapes, block=blocks)
def test_backward_matches_torch(impl, device, dtype, is_causal, shape, block):
    q, k, v = qkv(shape, dtype, device)
    g = torch.Generator().manual_seed(1)
    do = torch.randn(*q.shape[:-1], v.shape[-1], dtype=dtype, generator=g).to(device)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    lse = true_lse(q, k, is_causal).to(dtype)  # the spec's own forward: backward alone is tested
    grads = impl.flash_attention_backward(do, q, k, v, o, lse, is_causal, *block)
    rtol, atol = TOL[dtype]
    for name, actual, expected in zip(
        "qkv", grads, torch_gradients(q, k, v, do, is_causal), strict=True
    ):
        assert_close(
            actual,
            expected,
            rtol=rtol,
            atol=atol,
            what=f"flash_attention_backward({describe(do=do, q=q, k=k, v=v)}, is_causal="
            f"{is_causal}, block_q={block[0]}, block_k={block[1]}): d{name}",
        )


@pytest.mark.parametrize("is_causal", [False, True])
@given(shape=shapes, block=blocks)
def test_autograd_matches_torch(impl, device, is_causal, shape, block):
    q, k, v = (t.requires_grad_() for t in qkv(shape, torch.float64, device))
    o = impl.flash_attention(q, k, v, is_causal, *block)
    assert_close(
        o.detach(),
        F.scaled_dot_product_attention(q, k, v, is_causal=is_causal).detach(),
        rtol=1e-10,
        atol=1e-10,
        what=f"flash_attention({describe(q=q, k=k, v=v)}, is_causal={is_causal})",
    )
    do = torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(2)).to(device)
    if not o.requires_grad:
        fail("flash_attention(...) returned a tensor autograd cannot follow (no grad_fn)")
    grads = torch.autograd.grad(o, (q, k, v), do, allow_unused=True)
    for name, actual, expected in zip(
        "qkv", grads, torch_gradients(q, k, v, do, is_causal), strict=True
    ):
        if actual is None:
            fail(f"flash_attention: backward returned no gradient for {name}")
        assert_close(
            actual,
            expected,
            rtol=1e-10,
            atol=1e-10,
            what=f"the gradient of {name} through flash_attention({describe(q=q, k=k, v=v)}, "
            f"is_causal={is_causal}, block_q={block[0]}, block_k={block[1]})",
        )


class LargestOutput(TorchDispatchMode):
    """Records the largest tensor that any torch operation returns while the mode is on."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.op, self.shape = 0, "", ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op, self.shape = t.numel(), str(func), tuple(t.shape)
        return out


# One batch of 2 heads, 150 queries over 170 keys (25,500 scores per head), tiles of 48 x 40: a
# score tile holds 2 x 48 x 40 = 3,840 numbers, q 4,800. Any tensor of T_q x T_k = 25,500 or
# more numbers is (a piece of) the score matrix that FlashAttention never stores.
MEMORY = {"shape": (1, 2, 150, 170, 16, 16), "block_q": 48, "block_k": 40}


def check_no_score_matrix(mode, what, T_q, T_k):
    if mode.numel >= T_q * T_k:
        fail(
            f"{what}: {mode.op} returned a tensor of shape {mode.shape} ({mode.numel} numbers); "
            f"nothing may hold T_q x T_k = {T_q} x {T_k} = {T_q * T_k} numbers or more: work on "
            "block_q x block_k tiles of the score matrix, one at a time"
        )


@pytest.mark.parametrize("is_causal", [False, True])
def test_forward_never_builds_the_score_matrix(impl, device, is_causal):
    shape, bq, bk = MEMORY["shape"], MEMORY["block_q"], MEMORY["block_k"]
    q, k, v = qkv(shape, torch.float32, device)
    with LargestOutput() as mode:
        o, _ = impl.flash_attention_forward(q, k, v, is_causal, bq, bk)
    what = f"flash_attention_forward({describe(q=q, k=k, v=v)}, block_q={bq}, block_k={bk})"
    check_no_score_matrix(mode, what, shape[2], shape[3])
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert_close(o, expected, what=what, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("is_causal", [False, True])
def test_backward_never_builds_the_score_matrix(impl, device, is_causal):
    shape, bq, bk = MEMORY["shape"], MEMORY["block_q"], MEMORY["block_k"]
    q, k, v = (t.requires_grad_() for t in qkv(shape, torch.float32, device))
    o = impl.flash_attention(q, k, v, is_causal, bq, bk)
    do = torch.randn(o.shape, generator=torch.Generator().manual_seed(3)).to(device)
    with LargestOutput() as mode:
        grads = torch.autograd.grad(o, (q, k, v), do)
    what = f"the backward of flash_attention({describe(q=q, k=k, v=v)}, block_q={bq}, block_k={bk})"
    check_no_score_matrix(mode, what, shape[2], shape[3])
    for name, actual, expected in zip(
        "qkv", grads, torch_gradients(q, k, v, do, is_causal), strict=True
    ):
        assert_close(actual, expected, what=f"{what}: d{name}", rtol=1e-4, atol=1e-4)


def triton_forward(impl, *args):
    """impl.triton_flash_forward(*args); skipped where Triton is not installed."""
    try:
        return impl.triton_flash_forward(*args)
    except NotImplementedError:
        raise
    except Exception:
        if importlib.util.find_spec("triton") is None:
            pytest.skip("Triton is not installed (pip install -e '.[triton]')")
        raise


@pytest.mark.parametrize(
    "shape,block,is_causal",
    [
        ((1, 2, 37, 45, 12, 20), (16, 16), False),  # ragged tiles, d and d_v not powers of two
        ((2, 1, 45, 29, 16, 16), (16, 32), True),
    ],
)
def test_triton_forward_matches_torch(impl, device, shape, block, is_causal):
    # On the CPU Triton's interpreter runs the kernel (TRITON_INTERPRET=1, set by the module).
    for dtype in [torch.float32] + ([torch.float16] if device == "cuda" else []):
        q, k, v = qkv(shape, dtype, device)
        what = (
            f"triton_flash_forward({describe(q=q, k=k, v=v)}, is_causal={is_causal}, "
            f"block_q={block[0]}, block_k={block[1]})"
        )
        result = triton_forward(impl, q, k, v, is_causal, *block)
        if not isinstance(result, tuple) or len(result) != 2:
            fail(f"{what} should return a pair (o, lse); got {type(result).__name__}")
        rtol, atol = TOL[dtype]
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        assert_close(result[0], expected, what=what + "[0] (o)", rtol=rtol, atol=atol)
        lse = true_lse(q, k, is_causal).float()
        assert_close(result[1], lse, what=what + "[1] (lse, float32)", rtol=1e-5, atol=1e-5)
