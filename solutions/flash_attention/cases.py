"""Hidden grading cases for flash_attention: shapes, tiles and dtypes unlike the public specs'."""

import torch
import torch.nn.functional as F

from graders.cases import Case


def forward(m, q, k, v, is_causal, block_q, block_k):
    return m.flash_attention_forward(q, k, v, is_causal, block_q, block_k)


def backward(m, do, q, k, v, o, lse, is_causal, block_q, block_k):
    return m.flash_attention_backward(do, q, k, v, o, lse, is_causal, block_q, block_k)


def autograd(m, q, k, v, do, is_causal, block_q, block_k):
    import torch

    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    o = m.flash_attention(q, k, v, is_causal, block_q, block_k)
    return (o.detach(), *torch.autograd.grad(o, (q, k, v), do))


def memory_forward(m, q, k, v, is_causal, block_q, block_k):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes = [t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            self.numel = max([self.numel, *sizes])
            return out

    with Largest() as mode:
        o, _ = m.flash_attention_forward(q, k, v, is_causal, block_q, block_k)
    full = int(mode.numel >= q.shape[-2] * k.shape[-2])
    return {"o": o, "holds_a_T_q_x_T_k_tensor": torch.tensor(full)}


def memory_backward(m, q, k, v, do, is_causal, block_q, block_k):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes = [t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            self.numel = max([self.numel, *sizes])
            return out

    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    o = m.flash_attention(q, k, v, is_causal, block_q, block_k)
    with Largest() as mode:
        grads = torch.autograd.grad(o, (q, k, v), do)
    full = int(mode.numel >= q.shape[-2] * k.shape[-2])
    return {"grads": grads, "holds_a_T_q_x_T_k_tensor": torch.tensor(full)}


def triton_forward(m, q, k, v, is_causal, block_q, block_k):
    return m.triton_flash_forward(q, k, v, is_causal, block_q, block_k)


def triton_speed(m, q, k, v, is_causal, block_q, block_k):
    return m.triton_flash_forward(q, k, v, is_causal, block_q, block_k)[1][..., :64]


def _qkv(seed, B, H, T_q, T_k, d, d_v, dtype):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, d, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, T_k, d, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, T_k, d_v, generator=g, dtype=torch.float64)
    do = torch.randn(B, H, T_q, d_v, generator=g, dtype=torch.float64)
    return {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype)}, do.to(dtype)


def wide(seed):
    qkv, _ = _qkv(seed, 3, 2, 29, 53, 10, 6, torch.float64)
    return {**qkv, "is_causal": False, "block_q": 8, "block_k": 16}


def causal_square(seed):
    qkv, _ = _qkv(seed, 2, 3, 47, 47, 24, 24, torch.float32)
    return {**qkv, "is_causal": True, "block_q": 16, "block_k": 8}


def given_lse(seed):
    qkv, do = _qkv(seed, 2, 2, 31, 22, 9, 13, torch.float64)
    o = F.scaled_dot_product_attention(qkv["q"], qkv["k"], qkv["v"])
    s = qkv["q"] @ qkv["k"].transpose(-2, -1) / 9**0.5
    lse = s.logsumexp(-1)
    return {**qkv, "do": do, "o": o, "lse": lse, "is_causal": False, "block_q": 7, "block_k": 5}


def causal_rectangular_grads(seed):
    qkv, do = _qkv(seed, 1, 3, 36, 21, 8, 8, torch.float64)
    return {**qkv, "do": do, "is_causal": True, "block_q": 10, "block_k": 6}


def long_memory(seed):
    qkv, _ = _qkv(seed, 1, 3, 130, 210, 8, 8, torch.float32)
    return {**qkv, "is_causal": False, "block_q": 32, "block_k": 24}


def long_memory_grads(seed):
    qkv, do = _qkv(seed, 1, 3, 210, 130, 8, 8, torch.float32)
    return {**qkv, "do": do, "is_causal": True, "block_q": 24, "block_k": 32}


