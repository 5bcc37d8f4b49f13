"""Hidden grading cases for decoding: shapes, dtypes, settings and models unlike the public specs'.

The sampling cases draw tens of thousands of tokens and compare the learner's counts with the
reference's by a two-sample test (below), so the learner's order of random draws does not matter;
the same test, run against a mutant's counts, names the mistake whose law the learner's matches.
The beam search cases use a model that reads the whole prefix (not the last two tokens).
"""

import math

import numpy as np
import torch

from graders.cases import Case

DELTA = 1e-7  # the chance that one statistical case fails a correct sampler


# ---------------------------------------------------------------- greedy, temperature, filters


def call_greedy(m, batch, single):
    return {"batch": m.greedy(batch), "single": m.greedy(single)}


def greedy_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    batch = (torch.randn(3, 5, 50, generator=g) * 3).round()  # many ties: the lowest id wins
    return {"batch": batch, "single": torch.randn(17, generator=g, dtype=torch.float64)}


def call_temperature(m, logits):
    return {"cold": m.apply_temperature(logits, 0.35), "hot": m.apply_temperature(logits, 2.5)}


def temperature_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(4, 33, generator=g, dtype=torch.float64) * 4}


def call_top_k(m, logits, small):
    return {
        "k=7": m.top_k_filter(logits, 7),
        "k=45 > V": m.top_k_filter(logits, 45),
        "k=1": m.top_k_filter(small, 1),
    }


def top_k_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(6, 40, generator=g) * 2).round(decimals=1)  # ties at some boundaries
    return {"logits": logits, "small": torch.randn(2, 3, 5, generator=g, dtype=torch.float64)}


def call_top_p(m, wide, long, sharp):
    return {
        "p=0.9": m.top_p_filter(wide, 0.9),
        "p=0.5": m.top_p_filter(long, 0.5),
        "p=0.001": m.top_p_filter(sharp, 0.001),
    }


def _nucleus_margin(logits, p):
    """How close p comes to the mass before any token, in float64: rounding decides below ~1e-6."""
    probs = torch.softmax(logits.double(), -1).sort(-1, descending=True).values
    return ((probs.cumsum(-1) - probs) - p).abs().min().item()


def top_p_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    draw = {
        "wide": lambda: torch.randn(8, 30, generator=g, dtype=torch.float64) * 1.5,
        "long": lambda: torch.randn(5, 1000, generator=g) * 3,
    }
    inputs = {}
    for (name, make), p in zip(draw.items(), (0.9, 0.5), strict=True):
        inputs[name] = make()
        while _nucleus_margin(inputs[name], p) < 1e-4:  # no row that rounding would decide
            inputs[name] = make()
    inputs["sharp"] = torch.randn(4, 12, generator=g, dtype=torch.float64) * 5
    return inputs


# ---------------------------------------------------------------- sampling, statistical


def sample_counts(m, logits, n_draws, temperature, top_k, top_p, seed):
    """n_draws tokens for every row of logits (B, V), in one call: counts (B, V) int64."""
    import torch

    batch = logits.expand(int(n_draws), *logits.shape).clone()  # (n_draws, B, V)
    g = torch.Generator(device=logits.device).manual_seed(int(seed))
    tokens = m.sample(batch, temperature, top_k, top_p, generator=g).reshape(int(n_draws), -1)
    V = logits.shape[-1]
    return torch.stack([torch.bincount(t.cpu(), minlength=V) for t in tokens.T])


def rows_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 9, generator=g, dtype=torch.float64) * 1.5
    return {
        "logits": logits,
        "n_draws": 12_000,
        "temperature": 0.7,
        "top_k": 6,
        "top_p": 0.85,
        "seed": seed,
    }


def hot_nucleus_inputs(seed):
    logits = torch.linspace(2.0, -2.0, 12, dtype=torch.float64)[None]
    return {
        "logits": logits,
        "n_draws": 12_000,
        "temperature": 1.6,
        "top_k": None,
        "top_p": 0.7,
        "seed": seed,
    }


