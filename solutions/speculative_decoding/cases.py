"""Hidden grading cases for speculative_decoding.

Inputs differ from the public specs': other vocabulary sizes, gammas, seeds and dtypes, and, for
the generation cases, a bigram model defined here rather than the shipped ToyLM (any model that
keeps the contract tokens (T,) -> probs (T, V) must work). The statistical cases compare the
learner's samples with the exact law computed here on the trusted side, never with the reference's
samples, so they do not depend on the order of the learner's random draws; each states its chance
of failing a correct sampler (below 1e-7).
"""

import math

import numpy as np
import torch

from graders.cases import Case
from graders.checks import chernoff_gap

DELTA = 1e-7  # the false-failure chance each statistical case allows itself


# ---------------------------------------------------------------- verify, exact


def verify_rounds(m, draft_tokens, draft_probs, target_probs, uniforms):
    """Run verify on R rounds stacked along the first axis; return every n and next_probs."""
    import torch

    x, q, p, u = (torch.as_tensor(t) for t in (draft_tokens, draft_probs, target_probs, uniforms))
    ns, rows = [], []
    for r in range(x.shape[0]):
        n, next_probs = m.verify(x[r], q[r], p[r], u[r])
        ns.append(int(n))
        rows.append(torch.as_tensor(next_probs).detach().cpu())
    return {"n_accepted": ns, "next_probs": torch.stack(rows)}


