"""Public specs for `speculative_decoding`: run `pytest exercises/speculative_decoding`.

Add `--impl=solutions` to run them against the reference. The statistical specs use fixed seeds;
their chance of failing a correct implementation is stated beside each (always below 1e-7).
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, chernoff_gap, fail

DTYPES = [torch.float32, torch.float64]
# next_probs is at most a subtraction, a sum over V and a division away from the inputs.
TOL = {torch.float32: (1e-6, 1e-6), torch.float64: (1e-12, 1e-12)}
DELTA = 1e-7  # the false-failure chance each statistical spec allows itself


def tensors(device, dtype, **rows):
    """Exact little examples: every probability below is a multiple of 1/16, so float32 is exact."""
    return {
        k: torch.tensor(v, dtype=torch.int64 if k == "draft_tokens" else dtype, device=device)
        for k, v in rows.items()
    }


# One round with gamma = 3 drafts over V = 4 tokens. Draft token i is accepted while
# u_i < min(1, p_i(x_i) / q_i(x_i)); the ratios here are 1 (p >= q), 1/2 and 1/4.
ROUND = dict(
    draft_tokens=[0, 1, 2],
    draft_probs=[
        [0.5, 0.25, 0.125, 0.125],  # q_0
        [0.25, 0.5, 0.125, 0.125],  # q_1
        [0.125, 0.125, 0.5, 0.25],  # q_2
    ],
    target_probs=[
        [0.75, 0.125, 0.0625, 0.0625],  # p_0: p_0(0) = 0.75 >= q_0(0): always accepted
        [0.25, 0.25, 0.25, 0.25],  # p_1: p_1(1) / q_1(1) = 1/2
        [0.5, 0.25, 0.125, 0.125],  # p_2: p_2(2) / q_2(2) = 1/4
        [0.0625, 0.0625, 0.375, 0.5],  # p_3: the bonus row
    ],
)


def check_verify(impl, device, dtype, inputs, n_expected, next_expected, why):
    x = tensors(device, dtype, **inputs)
    what = (
        f"verify(draft_tokens={inputs['draft_tokens']}, uniforms={inputs['uniforms']}, "
        f"{dtype}) on the README's example round"
    )
    n, next_probs = impl.verify(
        x["draft_tokens"], x["draft_probs"], x["target_probs"], x["uniforms"]
    )
    if not isinstance(n, int) or isinstance(n, bool):
        fail(
            f"{what}: n_accepted should be a Python int (use int(...) or .item()); got "
            f"{type(n).__name__} {n!r}"
        )
    if n != n_expected:
        fail(f"{what}: n_accepted is {n}; expected {n_expected} ({why})")
    expected = torch.tensor(next_expected, dtype=dtype, device=device)
    rtol, atol = TOL[dtype]
    assert_close(next_probs, expected, what=f"{what}: next_probs ({why})", rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_accepts_then_rejects(impl, device, dtype):
    # u_0 = 15/16 < 1 accepts x_0; u_1 = 1/4 < 1/2 accepts x_1; u_2 = 1/2 >= 1/4 rejects x_2.
    # The residual max(0, p_2 - q_2) = [3/8, 1/8, 0, 0] sums to 1/2.
    inputs = dict(ROUND, uniforms=[0.9375, 0.25, 0.5])
    check_verify(
        impl,
        device,
        dtype,
        inputs,
        2,
        [0.75, 0.25, 0.0, 0.0],
        "x_2 is rejected: draw from max(0, p_2 - q_2), normalised",
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_full_acceptance_gives_the_bonus_row(impl, device, dtype):
    inputs = dict(ROUND, uniforms=[0.9375, 0.25, 0.125])  # u_2 = 1/8 < 1/4 accepts x_2 too
    check_verify(
        impl,
        device,
        dtype,
        inputs,
        3,
        ROUND["target_probs"][3],
        "all 3 drafts are accepted: the next token comes from the target's last row p_3",
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_stops_at_the_first_rejection(impl, device, dtype):
    # u_1 = 3/4 >= 1/2 rejects x_1; x_2 would pass (1/8 < 1/4) but was drafted after x_1, so it
    # is thrown away. The residual max(0, p_1 - q_1) = [0, 0, 1/8, 1/8].
    inputs = dict(ROUND, uniforms=[0.9375, 0.75, 0.125])
    check_verify(
        impl,
        device,
        dtype,
        inputs,
        1,
        [0.0, 0.0, 0.5, 0.5],
        "x_1 is rejected, so only x_0 counts, whatever happens to x_2",
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_rejects_on_ties_and_impossible_tokens(impl, device, dtype):
    q_0 = [0.25, 0.5, 0.125, 0.125]
    # u_0 = p_0(1) / q_0(1) = 1/2 exactly: the test is strict (u < ratio), so x_0 is rejected.
    tie = dict(
        draft_tokens=[1],
        draft_probs=[q_0],
        uniforms=[0.5],
        target_probs=[[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]],
    )
    check_verify(
        impl,
        device,
        dtype,
        tie,
        0,
        [0.0, 0.0, 0.5, 0.5],
        "u_0 equals p_0(x_0) / q_0(x_0) = 1/2; accept only when u is strictly smaller",
    )
    # p_0(1) = 0: the target never says token 1, so it is rejected even when u_0 = 0.
    impossible = dict(
        draft_tokens=[1],
        draft_probs=[q_0],
        uniforms=[0.0],
        target_probs=[[0.5, 0.0, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]],
    )
    check_verify(
        impl,
        device,
        dtype,
        impossible,
        0,
        [0.5, 0.0, 0.25, 0.25],
        "p_0(x_0) = 0: a token the target never produces must never be accepted",
    )


def random_round(V, gamma, seed, dtype, device):
    """Random distributions (some target entries exactly 0), drafts drawn from q, uniforms."""
    g = torch.Generator().manual_seed(seed)
    # The target's logits are the draft's plus noise, so that long runs of acceptances happen too.
    logits = 2 * torch.randn(gamma + 1, V, generator=g, dtype=torch.float64)
    q = torch.softmax(logits[:gamma], -1)
    p = torch.softmax(logits + torch.randn(gamma + 1, V, generator=g, dtype=torch.float64), -1)
    p = p * (torch.rand(gamma + 1, V, generator=g, dtype=torch.float64) > 0.2)
    p[:, 0] += 1e-3  # no row of p is all zeros
    p = p / p.sum(-1, keepdim=True)
    x = torch.multinomial(q, 1, generator=g).squeeze(1)
    u = torch.rand(gamma, generator=g, dtype=torch.float64)
    p, q, u = p.to(dtype), q.to(dtype), u.to(dtype)
    ratio = p[torch.arange(gamma), x] / q[torch.arange(gamma), x]
    # Keep clear of near-ties, where rounding would decide between u < p/q and u * q < p.
    u = torch.where((u - ratio).abs() < 1e-4, u / 2, u)
    return x.to(device), q.to(device), p.to(device), u.to(device)


def the_rule(x, q, p, u):
    """The acceptance rule, step by step, in plain Python: the spec's oracle."""
    gamma, n = len(x), 0
    while n < gamma and u[n].item() < min(1.0, p[n, x[n]].item() / q[n, x[n]].item()):
        n += 1
    if n == gamma:
        return n, p[gamma]
    residual = (p[n] - q[n]).clamp(min=0)
    return n, residual / residual.sum()


