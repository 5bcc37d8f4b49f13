"""Public specs for `positions`: `pytest exercises/positions` (`--impl=solutions`: the reference).

Oracles: the papers' own formulas written out element by element in float64 (the sinusoid table,
RoFormer's block-diagonal rotation matrix, ALiBi's distance matrix, Transformer-XL's relative
scores gathered one by one), hand-worked tables (T5's buckets, ALiBi's slopes), and the
properties that made each scheme worth publishing (RoPE keeps norms and sees only m - n; a
sinusoid shifted by k is a rotation). Nothing here is random: hypothesis runs a fixed,
derandomised set of examples.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
# float64: a handful of products and one sin/cos per entry, about 1e-15. float32: an angle
# p * theta carries a relative rounding error near 1e-7, so a value moves by up to about
# |x| * p * 1e-7; with positions below 128 and |x| below 5 that is under 7e-5 (README's table).
TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-10)}
MAX_POSITION = 127

seeds = st.integers(0, 2**16)
bases = st.sampled_from([10000.0, 100.0, 500000.0])


def randn(*shape, seed, dtype=torch.float64, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(
        device
    )


# ---------------------------------------------------------------------------------------------
# Sinusoidal embedding (Vaswani et al., 2017)


def sinusoid_table(T, d, base):
    """The paper's formula, one entry at a time, in float64."""
    rows = []
    for p in range(T):
        row = []
        for i in range(d // 2):
            angle = p / base ** (2 * i / d)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@given(T=st.integers(1, MAX_POSITION + 1), half=st.integers(1, 10), base=bases)
def test_sinusoidal_matches_the_paper(impl, device, dtype, T, half, base):
    d = 2 * half
    actual = impl.sinusoidal_embedding(T, d, base, dtype=dtype, device=device)
    expected = sinusoid_table(T, d, base).to(dtype=dtype, device=device)
    rtol, atol = TOL[dtype]
    assert_close(
        actual,
        expected,
        what=f"sinusoidal_embedding(T={T}, d={d}, base={base}, dtype={dtype}) "
        "(pe[p, 2i] = sin(p * omega_i), pe[p, 2i+1] = cos(p * omega_i))",
        rtol=rtol,
        atol=atol,
    )


@given(p=st.integers(0, 60), k=st.integers(1, 60), half=st.integers(1, 8))
def test_sinusoidal_offsets_are_rotations(impl, device, p, k, half):
    # The paper's reason for sinusoids: pe[p + k] is a fixed linear map of pe[p], for every p.
    # Pair i, (sin, cos) at frequency omega_i, turns by the angle k * omega_i.
    d = 2 * half
    pe = impl.sinusoidal_embedding(p + k + 1, d, dtype=torch.float64, device=device)
    sin_p, cos_p = pe[p, 0::2], pe[p, 1::2]
    omega = torch.tensor([10000.0 ** (-2 * i / d) for i in range(half)], dtype=torch.float64)
    c, s = (k * omega).cos().to(device), (k * omega).sin().to(device)
    shifted = torch.stack((sin_p * c + cos_p * s, cos_p * c - sin_p * s), dim=-1).flatten()
    assert_close(
        pe[p + k],
        shifted,
        what=f"sinusoidal_embedding(T={p + k + 1}, d={d}): row {p + k} should be row {p} with "
        f"each (sin, cos) pair rotated by {k} * omega_i",
        rtol=1e-9,
        atol=1e-9,
    )


# ---------------------------------------------------------------------------------------------
# Transformer-XL's relative shift (Dai et al., 2019)


def check_rel_shift(actual, scores, what):
    """Compare the entries rel_shift defines (j <= i + T_k - T_q) with a naive gather."""
    *_, T_q, T_k = scores.shape
    if not isinstance(actual, torch.Tensor) or actual.shape != scores.shape:
        shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
        fail(f"{what} returned {shape}; expected the input's shape {tuple(scores.shape)}")
    expected = torch.zeros_like(scores)
    defined = torch.zeros(T_q, T_k, dtype=torch.bool)
    for i in range(T_q):
        for j in range(i + T_k - T_q + 1):
            expected[..., i, j] = scores[..., i, j + T_q - 1 - i]
            defined[i, j] = True
    defined = defined.to(scores.device)
    assert_close(
        actual.masked_fill(~defined, 0.0),
        expected,
        what=f"{what}, on the entries j <= i + T_k - T_q "
        "(out[..., i, j] = scores[..., i, j + T_q - 1 - i])",
        rtol=0,
        atol=0,
    )


def test_rel_shift_hand_worked_example(impl, device):
    # T_q = 3 queries at positions 2, 3, 4 (after 2 memory positions); T_k = 5 keys at 0 .. 4.
    # scores[i, r] = 10 i + r, column r standing for the distance 4 - r.
    scores = (10 * torch.arange(3)[:, None] + torch.arange(5)).double().to(device)
    # Query 0 (position 2) sees keys 0, 1, 2 at distances 2, 1, 0: columns 2, 3, 4.
    # Query 1 (position 3) sees keys 0 .. 3 at distances 3 .. 0: columns 1 .. 4.
    # Query 2 (position 4) sees keys 0 .. 4 at distances 4 .. 0: columns 0 .. 4.
    check_rel_shift(impl.rel_shift(scores), scores, "rel_shift(scores (3, 5) float64)")


@given(
    dtype=st.sampled_from(DTYPES),
    lead=st.lists(st.integers(1, 3), max_size=2),
    T_q=st.integers(1, 8),
    memory=st.integers(0, 5),
    seed=seeds,
)
def test_rel_shift_matches_a_naive_gather(impl, device, dtype, lead, T_q, memory, seed):
    scores = randn(*lead, T_q, T_q + memory, seed=seed, dtype=dtype, device=device)
    actual = impl.rel_shift(scores)
    check_rel_shift(actual, scores, f"rel_shift({describe(scores=scores)})")


@given(T_q=st.integers(1, 7), memory=st.integers(0, 4), d=st.integers(1, 6), seed=seeds)
def test_rel_shift_gives_transformer_xl_scores(impl, device, T_q, memory, d, seed):
    # Transformer-XL's term (b): q_i . r_{distance(i, j)}, computed for every distance at once as
    # q @ R^T with R's rows the embeddings of distances T_k - 1, ..., 0, then shifted into place.
    T_k = T_q + memory
    q = randn(T_q, d, seed=seed, device=device)
    r = randn(T_k, d, seed=seed + 1, device=device)  # r[t] embeds the distance t
    shifted = impl.rel_shift(q @ r.flip(0).T)
    for i in range(T_q):
        for j in range(i + memory + 1):
            want = (q[i] @ r[i + memory - j]).item()
            if abs(shifted[i, j].item() - want) > 1e-9 * (1 + abs(want)):
                fail(
                    f"rel_shift(q @ R^T) with {T_q} queries and {T_k} keys: entry ({i}, {j}) is "
                    f"{shifted[i, j].item():.6g}; it should be q_{i} . r_{i + memory - j} = "
                    f"{want:.6g}, the score for the distance {i + memory - j} between query {i} "
                    f"(at position {i + memory}) and key {j}"
                )


# ---------------------------------------------------------------------------------------------
# T5's relative position buckets (Raffel et al., 2020)

# Worked by hand from the rule: a half of n buckets gives distances 0 .. n/2 - 1 a bucket each;
# a distance n_d >= n/2 gets n/2 + floor(log(n_d / (n/2)) / log(max_distance / (n/2)) * n/2),
# capped at n - 1.
# Bidirectional, 32 buckets, max_distance 128: halves of 16, exact below 8, and beyond that
# 8 + floor(2 * log2(n_d / 8)): 8..11 -> 8, 12..15 -> 9, 16..22 -> 10, 23..31 -> 11, 32..45 -> 12,
# 46..63 -> 13, 64..90 -> 14, 91 and more -> 15. Keys after the query add 16.
BIDIRECTIONAL = {
    0: 0, -1: 1, -7: 7, -8: 8, -11: 8, -12: 9, -16: 10, -22: 10, -23: 11, -31: 11, -32: 12,
    -45: 12, -46: 13, -63: 13, -64: 14, -90: 14, -91: 15, -128: 15, -1000: 15,
    1: 17, 7: 23, 8: 24, 12: 25, 16: 26, 23: 27, 32: 28, 46: 29, 64: 30, 91: 31, 1000: 31,
}  # fmt: skip
# Unidirectional, 32 buckets, max_distance 128: exact below 16, then
# 16 + floor(16 / 3 * log2(n_d / 16)): 16..18 -> 16, 19..20 -> 17, 21..23 -> 18, 32 -> 21,
# 64 -> 26, 113 and more -> 31. Every key after the query: bucket 0.
UNIDIRECTIONAL = {
    0: 0, -1: 1, -15: 15, -16: 16, -18: 16, -19: 17, -21: 18, -24: 19, -32: 21, -64: 26,
    -112: 30, -113: 31, -500: 31, 1: 0, 5: 0, 300: 0,
}  # fmt: skip


@pytest.mark.parametrize(
    ("bidirectional", "table"), [(True, BIDIRECTIONAL), (False, UNIDIRECTIONAL)]
)
def test_bucket_hand_worked_table(impl, device, bidirectional, table):
    rel = torch.tensor(list(table), device=device)
    actual = impl.relative_position_bucket(rel, bidirectional)
    if not isinstance(actual, torch.Tensor) or actual.dtype != torch.int64:
        kind = actual.dtype if isinstance(actual, torch.Tensor) else type(actual).__name__
        fail(f"relative_position_bucket should return an int64 tensor; got {kind}")
    wrong = [
        f"{r} -> {b} (expected {table[r]})"
        for r, b in zip(table, actual.cpu().tolist(), strict=True)
        if b != table[r]
    ]
    if wrong:
        fail(
            f"relative_position_bucket(relative_position, bidirectional={bidirectional}, "
            f"num_buckets=32, max_distance=128), relative position = key - query: "
            + ", ".join(wrong[:6])
        )


@pytest.mark.parametrize("bidirectional", [True, False])
@given(
    num_buckets=st.sampled_from([4, 8, 10, 16, 32, 64]),
    reach=st.sampled_from([1, 2, 5]),  # max_distance >= num_buckets, as in T5 (32 and 128)
)
def test_bucket_properties(impl, device, bidirectional, num_buckets, reach):
    max_distance = reach * num_buckets
    rel = torch.arange(-400, 401, device=device)
    buckets = impl.relative_position_bucket(rel, bidirectional, num_buckets, max_distance).cpu()
    call = (
        f"relative_position_bucket(arange(-400, 401), bidirectional={bidirectional}, "
        f"num_buckets={num_buckets}, max_distance={max_distance})"
    )
    if buckets.shape != rel.shape:
        fail(f"{call} returned shape {tuple(buckets.shape)}; expected {tuple(rel.shape)}")
    if buckets.min() < 0 or buckets.max() >= num_buckets:
        fail(
            f"{call} gave buckets from {buckets.min().item()} to {buckets.max().item()}; "
            f"the range is 0 .. {num_buckets - 1}"
        )
    half = num_buckets // 2 if bidirectional else num_buckets
    past = buckets[:401].flip(0)  # distances 0, 1, ..., 400 into the past
    future = buckets[400:]  # distances 0, 1, ..., 400 into the future
    exact = half // 2
    if past[:exact].tolist() != list(range(exact)):
        fail(
            f"{call}: the past distances 0 .. {exact - 1} should be buckets 0 .. {exact - 1}, "
            f"one each; got {past[:exact].tolist()}"
        )
    if (past.diff() < 0).any():
        fail(f"{call}: buckets must not decrease as a key lies further in the past")
    if past[max_distance:].unique().tolist() != [half - 1]:
        fail(
            f"{call}: every key {max_distance} or more positions back should share the last "
            f"bucket of its half, {half - 1}; got {past[max_distance:].unique().tolist()}"
        )
    if bidirectional:
        expected_future = past[1:] + half
        if not torch.equal(future[1:], expected_future):
            fail(
                f"{call}: a key d positions after the query should get the bucket of d "
                f"positions before it plus {half} (the upper half)"
            )
    elif future[1:].unique().tolist() != [0]:
        fail(f"{call}: with bidirectional=False every key after the query goes to bucket 0")


@given(T_q=st.integers(1, 12), T_k=st.integers(1, 40), bidirectional=st.booleans())
def test_bucket_matrix_of_positions(impl, device, T_q, T_k, bidirectional):
    # How a T5 layer calls it: a (T_q, T_k) matrix of key minus query positions.
    rel = torch.arange(T_k, device=device)[None, :] - torch.arange(T_q, device=device)[:, None]
    buckets = impl.relative_position_bucket(rel, bidirectional, 16, 32)
    what = f"relative_position_bucket(a ({T_q}, {T_k}) matrix, {bidirectional}, 16, 32)"
    if not isinstance(buckets, torch.Tensor) or buckets.shape != rel.shape:
        fail(f"{what} should return a tensor of shape {tuple(rel.shape)}")
    if buckets.device != rel.device or buckets.dtype != torch.int64:
        fail(f"{what} returned {buckets.dtype} on {buckets.device}; expected int64 on {rel.device}")
    # The same numbers as one call on the T_q + T_k - 1 distinct relative positions.
    line = torch.arange(-T_q + 1, T_k, device=device)
    line = impl.relative_position_bucket(line, bidirectional, 16, 32)
    expected = torch.stack([line[T_q - 1 - i : T_q - 1 - i + T_k] for i in range(T_q)])
    assert_close(
        buckets.cpu(),
        expected.cpu(),
        what=f"{what}, against a call on each distance once",
        rtol=0,
        atol=0,
    )


# ---------------------------------------------------------------------------------------------
# Rotary position embedding (Su et al., 2021)


def rotation_matrices(positions, D, base):
    """RoFormer's rotation matrix R_{Theta, m} for each position: (T, D, D), block diagonal."""
    theta = torch.tensor([base ** (-2 * i / D) for i in range(D // 2)], dtype=torch.float64)
    angles = positions.double()[:, None] * theta  # (T, D/2)
    c, s = angles.cos(), angles.sin()
    R = torch.zeros(len(positions), D, D, dtype=torch.float64)
    i = torch.arange(D // 2)
    R[:, 2 * i, 2 * i], R[:, 2 * i, 2 * i + 1] = c, -s  # [[cos, -sin],
    R[:, 2 * i + 1, 2 * i], R[:, 2 * i + 1, 2 * i + 1] = s, c  # [sin,  cos]] per pair
    return R


rope_shapes = st.tuples(
    st.lists(st.integers(1, 3), max_size=2), st.integers(1, 6), st.integers(1, 6)
).map(lambda t: (*t[0], t[1], 2 * t[2]))  # (..., T, D) with D even


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=rope_shapes, base=bases, seed=seeds)
def test_rope_matches_the_rotation_matrix(impl, device, dtype, shape, base, seed):
    *_, T, D = shape
    x = randn(*shape, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, MAX_POSITION + 1, (T,), generator=g)
    expected = torch.einsum("tij,...tj->...ti", rotation_matrices(positions, D, base), x.double())
    actual = impl.apply_rope(x.to(device), positions.to(device), base)
    rtol, atol = TOL[dtype]
    assert_close(
        actual,
        expected.to(dtype=dtype, device=device),
        what=f"apply_rope({describe(x=x)}, positions={positions.tolist()}, base={base}) "
        "(pair i = features 2i, 2i+1, turned by positions[t] * base^(-2i/D))",
        rtol=rtol,
        atol=atol,
    )


@given(shape=rope_shapes, seed=seeds)
def test_rope_keeps_norms(impl, device, shape, seed):
    x = randn(*shape, seed=seed, device=device)
    positions = torch.randint(0, 10**4, shape[-2:-1], generator=torch.Generator().manual_seed(seed))
    rotated = impl.apply_rope(x, positions.to(device))
    assert_close(
        rotated.norm(dim=-1),
        x.norm(dim=-1),
        what=f"the norm of each vector after apply_rope({describe(x=x)}) (a rotation keeps it)",
        rtol=1e-10,
        atol=1e-10,
    )


@given(
    D=st.integers(1, 8).map(lambda h: 2 * h),
    m=st.integers(0, 500),
    n=st.integers(0, 500),
    shift=st.integers(-500, 500),
    seed=seeds,
)
def test_rope_scores_depend_only_on_offset(impl, device, D, m, n, shift, seed):
    # RoFormer's point: <R_m q, R_n k> = <q, R_{n-m} k>, so moving both by `shift` changes nothing.
    q, k = randn(2, 1, D, seed=seed, device=device)
    shift = max(shift, -min(m, n))  # keep positions non-negative

    def score(a, b):
        at = torch.tensor([a], device=device)
        bt = torch.tensor([b], device=device)
        return (impl.apply_rope(q.clone(), at) * impl.apply_rope(k.clone(), bt)).sum().item()

    before, after = score(m, n), score(m + shift, n + shift)
    if abs(before - after) > 1e-9 * (1 + abs(before)):
        fail(
            f"apply_rope (D={D}): the score q.k with q at position {m} and k at {n} is "
            f"{before:.9g}, but with both moved by {shift} it is {after:.9g}; a rotary score "
            "should depend only on the offset m - n"
        )


def test_rope_at_position_zero_is_identity(impl, device):
    x = randn(2, 3, 4, 8, seed=3, device=device)
    positions = torch.zeros(4, dtype=torch.int64, device=device)
    assert_close(
        impl.apply_rope(x, positions),
        x,
        what="apply_rope(x (2, 3, 4, 8) float64, positions=[0, 0, 0, 0]) (angle 0: no rotation)",
        rtol=0,
        atol=1e-15,
    )


def test_rope_with_a_kv_cache(impl, device):
    # A prompt of 7 tokens at positions 0..6, then 3 new tokens: the new ones must come out as
    # they would have in the full sequence, rotated at positions 7, 8, 9, not at 0, 1, 2.
    x = randn(2, 4, 10, 16, seed=4, device=device)
    whole = impl.apply_rope(x.clone(), torch.arange(10, device=device))
    new = impl.apply_rope(x[..., 7:, :].clone(), torch.arange(7, 10, device=device))
    assert_close(
        new,
        whole[..., 7:, :],
        what="apply_rope(x[..., 7:, :], positions=[7, 8, 9]) against the same rows of "
        "apply_rope(x (2, 4, 10, 16), positions=arange(10)) (use the positions you are given)",
        rtol=1e-12,
        atol=1e-12,
    )


def test_rope_leaves_its_input_unchanged(impl, device):
    x = randn(1, 2, 5, 6, seed=5, device=device)
    before = x.clone()
    impl.apply_rope(x, torch.arange(3, 8, device=device))
    assert_close(
        x,
        before,
        what="x after apply_rope(x (1, 2, 5, 6) float64, positions=[3..7]) (x must not change: "
        "in a GPT, q and k are views of one projection, and autograd needs them intact)",
        rtol=0,
        atol=0,
    )


def test_rope_gradient_flows(impl, device):
    # A rotation keeps norms, so d/dx of sum(apply_rope(x)**2) = d/dx of |x|^2 = 2x.
    x = randn(2, 3, 7, 8, seed=6, device=device).requires_grad_()
    impl.apply_rope(x, torch.arange(7, device=device)).square().sum().backward()
    if x.grad is None:
        fail("apply_rope: no gradient reached x; build the output from x with torch operations")
    assert_close(
        x.grad,
        2 * x.detach(),
        what="the gradient of sum(apply_rope(x, arange(7)) ** 2) with respect to x (2, 3, 7, 8)",
        rtol=1e-10,
        atol=1e-10,
    )


# ---------------------------------------------------------------------------------------------
# ALiBi (Press, Smith and Lewis, 2022)


def paper_slopes(n):
    """The paper's rule, spelled out: powers of two, then every other slope of 2p heads."""
    p = 1
    while 2 * p <= n:
        p *= 2
    return [2 ** (-8 * (h + 1) / p) for h in range(p)] + [
        2 ** (-8 * (2 * h + 1) / (2 * p)) for h in range(n - p)
    ]


def test_alibi_slopes_for_8_heads(impl, device):
    slopes = impl.alibi_slopes(8, dtype=torch.float64, device=device)
    expected = torch.tensor([1 / 2**h for h in range(1, 9)], dtype=torch.float64, device=device)
    assert_close(
        slopes,
        expected,
        what="alibi_slopes(8) (the paper: 1/2, 1/4, ..., 1/256)",
        rtol=1e-12,
        atol=0,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(k=st.integers(0, 7))
def test_alibi_slopes_powers_of_two(impl, device, dtype, k):
    n = 2**k
    start = 2 ** (-8 / n)
    expected = torch.tensor([start ** (h + 1) for h in range(n)], dtype=dtype, device=device)
    assert_close(
        impl.alibi_slopes(n, dtype=dtype, device=device),
        expected,
        what=f"alibi_slopes({n}, dtype={dtype}) (a geometric sequence: start and ratio 2^(-8/{n}))",
        rtol=1e-6 if dtype == torch.float32 else 1e-12,
        atol=0,
    )


# Exponents e of the slopes 2^-e, worked by hand. 3 heads: the 2 slopes of 2 heads (2^-4, 2^-8),
# then the first of every other slope of 4 heads (2^-2). 12 heads: 2^-1 .. 2^-8 for 8 heads, then
# 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 from the 16 slopes of 16 heads.
OTHER_COUNTS = {
    3: [4, 8, 2],
    5: [2, 4, 6, 8, 1],
    6: [2, 4, 6, 8, 1, 3],
    12: [1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5],
}


@pytest.mark.parametrize("n", sorted(OTHER_COUNTS))
def test_alibi_slopes_other_head_counts(impl, device, n):
    expected = torch.tensor([2.0**-e for e in OTHER_COUNTS[n]], dtype=torch.float64, device=device)
    assert_close(
        impl.alibi_slopes(n, dtype=torch.float64, device=device),
        expected,
        what=f"alibi_slopes({n}) ({n} is not a power of two: the slopes of "
        f"{2 ** int(math.log2(n))} heads, then every other slope of {2 ** int(math.log2(n)) * 2})",
        rtol=1e-12,
        atol=0,
    )


@given(
    dtype=st.sampled_from(DTYPES),
    n_heads=st.integers(1, 12),
    T_q=st.integers(1, 6),
    memory=st.integers(0, 6),
)
def test_alibi_bias_matches_the_definition(impl, device, dtype, n_heads, T_q, memory):
    T_k = T_q + memory
    slopes = paper_slopes(n_heads)
    expected = torch.tensor(
        [
            [[-slopes[h] * abs(i + memory - j) for j in range(T_k)] for i in range(T_q)]
            for h in range(n_heads)
        ],
        dtype=dtype,
        device=device,
    )
    assert_close(
        impl.alibi_bias(n_heads, T_q, T_k, dtype=dtype, device=device),
        expected,
        what=f"alibi_bias(n_heads={n_heads}, T_q={T_q}, T_k={T_k}, dtype={dtype}) "
        f"(bias[h, i, j] = -slope[h] * |i + {memory} - j|)",
        rtol=1e-6 if dtype == torch.float32 else 1e-12,
        atol=0,
    )


def test_alibi_bias_with_a_kv_cache(impl, device):
    # Generating token 9 after 8 cached ones: 1 query, 9 keys. It must see the same biases as the
    # last row of the full 9 x 9 matrix: 0 for itself, -slope for the key before it, and so on.
    full = impl.alibi_bias(4, 9, 9, dtype=torch.float64, device=device)
    step = impl.alibi_bias(4, 1, 9, dtype=torch.float64, device=device)
    assert_close(
        step,
        full[:, -1:, :],
        what="alibi_bias(4, T_q=1, T_k=9) against the last row of alibi_bias(4, 9, 9) "
        "(the one query is the newest position, 8, not position 0)",
        rtol=0,
        atol=0,
    )
