"""Common mistakes with position schemes, each replacing one function of the reference."""

import math

import torch
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("positions")


# --- sinusoidal_embedding ---------------------------------------------------------------------


@mutant(
    "sinusoidal_embedding",
    "sines and cosines are concatenated (all sines, then all cosines), not interleaved",
)
def sin_cos_concatenated(T, d, base=10000.0, *, dtype=torch.float32, device=None):
    pe = ref.sinusoidal_embedding(T, d, base, dtype=dtype, device=device)
    return torch.cat((pe[:, 0::2], pe[:, 1::2]), dim=-1)


@mutant(
    "sinusoidal_embedding",
    "the frequency exponent is i/d, not 2i/d: the slowest wavelength is far too short",
)
def frequency_exponent_i_over_d(T, d, base=10000.0, *, dtype=torch.float32, device=None):
    # base ** (-2i / d) with d doubled is base ** (-i / d): a table twice as wide, cut in half.
    return ref.sinusoidal_embedding(T, 2 * d, base, dtype=dtype, device=device)[:, :d]


@mutant("sinusoidal_embedding", "cosines sit in the even features and sines in the odd ones")
def sin_cos_swapped(T, d, base=10000.0, *, dtype=torch.float32, device=None):
    pe = ref.sinusoidal_embedding(T, d, base, dtype=dtype, device=device)
    return pe.view(T, d // 2, 2).flip(-1).reshape(T, d)


# --- rel_shift ----------------------------------------------------------------------------------


@mutant(
    "rel_shift",
    "the columns are read as distances 0, 1, ..., T_k - 1 (ascending), not T_k - 1 down to 0",
)
def shift_ascending_distances(scores):
    T_q, T_k = scores.shape[-2:]
    # out[i, j] = scores[i, distance(i, j)], wrapped into range where that distance is negative.
    distance = torch.arange(T_k - T_q, T_k)[:, None] - torch.arange(T_k)[None, :]
    index = (distance % T_k).to(scores.device).expand(scores.shape)
    return scores.gather(-1, index)


@mutant(
    "rel_shift",
    "the zero column is padded on the right: every score lands one distance off",
)
def shift_pad_on_the_right(scores):
    T_q, T_k = scores.shape[-2:]
    lead = scores.shape[:-2]
    padded = F.pad(scores, (0, 1)).view(*lead, T_k + 1, T_q)
    return padded[..., 1:, :].reshape(*lead, T_q, T_k)


@mutant(
    "rel_shift",
    "the last row is dropped after the reshape, not the first",
)
def shift_drops_the_last_row(scores):
    T_q, T_k = scores.shape[-2:]
    lead = scores.shape[:-2]
    padded = F.pad(scores, (1, 0)).view(*lead, T_k + 1, T_q)
    return padded[..., :-1, :].reshape(*lead, T_q, T_k)


# --- relative_position_bucket -------------------------------------------------------------------


@mutant(
    "relative_position_bucket",
    "the relative position is taken as query - key: the past and the future trade places",
)
def bucket_sign_flipped(relative_position, bidirectional, num_buckets=32, max_distance=128):
    return ref.relative_position_bucket(
        -relative_position, bidirectional, num_buckets, max_distance
    )


@mutant(
    "relative_position_bucket",
    "bidirectional buckets are not halved: each direction uses num_buckets, overflowing the range",
)
def bucket_not_halved(relative_position, bidirectional, num_buckets=32, max_distance=128):
    if not bidirectional:
        return ref.relative_position_bucket(relative_position, False, num_buckets, max_distance)
    past = ref.relative_position_bucket(-relative_position.abs(), False, num_buckets, max_distance)
    return past + (relative_position > 0) * num_buckets


@mutant(
    "relative_position_bucket",
    "distances beyond max_distance are not capped at the last bucket",
)
def bucket_not_capped(relative_position, bidirectional, num_buckets=32, max_distance=128):
    n = -relative_position
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0) * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    max_exact = num_buckets // 2
    log_scale = torch.log(n.clamp(min=max_exact).double() / max_exact) / math.log(
        max_distance / max_exact
    )
    far_bucket = max_exact + (log_scale * (num_buckets - max_exact)).long()
    return bucket + torch.where(n < max_exact, n, far_bucket)


