"""Public specs for `t5`: run `pytest exercises/t5` (`--impl=solutions`: the reference).

Oracles: T5's counting rule and its span layout, written out plainly below; the rule of span
corruption as a loop over tokens; the round trip (merging inputs and targets gives the sequence
back); the exact law of a uniform random cut for the one statistical spec, whose chance of failing
a correct implementation is below 1e-7 whatever order it draws its random numbers in.
"""

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from graders.checks import assert_close, chernoff_gap, fail

DELTA = 1e-7  # the false-failure chance of the statistical spec
V = 1000  # vocabulary size in the specs; ids 900 .. 999 are reserved for sentinels
SENTINELS = 100

lengths = st.integers(2, 300)
densities = st.sampled_from([0.05, 0.1, 0.15, 0.3, 0.5, 0.8])
span_means = st.sampled_from([1.0, 2.0, 3.0, 3.5, 5.0, 8.0])
seeds = st.integers(0, 2**16)


def no_tie(x):
    """True unless x is within float noise of a half-integer, where float32 (T5's own code) and
    float64 may round differently: the specs stay clear of those settings."""
    return abs(x - math.floor(x) - 0.5) > 1e-6


def t5_counts(length, density, mean):
    """T5's rule: (num_noise_tokens, num_noise_spans)."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, min(max(round(noise / mean), 1), length - noise)


def runs(mask):
    """The spans of a bool mask as (value, length) pairs, in order."""
    out = []
    for m in mask.tolist():
        if out and out[-1][0] == m:
            out[-1][1] += 1
        else:
            out.append([m, 1])
    return out


def noise_mask(impl, device, length, density, mean, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    return impl.random_spans_noise_mask(length, density, mean, generator=g)


def check_mask(mask, length, density, mean, device, why=""):
    what = (
        f"random_spans_noise_mask({length}, noise_density={density}, mean_noise_span_length={mean})"
    )
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (length,):
        fail(
            f"{what} should return a bool tensor of shape ({length},); got "
            f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
        )
    if mask.device.type != torch.device(device).type:
        fail(f"{what} returned a mask on {mask.device}; expected the generator's device, {device}")
    noise, spans = t5_counts(length, density, mean)
    got_spans = sum(1 for m, _ in runs(mask) if m)
    if int(mask.sum()) != noise or got_spans != spans:
        fail(
            f"{what} has {int(mask.sum())} noise tokens in {got_spans} spans; T5 counts "
            f"{noise} = round({length} * {density}) clipped to [1, {length - 1}], in {spans} = "
            f"round({noise} / {mean}) spans (at least 1, at most {length - noise})"
            + (f": {why}" if why else "")
        )
    return what


@pytest.mark.parametrize(
    ("length", "density", "mean", "why"),
    [
        (100, 0.15, 3.0, "15 noise tokens in round(5.0) = 5 spans"),
        (25, 0.15, 3.0, "round(3.75) = 4 noise tokens, not int(3.75) = 3; round(1.33) = 1 span"),
        (512, 0.15, 3.0, "round(76.8) = 77 noise tokens in round(25.67) = 26 spans"),
        (3, 0.15, 3.0, "round(0.45) = 0 is clipped up to 1 noise token, in 1 span"),
        (2, 0.3, 1.0, "round(0.6) = 1 noise token; 1 span"),
        (12, 0.95, 3.0, "11 noise tokens; round(3.67) = 4 spans, but 1 clean token allows 1"),
        (20, 0.98, 1.0, "round(19.6) = 20 is clipped to length - 1 = 19 noise tokens; 1 span"),
        (50, 0.2, 8.0, "10 noise tokens; round(1.25) = 1 span"),
    ],
)
def test_noise_counts_follow_t5(impl, device, length, density, mean, why):
    mask = noise_mask(impl, device, length, density, mean, seed=3)
    check_mask(mask, length, density, mean, device, why)


@given(length=lengths, density=densities, mean=span_means, seed=seeds)
def test_noise_mask_has_t5s_counts(impl, device, length, density, mean, seed):
    assume(no_tie(length * density))
    assume(no_tie(t5_counts(length, density, mean)[0] / mean))
    check_mask(noise_mask(impl, device, length, density, mean, seed), length, density, mean, device)


@given(length=lengths, density=densities, mean=span_means, seed=seeds)
def test_noise_mask_starts_clean_and_ends_with_noise(impl, device, length, density, mean, seed):
    mask = noise_mask(impl, device, length, density, mean, seed)
    spans = runs(mask)
    if spans[0][0] or not spans[-1][0]:
        fail(
            f"random_spans_noise_mask({length}, {density}, {mean}) = "
            f"{''.join('x' if m else '.' for m in mask.tolist()[:60])}"
            f"{'...' if length > 60 else ''} (x: noise); T5 interleaves clean and noise spans "
            "starting with a clean span and ending with a noise span"
        )


def cut_law(n, k, first):
    """P(first piece = j) for n items cut into k non-empty pieces uniformly: of the C(n-1, k-1)
    ways to choose k - 1 cuts among the n - 1 gaps, C(n-j-1, k-2) leave j items first."""
    return {j: math.comb(n - j - 1, k - 2) / math.comb(n - 1, k - 1) for j in range(1, first + 1)}


def test_span_lengths_are_uniform_cuts(impl, device):
    # Statistical: N = 2000 masks of length 100: 15 noise tokens in 5 spans and 85 clean tokens in
    # 5 spans. The length of the first noise span (11 possible values) and of the first clean span
    # (81) are compared with the law of a uniform cut, cell by cell, with Chernoff's bound
    # P(N KL(q^ || q) >= c) <= 2 exp(-c), c = ln(2 * 92 / DELTA): over the 92 cells, a correct
    # implementation fails with chance below DELTA = 1e-7.
    N = 2000
    g = torch.Generator(device=device).manual_seed(5)
    noise_first, clean_first = [0] * 12, [0] * 82
    for _ in range(N):
        spans = runs(impl.random_spans_noise_mask(100, 0.15, 3.0, generator=g))
        if len(spans) != 10 or spans[0][0]:
            fail(
                "random_spans_noise_mask(100, 0.15, 3.0) should have 5 clean and 5 noise spans, "
                f"starting clean; got {[(int(m), n) for m, n in spans]}"
            )
        clean_first[spans[0][1]] += 1
        noise_first[spans[1][1]] += 1
    for name, counts, law in [
        ("first noise span", noise_first, cut_law(15, 5, 11)),
        ("first clean span", clean_first, cut_law(85, 5, 81)),
    ]:
        for j, q in law.items():
            a = counts[j] / N
            if chernoff_gap(counts[j], N, q, 92, DELTA):
                fail(
                    f"random_spans_noise_mask(100, 0.15, 3.0), {N} masks: the {name} has length "
                    f"{j} in {a:.2%} of them; a uniformly random cut gives {q:.2%}. A gap this "
                    f"large has a chance below {DELTA:g} for a correct implementation: choose "
                    "the cuts uniformly, without replacement, and draw lengths for both kinds"
                )


def test_noise_mask_is_reproducible(impl, device):
    first = noise_mask(impl, device, 200, 0.15, 3.0, seed=7)
    again = noise_mask(impl, device, 200, 0.15, 3.0, seed=7)
    if not torch.equal(first, again):
        fail(
            "random_spans_noise_mask(200) twice with generators seeded alike gave different "
            "masks; pass generator=generator to every random call (torch.randperm, torch.rand)"
        )
    g = torch.Generator(device=device).manual_seed(8)
    one = impl.random_spans_noise_mask(200, generator=g)
    two = impl.random_spans_noise_mask(200, generator=g)
    if torch.equal(one, two):
        fail(
            "random_spans_noise_mask(200) called twice with the same generator gave the same "
            "mask; draw from the generator, never reseed it"
        )


def the_rule(ids, mask, vocab_size):
    """Span corruption token by token: the spec's oracle."""
    inputs, targets, k_in, k_tgt, previous = [], [], 0, 0, None
    for token, noisy in zip(ids, mask, strict=True):
        if noisy:
            if previous is not True:  # a noise span starts: one sentinel in the inputs
                inputs.append(vocab_size - 1 - k_in)
                k_in += 1
            targets.append(token)
        else:
            if previous is not False:  # a clean span starts: one sentinel in the targets
                targets.append(vocab_size - 1 - k_tgt)
                k_tgt += 1
            inputs.append(token)
        previous = noisy
    return inputs, targets


