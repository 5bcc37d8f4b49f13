"""Specs for decoding: `pytest exercises/decoding` (`--impl=solutions`: the reference).

The sampling spec is statistical, with fixed seeds; its chance of failing a correct implementation
is stated beside it (below 1e-7 for all its runs together).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from graders.checks import assert_close, chernoff_gap, describe, fail

DTYPES = [torch.float32, torch.float64]
INF = float("inf")


def random_logits(shape, dtype, device, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)


batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


# ------------------------------------------------------------------ greedy and temperature


@given(batch=batch_shapes, V=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_greedy_picks_the_most_likely_token(impl, device, batch, V, seed):
    # Small integer logits make ties common: they go to the lowest token id, as torch.argmax.
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(-2, 3, (*batch, V), generator=g).double().to(device)
    actual = impl.greedy(logits)
    assert_close(
        actual,
        torch.argmax(logits, dim=-1),
        what=f"greedy({describe(logits=logits)}) (one token id per row, ties to the lowest id)",
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=batch_shapes, V=st.integers(1, 12), temperature=st.floats(0.05, 20.0))
def test_temperature_divides_the_logits(impl, device, dtype, shape, V, temperature):
    logits = random_logits((*shape, V), dtype, device, seed=V)
    actual = impl.apply_temperature(logits, temperature)
    assert_close(
        actual,
        logits / temperature,
        what=f"apply_temperature({describe(logits=logits)}, temperature={temperature:g}) "
        "(softmax(logits / T): T < 1 sharpens, T > 1 flattens)",
        rtol=1e-6 if dtype == torch.float32 else 1e-12,
        atol=0,
    )


# ------------------------------------------------------------------ top-k


def expected_top_k(logits, k):
    """Independent oracle: every logit at least as large as the row's k-th largest survives."""
    kth = logits.sort(dim=-1, descending=True).values[..., min(k, logits.shape[-1]) - 1, None]
    return torch.where(logits >= kth, logits, torch.full_like(logits, -INF))


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=batch_shapes, V=st.integers(1, 12), k=st.integers(1, 14), seed=st.integers(0, 99))
def test_top_k_keeps_the_k_largest(impl, device, dtype, shape, V, k, seed):
    logits = random_logits((*shape, V), dtype, device, seed)
    actual = impl.top_k_filter(logits, k)
    assert_close(
        actual,
        expected_top_k(logits, k),
        what=f"top_k_filter({describe(logits=logits)}, k={k}) (the k largest logits of each row "
        "unchanged, the others -inf; k >= V keeps all)",
        rtol=0,
        atol=0,
    )


def test_top_k_keeps_ties_at_the_boundary(impl, device):
    logits = torch.tensor([[3.0, 1.0, 2.0, 1.0, 0.0], [0.5, 0.5, 0.5, -1.0, 0.5]], device=device)
    expected = torch.tensor([[3.0, 1.0, 2.0, 1.0, -INF], [0.5, 0.5, 0.5, -INF, 0.5]], device=device)
    assert_close(
        impl.top_k_filter(logits, 3),
        expected,
        what="top_k_filter([[3, 1, 2, 1, 0], [0.5, 0.5, 0.5, -1, 0.5]], k=3) (a logit equal to the "
        "k-th largest is kept: filter with `logits < kth`, never by position)",
        rtol=0,
        atol=0,
    )


# ------------------------------------------------------------------ top-p (nucleus)


