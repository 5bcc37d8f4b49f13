"""Specs for attention: `pytest exercises/attention` (`--impl=solutions`: the reference)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
# Attention sums over up to a few dozen keys, so float32 gets a little more room than one op.
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}

shapes = st.tuples(
    st.integers(1, 2),  # batch
    st.integers(1, 3),  # heads
    st.integers(1, 9),  # T_q
    st.integers(1, 9),  # T_k
    st.integers(1, 16),  # d
    st.integers(1, 16),  # d_v
)


def qkv(shape, dtype, device, seed=0):
    B, H, T_q, T_k, d, d_v = shape
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(B, H, *s, generator=g, dtype=dtype) for s in [(T_q, d), (T_k, d), (T_k, d_v)]
    )
    return q.to(device), k.to(device), v.to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes)
def test_matches_torch(impl, device, dtype, shape):
    q, k, v = qkv(shape, dtype, device)
    rtol, atol = TOL[dtype]
    what = f"scaled_dot_product_attention({describe(q=q, k=k, v=v)})"
    actual = impl.scaled_dot_product_attention(q, k, v)
    assert_close(actual, F.scaled_dot_product_attention(q, k, v), what=what, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_boolean_mask(impl, device, dtype, shape, seed):
    q, k, v = qkv(shape, dtype, device, seed)
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape[2], shape[3], generator=g) < 0.6
    mask[:, 0] = True  # every query keeps at least one key
    mask = mask.to(device)
    rtol, atol = TOL[dtype]
    what = f"scaled_dot_product_attention({describe(q=q, k=k, v=v, mask=mask)})"
    actual = impl.scaled_dot_product_attention(q, k, v, mask=mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(
        actual,
        expected,
        what=what + " (True in the mask means the key takes part)",
        rtol=rtol,
        atol=atol,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes)
def test_causal_matches_torch(impl, device, dtype, shape):
    q, k, v = qkv(shape, dtype, device)
    rtol, atol = TOL[dtype]
    what = f"scaled_dot_product_attention({describe(q=q, k=k, v=v)}, is_causal=True)"
    actual = impl.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(
        actual,
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        what=what,
        rtol=rtol,
        atol=atol,
    )


@given(shape=shapes)
def test_rows_are_convex_combinations(impl, device, shape):
    B, H, T_q, T_k, _, _ = shape
    q, k, _ = qkv(shape, torch.float64, device)
    # With the identity as values, each output row *is* that query's attention weights.
    eye = torch.eye(T_k, dtype=torch.float64, device=device).expand(B, H, T_k, T_k)
    weights = impl.scaled_dot_product_attention(q, k, eye)
    if weights.shape != (B, H, T_q, T_k):
        fail(
            f"with v = identity ({T_k}x{T_k}) the output should have shape {(B, H, T_q, T_k)}, "
            f"got {tuple(weights.shape)}"
        )
    if (weights < -1e-12).any():
        fail("an attention weight is negative: weights come out of a softmax over the keys")
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-9):
        fail(
            f"each query's weights over the keys must sum to 1; a row sums to "
            f"{sums.flatten()[(sums - 1).abs().argmax()].item():.6g} (softmax over the wrong axis?)"
        )


@given(shape=shapes, cut=st.integers(0, 8))
def test_causal_ignores_the_future(impl, device, shape, cut):
    B, H, T, _, d, d_v = shape
    q, k, v = qkv((B, H, T, T, d, d_v), torch.float64, device)
    cut = min(cut, T - 1)
    k2, v2 = k.clone(), v.clone()
    k2[..., cut + 1 :, :] += 10.0  # change only positions after `cut`
    v2[..., cut + 1 :, :] -= 10.0
    before = impl.scaled_dot_product_attention(q, k, v, is_causal=True)[..., : cut + 1, :]
    after = impl.scaled_dot_product_attention(q, k2, v2, is_causal=True)[..., : cut + 1, :]
    assert_close(
        after,
        before,
        rtol=0,
        atol=1e-12,
        what=f"is_causal=True: outputs at positions 0..{cut} after changing keys and values "
        f"at positions > {cut} (a query may see itself and the past, never the future)",
    )


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_permuting_keys_and_values_changes_nothing(impl, device, shape, seed):
    q, k, v = qkv(shape, torch.float64, device)
    perm = torch.randperm(k.shape[-2], generator=torch.Generator().manual_seed(seed)).to(device)
    assert_close(
        impl.scaled_dot_product_attention(q, k[..., perm, :], v[..., perm, :]),
        impl.scaled_dot_product_attention(q, k, v),
        rtol=1e-10,
        atol=1e-10,
        what="scaled_dot_product_attention with keys and values permuted together",
    )


def test_large_logits_stay_finite(impl, device):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 7, 8, generator=g).to(device) * 300  # logits around 1e4
    k = torch.randn(2, 7, 8, generator=g).to(device) * 300
    v = torch.randn(2, 7, 8, generator=g).to(device)
    actual = impl.scaled_dot_product_attention(q, k, v)
    assert_close(
        actual,
        F.scaled_dot_product_attention(q, k, v),
        rtol=1e-4,
        atol=1e-4,
        what=f"scaled_dot_product_attention with logits near 1e4 ({describe(q=q, k=k, v=v)})",
    )


def _copy_into_torch_mha(mha, d_model, n_heads, bias):
    ref = torch.nn.MultiheadAttention(
        d_model, n_heads, bias=bias, batch_first=True, dtype=torch.float64
    )
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight])
        )
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
            ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("is_causal", [False, True])
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 8),
    n_heads=st.sampled_from([1, 2, 4]),
    d_head=st.integers(1, 6),
)
def test_multi_head_matches_torch(impl, device, bias, is_causal, B, T, n_heads, d_head):
    d_model = n_heads * d_head
    torch.manual_seed(0)
    mha = impl.MultiHeadAttention(d_model, n_heads, bias=bias).double()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        layer = getattr(mha, name, None)
        if not isinstance(layer, torch.nn.Linear) or layer.weight.shape != (d_model, d_model):
            fail(
                f"MultiHeadAttention({d_model}, {n_heads}).{name} should be an "
                f"nn.Linear({d_model}, "
                f"{d_model}); found {layer!r}"
            )
        if (layer.bias is not None) != bias:
            fail(f"MultiHeadAttention(..., bias={bias}).{name} has bias={layer.bias is not None}")
    ref = _copy_into_torch_mha(mha, d_model, n_heads, bias)
    x = torch.randn(B, T, d_model, dtype=torch.float64)
    mask = (
        torch.ones(T, T, dtype=torch.bool).triu(1) if is_causal else None
    )  # torch: True = blocked
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    mha, x = mha.to(device), x.to(device)
    actual = mha(x, is_causal=is_causal)
    assert_close(
        actual,
        expected.to(device),
        rtol=1e-9,
        atol=1e-9,
        what=f"MultiHeadAttention(d_model={d_model}, n_heads={n_heads}, bias={bias})"
        f"(x {(B, T, d_model)}, is_causal={is_causal})",
    )


def test_multi_head_gradients_flow(impl, device):
    torch.manual_seed(0)
    mha = impl.MultiHeadAttention(8, 2).to(device)
    x = torch.randn(2, 5, 8, device=device, requires_grad=True)
    mha(x, is_causal=True).square().sum().backward()
    for name, p in [("x", x), *mha.named_parameters()]:
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0:
            fail(
                f"MultiHeadAttention: the gradient of {name} is missing, zero or not finite; "
                "keep the computation in torch operations so autograd can follow it"
            )


def test_scale_is_one_over_sqrt_d(impl, device):
    # One query, two keys: the weight on key 0 is sigmoid((q.k0 - q.k1) / sqrt(d)).
    d = 16
    q = torch.ones(1, d, dtype=torch.float64, device=device)
    k = torch.zeros(2, d, dtype=torch.float64, device=device)
    k[0] = 0.25  # q.k0 = 4, q.k1 = 0
    v = torch.tensor([[1.0], [0.0]], dtype=torch.float64, device=device)
    out = impl.scaled_dot_product_attention(q, k, v)
    expected = 1 / (1 + math.exp(-4 / math.sqrt(d)))
    if abs(out.flatten()[0].item() - expected) > 1e-12:
        fail(
            f"with q.k0 - q.k1 = 4 and d = {d} the weight on key 0 should be "
            f"sigmoid(4 / sqrt({d})) = {expected:.6f}; got {out.flatten()[0].item():.6f}"
        )