def corrupt(impl, ids, mask, vocab_size=V):
    before = ids.clone()
    out = impl.span_corrupt(ids, vocab_size, noise_mask=mask)
    what = f"span_corrupt(ids {tuple(ids.shape)}, vocab_size={vocab_size}, noise_mask=...)"
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"{what} should return a pair (inputs, targets); got {type(out).__name__}")
    if not torch.equal(ids, before):
        fail(f"{what} changed ids in place")
    return out, what


def test_span_corrupt_papers_example(impl, device):
    # "Thank you for inviting me to your party last week ." with "for inviting" and "last" hidden:
    # inputs "Thank you <X> me to your party <Y> week ."; targets "<X> for inviting <Y> last <Z>".
    words = ["Thank", "you", "for", "inviting", "me", "to", "your", "party", "last", "week", "."]
    ids = torch.arange(len(words), device=device)
    mask = torch.tensor([w in ("for", "inviting", "last") for w in words], device=device)
    (inputs, targets), what = corrupt(impl, ids, mask, vocab_size=100)
    X, Y, Z = 99, 98, 97
    assert_close(
        inputs,
        torch.tensor([0, 1, X, 4, 5, 6, 7, Y, 9, 10], device=device),
        what=f"{what}: inputs on the paper's example (<X> = 99, <Y> = 98: one sentinel per span)",
    )
    assert_close(
        targets,
        torch.tensor([X, 2, 3, Y, 8, Z], device=device),
        what=f"{what}: targets on the paper's example (each sentinel, then the tokens it hides; "
        "<Z> = 97 closes the last clean span)",
    )


