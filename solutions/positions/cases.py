"""Hidden grading cases for positions: sizes, bases, dtypes and head counts unlike the specs'."""

import torch

from graders.cases import Case


def sinusoidal(m, T, d, base, dtype):
    import torch

    return m.sinusoidal_embedding(T, d, base, dtype=getattr(torch, dtype))


def shifted(m, scores):
    # Only the entries rel_shift defines count (j <= i + T_k - T_q); the rest are zeroed.
    T_q, T_k = scores.shape[-2:]
    return m.rel_shift(scores).tril(T_k - T_q)


def buckets(m, relative_position, bidirectional, num_buckets, max_distance):
    return m.relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance)


def rope(m, x, positions, base):
    return m.apply_rope(x, positions, base)


def rope_and_input(m, x, positions, base):
    out = m.apply_rope(x, positions, base)
    return [out, x]  # x as the call left it


def rope_summary(m, x, positions, base):
    return m.apply_rope(x, positions, base)[..., ::61, :]  # every 61st position: small, all kinds


def slopes(m, head_counts):
    import torch

    return [m.alibi_slopes(n, dtype=torch.float64) for n in head_counts]


def bias(m, n_heads, T_q, T_k, dtype):
    import torch

    return m.alibi_bias(n_heads, T_q, T_k, dtype=getattr(torch, dtype))


def _randn(seed, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def sinusoid_wide(seed):
    return {"T": 77, "d": 46, "base": 10000.0, "dtype": "float64"}


def sinusoid_float32(seed):
    return {"T": 300, "d": 20, "base": 500.0, "dtype": "float32"}


def scores_square(seed):
    return {"scores": _randn(seed, 2, 3, 7, 7, dtype=torch.float64)}


def scores_with_memory(seed):
    return {"scores": _randn(seed, 4, 5, 12)}


def relative_line(seed):
    g = torch.Generator().manual_seed(seed)
    rel = torch.cat([torch.arange(-70, 71), torch.randint(-600, 600, (50,), generator=g)])
    return {"relative_position": rel, "bidirectional": True, "num_buckets": 16, "max_distance": 64}


def relative_matrix(seed):
    rel = torch.arange(300)[None, :] - torch.arange(260, 300)[:, None]  # 40 queries after a cache
    return {
        "relative_position": rel,
        "bidirectional": False,
        "num_buckets": 32,
        "max_distance": 128,
    }


def relative_odd(seed):
    rel = torch.arange(-115, 116).view(11, 21)
    return {"relative_position": rel, "bidirectional": True, "num_buckets": 10, "max_distance": 50}


def rope_offset(seed):
    g = torch.Generator().manual_seed(seed)
    positions = torch.randperm(90, generator=g)[:9] + 40  # scattered, out of order, from 40
    x = _randn(seed, 3, 2, 9, 14, dtype=torch.float64)
    return {"x": x, "positions": positions, "base": 10000.0}


def rope_float32(seed):
    x = _randn(seed, 6, 11, 8)
    return {"x": x, "positions": torch.arange(100, 111), "base": 500.0}


def rope_untouched(seed):
    return {"x": _randn(seed, 2, 6, 10), "positions": torch.arange(5, 11), "base": 10000.0}


def rope_big(seed):
    x = _randn(seed, 4, 16, 1024, 64)
    return {"x": x, "positions": torch.arange(1024), "base": 10000.0}


def head_counts_odd(seed):
    return {"head_counts": [3, 7, 12, 20]}


def head_counts_powers(seed):
    return {"head_counts": [1, 16, 32]}


def bias_cached(seed):
    return {"n_heads": 6, "T_q": 4, "T_k": 9, "dtype": "float64"}


def bias_square(seed):
    return {"n_heads": 16, "T_q": 7, "T_k": 7, "dtype": "float32"}


EXACT = {"rtol": 0.0, "atol": 0.0}
# float32 angles p * theta carry a relative error near 1e-7: about 3e-5 at p = 300 for a table
# value, and about 1e-4 for a rotated value of size 4 at p = 1024 (the README's table).
CASES = [
    Case("sinusoids, 77 positions x 46 features, float64", sinusoidal, sinusoid_wide, 2, seed=1),
    Case(
        "sinusoids, 300 positions, base 500, float32",
        sinusoidal,
        sinusoid_float32,
        1,
        seed=2,
        rtol=1e-5,
        atol=1e-4,
    ),
    Case("rel_shift, 7 queries over 7 keys, float64", shifted, scores_square, 2, seed=3, **EXACT),
    Case(
        "rel_shift, 5 queries over 12 keys (memory)",
        shifted,
        scores_with_memory,
        2,
        seed=4,
        **EXACT,
    ),
    Case("T5 buckets, bidirectional, 16 over 64", buckets, relative_line, 2, seed=6, **EXACT),
    Case("T5 buckets, a decoder's (40, 300) matrix", buckets, relative_matrix, 2, seed=7, **EXACT),
    Case("T5 buckets, bidirectional, 10 over 50", buckets, relative_odd, 1, seed=8, **EXACT),
    Case(
        "RoPE at scattered positions from 40, float64",
        rope,
        rope_offset,
        2,
        seed=9,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "RoPE at positions 100..110, base 500, float32",
        rope,
        rope_float32,
        1,
        seed=10,
        rtol=1e-5,
        atol=1e-4,
    ),
    Case("RoPE leaves its input unchanged", rope_and_input, rope_untouched, 1, seed=11),
    Case(
        "RoPE on (4, 16, 1024, 64) queries (speed)",
        rope_summary,
        rope_big,
        1,
        seed=12,
        rtol=1e-5,
        atol=2e-4,
        speed_ratio=4.0,
        speed_points=1,
    ),
    Case("ALiBi slopes for 3, 7, 12 and 20 heads", slopes, head_counts_odd, 2, seed=13),
    Case("ALiBi slopes for 1, 16 and 32 heads", slopes, head_counts_powers, 1, seed=14),
    Case("ALiBi bias, 6 heads, 4 queries over 9 keys", bias, bias_cached, 2, seed=15),
    Case("ALiBi bias, 16 heads, 7 x 7, float32", bias, bias_square, 1, seed=16),
]