def random_rounds(rounds, V, gamma, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (rounds, gamma + 1, V)
    # The target's logits are the draft's plus noise, so that drafts are often accepted and every
    # n from 0 to gamma turns up; some target entries are exactly 0.
    logits = 1.5 * torch.randn(*shape, generator=g, dtype=torch.float64)
    q = torch.softmax(logits[:, :gamma], -1)
    p = torch.softmax(logits + 0.5 * torch.randn(*shape, generator=g, dtype=torch.float64), -1)
    p = p * (torch.rand(*shape, generator=g, dtype=torch.float64) > 0.1)
    p[..., -1] += 1e-3
    p = p / p.sum(-1, keepdim=True)
    x = torch.multinomial(q.reshape(-1, V), 1, generator=g).reshape(rounds, gamma)
    u = torch.rand(rounds, gamma, generator=g, dtype=torch.float64)
    p, q, u = p.to(dtype), q.to(dtype), u.to(dtype)
    ratio = p.gather(-1, x[..., None])[:, :gamma, 0] / q.gather(-1, x[..., None])[..., 0]
    u = torch.where((u - ratio).abs() < 1e-4, u / 2, u)  # no near-ties, which rounding decides
    return {"draft_tokens": x, "draft_probs": q, "target_probs": p, "uniforms": u}


def rounds_float64(seed):
    return random_rounds(rounds=60, V=7, gamma=5, dtype=torch.float64, seed=seed)


def rounds_float32(seed):
    return random_rounds(rounds=40, V=16, gamma=8, dtype=torch.float32, seed=seed)


def ties_and_zeros(seed):
    """Boundary rounds over V = 5 (multiples of 1/16: exact in every dtype)."""
    q = [[0.125, 0.5, 0.125, 0.125, 0.125], [0.25, 0.25, 0.25, 0.125, 0.125]]
    rounds = [
        # x_0 = 1, p/q = 1/4 and u_0 = 1/4: a tie, rejected.
        (
            [1, 0],
            [[0.25, 0.125, 0.25, 0.25, 0.125], [0.5, 0.5, 0, 0, 0], [0, 0, 1, 0, 0]],
            [0.25, 0],
        ),
        # x_0 = 1 with p(1) = 0 and u_0 = 0: rejected.
        ([1, 0], [[0.25, 0, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0, 0], [0, 0, 1, 0, 0]], [0.0, 0]),
        # x_0 accepted (p >= q), x_1 = 3 with p/q = 1/2 and u_1 = 1/2: a tie, rejected.
        (
            [0, 3],
            [[0.5, 0.125, 0.125, 0.125, 0.125], [0, 0, 0.75, 0.0625, 0.1875], [0, 0, 0, 0, 1]],
            [0.875, 0.5],
        ),
        # Both accepted, u_1 just below the ratio 1/2: the bonus row.
        (
            [0, 3],
            [[0.5, 0.125, 0.125, 0.125, 0.125], [0, 0, 0.75, 0.0625, 0.1875], [0, 0, 0, 0, 1]],
            [0.875, 0.4375],
        ),
    ]
    x, p, u = zip(*rounds, strict=True)
    f = torch.float64
    return {
        "draft_tokens": torch.tensor(x),
        "draft_probs": torch.tensor([q] * len(rounds), dtype=f),
        "target_probs": torch.tensor(p, dtype=f),
        "uniforms": torch.tensor(u, dtype=f),
    }


def compare_rounds(actual, expected, inputs):
    n_actual, n_expected = list(actual["n_accepted"]), list(expected["n_accepted"])
    if n_actual != n_expected:
        r = next(i for i, (a, e) in enumerate(zip(n_actual, n_expected, strict=True)) if a != e)
        return (
            f"verify: round {r} of {len(n_expected)} accepted {n_actual[r]} drafts; "
            f"expected {n_expected[r]} (accept while u_i < min(1, p_i(x_i) / q_i(x_i)))"
        )
    a = np.asarray(actual["next_probs"], dtype=np.float64)
    e = np.asarray(expected["next_probs"], dtype=np.float64)
    if a.shape != e.shape:
        return f"verify: next_probs rows have shape {a.shape[1:]}; expected {e.shape[1:]}"
    tol = 1e-6 if np.asarray(inputs["uniforms"]).dtype == np.float32 else 1e-12
    bad = ~np.isclose(a, e, rtol=tol, atol=tol)
    if bad.any():
        r = int(np.argwhere(bad)[0][0])
        return (
            f"verify: next_probs of round {r} (after {n_expected[r]} accepted) is "
            f"{np.round(a[r], 6).tolist()}; expected {np.round(e[r], 6).tolist()}"
        )
    return None


# ---------------------------------------------------------------- generation, statistical


def generate_samples(
    m, target_logits, draft_logits, prompt, n_samples, max_new_tokens, gamma, seed
):
    """n_samples independent continuations from bigram models: int64 (n_samples, max_new_tokens)."""
    import torch

    class Bigram:  # row t = softmax(logits[tokens[t]]): the next token depends on the last one
        def __init__(self, logits):
            self.table = torch.softmax(torch.as_tensor(logits), dim=-1)

        def __call__(self, tokens):
            return self.table[tokens]

    target, draft = Bigram(target_logits), Bigram(draft_logits)
    g = torch.Generator().manual_seed(int(seed))
    prompt = torch.as_tensor(prompt)
    runs = [
        m.speculative_generate(target, draft, prompt, int(max_new_tokens), int(gamma), g)
        for _ in range(int(n_samples))
    ]
    return torch.stack([torch.as_tensor(r).detach().cpu() for r in runs])


def bigram_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    V = 12
    logits = 1.5 * torch.randn(V, V, generator=g, dtype=torch.float64)
    noise = torch.randn(V, V, generator=g, dtype=torch.float64)
    return {
        "target_logits": logits,
        "draft_logits": 0.4 * logits + 0.8 * noise,
        "prompt": torch.tensor([4, 9, 2]),
        "n_samples": 2000,
        "max_new_tokens": 4,
        "gamma": 3,
        "seed": seed,
    }


def chernoff_message(counts, probs, what, cells):
    """A message when some cell of `counts` is too unlikely under `probs`, else None.

    Chernoff: P(N KL(k/N || p) >= c) <= 2 exp(-c) per cell; with c = log(2 cells / DELTA) the
    union bound over `cells` cells keeps the chance of failing an exact sampler below DELTA.
    """
    N = counts.sum()
    for index in np.ndindex(probs.shape):
        k, p = counts[index], probs[index]
        if p <= 0:
            if k > 0:
                return f"{what}: {index} has probability 0 under the target yet came out {k} times"
            continue
        a = k / N
        if chernoff_gap(k, N, p, cells, DELTA):
            return (
                f"{what}: {index} came out {k} times in {N} ({a:.4f}); the target gives it "
                f"probability {p:.4f}, a gap with a chance below {DELTA:g} for an exact sampler"
            )
    return None


def compare_bigram_law(actual, expected, inputs):
    """The joint law of (x_1, x_2) and the marginals of x_1 .. x_4 against the exact bigram law."""
    samples = np.asarray(actual)
    P = torch.softmax(torch.as_tensor(inputs["target_logits"]), -1).numpy()
    V, M = P.shape[0], int(inputs["max_new_tokens"])
    N = int(inputs["n_samples"])
    if samples.shape != (N, M) or samples.dtype.kind not in "iu":
        return (
            f"speculative_generate(max_new_tokens={M}) should return int64 ({M},); "
            f"{N} calls stacked gave {samples.dtype} {samples.shape}"
        )
    if samples.min() < 0 or samples.max() >= V:
        return f"speculative_generate returned a token outside 0 .. {V - 1}"
    marginals = [P[int(np.asarray(inputs["prompt"])[-1])]]
    for _ in range(M - 1):
        marginals.append(marginals[-1] @ P)
    cells = V * V + M * V
    pairs = np.zeros((V, V), dtype=np.int64)
    np.add.at(pairs, (samples[:, 0], samples[:, 1]), 1)
    message = chernoff_message(pairs, marginals[0][:, None] * P, "(x_1, x_2)", cells)
    for k in range(M):
        counts = np.bincount(samples[:, k], minlength=V)
        message = message or chernoff_message(counts, marginals[k], f"x_{k + 1}", cells)
    return message


def count_target_calls(m, logits, prompt, max_new_tokens, gamma):
    """Target calls when the draft is the target itself, and when every draft is rejected."""
    import torch

    class Counting:
        def __init__(self, probs):
            self.probs, self.calls = probs, 0

        def __call__(self, tokens):
            self.calls += 1
            return self.probs[tokens] if self.probs.ndim == 2 else self.probs.repeat(len(tokens), 1)

    table = torch.softmax(torch.as_tensor(logits), dim=-1)
    g = torch.Generator().manual_seed(7)
    prompt, M = torch.as_tensor(prompt), int(max_new_tokens)
    same_target, same_draft = Counting(table), Counting(table)
    out_same = m.speculative_generate(same_target, same_draft, prompt, M, int(gamma), g)
    V = table.shape[-1]
    p = torch.zeros(V, dtype=table.dtype)
    p[: V // 2] = 1.0 / (V // 2)
    target, draft = Counting(p), Counting(p.flip(0))
    out_disjoint = m.speculative_generate(target, draft, prompt, M, int(gamma), g)
    return {
        "calls_when_all_accepted": same_target.calls,
        "calls_when_all_rejected": target.calls,
        "lengths": [len(out_same), len(out_disjoint)],
        "largest_token_when_all_rejected": int(torch.as_tensor(out_disjoint).max()),
    }


def calls_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(10, 10, generator=g, dtype=torch.float64),
        "prompt": torch.tensor([3]),
        "max_new_tokens": 23,
        "gamma": 5,
    }


def compare_calls(actual, expected, inputs):
    M, gamma = int(inputs["max_new_tokens"]), int(inputs["gamma"])
    if list(actual["lengths"]) != [M, M]:
        return f"speculative_generate(max_new_tokens={M}) returned {list(actual['lengths'])} tokens"
    if actual["calls_when_all_accepted"] != math.ceil(M / (gamma + 1)):
        return (
            f"with draft == target (every draft accepted) the target should be called "
            f"{math.ceil(M / (gamma + 1))} times for {M} tokens at gamma={gamma}; it was "
            f"called {actual['calls_when_all_accepted']} times"
        )
    if actual["calls_when_all_rejected"] != M:
        return (
            f"with a draft that is always rejected each round gives one token, so the target "
            f"should be called {M} times; it was called {actual['calls_when_all_rejected']}"
        )
    if actual["largest_token_when_all_rejected"] >= 5:
        return "a rejected draft token (probability 0 under the target) came out"
    return None


def rounds_for_tokens(m, p, q, max_new_tokens, gamma, seed):
    """Unigram models (constant acceptance chance): the number of target calls for M tokens."""
    import torch

    class Unigram:
        def __init__(self, probs):
            self.probs, self.calls = torch.as_tensor(probs), 0

        def __call__(self, tokens):
            self.calls += 1
            return self.probs.repeat(len(tokens), 1)

    target = Unigram(p)
    g = torch.Generator().manual_seed(int(seed))
    m.speculative_generate(
        target, Unigram(q), torch.tensor([1]), int(max_new_tokens), int(gamma), g
    )
    return target.calls


def unigram_inputs(seed):
    # alpha = sum(min(p, q)) = 0.7.
    p = torch.tensor([0.05, 0.25, 0.3, 0.2, 0.2, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.15, 0.3, 0.1, 0.1, 0.1], dtype=torch.float64)
    return {"p": p, "q": q, "max_new_tokens": 2500, "gamma": 3, "seed": seed}


def compare_rounds_law(actual, expected, inputs):
    """R, the rounds for M tokens, against its exact law (the convolution of per-round yields)."""
    p, q = np.asarray(inputs["p"]), np.asarray(inputs["q"])
    alpha, gamma, M = (
        float(np.minimum(p, q).sum()),
        int(inputs["gamma"]),
        int(inputs["max_new_tokens"]),
    )
    law = [0.0] + [alpha ** (k - 1) * (1 - alpha) for k in range(1, gamma + 1)] + [alpha**gamma]
    below, lo, r = np.eye(1, M)[0], 1, 0
    while below.sum() > DELTA / 2:  # P(R > r) = P(S_r < M)
        r += 1
        below = np.convolve(below, law)[:M]
        if 1 - below.sum() <= DELTA / 2:  # P(R <= r) = P(S_r >= M)
            lo = r + 1
    if not lo <= int(actual) <= r:
        per_round = (1 - alpha ** (gamma + 1)) / (1 - alpha)
        return (
            f"{M} tokens at gamma={gamma}, alpha={alpha:g} took {int(actual)} rounds; the "
            f"formula's {per_round:.3f} tokens per round predicts about {M / per_round:.0f}, and "
            f"a count outside {lo} .. {r} has a chance below {DELTA:g}"
        )
    return None


# ---------------------------------------------------------------- formula and speed


def tokens_per_step(m, alphas, gammas):
    return [
        float(m.expected_tokens_per_step(float(a), int(g)))
        for a, g in zip(alphas, gammas, strict=True)
    ]


def formula_inputs(seed):
    return {
        "alphas": [0.0, 0.1, 0.37, 0.6, 0.9, 0.99, 1.0, 1.0, 0.75],
        "gammas": [3, 1, 7, 4, 10, 2, 5, 0, 0],
    }


def compare_floats(actual, expected, inputs):
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape or not np.allclose(a, e, rtol=1e-9, atol=0):
        return (
            f"expected_tokens_per_step at (alpha, gamma) = "
            f"{list(zip(inputs['alphas'], inputs['gammas'], strict=True))}: got {a.tolist()}, "
            f"expected {e.tolist()}"
        )
    return None


def long_generation(m, target_logits, draft_logits, prompt, max_new_tokens, gamma, seed):
    import torch

    class Bigram:
        def __init__(self, logits):
            self.table = torch.softmax(torch.as_tensor(logits), dim=-1)

        def __call__(self, tokens):
            return self.table[tokens]

    g = torch.Generator().manual_seed(int(seed))
    return m.speculative_generate(
        Bigram(target_logits),
        Bigram(draft_logits),
        torch.as_tensor(prompt),
        int(max_new_tokens),
        int(gamma),
        g,
    )


def long_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(16, 16, generator=g, dtype=torch.float64)
    return {
        "target_logits": logits,
        "draft_logits": 0.7 * logits,
        "prompt": torch.tensor([0]),
        "max_new_tokens": 400,
        "gamma": 4,
        "seed": seed,
    }


def compare_tokens(actual, expected, inputs):
    a, M = np.asarray(actual), int(inputs["max_new_tokens"])
    if a.shape != (M,) or a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= 16:
        return f"speculative_generate should return {M} tokens in 0 .. 15; got {a.dtype} {a.shape}"
    return None


CASES = [
    Case(
        "verify on 60 random rounds, V=7, gamma=5, float64",
        call=verify_rounds,
        inputs=rounds_float64,
        compare=compare_rounds,
        points=2,
        seed=101,
    ),
    Case(
        "verify on 40 random rounds, V=16, gamma=8, float32",
        call=verify_rounds,
        inputs=rounds_float32,
        compare=compare_rounds,
        points=1,
        seed=202,
    ),
    Case(
        "verify on ties (u == p/q) and impossible drafts (p(x) = 0)",
        call=verify_rounds,
        inputs=ties_and_zeros,
        compare=compare_rounds,
        points=1,
    ),
    Case(
        "speculative_generate samples the target's law (bigram, V=12, gamma=3)",
        call=generate_samples,
        inputs=bigram_inputs,
        compare=compare_bigram_law,
        points=3,
        seed=5,
    ),
    Case(
        "speculative_generate calls the target once per round",
        call=count_target_calls,
        inputs=calls_inputs,
        compare=compare_calls,
        points=1,
        seed=13,
    ),
    Case(
        "tokens per round follow (1 - alpha^(gamma+1)) / (1 - alpha) at alpha=0.7, gamma=3",
        call=rounds_for_tokens,
        inputs=unigram_inputs,
        compare=compare_rounds_law,
        points=1,
        seed=17,
    ),
    Case(
        "expected_tokens_per_step at nine (alpha, gamma)",
        call=tokens_per_step,
        inputs=formula_inputs,
        compare=compare_floats,
        points=1,
    ),
    Case(
        "speed: 400 tokens from a 16-token bigram pair, gamma=4",
        call=long_generation,
        inputs=long_inputs,
        compare=compare_tokens,
        points=0.5,
        seed=23,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