@pytest.mark.parametrize("dtype", DTYPES)
@given(V=st.integers(2, 12), gamma=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_verify_follows_the_rule(impl, device, dtype, V, gamma, seed):
    x, q, p, u = random_round(V, gamma, seed, dtype, device)
    copies = [t.clone() for t in (x, q, p, u)]
    what = (
        f"verify(draft_tokens ({gamma},), draft_probs ({gamma}, {V}), target_probs "
        f"({gamma + 1}, {V}), uniforms ({gamma},), {dtype}) with seed {seed}"
    )
    n, next_probs = impl.verify(x, q, p, u)
    if any(not torch.equal(a, b) for a, b in zip((x, q, p, u), copies, strict=True)):
        fail(f"{what} changed its inputs; verify must be a pure function (no in-place ops)")
    n_rule, next_rule = the_rule(x, q, p, u)
    rows = torch.arange(gamma, device=x.device)
    if n != n_rule:
        fail(
            f"{what}: n_accepted is {n}; the rule accepts {n_rule} (u = {u.tolist()}, "
            f"p_i(x_i) / q_i(x_i) = {(p[rows, x] / q[rows, x]).tolist()})"
        )
    rtol, atol = TOL[dtype]
    assert_close(
        next_probs, next_rule, what=f"{what}: next_probs after {n} accepted", rtol=rtol, atol=atol
    )


@given(V=st.integers(2, 12), gamma=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_verify_returns_a_distribution(impl, device, V, gamma, seed):
    x, q, p, u = random_round(V, gamma, seed, torch.float64, device)
    n, next_probs = impl.verify(x, q, p, u)
    what = f"verify with gamma={gamma}, V={V}, seed {seed}: next_probs"
    if not 0 <= n <= gamma:
        fail(f"verify with gamma={gamma}: n_accepted = {n} is outside 0 .. {gamma}")
    if next_probs.shape != (V,):
        fail(f"{what} has shape {tuple(next_probs.shape)}; expected ({V},)")
    if (next_probs < 0).any() or abs(next_probs.sum().item() - 1) > 1e-12:
        fail(
            f"{what} = {next_probs.tolist()} must be non-negative and sum to 1 (it sums to "
            f"{next_probs.sum().item():.6g}): normalise the residual"
        )
    if n < gamma and next_probs[x[n]] != 0:
        fail(
            f"{what} gives the rejected token x_{n} = {x[n].item()} probability "
            f"{next_probs[x[n]].item():.6g}; the residual max(0, p - q) is zero there, because a "
            "token is only rejected where q > p"
        )


def chernoff_check(counts, probs, what, cells):
    """Fail when some cell's count is too unlikely under `probs`.

    For a count k out of N with cell probability p and p^ = k / N, Chernoff's bound gives
    P(N KL(p^ || p) >= c) <= 2 exp(-c) (once for each tail). Over `cells` cells, the union bound
    makes the chance of any false failure at most 2 * cells * exp(-c) = DELTA.
    """
    N = counts.sum()
    for index in np.ndindex(probs.shape):
        k, p = counts[index], probs[index]
        if p == 0:
            if k > 0:
                fail(f"{what}: {index} has probability 0 under the target yet came out {k} times")
            continue
        a = k / N
        if chernoff_gap(k, N, p, cells, DELTA):
            fail(
                f"{what}: {index} came out {k} times in {N} draws ({a:.4f}); the target gives "
                f"it probability {p:.4f}. A gap this large has a chance below {DELTA:g} for an "
                "exact sampler: the tokens do not follow the target's distribution"
            )


def test_generate_follows_the_target_distribution(impl, device):
    # Statistical. N continuations of 3 tokens from one prompt, with gamma = 2, so the three
    # tokens come from accepted drafts, residual draws and bonus rows alike. The counts of the
    # first two tokens (joint, 64 cells) and of the third (8 cells) are checked with
    # chernoff_check: the chance that an exact sampler fails is below DELTA = 1e-7.
    V, N, gamma = 8, 2000, 2
    target, draft = impl.toy_models(V, seed=0, device=device)
    prompt = torch.tensor([2, 5], device=device)
    g = torch.Generator(device=device).manual_seed(0)
    samples = torch.stack(
        [impl.speculative_generate(target, draft, prompt, 3, gamma, g) for _ in range(N)]
    ).cpu()
    if samples.shape != (N, 3) or samples.dtype != torch.int64:
        fail(
            f"speculative_generate(..., max_new_tokens=3) should return int64 (3,); stacking {N} "
            f"calls gave {samples.dtype} {tuple(samples.shape)}"
        )
    if samples.min() < 0 or samples.max() >= V:
        fail(f"speculative_generate returned a token outside 0 .. {V - 1}")
    # The exact law of the first three tokens, from the target alone.
    first = target(prompt)[-1].cpu()
    pairs = torch.stack(
        [first[a] * target(torch.cat([prompt, prompt.new_tensor([a])]))[-1].cpu() for a in range(V)]
    )  # (V, V): P(x_1 = a, x_2 = b)
    third = sum(
        pairs[a, b] * target(torch.cat([prompt, prompt.new_tensor([a, b])]))[-1].cpu()
        for a in range(V)
        for b in range(V)
    )
    pair_counts = np.zeros((V, V), dtype=np.int64)
    np.add.at(pair_counts, (samples[:, 0].numpy(), samples[:, 1].numpy()), 1)
    third_counts = np.bincount(samples[:, 2].numpy(), minlength=V)
    cells = V * V + V
    chernoff_check(pair_counts, pairs.numpy(), "the first two generated tokens (x_1, x_2)", cells)
    chernoff_check(third_counts, third.numpy(), "the third generated token x_3", cells)


class Counting:
    """Wraps a model and counts its calls; the specs never look inside the learner's code."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, tokens):
        self.calls += 1
        return self.model(tokens)


class Unigram:
    """A model whose next-token distribution ignores the context: every row is `probs`."""

    def __init__(self, probs):
        self.probs = probs

    def __call__(self, tokens):
        return self.probs.repeat(len(tokens), 1)


@pytest.mark.parametrize(("gamma", "max_new_tokens"), [(1, 7), (3, 10), (4, 20)])
def test_generate_calls_the_target_once_per_round(impl, device, gamma, max_new_tokens):
    g = torch.Generator(device=device).manual_seed(1)
    prompt = torch.tensor([1, 2, 3], device=device)
    # The draft *is* the target: every draft is accepted, each round yields gamma + 1 tokens.
    model, _ = impl.toy_models(8, seed=3, device=device)
    target, draft = Counting(model), Counting(model)
    out = impl.speculative_generate(target, draft, prompt, max_new_tokens, gamma, g)
    if out.shape != (max_new_tokens,):
        fail(
            f"speculative_generate(max_new_tokens={max_new_tokens}) returned shape "
            f"{tuple(out.shape)}; expected ({max_new_tokens},): the new tokens only"
        )
    rounds = math.ceil(max_new_tokens / (gamma + 1))
    if target.calls != rounds:
        fail(
            f"speculative_generate(gamma={gamma}, max_new_tokens={max_new_tokens}) with draft == "
            f"target accepts every draft, so it needs {rounds} rounds of gamma + 1 tokens; the "
            f"target was called {target.calls} times (once per round, on all drafts at once)"
        )
    # A draft that proposes only tokens the target never says: every round yields one token.
    p = torch.tensor([0.4, 0.3, 0.2, 0.1, 0, 0, 0, 0], dtype=torch.float64, device=device)
    target, draft = Counting(Unigram(p)), Counting(Unigram(p.flip(0)))
    out = impl.speculative_generate(target, draft, prompt, max_new_tokens, gamma, g)
    if target.calls != max_new_tokens:
        fail(
            f"speculative_generate(gamma={gamma}, max_new_tokens={max_new_tokens}) with a draft "
            f"that is always rejected makes one token per round; the target was called "
            f"{target.calls} times, expected {max_new_tokens}"
        )
    if out.max() > 3:
        fail(
            f"speculative_generate returned token {out.max().item()}, which the target gives "
            "probability 0: a rejected draft leaked into the output"
        )


def test_generate_is_reproducible(impl, device):
    target, draft = impl.toy_models(8, seed=1, device=device)
    prompt = torch.tensor([0, 7, 1], device=device)
    before = prompt.clone()
    runs = [
        impl.speculative_generate(
            target, draft, prompt, 12, 3, torch.Generator(device=device).manual_seed(5)
        )
        for _ in range(2)
    ]
    for out in runs:
        if out.dtype != torch.int64 or out.shape != (12,) or out.device.type != device:
            fail(
                f"speculative_generate(prompt (3,) on {device}, max_new_tokens=12) should return "
                f"int64 (12,) on {device}; got {out.dtype} {tuple(out.shape)} on {out.device}"
            )
    if not torch.equal(prompt, before):
        fail("speculative_generate changed the prompt tensor in place")
    if not torch.equal(runs[0], runs[1]):
        fail(
            "speculative_generate gave different tokens for two generators with the same seed: "
            "make every random draw (drafts, uniforms, next token) with `generator`"
        )


def rounds_interval(alpha, gamma, max_new_tokens):
    """[lo, hi]: the number of rounds R lies outside with chance below DELTA, by its exact law.

    With a constant acceptance chance alpha, a round yields K = 1 + (leading acceptances) tokens:
    P(K = k) = alpha^(k-1) (1 - alpha) for k <= gamma, P(K = gamma + 1) = alpha^gamma. S_r, the
    tokens after r rounds, has the r-fold convolution of that law, and R > r exactly when
    S_r < max_new_tokens. We follow P(S_r = s) for s < max_new_tokens, round after round.
    """
    law = [0.0] + [alpha ** (k - 1) * (1 - alpha) for k in range(1, gamma + 1)] + [alpha**gamma]
    below = np.zeros(max_new_tokens)
    below[0] = 1.0
    lo, r = 1, 0
    while True:
        r += 1
        below = np.convolve(below, law)[:max_new_tokens]
        if 1 - below.sum() <= DELTA / 2:  # P(R <= r) is still tiny: R > r
            lo = r + 1
        if below.sum() <= DELTA / 2:  # P(R > r) is tiny
            return lo, r


@pytest.mark.parametrize(("alpha_case", "gamma"), [("0.9", 4), ("0.5", 2)])
def test_tokens_per_round_match_the_formula(impl, device, alpha_case, gamma):
    # Statistical. Unigram models make the acceptance chance of every draft the same,
    # alpha = sum_x min(p(x), q(x)), so the number of rounds has an exact law; we accept any count
    # of rounds inside the interval that holds it with chance at least 1 - DELTA.
    p = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0], dtype=torch.float64, device=device)
    q = {"0.9": [0.3, 0.3, 0.2, 0.1, 0.1], "0.5": [0.1, 0.1, 0.2, 0.1, 0.5]}[alpha_case]
    q = torch.tensor(q, dtype=torch.float64, device=device)
    alpha = torch.minimum(p, q).sum().item()
    M = 2000
    target = Counting(Unigram(p))
    g = torch.Generator(device=device).manual_seed(2)
    impl.speculative_generate(target, Unigram(q), torch.tensor([0], device=device), M, gamma, g)
    lo, hi = rounds_interval(alpha, gamma, M)
    per_round = (1 - alpha ** (gamma + 1)) / (1 - alpha)
    if not lo <= target.calls <= hi:
        fail(
            f"speculative_generate(max_new_tokens={M}, gamma={gamma}) with acceptance chance "
            f"alpha = {alpha:g} took {target.calls} rounds (target calls), "
            f"{M / max(target.calls, 1):.3f} "
            f"tokens per round; the paper's (1 - alpha^(gamma+1)) / (1 - alpha) = "
            f"{per_round:.3f} predicts {M / per_round:.0f} rounds, and any count outside "
            f"{lo} .. {hi} has a chance below {DELTA:g}"
        )


@given(alpha=st.floats(0, 0.999), gamma=st.integers(0, 12))
def test_expected_tokens_per_step_formula(impl, alpha, gamma):
    expected = sum(alpha**k for k in range(gamma + 1))  # 1 + alpha + ... + alpha^gamma
    actual = impl.expected_tokens_per_step(alpha, gamma)
    if not math.isclose(actual, expected, rel_tol=1e-9):
        fail(
            f"expected_tokens_per_step(alpha={alpha!r}, gamma={gamma}) = {actual!r}; expected "
            f"{expected!r} = (1 - alpha^(gamma+1)) / (1 - alpha) = 1 + alpha + ... + alpha^gamma"
        )
    for alpha, gamma, expected in [(0.0, 5, 1.0), (1.0, 5, 6.0), (1.0, 0, 1.0), (0.5, 1, 1.5)]:
        actual = impl.expected_tokens_per_step(alpha, gamma)
        if not math.isclose(actual, expected, rel_tol=1e-12):
            fail(
                f"expected_tokens_per_step(alpha={alpha}, gamma={gamma}) = {actual!r}; expected "
                f"{expected} (at alpha = 1, every draft is accepted: gamma + 1 tokens, no 0/0)"
            )