def long_causal(seed):
    qkv, _ = _qkv(seed, 1, 4, 512, 512, 64, 64, torch.float32)
    return {**qkv, "is_causal": True, "block_q": 64, "block_k": 64}


def triton_small(seed):
    qkv, _ = _qkv(seed, 1, 3, 50, 70, 32, 24, torch.float32)
    return {**qkv, "is_causal": seed % 2 == 1, "block_q": 16, "block_k": 32}


def triton_long(seed):
    qkv, _ = _qkv(seed, 2, 8, 2048, 2048, 64, 64, torch.float16)
    return {**qkv, "is_causal": True, "block_q": 64, "block_k": 64}


def _same_memory_verdict(actual, expected, inputs):
    """The T_q x T_k check exactly, then the numbers with float32's tolerances for ~200 keys."""
    key = "holds_a_T_q_x_T_k_tensor"
    if not isinstance(actual, dict) or key not in actual:
        return f"expected a dict with {key!r}, got {type(actual).__name__}"
    if int(actual[key]) != int(expected[key]):
        return (
            "an operation returned a tensor of T_q x T_k numbers or more (the score matrix)"
            if int(actual[key])
            else "no tensor of T_q x T_k numbers was built, where this mistake builds one"
        )
    got = actual.get("o", actual.get("grads"))
    want = expected.get("o", expected.get("grads"))
    got, want = (got,) if torch.is_tensor(got) else got, (want,) if torch.is_tensor(want) else want
    for a, e in zip(got, want, strict=True):
        if a.shape != e.shape or not torch.allclose(a.cpu(), e.cpu(), rtol=1e-4, atol=1e-4):
            return "the output differs from the exact attention (or its gradients)"
    return None


CASES = [
    Case(
        "forward (o, lse), 29 queries over 53 keys, tiles 8 x 16, float64",
        call=forward,
        inputs=wide,
        points=2,
        seed=11,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "causal forward, 47 positions, tiles 16 x 8, float32",
        call=forward,
        inputs=causal_square,
        points=2,
        seed=22,
        rtol=1e-5,
        atol=2e-5,
    ),
    Case(
        "backward from a given lse, tiles 7 x 5, float64",
        call=backward,
        inputs=given_lse,
        points=2,
        seed=33,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "flash_attention and its gradients, causal, 36 queries over 21 keys",
        call=autograd,
        inputs=causal_rectangular_grads,
        points=2,
        seed=44,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "forward memory: no T_q x T_k tensor (130 x 210)",
        call=memory_forward,
        inputs=long_memory,
        points=2,
        seed=55,
        compare=_same_memory_verdict,
    ),
    Case(
        "backward memory: no T_q x T_k tensor (210 x 130, causal)",
        call=memory_backward,
        inputs=long_memory_grads,
        points=2,
        seed=66,
        compare=_same_memory_verdict,
    ),
    Case(
        "512 causal positions (speed)",
        call=forward,
        inputs=long_causal,
        points=1,
        seed=77,
        rtol=1e-4,
        atol=1e-5,
        speed_ratio=3.0,
        speed_points=2,
    ),
    Case(
        "Triton forward, 50 queries over 70 keys, float32",
        call=triton_forward,
        inputs=triton_small,
        requires=("triton",),
        points=1,
        seed=88,
        rtol=1e-5,
        atol=2e-5,
    ),
    Case(
        "Triton forward, causal, 50 queries over 70 keys, float32",
        call=triton_forward,
        inputs=triton_small,
        requires=("triton",),
        points=1,
        seed=89,
        rtol=1e-5,
        atol=2e-5,
    ),
    Case(
        "Triton forward on a GPU, 2048 causal positions, float16 (speed)",
        call=triton_speed,
        inputs=triton_long,
        requires=("cuda", "triton"),
        points=0.5,
        seed=99,
        rtol=1e-3,
        atol=1e-3,
        speed_ratio=3.0,
        speed_points=1,
    ),
]
