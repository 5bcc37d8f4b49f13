"""Five ways to tell a transformer where its tokens are, in the order they were published.

Attention by itself ignores order: permute the keys and values together and every output stays the
same. Each scheme here puts position back in a different place: added to the input (sinusoidal,
2017), as a learned score of the relative distance (Transformer-XL, 2019; T5, 2020), as a rotation
of queries and keys (RoPE, 2021), or as a fixed penalty on distance (ALiBi, 2022).

Conventions shared by every function: positions count from 0; with T_q queries and T_k >= T_q keys
(a KV cache), the queries are the LAST T_q positions, so query i sits at position i + T_k - T_q;
a relative position is key position minus query position (negative for keys in the past).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "rel_shift",
    "relative_position_bucket",
    "sinusoidal_embedding",
]


def sinusoidal_embedding(
    T: int,
    d: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The fixed position table of Vaswani et al. (2017), to be added to the token embeddings.

    Shape: (T, d), d even. Row p, for i = 0 .. d/2 - 1, with omega_i = base ** (-2i / d):
        pe[p, 2i] = sin(p * omega_i),    pe[p, 2i + 1] = cos(p * omega_i)
    (sines and cosines interleaved, as in the paper). Computed in float32 or better, returned in
    `dtype` on `device`.
    """
    if d % 2:
        raise ValueError(f"sinusoidal_embedding: d={d} must be even (sines and cosines pair up)")
    ### BEGIN SOLUTION
    work = torch.promote_types(dtype, torch.float32)  # bfloat16 angles would be far too coarse
    # Wavelengths grow geometrically from 2*pi (i = 0) towards base * 2*pi (i = d/2 - 1).
    omega = base ** (-torch.arange(0, d, 2, dtype=work, device=device) / d)  # (d/2,)
    angles = torch.arange(T, dtype=work, device=device)[:, None] * omega  # (T, d/2)
    # Interleave: (sin, cos) of one frequency sit side by side, in features 2i and 2i + 1.
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2).to(dtype)
    ### END SOLUTION


def rel_shift(scores: Tensor) -> Tensor:
    """Transformer-XL's shift: scores against relative distances -> scores against keys.

    Shapes: scores (..., T_q, T_k) -> (..., T_q, T_k), T_q <= T_k. Column r of the input holds a
    query's score for the relative distance T_k - 1 - r (distances in descending order, T_k - 1
    down to 0, as Transformer-XL lays out its relative embeddings). The output puts at (i, j) the
    score for the distance between query i and key j, (i + T_k - T_q) - j:
        out[..., i, j] = scores[..., i, j + T_q - 1 - i]    for j <= i + T_k - T_q.
    Entries with j > i + T_k - T_q (keys in the query's future) are unspecified: the causal mask
    hides them. No loops and no index tensors are needed: pad, reshape, slice.
    """
    T_q, T_k = scores.shape[-2:]
    if T_q > T_k:
        raise ValueError(f"rel_shift: T_q={T_q} queries but only T_k={T_k} keys")
    ### BEGIN SOLUTION
    # Prepend a zero column and read the (T_q, T_k + 1) block back as (T_k + 1, T_q). Every row of
    # the padded block is one longer than a row of the output, so each row lands one place further
    # left than the row above: dropping the first T_q numbers leaves row i shifted left by
    # T_q - 1 - i, which is exactly where distance (i + T_k - T_q) - j meets key j.
    lead = scores.shape[:-2]
    padded = F.pad(scores, (1, 0)).view(*lead, T_k + 1, T_q)
    return padded[..., 1:, :].reshape(*lead, T_q, T_k)
    ### END SOLUTION


