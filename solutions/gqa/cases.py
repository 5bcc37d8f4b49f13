"""Hidden grading cases for gqa: shapes, groupings and dtypes unlike the public specs'."""

import torch

from graders.cases import Case


def gqa(m, q, k, v, is_causal=False):
    return m.grouped_query_attention(q, k, v, is_causal=is_causal)


def decode(m, x, weights, n_heads, n_kv_heads, chunks):
    """Feed x (B, T, d_model) through a layer with a KVCache, chunk by chunk; return every output
    and what the cache holds at the end."""
    import torch

    layer = m.GroupedQueryAttention(x.shape[-1], n_heads, n_kv_heads, bias=True)
    layer = layer.to(dtype=x.dtype, device=x.device)
    layer.load_state_dict(weights)
    cache, outputs, start = m.KVCache(), [], 0
    with torch.no_grad():
        for n in chunks:
            outputs.append(layer(x[:, start : start + n], is_causal=True, cache=cache))
            start += n
    return {"outputs": torch.cat(outputs, dim=1), "k": cache.k, "v": cache.v, "len": len(cache)}


def forward(m, x, weights, n_heads, n_kv_heads, is_causal):
    import torch

    layer = m.GroupedQueryAttention(x.shape[-1], n_heads, n_kv_heads, bias=True)
    layer = layer.to(dtype=x.dtype, device=x.device)
    layer.load_state_dict(weights)
    with torch.no_grad():
        return layer(x, is_causal=is_causal)


def decode_last(m, x, weights, n_heads, n_kv_heads, prompt):
    """Prefill `prompt` positions, then decode the rest one at a time; return the last output."""
    import torch

    layer = m.GroupedQueryAttention(x.shape[-1], n_heads, n_kv_heads, bias=True)
    layer = layer.to(dtype=x.dtype, device=x.device)
    layer.load_state_dict(weights)
    cache = m.KVCache()
    with torch.no_grad():
        out = layer(x[:, :prompt], is_causal=True, cache=cache)
        for t in range(prompt, x.shape[1]):
            out = layer(x[:, t : t + 1], is_causal=True, cache=cache)
    return out


def pool(m, weight, bias, n_heads, n_kv_heads):
    return {
        "weight": m.mean_pool_heads(weight, n_heads, n_kv_heads),
        "bias": m.mean_pool_heads(bias, n_heads, n_kv_heads),
    }


def cache_sizes(m, configs):
    import torch

    return [m.kv_cache_bytes(*args, batch=b, dtype=getattr(torch, dt)) for *args, b, dt in configs]


# ---------------------------------------------------------------- inputs


def _qkv(seed, B, H, G, T_q, T_k, D, D_v, dtype):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, D, generator=g, dtype=dtype)
    k = torch.randn(B, G, T_k, D, generator=g, dtype=dtype)
    v = torch.randn(B, G, T_k, D_v, generator=g, dtype=dtype)
    return {"q": q, "k": k, "v": v}


def eight_heads_two_groups(seed):
    return _qkv(seed, B=2, H=8, G=2, T_q=11, T_k=14, D=12, D_v=6, dtype=torch.float64)


def multi_query_causal(seed):
    return {**_qkv(seed, 3, 5, 1, 10, 10, 16, 16, torch.float32), "is_causal": True}


def new_queries_after_cached_keys(seed):
    # Three batch axes in front (the function takes any leading shape), 6 heads over 3 groups.
    inputs = _qkv(seed, B=2, H=6, G=3, T_q=4, T_k=13, D=8, D_v=8, dtype=torch.float64)
    return {key: t.unsqueeze(0) for key, t in inputs.items()} | {"is_causal": True}


def _layer(seed, d_model, n_heads, n_kv_heads, B, T, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    d_kv = d_model // n_heads * n_kv_heads
    shapes = {
        "q_proj": (d_model, d_model),
        "k_proj": (d_kv, d_model),
        "v_proj": (d_kv, d_model),
        "out_proj": (d_model, d_model),
    }
    weights = {}
    for name, (n_out, n_in) in shapes.items():
        weights[f"{name}.weight"] = torch.randn(n_out, n_in, generator=g, dtype=dtype) / n_in**0.5
        weights[f"{name}.bias"] = 0.1 * torch.randn(n_out, generator=g, dtype=dtype)
    x = torch.randn(B, T, d_model, generator=g, dtype=dtype)
    return {"x": x, "weights": weights, "n_heads": n_heads, "n_kv_heads": n_kv_heads}


def layer_forward(seed):
    return {**_layer(seed, 40, 8, 4, B=2, T=9), "is_causal": True}


def cached_decoding(seed):
    # A prompt of 5, then single tokens and chunks: chunks need the mask aligned to the end.
    return {**_layer(seed, 36, 6, 2, B=3, T=17), "chunks": [5, 1, 1, 3, 1, 3, 1, 2]}


def cached_multi_query(seed):
    return {**_layer(seed, 24, 4, 1, B=1, T=12, dtype=torch.float32), "chunks": [4] + [1] * 8}


def long_decoding(seed):
    # A prompt of 384 positions, then 48 steps of one token. With the cache a step costs about
    # d_model^2 + T * d_model; recomputing the prefix costs T * d_model^2 + T^2 * d_model.
    return {**_layer(seed, 128, 4, 2, B=1, T=432, dtype=torch.float32), "prompt": 384}


def pool_twelve_heads(seed):
    g = torch.Generator().manual_seed(seed)
    H, D, d_model = 12, 5, 20
    return {
        "weight": torch.randn(H * D, d_model, generator=g, dtype=torch.float64),
        "bias": torch.randn(H * D, generator=g, dtype=torch.float64),
        "n_heads": H,
        "n_kv_heads": 3,
    }


def mistral_sizes(seed):
    # Mistral 7B: 32 layers, 8 key/value heads of 128; then other lengths, batches and dtypes.
    return {
        "configs": [
            [32, 8, 128, 8192, 1, "float16"],
            [32, 32, 128, 8192, 1, "float16"],
            [32, 8, 128, 32768, 4, "bfloat16"],
            [12, 12, 64, 1024, 8, "float32"],
            [3, 2, 7, 5 + seed % 7, 2, "float64"],
        ]
    }


CASES = [
    Case(
        "8 query heads over 2 groups, float64",
        call=gqa,
        inputs=eight_heads_two_groups,
        points=2,
        seed=101,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "multi-query, causal, float32",
        call=gqa,
        inputs=multi_query_causal,
        points=1,
        seed=202,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "4 causal queries after 9 cached keys",
        call=gqa,
        inputs=new_queries_after_cached_keys,
        points=2,
        seed=303,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "a layer with 8 heads over 4 groups",
        call=forward,
        inputs=layer_forward,
        points=2,
        seed=404,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "decoding 17 positions with a KV cache, 6 heads over 2 groups",
        call=decode,
        inputs=cached_decoding,
        points=3,
        seed=505,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "multi-query decoding with a KV cache, float32",
        call=decode,
        inputs=cached_multi_query,
        points=1,
        seed=606,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "mean-pooling 12 heads into 3 groups",
        call=pool,
        inputs=pool_twelve_heads,
        points=2,
        seed=707,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case("KV cache sizes", call=cache_sizes, inputs=mistral_sizes, points=1, seed=808),
    Case(
        "decoding 48 tokens after a prompt of 384 (speed)",
        call=decode_last,
        inputs=long_decoding,
        points=1,
        seed=909,
        rtol=1e-4,
        atol=1e-5,
        speed_ratio=3.0,
        speed_points=2,
    ),
]
