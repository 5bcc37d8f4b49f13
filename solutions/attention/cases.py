"""Hidden grading cases for attention: shapes, masks and dtypes unlike the public specs'."""

import torch

from graders.cases import Case


def sdpa(m, q, k, v, mask=None, is_causal=False):
    return m.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)


def mha(m, x, weights, n_heads, is_causal):
    import torch

    layer = m.MultiHeadAttention(x.shape[-1], n_heads).to(dtype=x.dtype, device=x.device)
    layer.load_state_dict(weights)
    with torch.no_grad():
        return layer(x, is_causal=is_causal)


def _qkv(seed, shape_q, shape_k, d_v, dtype, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_q, generator=g, dtype=dtype) * scale
    k = torch.randn(*shape_k, generator=g, dtype=dtype) * scale
    v = torch.randn(*shape_k[:-1], d_v, generator=g, dtype=dtype)
    return {"q": q, "k": k, "v": v}


def plain(seed):
    return _qkv(seed, (3, 2, 13, 24), (3, 2, 17, 24), 5, torch.float64)


def masked(seed):
    inputs = _qkv(seed, (2, 3, 11, 12), (2, 3, 19, 12), 12, torch.float32)
    mask = torch.rand(1, 3, 11, 19, generator=torch.Generator().manual_seed(seed)) < 0.5
    mask[..., 7] = True  # every query keeps a key
    return {**inputs, "mask": mask}


def causal_rectangular(seed):
    return {**_qkv(seed, (4, 5, 16), (4, 11, 16), 9, torch.float32), "is_causal": True}


def huge_logits(seed):
    return _qkv(seed, (2, 9, 32), (2, 9, 32), 8, torch.float32, scale=200.0)


def multi_head(seed):
    g = torch.Generator().manual_seed(seed)
    d_model, n_heads = 24, 3
    names = ["q_proj", "k_proj", "v_proj", "out_proj"]
    weights = {
        f"{n}.{p}": torch.randn(
            *((d_model, d_model) if p == "weight" else (d_model,)), generator=g, dtype=torch.float64
        )
        / d_model**0.5
        for n in names
        for p in ("weight", "bias")
    }
    x = torch.randn(2, 10, d_model, generator=g, dtype=torch.float64)
    return {"x": x, "weights": weights, "n_heads": n_heads, "is_causal": seed % 2 == 1}


def long_causal(seed):
    return {**_qkv(seed, (1, 4, 512, 64), (1, 4, 512, 64), 64, torch.float32), "is_causal": True}


CASES = [
    Case("attention over 17 keys, float64", call=sdpa, inputs=plain, points=2, seed=101),
    Case(
        "a broadcast boolean mask, float32",
        call=sdpa,
        inputs=masked,
        points=2,
        seed=202,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "causal, 5 queries over 11 keys",
        call=sdpa,
        inputs=causal_rectangular,
        points=2,
        seed=303,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "logits near 1e4 stay finite",
        call=sdpa,
        inputs=huge_logits,
        points=1,
        seed=404,
        rtol=1e-4,
        atol=1e-4,
    ),
    Case(
        "multi-head attention, 3 heads",
        call=mha,
        inputs=multi_head,
        points=2,
        seed=505,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "causal multi-head attention, 3 heads",
        call=mha,
        inputs=multi_head,
        points=1,
        seed=506,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "512 causal positions (speed)",
        call=sdpa,
        inputs=long_causal,
        points=1,
        seed=606,
        rtol=1e-4,
        atol=1e-5,
        speed_ratio=3.0,
        speed_points=2,
    ),
]
