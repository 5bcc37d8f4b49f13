"""Public specs for `bert`: run `pytest exercises/bert` (`--impl=solutions`: the reference).

Oracles: the rule itself for the deterministic properties (labels, special tokens, p = 0 and
p = 1); the exact law of the 80/10/10 rule for the statistical specs; F.cross_entropy and autograd
for the loss. The statistical specs use fixed seeds and a Chernoff bound per cell; each fails a
correct implementation with chance below 1e-7, whatever order it draws its random numbers in.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, chernoff_gap, describe, fail

DELTA = 1e-7  # the false-failure chance each statistical spec allows itself
PAD, CLS, SEP, MASK = 0, 1, 2, 3  # special ids of the little vocabularies below
IGNORE = -100

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2**16)


def batch(shape, seed, device, vocab_size=50, special_rate=0.2):
    """ids with ordinary tokens in 4 .. vocab_size - 1, and [CLS], [SEP] or [PAD] scattered over
    about `special_rate` of the positions, which special_mask marks."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab_size, shape, generator=g)
    special = torch.rand(shape, generator=g) < special_rate
    ids = torch.where(special, torch.randint(0, 3, shape, generator=g), ids)
    return ids.to(device), special.to(device)


def call(impl, device, ids, special, p, seed, vocab_size=50):
    g = torch.Generator(device=device).manual_seed(seed)
    return impl.mask_tokens(ids, MASK, vocab_size, special, p=p, generator=g)


def what(ids, p, vocab_size=50):
    return f"mask_tokens(ids {tuple(ids.shape)}, mask_id={MASK}, vocab_size={vocab_size}, p={p})"


def positions(flags):
    """The first few indices where `flags` is True, for messages."""
    return [tuple(i) for i in flags.nonzero().tolist()[:3]]


@given(shape=shapes, seed=seeds)
def test_returns_inputs_and_labels_of_ids_shape(impl, device, shape, seed):
    ids, special = batch(shape, seed, device)
    before = ids.clone()
    out = call(impl, device, ids, special, 0.5, seed)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"{what(ids, 0.5)} should return a pair (inputs, labels); got {type(out).__name__}")
    for name, t in zip(("inputs", "labels"), out, strict=True):
        if not isinstance(t, torch.Tensor) or t.shape != ids.shape or t.dtype != torch.int64:
            fail(
                f"{what(ids, 0.5)}: {name} should be an int64 tensor of shape {tuple(shape)}; "
                f"got {getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}"
            )
        if t.device != ids.device:
            fail(f"{what(ids, 0.5)}: {name} is on {t.device}; expected ids' device {ids.device}")
    if not torch.equal(ids, before):
        fail(f"{what(ids, 0.5)} changed ids in place; clone before corrupting (ids.clone())")
    inputs, _ = out
    if inputs.min() < 0 or inputs.max() >= 50:
        fail(
            f"{what(ids, 0.5)}: inputs holds ids from {inputs.min().item()} to "
            f"{inputs.max().item()}; every id must lie in 0 .. 49"
        )


@given(shape=shapes, seed=seeds, p=st.sampled_from([0.15, 0.5, 0.9]))
def test_labels_hold_the_original_token_where_chosen(impl, device, shape, seed, p):
    ids, special = batch(shape, seed, device)
    inputs, labels = call(impl, device, ids, special, p, seed)
    chosen = labels != IGNORE
    wrong = chosen & (labels != ids)
    if wrong.any():
        i = positions(wrong)[0]
        fail(
            f"{what(ids, p)}: at {i} the label is {labels[i].item()} but the original token is "
            f"{ids[i].item()} (the input there is {inputs[i].item()}); a chosen position's label "
            "is the token the encoder must recover, ids, not the corrupted input"
        )
    changed = ~chosen & (inputs != ids)
    if changed.any():
        i = positions(changed)[0]
        fail(
            f"{what(ids, p)}: at {i} the input changed from {ids[i].item()} to "
            f"{inputs[i].item()} although its label is {IGNORE} (not chosen). Every corrupted "
            "token must carry its label, including those replaced by a random token or kept"
        )


@given(shape=shapes, seed=seeds, p=st.sampled_from([0.5, 1.0]))
def test_special_tokens_are_never_chosen(impl, device, shape, seed, p):
    ids, special = batch(shape, seed, device, special_rate=0.5)
    inputs, labels = call(impl, device, ids, special, p, seed)
    bad = special & ((labels != IGNORE) | (inputs != ids))
    if bad.any():
        fail(
            f"{what(ids, p)}: special tokens were chosen or changed at {positions(bad)} "
            f"(ids {ids[bad][:3].tolist()}, inputs {inputs[bad][:3].tolist()}, labels "
            f"{labels[bad][:3].tolist()}); where special_mask is True, keep the token and give "
            f"it the label {IGNORE}"
        )


