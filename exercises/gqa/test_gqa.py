"""Specs for gqa: `pytest exercises/gqa` (`--impl=solutions`: the reference)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
# A few dozen products and one softmax per output: float32 keeps about 1e-6 of its 7 digits.
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}

shapes = st.tuples(
    st.integers(1, 2),  # batch
    st.integers(1, 3),  # G, key/value heads
    st.integers(1, 3),  # H / G, query heads per group
    st.integers(1, 7),  # T_q
    st.integers(1, 9),  # T_k
    st.integers(1, 8),  # D
    st.integers(1, 8),  # D_v
)


def qkv(shape, dtype, device, seed=0):
    B, G, r, T_q, T_k, D, D_v = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, G * r, T_q, D, generator=g, dtype=dtype)
    k = torch.randn(B, G, T_k, D, generator=g, dtype=dtype)
    v = torch.randn(B, G, T_k, D_v, generator=g, dtype=dtype)
    return q.to(device), k.to(device), v.to(device)


def end_aligned_causal(T_q, T_k, device):
    """Query i is position T_k - T_q + i: it sees keys 0 .. T_k - T_q + i. True = takes part."""
    return torch.ones(T_q, T_k, dtype=torch.bool, device=device).tril(T_k - T_q)


def heads(t, n, D):
    """(B, T, n * D) -> (B, n, T, D)."""
    return t.unflatten(-1, (n, D)).transpose(1, 2)


def torch_forward(layer, x, is_causal):
    """What a GroupedQueryAttention must compute, with torch's own attention and its weights."""
    B, T, _ = x.shape
    H, G, D = layer.n_heads, layer.n_kv_heads, layer.head_dim
    q, k, v = (
        heads(layer.q_proj(x), H, D),
        heads(layer.k_proj(x), G, D),
        heads(layer.v_proj(x), G, D),
    )
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
    return layer.out_proj(out.transpose(1, 2).reshape(B, T, H * D))


def new_layer(impl, d_model, n_heads, n_kv_heads, device, bias=False, seed=0):
    torch.manual_seed(seed)
    return impl.GroupedQueryAttention(d_model, n_heads, n_kv_heads, bias=bias).double().to(device)


# ---------------------------------------------------------------- grouped_query_attention


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes)
def test_matches_torch(impl, device, dtype, shape):
    q, k, v = qkv(shape, dtype, device)
    rtol, atol = TOL[dtype]
    assert_close(
        impl.grouped_query_attention(q, k, v),
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
        what=f"grouped_query_attention({describe(q=q, k=k, v=v)})",
        rtol=rtol,
        atol=atol,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes)