def nucleus_oracle(logits, p):
    """Token i is in the nucleus when the tokens strictly more probable than i hold mass < p.

    Returns (expected logits, the smallest distance between p and any such mass) in float64.
    """
    probs = torch.softmax(logits.double().cpu(), dim=-1)
    more_probable = (probs[..., None, :] > probs[..., :, None]).double()  # [..., i, j]: p_j > p_i
    mass_before = (more_probable * probs[..., None, :]).sum(-1)
    keep = (mass_before < p).to(logits.device)
    expected = torch.where(keep, logits, torch.full_like(logits, -INF))
    return expected, (mass_before - p).abs().min().item()


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    shape=batch_shapes,
    V=st.integers(1, 12),
    p=st.floats(0.02, 0.98),
    scale=st.sampled_from([0.5, 2.0, 5.0]),
    seed=st.integers(0, 99),
)
def test_top_p_keeps_the_smallest_nucleus(impl, device, dtype, shape, V, p, scale, seed):
    logits = random_logits((*shape, V), dtype, device, seed, scale)
    expected, margin = nucleus_oracle(logits, p)
    assume(margin > (1e-5 if dtype == torch.float32 else 1e-9))  # no case that rounding decides
    assert_close(
        impl.top_p_filter(logits, p),
        expected,
        what=f"top_p_filter({describe(logits=logits)}, p={p:.4f}) (the most likely tokens, up to "
        "and including the one whose running total of probability reaches p; the others -inf)",
        rtol=0,
        atol=0,
    )


def test_top_p_example(impl, device):
    # probs 0.5, 0.25, 0.15, 0.1: running totals 0.5, 0.75, 0.9, 1.0.
    logits = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64, device=device).log()
    for p, n_kept in [(0.3, 1), (0.7, 2), (0.8, 3), (0.95, 4)]:
        actual = impl.top_p_filter(logits, p)
        expected = logits.clone()
        expected[n_kept:] = -INF
        assert_close(
            actual,
            expected,
            what=f"top_p_filter(log([0.5, 0.25, 0.15, 0.1]), p={p}) (the running totals are 0.5, "
            f"0.75, 0.9, 1.0; the first {n_kept} token(s) reach {p}, so they are the nucleus)",
            rtol=0,
            atol=0,
        )