@pytest.mark.parametrize("shape", [(7,), (4, 16), (2, 3, 11)])
def test_p_zero_chooses_nothing_and_p_one_everything(impl, device, shape):
    ids, special = batch(shape, 5, device)
    inputs, labels = call(impl, device, ids, special, 0.0, 5)
    assert_close(inputs, ids, what=f"{what(ids, 0.0)}: inputs (nothing is chosen)")
    assert_close(
        labels,
        torch.full_like(ids, IGNORE),
        what=f"{what(ids, 0.0)}: labels (nothing is chosen, so every label is {IGNORE})",
    )
    _, labels = call(impl, device, ids, special, 1.0, 5)
    assert_close(
        labels,
        torch.where(special, IGNORE, ids),
        what=f"{what(ids, 1.0)}: labels (every ordinary token is chosen; special ones never)",
    )


def chernoff_check(counts, probs, total, cells, what):
    """Fail when a count is too unlikely for `total` draws from the law `probs`.

    For a count k out of N with cell probability q and q^ = k / N, Chernoff's bound gives
    P(N KL(q^ || q) >= c) <= 2 exp(-c) (once for each tail); over `cells` cells the union bound
    makes the chance of any false failure at most 2 * cells * exp(-c) = DELTA.
    """
    for name, k in counts.items():
        q, a = probs[name], k / total
        if q == 0:
            if k:
                fail(f"{what}: {name} came out {k} times in {total}; it should never happen")
            continue
        if chernoff_gap(k, total, q, cells, DELTA):
            fail(
                f"{what}: {name} came out {k} times in {total} ({a:.2%}); the rule gives it "
                f"probability {q:.2%}. A gap this large has a chance below {DELTA:g} for a "
                "correct implementation"
            )


@pytest.mark.parametrize("p", [0.15, 0.4])
def test_fraction_chosen_is_p(impl, device, p):
    # Statistical: each of the ~13,000 ordinary tokens is chosen with probability p. One cell,
    # checked with chernoff_check: a correct implementation fails with chance below 1e-7.
    ids, special = batch((128, 128), 11, device)
    _, labels = call(impl, device, ids, special, p, 12)
    n = int((~special).sum())
    k = int(((labels != IGNORE) & ~special).sum())
    chernoff_check(
        {"a chosen ordinary token": k},
        {"a chosen ordinary token": p},
        n,
        1,
        f"{what(ids, p)}, {n} ordinary tokens",
    )


def test_chosen_tokens_follow_80_10_10(impl, device):
    # Statistical: with p = 1 every ordinary token is chosen (about 13,000). A chosen token becomes
    # [MASK] with chance 0.8 + 0.1 / V (the random token may be [MASK] too), keeps its id with
    # chance 0.1 + 0.1 / V, and becomes another id with chance 0.1 (V - 2) / V. Three cells,
    # chernoff_check: false failure below 1e-7.
    V = 1000
    ids, special = batch((128, 128), 21, device, vocab_size=V)
    inputs, labels = call(impl, device, ids, special, 1.0, 22, vocab_size=V)
    chosen = labels != IGNORE
    n = int(chosen.sum())
    masked = int((chosen & (inputs == MASK)).sum())
    kept = int((chosen & (inputs == ids)).sum())
    counts = {"[MASK]": masked, "the original token": kept, "another token": n - masked - kept}
    probs = {"[MASK]": 0.8 + 0.1 / V, "the original token": 0.1 + 0.1 / V}
    probs["another token"] = 0.1 * (V - 2) / V
    chernoff_check(counts, probs, n, 3, f"{what(ids, 1.0, V)}: among the {n} chosen tokens")


def test_random_tokens_are_uniform_over_the_vocabulary(impl, device):
    # Statistical: 20,000 copies of token 7, no special token, V = 10, p = 1. Each input is
    # [MASK] (id 3) with chance 0.8 + 0.01, 7 with chance 0.1 + 0.01, and any other id with
    # chance 0.01 (the random 10% is uniform over all V ids). Ten cells, chernoff_check: false
    # failure below 1e-7.
    V = 10
    ids = torch.full((200, 100), 7, device=device)
    special = torch.zeros_like(ids, dtype=torch.bool)
    inputs, _ = call(impl, device, ids, special, 1.0, 31, vocab_size=V)
    if inputs.min() < 0 or inputs.max() >= V:
        fail(f"{what(ids, 1.0, V)}: an input id lies outside 0 .. {V - 1}")
    counts = torch.bincount(inputs.flatten().cpu(), minlength=V).tolist()
    law = [0.1 / V + (0.8 if t == MASK else 0.1 if t == 7 else 0.0) for t in range(V)]
    chernoff_check(
        {f"id {t}": counts[t] for t in range(V)},
        {f"id {t}": law[t] for t in range(V)},
        ids.numel(),
        V,
        f"{what(ids, 1.0, V)} with every id 7: the inputs",
    )