def compare_counts(actual, expected, inputs):
    """Two-sample test: could both count tables come from the same law, N draws per row each?

    Given that a cell holds n = a + b of the 2N draws, a follows a hypergeometric law with mean
    n / 2 when both sides sample the same law, and Hoeffding's bound gives
    P(|a - n/2| >= t) <= 2 exp(-2 t^2 / n). Failing when (a - b)^2 / (2n) > log(2 cells / DELTA)
    fails a correct sampler with chance below DELTA (union bound over the cells).
    """
    a, b = np.asarray(actual, dtype=np.int64), np.asarray(expected, dtype=np.int64)
    if a.shape != b.shape or (a.sum(-1) != b.sum(-1)).any():
        return (
            f"sample: the counts per row should have shape {b.shape} and sum to "
            f"{b.sum(-1).tolist()}; got shape {a.shape}"
        )
    n = np.maximum(a + b, 1)
    stat = (a - b) ** 2 / (2 * n)
    worst = np.unravel_index(np.argmax(stat), stat.shape)
    if stat[worst] > math.log(2 * a.size / DELTA):
        row, token = (int(i) for i in worst)
        settings = {k: inputs[k] for k in ("temperature", "top_k", "top_p")}
        return (
            f"sample({settings}) on logits {tuple(np.shape(inputs['logits']))}: row {row}, token "
            f"{token} came {a[worst]} times in {a[row].sum()} draws; the reference drew it "
            f"{b[worst]} times (a gap with a chance below {DELTA:g} for a correct sampler). "
            f"Your counts for that row: {a[row].tolist()}; the reference's: {b[row].tolist()}"
        )
    return None


def generator_use(m, logits):
    """Same seed, same tokens; torch's global generator untouched; temperature 0 is greedy."""
    import torch

    def seeded():
        return torch.Generator(device=logits.device).manual_seed(42)

    torch.manual_seed(0)
    first = m.sample(logits, 0.9, None, 0.95, generator=seeded())
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    second = m.sample(logits, 0.9, None, 0.95, generator=seeded())
    return {
        "same seed, same tokens": bool(torch.equal(first, second)),
        "global generator untouched": bool(torch.equal(state, torch.random.get_rng_state())),
        "temperature 0": m.sample(logits, 0.0, generator=seeded()),
    }


def generator_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(2, 50, 20, generator=g)}


def big_sample(m, logits, top_k, top_p, seed):
    import torch

    g = torch.Generator(device=logits.device).manual_seed(int(seed))
    return m.sample(logits, 0.8, top_k, top_p, generator=g)


def big_sample_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(64, 16_000, generator=g) * 3,
        "top_k": 50,
        "top_p": 0.9,
        "seed": seed,
    }


def compare_support(actual, expected, inputs):
    """Every token must lie in its row's filtered support (temperature 0.8, then top-k, top-p)."""
    tokens, logits = np.asarray(actual), torch.as_tensor(inputs["logits"]).double() / 0.8
    B = logits.shape[0]
    if tokens.shape != (B,) or tokens.dtype != np.int64:
        return f"sample(logits {tuple(logits.shape)}): expected int64 ({B},), got {tokens.shape}"
    kth = logits.topk(inputs["top_k"], -1).values[:, -1:]
    probs = torch.softmax(logits.masked_fill(logits < kth, -math.inf), -1)
    ranked = probs.sort(-1, descending=True).values
    n_kept = ((ranked.cumsum(-1) - ranked) < inputs["top_p"] + 1e-6).sum(-1, keepdim=True)
    inside = ((probs >= ranked.gather(-1, n_kept - 1)) & (probs > 0)).numpy()
    bad = [r for r in range(B) if not 0 <= tokens[r] < logits.shape[1] or not inside[r, tokens[r]]]
    if bad:
        return (
            f"sample(logits {tuple(logits.shape)}, temperature=0.8, top_k={inputs['top_k']}, "
            f"top_p={inputs['top_p']}): row {bad[0]} drew token {tokens[bad[0]]}, which the "
            f"filters remove ({len(bad)} such rows)"
        )
    return None


# ---------------------------------------------------------------- beam search