@mutant(
    "relative_position_bucket",
    "the log-spaced bucket is rounded to the nearest integer; T5 rounds down",
)
def bucket_rounded(relative_position, bidirectional, num_buckets=32, max_distance=128):
    n = -relative_position
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0) * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    max_exact = num_buckets // 2
    log_scale = torch.log(n.clamp(min=max_exact).double() / max_exact) / math.log(
        max_distance / max_exact
    )
    far_bucket = max_exact + (log_scale * (num_buckets - max_exact)).round().long()
    return bucket + torch.where(n < max_exact, n, far_bucket.clamp(max=num_buckets - 1))


# --- apply_rope ---------------------------------------------------------------------------------


@mutant(
    "apply_rope",
    "features are paired as (i, i + D/2) (GPT-NeoX's rotate-half) where the paper pairs (2i, 2i+1)",
)
def rope_rotate_half_pairing(x, positions, base=10000.0):
    # Move feature i + D/2 next to feature i, rotate the paper's way, and move them back.
    D = x.shape[-1]
    order = torch.arange(D, device=x.device).view(2, D // 2).T.flatten()  # 0, D/2, 1, D/2+1, ...
    rotated = ref.apply_rope(x[..., order], positions, base)
    return rotated[..., order.argsort()]


@mutant("apply_rope", "the pairs turn the wrong way: the sine's sign is flipped")
def rope_rotates_backwards(x, positions, base=10000.0):
    return ref.apply_rope(x, -positions, base)


@mutant(
    "apply_rope",
    "the positions argument is ignored (arange(T) is used): new tokens behind a KV cache sit at 0",
)
def rope_ignores_positions(x, positions, base=10000.0):
    return ref.apply_rope(x, torch.arange(x.shape[-2], device=x.device), base)


@mutant("apply_rope", "x is rotated in place: the caller's queries and keys are overwritten")
def rope_in_place(x, positions, base=10000.0):
    with torch.no_grad():
        x.copy_(ref.apply_rope(x, positions, base))
    return x.clone()


# --- alibi_slopes -------------------------------------------------------------------------------


@mutant(
    "alibi_slopes",
    "2^(-8/n) is used as start and ratio for every head count; the paper does that only for "
    "powers of two",
)
def slopes_geometric_for_any_count(n_heads, *, dtype=torch.float32, device=None):
    return torch.tensor(
        [2.0 ** (-8.0 * (h + 1) / n_heads) for h in range(n_heads)], dtype=dtype, device=device
    )


@mutant("alibi_slopes", "the slopes start at 1 (2^0) instead of at 2^(-8/n)")
def slopes_start_at_one(n_heads, *, dtype=torch.float32, device=None):
    p = 2 ** int(math.log2(n_heads))
    slopes = ref.alibi_slopes(n_heads, dtype=torch.float64)
    slopes[:p] *= 2.0 ** (8.0 / p)
    slopes[p:] *= 2.0 ** (4.0 / p)
    return slopes.to(dtype=dtype, device=device)


# --- alibi_bias ---------------------------------------------------------------------------------


@mutant(
    "alibi_bias",
    "the queries are placed at positions 0 .. T_q - 1; behind a KV cache they are the last T_q",
)
def bias_queries_at_the_start(n_heads, T_q, T_k, *, dtype=torch.float32, device=None):
    distance = (torch.arange(T_q)[:, None] - torch.arange(T_k)[None, :]).abs().to(dtype)
    slopes = ref.alibi_slopes(n_heads, dtype=dtype)
    return (-slopes[:, None, None] * distance).to(device)


@mutant("alibi_bias", "the bias has the wrong sign: far keys are rewarded, not penalised")
def bias_positive(n_heads, T_q, T_k, *, dtype=torch.float32, device=None):
    return -ref.alibi_bias(n_heads, T_q, T_k, dtype=dtype, device=device)