def test_same_seed_same_masking(impl, device):
    ids, special = batch((16, 64), 41, device)
    first = call(impl, device, ids, special, 0.15, 42)
    again = call(impl, device, ids, special, 0.15, 42)
    for name, a, b in zip(("inputs", "labels"), first, again, strict=True):
        if not torch.equal(a, b):
            fail(
                f"{what(ids, 0.15)} twice with generators seeded alike gave different {name}; "
                "pass generator=generator to every torch.rand / torch.randint / torch.bernoulli"
            )
    g = torch.Generator(device=device).manual_seed(43)
    one = impl.mask_tokens(ids, MASK, 50, special, p=0.15, generator=g)[1]
    two = impl.mask_tokens(ids, MASK, 50, special, p=0.15, generator=g)[1]
    if torch.equal(one, two):
        fail(
            f"{what(ids, 0.15)} called twice with the same generator chose the same positions; "
            "each call must draw afresh from the generator (dynamic masking)"
        )


def labelled_batch(B, T, V, dtype, device, seed, scale=1.0):
    """logits (B, T, V) and labels (B, T) with a different number of labelled positions per row
    (at least one in the batch)."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(B, T, V, generator=g, dtype=dtype)
    labels = torch.randint(0, V, (B, T), generator=g)
    keep = torch.rand(B, T, generator=g) < torch.linspace(0.2, 0.9, B).unsqueeze(1)
    keep[0, 0] = True
    labels = torch.where(keep, labels, IGNORE)
    return logits.to(device).requires_grad_(), labels.to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(B=st.integers(1, 4), T=st.integers(1, 9), V=st.integers(2, 12), seed=seeds)
def test_mlm_loss_matches_cross_entropy(impl, device, dtype, B, T, V, seed):
    logits, labels = labelled_batch(B, T, V, dtype, device, seed)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    call_what = f"mlm_loss({describe(logits=logits, labels=labels)})"
    loss = impl.mlm_loss(logits, labels)
    expected = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=IGNORE)
    assert_close(
        loss,
        expected,
        what=f"{call_what} (the mean over the {int((labels != IGNORE).sum())} labelled positions)",
        rtol=tol,
        atol=tol,
    )
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert_close(grad, expected_grad, what=f"the gradient of {call_what}", rtol=tol, atol=tol)


def test_mlm_loss_ignores_unlabelled_positions(impl, device):
    logits, labels = labelled_batch(3, 8, 6, torch.float64, device, 51)
    other = logits.detach().clone()
    other[labels == IGNORE] += 5 * torch.randn_like(other[labels == IGNORE])
    assert_close(
        impl.mlm_loss(other, labels),
        impl.mlm_loss(logits.detach(), labels),
        rtol=1e-12,
        atol=1e-12,
        what=f"mlm_loss({describe(logits=logits, labels=labels)}) after changing the logits "
        f"only where the label is {IGNORE} (those positions have nothing to predict)",
    )


def test_mlm_loss_without_labels_is_zero(impl, device):
    logits = torch.randn(2, 5, 7, dtype=torch.float64, device=device, requires_grad=True)
    labels = torch.full((2, 5), IGNORE, device=device)
    loss = impl.mlm_loss(logits, labels)
    if not torch.isfinite(loss) or loss.item() != 0:
        fail(
            f"mlm_loss with every label {IGNORE} returned {loss.item()}; expected 0: nothing is "
            "predicted, so divide by max(1, number of labelled positions), not by 0"
        )
    (grad,) = torch.autograd.grad(loss, logits)
    if grad.abs().max() != 0:
        fail("mlm_loss with every label ignored should have a zero gradient")


def test_mlm_loss_large_logits_stay_finite(impl, device):
    logits, labels = labelled_batch(2, 6, 9, torch.float32, device, 61, scale=1e4)
    expected = F.cross_entropy(logits.reshape(-1, 9), labels.reshape(-1), ignore_index=IGNORE)
    assert_close(
        impl.mlm_loss(logits, labels),
        expected,
        what=f"mlm_loss with logits near 1e4 ({describe(logits=logits, labels=labels)})",
        rtol=1e-5,
        atol=1e-5,
    )