def test_causal_matches_torch(impl, device, dtype, shape):
    B, G, r, T, _, D, D_v = shape
    q, k, v = qkv((B, G, r, T, T, D, D_v), dtype, device)
    rtol, atol = TOL[dtype]
    assert_close(
        impl.grouped_query_attention(q, k, v, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        what=f"grouped_query_attention({describe(q=q, k=k, v=v)}, is_causal=True)",
        rtol=rtol,
        atol=atol,
    )


@given(shape=shapes)
def test_causal_mask_is_aligned_to_the_end(impl, device, shape):
    B, G, r, T_q, T_k, D, D_v = shape
    T_q = min(T_q, T_k)
    q, k, v = qkv((B, G, r, T_q, T_k, D, D_v), torch.float64, device)
    expected = F.scaled_dot_product_attention(
        q, k, v, attn_mask=end_aligned_causal(T_q, T_k, device), enable_gqa=True
    )
    assert_close(
        impl.grouped_query_attention(q, k, v, is_causal=True),
        expected,
        what=f"grouped_query_attention({describe(q=q, k=k, v=v)}, is_causal=True): "
        f"{T_q} new queries after {T_k - T_q} cached keys, query i seeing keys "
        f"0..{T_k - T_q}+i",
        rtol=1e-10,
        atol=1e-10,
    )


@given(G=st.integers(1, 4), r=st.integers(1, 4), T=st.integers(1, 6))
def test_head_h_reads_group_h_div_r(impl, device, G, r, T):
    # Every value of group g equals g, so whatever the weights, head h returns its group's number.
    q = torch.randn(1, G * r, T, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(G))
    k = torch.randn(1, G, T, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(r))
    v = torch.arange(G, dtype=torch.float64).view(1, G, 1, 1).expand(1, G, T, 1)
    out = impl.grouped_query_attention(q.to(device), k.to(device), v.to(device))
    if tuple(out.shape) != (1, G * r, T, 1):
        fail(
            f"grouped_query_attention(q {(1, G * r, T, 4)}, k {(1, G, T, 4)}, v {(1, G, T, 1)}) "
            f"should return shape {(1, G * r, T, 1)}; got {tuple(out.shape)}"
        )
    got = [round(x) for x in out[0, :, 0, 0].tolist()]
    want = [h // r for h in range(G * r)]
    if got != want:
        fail(
            f"with {G * r} query heads and {G} key/value groups, head h must read group "
            f"h // {r}: the groups read by heads 0..{G * r - 1} should be {want}; got {got}"
        )


# ---------------------------------------------------------------- the module


@pytest.mark.parametrize("bias", [False, True])
@given(d_head=st.integers(1, 4), G=st.integers(1, 3), r=st.integers(1, 3))
def test_module_layers_have_the_grouped_shapes(impl, device, bias, d_head, G, r):
    H = G * r
    d_model = H * d_head
    layer = impl.GroupedQueryAttention(d_model, H, G, bias=bias)
    expected = {
        "q_proj": (d_model, d_model),
        "k_proj": (G * d_head, d_model),
        "v_proj": (G * d_head, d_model),
        "out_proj": (d_model, d_model),
    }
    for name, shape in expected.items():
        found = getattr(layer, name, None)
        if not isinstance(found, torch.nn.Linear) or tuple(found.weight.shape) != shape:
            fail(
                f"GroupedQueryAttention(d_model={d_model}, n_heads={H}, n_kv_heads={G}).{name} "
                f"should be an nn.Linear({shape[1]}, {shape[0]}); found {found!r}"
            )
        if (found.bias is not None) != bias:
            fail(
                f"GroupedQueryAttention(..., bias={bias}).{name} has bias={found.bias is not None}"
            )


@pytest.mark.parametrize("is_causal", [False, True])
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 7),
    G=st.integers(1, 3),
    r=st.sampled_from([1, 2, 4]),
    d_head=st.integers(1, 4),
)
def test_module_matches_torch(impl, device, is_causal, B, T, G, r, d_head):
    H = G * r
    layer = new_layer(impl, H * d_head, H, G, device, bias=True)
    x = torch.randn(B, T, H * d_head, dtype=torch.float64, device=device)
    assert_close(
        layer(x, is_causal=is_causal),
        torch_forward(layer, x, is_causal),
        what=f"GroupedQueryAttention(d_model={H * d_head}, n_heads={H}, n_kv_heads={G})"
        f"(x {(B, T, H * d_head)}, is_causal={is_causal})",
        rtol=1e-9,
        atol=1e-9,
    )


def test_module_gradients_flow(impl, device):
    torch.manual_seed(0)
    layer = impl.GroupedQueryAttention(8, 4, 2).to(device)
    x = torch.randn(2, 5, 8, device=device, requires_grad=True)
    layer(x, is_causal=True).square().sum().backward()
    for name, p in [("x", x), *layer.named_parameters()]:
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0:
            fail(
                f"GroupedQueryAttention: the gradient of {name} is missing, zero or not finite; "
                "keep the computation in torch operations so autograd can follow it"
            )


# ---------------------------------------------------------------- the KV cache


@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4), G=st.integers(1, 3))
def test_kv_cache_appends_along_time(impl, device, sizes, G):
    cache = impl.KVCache()
    g = torch.Generator().manual_seed(len(sizes))
    ks = [torch.randn(2, G, n, 3, generator=g).to(device) for n in sizes]
    vs = [torch.randn(2, G, n, 5, generator=g).to(device) for n in sizes]
    for i, (k, v) in enumerate(zip(ks, vs, strict=True)):
        got = cache.update(k, v)
        what = f"KVCache.update after updates with T_new = {sizes[: i + 1]}"
        if not isinstance(got, tuple) or len(got) != 2:
            fail(f"{what} should return a pair (k, v); got {type(got).__name__}")
        assert_close(got[0], torch.cat(ks[: i + 1], 2), what=f"{what}: keys", rtol=0, atol=0)
        assert_close(got[1], torch.cat(vs[: i + 1], 2), what=f"{what}: values", rtol=0, atol=0)
        if len(cache) != sum(sizes[: i + 1]):
            fail(f"{what}: len(cache) should be {sum(sizes[: i + 1])}; got {len(cache)}")


@given(
    chunks=st.lists(st.integers(1, 3), min_size=1, max_size=5),
    G=st.integers(1, 2),
    r=st.sampled_from([1, 3]),
)
def test_cached_decoding_matches_full_forward(impl, device, chunks, G, r):
    H = G * r
    layer = new_layer(impl, 2 * H, H, G, device)
    T = sum(chunks)
    x = torch.randn(2, T, 2 * H, dtype=torch.float64, device=device)
    with torch.no_grad():
        full = layer(x, is_causal=True)
        cache, steps, start = impl.KVCache(), [], 0
        for n in chunks:
            steps.append(layer(x[:, start : start + n], is_causal=True, cache=cache))
            start += n
    assert_close(
        torch.cat(steps, dim=1),
        full,
        what=f"GroupedQueryAttention(n_heads={H}, n_kv_heads={G}): outputs decoded in chunks of "
        f"{chunks} positions with a KVCache, against one causal forward over x {tuple(x.shape)}",
        rtol=1e-10,
        atol=1e-10,
    )