@st.composite
def masks(draw):
    """Any bool mask that starts clean, as a list."""
    length = draw(st.integers(2, 40))
    return [False, *draw(st.lists(st.booleans(), min_size=length - 1, max_size=length - 1))]


@given(mask=masks(), seed=seeds)
def test_span_corrupt_matches_the_rule(impl, device, mask, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V - SENTINELS, (len(mask),), generator=g).to(device)
    noise = torch.tensor(mask, device=device)
    (inputs, targets), what = corrupt(impl, ids, noise)
    expected_inputs, expected_targets = the_rule(ids.tolist(), mask, V)
    layout = "".join("x" if m else "." for m in mask)
    assert_close(
        inputs,
        torch.tensor(expected_inputs, device=device),
        what=f"{what}: inputs for the mask {layout} (x: noise; each noise span becomes one "
        f"sentinel, {V - 1}, {V - 2}, ... in order)",
    )
    assert_close(
        targets,
        torch.tensor(expected_targets, device=device),
        what=f"{what}: targets for the mask {layout} (each clean span becomes one sentinel, "
        "so each noise span follows the sentinel that replaced it in the inputs)",
    )


def merge(inputs, targets, vocab_size=V):
    """Put back, for every sentinel of the inputs, the tokens that follow it in the targets."""
    hidden, current = {}, None
    for t in targets:
        if t >= vocab_size - SENTINELS:
            current = hidden.setdefault(t, [])
        elif current is not None:
            current.append(t)
    out = []
    for t in inputs:
        if t >= vocab_size - SENTINELS:
            out.extend(hidden.get(t, []))
        else:
            out.append(t)
    return out


@given(length=lengths, density=densities, mean=span_means, seed=seeds)
def test_span_corrupt_round_trip(impl, device, length, density, mean, seed):
    assume(no_tie(length * density))
    assume(no_tie(t5_counts(length, density, mean)[0] / mean))
    g = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(0, V - SENTINELS, (length,), generator=torch.Generator().manual_seed(seed))
    ids = ids.to(device)
    before = ids.clone()
    inputs, targets = impl.span_corrupt(ids, V, density, mean, generator=g)
    what = f"span_corrupt(ids ({length},), {V}, noise_density={density}, mean={mean})"
    for name, t in (("inputs", inputs), ("targets", targets)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.ndim != 1:
            fail(f"{what}: {name} should be a 1-D int64 tensor; got {t!r:.80}")
        if t.device != ids.device:
            fail(f"{what}: {name} is on {t.device}; expected ids' device {ids.device}")
    if not torch.equal(ids, before):
        fail(f"{what} changed ids in place")
    noise, spans = t5_counts(length, density, mean)
    if (len(inputs), len(targets)) != (length - noise + spans, noise + spans):
        fail(
            f"{what}: inputs has {len(inputs)} tokens and targets {len(targets)}; with T5's "
            f"{noise} noise tokens in {spans} spans expect {length} - {noise} + {spans} = "
            f"{length - noise + spans} and {noise} + {spans} = {noise + spans}"
        )
    sentinels = [t for t in inputs.tolist() if t >= V - SENTINELS]
    if sentinels != list(range(V - 1, V - 1 - spans, -1)):
        fail(
            f"{what}: the sentinels of inputs are {sentinels}; expected {V - 1}, {V - 2}, ... "
            f"down to {V - spans}, one per noise span, counting down from the vocabulary's end"
        )
    if merge(inputs.tolist(), targets.tolist()) != ids.tolist():
        fail(
            f"{what}: putting each sentinel's tokens from targets back into inputs does not give "
            f"ids back (inputs {inputs.tolist()[:12]}..., targets {targets.tolist()[:12]}...)"
        )