def run_beams(m, embed, position, out, bos, eos, settings):
    """Beam search over a model whose logits read the mean embedding of the whole prefix, once for
    each (beam_width, max_len, length_penalty) in settings."""
    import torch

    def step_fn(tokens):
        h = torch.tanh(embed[tokens].mean(dim=1) + position[tokens.shape[1]])
        return h @ out

    results = []
    for beam_width, max_len, length_penalty in settings:
        tokens, score = m.beam_search(
            step_fn, bos, eos, beam_width, max_len, length_penalty, device=embed.device
        )
        results.append({"tokens": tokens, "score": score})
    return results


def _prefix_model(seed, V, d, max_len, eos_bias=0.0):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(d, V, generator=g, dtype=torch.float64) * 3 / d**0.5
    out[:, 0] += eos_bias / d  # token 0 is eos
    return {
        "embed": torch.randn(V, d, generator=g, dtype=torch.float64),
        "position": torch.randn(max_len + 1, d, generator=g, dtype=torch.float64) * 0.5,
        "out": out,
        "bos": V - 1,
        "eos": 0,
    }


def exhaustive_inputs(seed):
    return {
        **_prefix_model(seed, V=4, d=8, max_len=4),
        "settings": [(300, 4, 0.8)],  # 300 beams > 4**4 sequences: nothing is pruned
    }


def greedy_beam_inputs(seed):
    return {
        **_prefix_model(seed, V=30, d=16, max_len=15, eos_bias=-4.0),
        "settings": [(1, 15, 0.0)],
    }


def narrow_inputs(seed):
    return {
        **_prefix_model(seed, V=25, d=16, max_len=10, eos_bias=-2.0),
        "settings": [(4, 10, 0.0), (6, 10, 1.0), (3, 7, 2.5)],
    }


def long_beam_inputs(seed):
    return {
        **_prefix_model(seed, V=4000, d=64, max_len=30, eos_bias=-30.0),
        "settings": [(8, 30, 0.6)],
    }


CASES = [
    Case("greedy on (3, 5, 50) with ties, and on (17,)", call=call_greedy, inputs=greedy_inputs),
    Case(
        "apply_temperature at 0.35 and 2.5, float64",
        call=call_temperature,
        inputs=temperature_inputs,
        seed=1,
    ),
    Case(
        "top_k_filter with ties, k >= V, and k = 1 on a 3-D batch",
        call=call_top_k,
        inputs=top_k_inputs,
        points=2,
        seed=2,
        rtol=0,
        atol=0,
    ),
    Case(
        "top_p_filter at p = 0.9, 0.5 (V = 1000, float32) and 0.001",
        call=call_top_p,
        inputs=top_p_inputs,
        points=2,
        seed=3,
        rtol=0,
        atol=0,
    ),
    Case(
        "sample's law on three rows: temperature 0.7, top-k 6, top-p 0.85",
        call=sample_counts,
        inputs=rows_inputs,
        compare=compare_counts,
        points=2,
        seed=4,
    ),
    Case(
        "sample's law: temperature 1.6, then top-p 0.7",
        call=sample_counts,
        inputs=hot_nucleus_inputs,
        compare=compare_counts,
        points=1,
        seed=5,
    ),
    Case(
        "sample draws only from its generator; temperature 0 is greedy",
        call=generator_use,
        inputs=generator_inputs,
        seed=6,
    ),
    Case(
        "beam search as wide as the tree finds the optimum (length penalty 0.8)",
        call=run_beams,
        inputs=exhaustive_inputs,
        points=2,
        seed=7,
    ),
    Case(
        "beam search with one beam, 30 tokens, 15 steps",
        call=run_beams,
        inputs=greedy_beam_inputs,
        seed=8,
    ),
    Case(
        "beam search with 4, 6 and 3 beams, length penalties 0, 1 and 2.5",
        call=run_beams,
        inputs=narrow_inputs,
        points=3,
        seed=9,
    ),
    Case(
        "speed: sample 64 rows of 16000 logits with top-k 50 and top-p 0.9",
        call=big_sample,
        inputs=big_sample_inputs,
        compare=compare_support,
        points=0.5,
        seed=10,
        speed_ratio=4.0,
        speed_points=1,
    ),
    Case(
        "speed: beam search with 8 beams over 4000 tokens, 30 steps",
        call=run_beams,
        inputs=long_beam_inputs,
        points=0.5,
        seed=11,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