@given(V=st.integers(1, 12), seed=st.integers(0, 99))
def test_top_p_is_never_empty(impl, device, V, seed):
    logits = random_logits((3, V), torch.float64, device, seed, scale=4.0)
    logits[1, : V // 2] = -INF  # some tokens already filtered out
    actual = impl.top_p_filter(logits, 1e-4)
    expected = torch.full_like(logits, -INF)
    rows = torch.arange(3, device=device)
    top = logits.argmax(-1)
    expected[rows, top] = logits[rows, top]
    assert_close(
        actual,
        expected,
        what=f"top_p_filter({describe(logits=logits)}, p=1e-4) (the most likely token alone "
        "already reaches p, and the nucleus always holds at least that token)",
        rtol=0,
        atol=0,
    )


def test_filters_leave_their_input_alone(impl, device):
    logits = random_logits((4, 9), torch.float32, device, seed=3)
    before = logits.clone()
    g = torch.Generator(device=device).manual_seed(0)
    calls = {
        "apply_temperature(logits, 0.5)": lambda: impl.apply_temperature(logits, 0.5),
        "top_k_filter(logits, 3)": lambda: impl.top_k_filter(logits, 3),
        "top_p_filter(logits, 0.5)": lambda: impl.top_p_filter(logits, 0.5),
        "sample(logits, 0.7, 3, 0.9, generator)": lambda: impl.sample(logits, 0.7, 3, 0.9, g),
    }
    for name, call in calls.items():
        call()
        if not torch.equal(logits, before):
            fail(
                f"{name} changed its input logits (4, 9) in place; return a new tensor "
                "(masked_fill, not masked_fill_; x / t, not x /= t)"
            )


# ------------------------------------------------------------------ sampling

# (temperature, top_k, top_p) and the law the spec expects, computed by the spec itself.
SETTINGS = [
    (1.0, None, None),
    (0.6, None, None),
    (1.5, 4, None),
    (1.0, None, 0.8),
    (0.5, None, 0.8),
    (2.0, 6, 0.7),
]
SAMPLING_LOGITS = [1.2, 0.9, 0.5, 0.3, 0.0, -0.2, -0.6, -1.0, -1.5, -2.5]
N_SAMPLES = 20_000
DELTA = 5e-9  # the chance that one run of the spec fails a correct sampler


def filtered_law(logits, temperature, top_k, top_p):
    """The distribution sample() draws from, in float64 numpy, by the README's definitions."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None:
        z = np.where(z >= np.sort(z)[::-1][min(top_k, len(z)) - 1], z, -np.inf)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if top_p is not None:
        mass_before = np.array([probs[probs > q].sum() for q in probs])
        probs = np.where(mass_before < top_p, probs, 0.0)
        probs /= probs.sum()
    return probs


def chernoff_failure(counts, probs, cells):
    """The first token whose count is too unlikely under probs (Chernoff + union bound), or None.

    P(N KL(k/N || p) >= c) <= 2 exp(-c) for one cell; with c = log(2 cells / DELTA) and a union
    bound over the cells, an exact sampler fails with chance below DELTA.
    """
    N = counts.sum()
    for token, (k, p) in enumerate(zip(counts, probs, strict=True)):
        if p == 0:
            if k:
                return token, f"token {token} has probability 0 after filtering, yet came {k} times"
            continue
        a = k / N
        if chernoff_gap(k, N, p, cells, DELTA):
            return token, f"token {token} came {k} times in {N} ({a:.4f}); expected {p:.4f}"
    return None


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), SETTINGS)
def test_sample_matches_the_filtered_distribution(impl, device, temperature, top_k, top_p):
    # N draws in one call, on a batch (N/4, 4, V) of copies of one row. Chance of a false failure:
    # below DELTA = 5e-9 per run, so below 6e-8 for the 6 settings on CPU and CUDA together.
    V = len(SAMPLING_LOGITS)
    row = torch.tensor(SAMPLING_LOGITS, dtype=torch.float64, device=device)
    logits = row.expand(N_SAMPLES // 4, 4, V).clone()
    g = torch.Generator(device=device).manual_seed(1234)
    tokens = impl.sample(logits, temperature, top_k, top_p, generator=g)
    what = f"sample(logits {tuple(logits.shape)}, {temperature=}, {top_k=}, {top_p=})"
    if not isinstance(tokens, torch.Tensor) or tokens.shape != logits.shape[:-1]:
        fail(f"{what} should return int64 {tuple(logits.shape[:-1])}; got {tokens!r:.80}")
    if tokens.dtype != torch.int64 or tokens.min() < 0 or tokens.max() >= V:
        fail(f"{what} should return int64 token ids in 0 .. {V - 1}; got {tokens.dtype}")
    law = filtered_law(SAMPLING_LOGITS, temperature, top_k, top_p)
    counts = np.bincount(tokens.flatten().cpu().numpy(), minlength=V)
    bad = chernoff_failure(counts, law, V)
    if bad:
        fail(
            f"{what}: {bad[1]}. The law after temperature, then top-k, then top-p, renormalised, "
            f"is {np.round(law, 4).tolist()}; the counts were {counts.tolist()} (a gap this big "
            f"has a chance below {DELTA:g} for a correct sampler)"
        )


def test_sample_uses_only_its_generator(impl, device):
    logits = random_logits((64, 10), torch.float32, device, seed=5, scale=0.5)
    first = impl.sample(logits, 1.0, generator=torch.Generator(device=device).manual_seed(42))
    torch.manual_seed(7)  # the global generator must make no difference
    second = impl.sample(logits, 1.0, generator=torch.Generator(device=device).manual_seed(42))
    what = "sample(logits (64, 10), generator=torch.Generator().manual_seed(42))"
    if not isinstance(first, torch.Tensor) or first.dtype != torch.int64 or first.shape != (64,):
        fail(f"{what} should return int64 (64,); got {first!r:.80}")
    if first.device != logits.device:
        fail(f"{what} returned tokens on {first.device}; expected them on {logits.device}")
    if not torch.equal(first, second):
        fail(
            f"{what} twice gave different tokens: pass generator=generator to every random call "
            "(torch.multinomial, torch.rand), so that the same seed gives the same tokens"
        )
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state() if device == "cuda" else None
    impl.sample(logits, 0.8, 4, 0.9, generator=torch.Generator(device=device).manual_seed(1))
    moved = not torch.equal(state, torch.random.get_rng_state()) or (
        cuda_state is not None and not torch.equal(cuda_state, torch.cuda.get_rng_state())
    )
    if moved:
        fail(f"{what} drew from torch's global random generator; use only the one it is given")


@given(batch=batch_shapes, V=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_sample_draws_each_row_from_its_own_distribution(impl, device, batch, V, seed):
    # Each row has a single finite logit, so each row's token is certain.
    g = torch.Generator().manual_seed(seed)
    where = torch.randint(0, V, batch, generator=g)
    logits = torch.full((*batch, V), -INF, dtype=torch.float64)
    logits.scatter_(-1, where[..., None], torch.randn(*batch, 1, generator=g, dtype=torch.float64))
    logits = logits.to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    actual = impl.sample(logits, 0.9, 5, 0.5, generator=gen)
    assert_close(
        actual,
        where.to(device),
        what=f"sample({describe(logits=logits)}, temperature=0.9, top_k=5, top_p=0.5) where each "
        "row has one finite logit (one independent draw per row, the output shaped like the "
        "batch)",
    )


def test_temperature_zero_is_greedy(impl, device):
    logits = random_logits((5, 3, 11), torch.float32, device, seed=9)
    g = torch.Generator(device=device).manual_seed(3)
    state = g.get_state()
    actual = impl.sample(logits, 0.0, top_k=4, generator=g)
    assert_close(
        actual,
        logits.argmax(dim=-1),
        what=f"sample({describe(logits=logits)}, temperature=0) (temperature 0 means greedy)",
    )
    if not torch.equal(state, g.get_state()):
        fail("sample(..., temperature=0) drew a random number; greedy decoding needs none")


# ------------------------------------------------------------------ beam search


def table_model(V, seed, device, scale=1.5):
    """A step_fn whose logits depend on the last two tokens of each prefix, and its call log."""
    g = torch.Generator().manual_seed(seed)
    table = (scale * torch.randn(V, V, V, generator=g, dtype=torch.float64)).to(device)
    calls = []

    def step_fn(tokens):
        calls.append(tokens.clone())
        before_last = tokens[:, -2] if tokens.shape[1] > 1 else tokens[:, -1]
        return table[before_last, tokens[:, -1]]

    return step_fn, calls


def dict_model(probs_after, V, device):
    """A step_fn from a table {prefix after bos: next-token probabilities}; uniform elsewhere."""
    calls = []

    def step_fn(tokens):
        calls.append(tokens.clone())
        rows = [probs_after.get(tuple(t[1:]), [1.0] * V) for t in tokens.tolist()]
        return torch.tensor(rows, dtype=torch.float64, device=device).log()

    return step_fn, calls


def penalised(log_p, length, alpha):
    return log_p / ((5 + length) / 6) ** alpha


def log_prob(step_fn, bos, tokens, device):
    """log P(tokens | bos) under step_fn, token by token, in float64."""
    prefix, total = [bos], 0.0
    for token in tokens:
        logits = step_fn(torch.tensor([prefix], device=device))[0]
        total += torch.log_softmax(logits.double(), -1)[token].item()
        prefix.append(token)
    return total


def run_beam(impl, device, step_fn, bos, eos, width, max_len, alpha):
    what = (
        f"beam_search(step_fn, bos={bos}, eos={eos}, beam_width={width}, max_len={max_len}, "
        f"length_penalty={alpha})"
    )
    result = impl.beam_search(step_fn, bos, eos, width, max_len, alpha, device=device)
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a pair (tokens, score); got {result!r:.80}")
    tokens, score = result
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64 or tokens.ndim != 1:
        fail(f"{what}: tokens should be a 1-D int64 tensor; got {tokens!r:.80}")
    if tokens.device != torch.device(device) and not (device == "cuda" and tokens.is_cuda):
        fail(f"{what}: tokens are on {tokens.device}; expected them on {device}")
    if not isinstance(score, float):
        fail(f"{what}: score should be a Python float (use .item()); got {type(score).__name__}")
    tokens = tokens.tolist()
    if not 1 <= len(tokens) <= max_len or eos in tokens[:-1]:
        fail(
            f"{what} returned tokens {tokens}: 1 to {max_len} tokens without bos, and eos can only "
            "come last"
        )
    if tokens[-1] != eos and len(tokens) != max_len:
        fail(f"{what} returned {tokens}, which neither ends in eos={eos} nor reaches max_len")
    return what, tokens, score


@given(
    V=st.integers(2, 12),
    max_len=st.integers(1, 10),
    seed=st.integers(0, 2**16),
    eos=st.integers(0, 11),
)
def test_beam_width_one_is_greedy(impl, device, V, max_len, seed, eos):
    eos, bos = eos % V, (eos + 1) % V
    step_fn, _ = table_model(V, seed, device)
    greedy, log_p = [], 0.0
    while len(greedy) < max_len and eos not in greedy:
        log_probs = torch.log_softmax(step_fn(torch.tensor([[bos, *greedy]], device=device)), -1)
        greedy.append(int(log_probs[0].argmax()))
        log_p += log_probs[0, greedy[-1]].item()
    what, tokens, score = run_beam(impl, device, step_fn, bos, eos, 1, max_len, 0.0)
    if tokens != greedy:
        fail(
            f"{what} returned {tokens}; greedy decoding gives {greedy}. With one beam, each step "
            "keeps the single most likely extension, and a hypothesis ending in eos is finished"
        )
    if not math.isclose(score, log_p, rel_tol=1e-9, abs_tol=1e-9):
        fail(
            f"{what}: score {score:.9g}; expected log P = {log_p:.9g} (the sum of log_softmax of "
            "step_fn's logits along the tokens; length_penalty=0 divides by 1)"
        )


def exhaustive(step_fn, bos, eos, V, max_len, alpha, device):
    """Every complete sequence (ending in eos, or max_len long) with its score, best first."""
    found = []

    def walk(prefix, log_p):
        logits = step_fn(torch.tensor([prefix], device=device))[0]
        for token, lp in enumerate(torch.log_softmax(logits.double(), -1).tolist()):
            tokens = [*prefix[1:], token]
            if token == eos or len(tokens) == max_len:
                found.append((penalised(log_p + lp, len(tokens), alpha), tokens))
            else:
                walk([*prefix, token], log_p + lp)

    walk([bos], 0.0)
    return sorted(found, reverse=True)


@given(
    V=st.integers(2, 4),
    max_len=st.integers(1, 4),
    alpha=st.sampled_from([0.0, 0.6, 1.5, 3.0]),
    seed=st.integers(0, 2**16),
)
def test_wide_beam_finds_the_exhaustive_optimum(impl, device, V, max_len, alpha, seed):
    eos, bos = seed % V, (seed + 1) % V
    step_fn, _ = table_model(V, seed, device, scale=2.0)
    ranked = exhaustive(step_fn, bos, eos, V, max_len, alpha, device)
    width = V**max_len  # more than the number of complete sequences: nothing is ever pruned
    what, tokens, score = run_beam(impl, device, step_fn, bos, eos, width, max_len, alpha)
    best_score, best = ranked[0]
    clear_winner = len(ranked) == 1 or ranked[1][0] < best_score - 1e-9
    if not math.isclose(score, best_score, rel_tol=1e-9, abs_tol=1e-9) or (
        clear_winner and tokens != best
    ):
        fail(
            f"{what}, on a tree of {len(ranked)} complete sequences over V={V} tokens, returned "
            f"{tokens} with score {score:.6f}; the best of all is {best} with score "
            f"{best_score:.6f} = log P / ((5 + {len(best)}) / 6) ** {alpha}. A beam this wide "
            "prunes nothing, so it must find the optimum"
        )


# The README's example: eos = 0, a = 1, b = 2, bos = 3 (never predicted); beam_width = 2.
EXAMPLE = {
    (): [0.1, 0.5, 0.4, 0.0],
    (1,): [0.6, 0.3, 0.1, 0.0],
    (2,): [0.2, 0.7, 0.1, 0.0],
    (2, 1): [0.1, 0.5, 0.4, 0.0],
    (2, 1, 1): [0.9, 0.05, 0.05, 0.0],
    (2, 1, 2): [0.95, 0.03, 0.02, 0.0],
}
EXAMPLE_LIVE = [{(3,)}, {(3, 1), (3, 2)}, {(3, 2, 1)}, {(3, 2, 1, 1), (3, 2, 1, 2)}]


def test_beam_search_follows_the_readme_example(impl, device):
    step_fn, calls = dict_model(EXAMPLE, 4, device)
    what, tokens, score = run_beam(impl, device, step_fn, 3, 0, 2, 6, 0.0)
    seen = [{tuple(row) for row in c.tolist()} for c in calls]
    if seen != EXAMPLE_LIVE:
        step = next(
            (i for i, (s, e) in enumerate(zip(seen, EXAMPLE_LIVE, strict=False)) if s != e),
            min(len(seen), len(EXAMPLE_LIVE)),
        )
        fail(
            f"{what} on the README's example: step_fn was called with the prefixes {seen}; "
            f"expected {EXAMPLE_LIVE} (first difference at step {step + 1}). One call per step on "
            "all live hypotheses; the beam_width best candidates of a step, over all hypotheses "
            "together, are kept; those ending in eos leave the beam; stop once beam_width "
            "hypotheses have finished"
        )
    if tokens != [1, 0] or not math.isclose(score, math.log(0.3), rel_tol=1e-9):
        fail(
            f"{what} on the README's example returned {tokens} with score {score:.6f}; expected "
            f"[1, 0] (a, eos) with score log 0.3 = {math.log(0.3):.6f}, the best of the three "
            "finished hypotheses"
        )


# eos = 0, a = 1, b = 2, bos = 3: "eos" now (0.4), or "a eos" (0.35 * 0.9 = 0.315) a step later.
SHORT_OR_LONG = {(): [0.4, 0.35, 0.25, 0.0], (1,): [0.9, 0.05, 0.05, 0.0]}


@pytest.mark.parametrize(
    ("alpha", "expected"), [(0.0, [0]), (1.0, [0]), (2.0, [1, 0]), (4.0, [1, 0])]
)
def test_length_penalty_follows_wu_et_al(impl, device, alpha, expected):
    step_fn, _ = dict_model(SHORT_OR_LONG, 4, device)
    what, tokens, score = run_beam(impl, device, step_fn, 3, 0, 2, 5, alpha)
    log_p = math.log(0.4) if expected == [0] else math.log(0.315)
    want = penalised(log_p, len(expected), alpha)
    short, long = penalised(math.log(0.4), 1, alpha), penalised(math.log(0.315), 2, alpha)
    if tokens != expected or not math.isclose(score, want, rel_tol=1e-9):
        fail(
            f"{what}: the candidates are [0] (eos) with log P = log 0.4 and [1, 0] with "
            f"log P = log 0.315; divided by lp(|y|) = ((5 + |y|) / 6) ** {alpha} they score "
            f"{short:.6f} and {long:.6f}. Expected {expected} with score {want:.6f}; got {tokens} "
            f"with score {score:.6f}"
        )


@given(V=st.integers(3, 10), width=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_beam_search_calls_step_fn_once_per_step(impl, device, V, width, seed):
    step_fn, calls = table_model(V, seed, device, scale=0.5)
    bos, eos, max_len = V - 1, 0, 6
    what, tokens, score = run_beam(impl, device, step_fn, bos, eos, width, max_len, 0.0)
    for step, prefixes in enumerate(calls, start=1):
        if prefixes.ndim != 2 or prefixes.shape[1] != step or not 1 <= len(prefixes) <= width:
            fail(
                f"{what}: call {step} of step_fn got tokens of shape {tuple(prefixes.shape)}; "
                f"expected (n, {step}) with 1 <= n <= {width}: every live hypothesis (bos and "
                f"{step - 1} tokens) in one call per step"
            )
        if (prefixes[:, 0] != bos).any() or prefixes.dtype != torch.int64:
            fail(f"{what}: step_fn should get int64 prefixes that start with bos={bos}")
    if len(calls) > max_len:
        fail(f"{what} called step_fn {len(calls)} times; at most max_len = {max_len}")
    log_p = log_prob(step_fn, bos, tokens, device)
    if not math.isclose(score, log_p, rel_tol=1e-9, abs_tol=1e-9):
        fail(f"{what} returned {tokens} with score {score:.9g}; their log P is {log_p:.9g}")