def test_cache_holds_the_keys_and_values(impl, device):
    B, T, H, G, D = 2, 6, 6, 2, 3
    layer = new_layer(impl, H * D, H, G, device, bias=True)
    x = torch.randn(B, T, H * D, dtype=torch.float64, device=device)
    cache = impl.KVCache()
    with torch.no_grad():
        layer(x[:, :4], is_causal=True, cache=cache)
        layer(x[:, 4:], is_causal=True, cache=cache)
        k, v = heads(layer.k_proj(x), G, D), heads(layer.v_proj(x), G, D)
    if len(cache) != T:
        fail(
            f"after a prompt of 4 positions and 2 more, len(cache) should be {T}; got {len(cache)}"
        )
    what = "after GroupedQueryAttention(18, 6, 2) ran on 4 then 2 positions with a KVCache,"
    for name, got, want in [("k", cache.k, k), ("v", cache.v, v)]:
        if got is None:
            fail(f"{what} cache.{name} is None; forward(x, cache=cache) must call cache.update")
        assert_close(
            got,
            want,
            what=f"{what} cache.{name} (the {name}_proj heads (B, G, T, D) of every position, "
            "kept so that no step recomputes the past)",
            rtol=1e-12,
            atol=1e-12,
        )


# ---------------------------------------------------------------- converting and costing


@given(G=st.integers(1, 3), r=st.integers(1, 4), D=st.integers(1, 3), d_in=st.integers(1, 4))
def test_mean_pool_heads_averages_each_group(impl, device, G, r, D, d_in):
    H = G * r
    g = torch.Generator().manual_seed(H * 10 + D)
    w = torch.randn(H * D, d_in, generator=g, dtype=torch.float64).to(device)
    b = torch.randn(H * D, generator=g, dtype=torch.float64).to(device)
    for name, t in [("weight", w), ("bias", b)]:
        per_head = list(t.split(D))  # head h owns rows h * D ... h * D + D - 1
        want = torch.cat([sum(per_head[j * r : (j + 1) * r]) / r for j in range(G)])
        assert_close(
            impl.mean_pool_heads(t, H, G),
            want,
            what=f"mean_pool_heads({name} {tuple(t.shape)}, n_heads={H}, n_kv_heads={G}): "
            f"group g is the mean of heads g*{r} .. g*{r}+{r - 1}",
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize(("H", "G"), [(4, 2), (6, 3), (4, 1)])
def test_pooled_checkpoint_keeps_heads_that_agree(impl, device, H, G):
    # A multi-head layer whose heads agree within each group loses nothing when pooled to G groups.
    D = 3
    mha = new_layer(impl, H * D, H, H, device, bias=True, seed=H + G)
    with torch.no_grad():
        for proj in (mha.k_proj, mha.v_proj):
            for t in (proj.weight, proj.bias):
                per_group = t.unflatten(0, (G, H // G, D))
                per_group.copy_(per_group[:, :1].expand_as(per_group).clone())
    gqa = new_layer(impl, H * D, H, G, device, bias=True)
    state = dict(mha.state_dict())
    for key in ("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"):
        state[key] = impl.mean_pool_heads(state[key], H, G)
    gqa.load_state_dict(state)
    x = torch.randn(2, 5, H * D, dtype=torch.float64, device=device)
    with torch.no_grad():
        assert_close(
            gqa(x, is_causal=True),
            mha(x, is_causal=True),
            what=f"a {H}-head layer whose heads agree within groups of {H // G}, pooled to "
            f"n_kv_heads={G} with mean_pool_heads",
            rtol=1e-10,
            atol=1e-10,
        )


def test_kv_cache_bytes_worked_examples(impl):
    # Llama 2 70B: 80 layers, 8 key/value heads of 128 numbers (64 query heads); 4096 positions.
    cases = [
        ((80, 8, 128, 4096), {}, 1_342_177_280),  # 1.25 GiB in float16
        ((80, 64, 128, 4096), {}, 10_737_418_240),  # the same model with multi-head attention
        ((80, 8, 128, 4096), {"batch": 3, "dtype": torch.float32}, 8_053_063_680),
        ((2, 1, 16, 10), {"dtype": torch.bfloat16}, 1_280),
        ((1, 1, 1, 1), {"dtype": torch.float64}, 16),
    ]
    for args, kwargs, want in cases:
        got = impl.kv_cache_bytes(*args, **kwargs)
        shown = ", ".join([*map(str, args), *(f"{k}={v}" for k, v in kwargs.items())])
        if not isinstance(got, int) or got != want:
            fail(
                f"kv_cache_bytes({shown}) should be {want:,} (a key AND a value per layer, head "
                f"and position, dtype's bytes each); got {got!r}"
            )