def relative_position_bucket(
    relative_position: Tensor, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """T5's bucket for each relative position (key position minus query position).

    Shapes: relative_position, an integer tensor of any shape -> int64 buckets of the same shape,
    each in 0 .. num_buckets - 1. bidirectional=True (an encoder): keys before the query use
    buckets 0 .. num_buckets/2 - 1, keys after it the upper half. bidirectional=False (a decoder):
    every key after the query shares bucket 0. Within a half of n buckets, a distance below n/2
    has a bucket of its own; larger distances share buckets whose width grows logarithmically up
    to max_distance, and everything farther falls in the last bucket of that half.
    """
    ### BEGIN SOLUTION
    n = -relative_position  # how far back the key is: positive for keys in the past
    bucket = torch.zeros_like(relative_position, dtype=torch.int64)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0) * num_buckets  # keys after the query: the upper half
        n = n.abs()
    else:
        n = n.clamp(min=0)  # a decoder never sees the future: all of it goes to bucket 0
    # Half of the buckets are exact: one per distance 0 .. max_exact - 1.
    max_exact = num_buckets // 2
    # The other half cover max_exact .. max_distance on a log scale, since a far token's exact
    # distance matters less. log is taken in float64 so bucket edges fall the same on any device.
    far = n.clamp(min=max_exact).double()
    log_scale = torch.log(far / max_exact) / math.log(max_distance / max_exact)
    far_bucket = max_exact + (log_scale * (num_buckets - max_exact)).long()
    far_bucket = far_bucket.clamp(max=num_buckets - 1)  # beyond max_distance: the last bucket
    return bucket + torch.where(n < max_exact, n, far_bucket)
    ### END SOLUTION


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary position embedding (Su et al., 2021): rotate each feature pair by position * theta_i.

    Shapes: x (..., T, D), D even (usually (B, H, T, D) queries or keys); positions (T,), the
    integer position of each of the T rows, so that new tokens behind a KV cache can be rotated at
    their absolute positions. Returns a new tensor shaped and typed like x (x itself is left alone).

    Pairing: the paper's. Features 2i and 2i + 1 form pair i, turned by the angle
    positions[t] * theta_i with theta_i = base ** (-2i / D):
        out[..., t, 2i]     = x[..., t, 2i] * cos - x[..., t, 2i + 1] * sin
        out[..., t, 2i + 1] = x[..., t, 2i] * sin + x[..., t, 2i + 1] * cos
    """
    T, D = x.shape[-2:]
    if D % 2:
        raise ValueError(f"apply_rope: the feature size D={D} must be even (features pair up)")
    if positions.shape != (T,):
        raise ValueError(f"apply_rope: positions {tuple(positions.shape)} should be ({T},)")
    ### BEGIN SOLUTION
    work = torch.promote_types(x.dtype, torch.float32)
    theta = base ** (-torch.arange(0, D, 2, dtype=work, device=x.device) / D)  # (D/2,)
    angles = positions.to(work)[:, None] * theta  # (T, D/2): one angle per position and pair
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]  # the two coordinates of every pair, (..., T, D/2)
    # A 2x2 rotation per pair: q.k then sees only the DIFFERENCE of the two positions' angles.
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)  # (..., T, D/2, 2) -> (..., T, D): pairs back side by side
    ### END SOLUTION


def alibi_slopes(
    n_heads: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """ALiBi's fixed slope per head (Press, Smith and Lewis, 2022). Shape: (n_heads,).

    For n a power of two: the geometric sequence that starts at 2 ** (-8 / n) and has that same
    ratio (8 heads: 1/2, 1/4, ..., 1/256). Otherwise, with p the largest power of two below n:
    the p slopes for p heads, then the first n - p of every other slope for 2p heads (the 1st,
    3rd, 5th, ...).
    """
    if n_heads < 1:
        raise ValueError(f"alibi_slopes: n_heads={n_heads} must be at least 1")
    ### BEGIN SOLUTION

    def geometric(n: int) -> list[float]:  # 2^(-8/n), 2^(-16/n), ..., 2^(-8)
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    p = 2 ** int(math.log2(n_heads))
    # The odd-numbered slopes of 2p heads fall halfway (geometrically) between those of p heads.
    slopes = geometric(p) + geometric(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=dtype, device=device)
    ### END SOLUTION


def alibi_bias(
    n_heads: int,
    T_q: int,
    T_k: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """ALiBi's additive attention bias: -slope[h] * |distance between query i and key j|.

    Shape: (n_heads, T_q, T_k), T_q <= T_k; add it to the (B, n_heads, T_q, T_k) scores before the
    softmax. The queries are the last T_q positions, so query i sits at position i + T_k - T_q:
        bias[h, i, j] = -alibi_slopes(n_heads)[h] * |i + T_k - T_q - j|
    Keys after the query get the mirror image; a causal model masks them anyway.
    """
    if T_q > T_k:
        raise ValueError(f"alibi_bias: T_q={T_q} queries but only T_k={T_k} keys")
    ### BEGIN SOLUTION
    query_pos = torch.arange(T_k - T_q, T_k, device=device)
    key_pos = torch.arange(T_k, device=device)
    minus_distance = -(query_pos[:, None] - key_pos[None, :]).abs()  # (T_q, T_k), integers
    # No learned parameter, no embedding: the farther the key, the lower its score, each head
    # with its own slope, so some heads look far back and others only at the last few tokens.
    slopes = alibi_slopes(n_heads, dtype=dtype, device=device)
    return slopes[:, None, None] * minus_distance.to(dtype)
    ### END SOLUTION
