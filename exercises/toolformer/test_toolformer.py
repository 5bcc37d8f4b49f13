"""Specs for toolformer: `pytest exercises/toolformer` (`--impl=solutions`: the reference)."""

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

PAPER_WEIGHTS = [1.0, 0.8, 0.6, 0.4, 0.2]  # w~_t = max(0, 1 - 0.2 t) for t = 0..4; then 0


def expected_weighted_loss(losses, start):
    """The formula, one position at a time: sum_t w~_t / 3 * losses[..., start + t]."""
    out = torch.zeros(losses.shape[:-1], dtype=losses.dtype, device=losses.device)
    for t, w in enumerate(PAPER_WEIGHTS):
        if start + t < losses.shape[-1]:
            out = out + w / sum(PAPER_WEIGHTS) * losses[..., start + t]
    return out


# --- format_api_call ------------------------------------------------------------------------------


def test_format_call_with_result(impl):
    actual = impl.format_api_call("Calculator", "400 / 1400", "0.29")
    expected = "[Calculator(400 / 1400) -> 0.29]"
    if actual != expected:
        fail(
            f'format_api_call("Calculator", "400 / 1400", "0.29") returned {actual!r}; '
            f"expected {expected!r}"
        )


def test_format_call_without_result(impl):
    actual = impl.format_api_call("QA", "Who founded Selby?")
    expected = "[QA(Who founded Selby?)]"
    if actual != expected:
        fail(
            f'format_api_call("QA", "Who founded Selby?") (no result) returned {actual!r}; '
            f"expected {expected!r}: without a result there is no arrow"
        )


text_pieces = st.text(alphabet="abcXYZ 0123456789.+*/?", min_size=1, max_size=12)


@given(
    name=st.sampled_from(["Calculator", "QA", "WikiSearch", "MT"]),
    args=text_pieces,
    result=st.none() | text_pieces,
)
def test_format_round_trip(impl, name, args, result):
    call = impl.format_api_call(name, args, result)
    pattern = r"\[(\w+)\((.*)\)\]" if result is None else r"\[(\w+)\((.*)\) -> (.*)\]"
    m = re.fullmatch(pattern, call, flags=re.S)
    if m is None or m.groups() != ((name, args) if result is None else (name, args, result)):
        fail(
            f"format_api_call({name!r}, {args!r}, {result!r}) returned {call!r}, which does not "
            f"read back as [name(args)] or [name(args) -> result]"
        )


# --- weighted_loss --------------------------------------------------------------------------------


@pytest.mark.parametrize("t", range(7))
def test_weighted_loss_weights(impl, device, t):
    losses = torch.zeros(12, dtype=torch.float64, device=device)
    losses[3 + t] = 1.0  # a one-hot loss at t tokens after start = 3 reads off w_t
    actual = impl.weighted_loss(losses, 3)
    expected = max(0.0, 1 - 0.2 * t) / 3
    if actual.shape != () or abs(actual.item() - expected) > 1e-12:
        fail(
            f"weighted_loss(one-hot at position {3 + t} of 12, start=3) should be w_{t} = "
            f"max(0, 1 - 0.2*{t}) / 3 = {expected:.6g} (a 0-d tensor); got "
            f"{actual.tolist()!r}"
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    batch=st.lists(st.integers(1, 3), max_size=2),
    n=st.integers(1, 12),
    start=st.integers(0, 12),
    seed=st.integers(0, 2**16),
)
def test_weighted_loss_matches_formula(impl, device, dtype, batch, n, start, seed):
    start = min(start, n)
    g = torch.Generator().manual_seed(seed)
    losses = (torch.rand(*batch, n, generator=g, dtype=dtype) * 5).to(device)
    rtol, atol = (1e-5, 1e-5) if dtype == torch.float32 else (1e-12, 1e-12)
    assert_close(
        impl.weighted_loss(losses, start),
        expected_weighted_loss(losses, start),
        what=f"weighted_loss({describe(token_losses=losses)}, start={start})",
        rtol=rtol,
        atol=atol,
    )


def test_weighted_loss_near_the_end(impl, device):
    losses = torch.full((6,), 3.0, dtype=torch.float64, device=device)
    actual = impl.weighted_loss(losses, 4).item()  # only t = 0, 1 exist: (1 + 0.8) / 3 * 3
    if abs(actual - 1.8) > 1e-12:
        fail(
            f"weighted_loss(6 losses all 3.0, start=4) should be (1 + 0.8) / 3 * 3 = 1.8 (the "
            f"weights are normalised over every t, not only the tokens left); got {actual:.6g}"
        )


def test_weighted_loss_gradient_is_the_weights(impl, device):
    losses = torch.rand(2, 9, dtype=torch.float64, device=device, requires_grad=True)
    impl.weighted_loss(losses, 2).sum().backward()
    expected = torch.zeros(2, 9, dtype=torch.float64, device=device)
    expected[:, 2:7] = torch.tensor(PAPER_WEIGHTS, dtype=torch.float64, device=device) / 3
    if losses.grad is None:
        fail("weighted_loss: no gradient reached token_losses; keep to torch operations")
    assert_close(
        losses.grad,
        expected,
        rtol=1e-12,
        atol=1e-12,
        what="the gradient of weighted_loss(token_losses (2, 9), start=2).sum()",
    )


# --- keep_api_call --------------------------------------------------------------------------------

# Multiples of 1/8 are exact in binary, so every correct way of writing the rule (L- - L+ >= tau,
# L- >= L+ + tau, ...) gives the same booleans, ties included.
eighths = st.integers(0, 80).map(lambda k: k / 8)
losses3 = st.tuples(eighths, eighths, eighths)


@given(values=st.lists(losses3, min_size=1, max_size=8), tau=eighths.map(lambda x: x - 2))
def test_keep_api_call_rule(impl, device, values, tau):
    plain, no_result, with_result = (
        torch.tensor(v, dtype=torch.float64, device=device) for v in zip(*values, strict=True)
    )
    actual = impl.keep_api_call(plain, no_result, with_result, tau)
    expected = torch.minimum(plain, no_result) - with_result >= tau
    assert_close(
        actual,
        expected,
        what=f"keep_api_call(L_plain, L_no_result, L_with_result "
        f"({len(values)},) float64, tau={tau}): keep when min(L_plain, L_no_result) - "
        "L_with_result >= tau",
    )


def test_keep_api_call_threshold_is_inclusive(impl):
    for plain, no_result, with_result, tau in [(3.0, 4.0, 2.0, 1.0), (2.5, 2.0, 1.5, 0.5)]:
        if not bool(impl.keep_api_call(plain, no_result, with_result, tau)):
            fail(
                f"keep_api_call({plain}, {no_result}, {with_result}, tau={tau}): L- - L+ = "
                f"{min(plain, no_result) - with_result} equals tau, and the paper keeps it (>=)"
            )


def test_keep_api_call_broadcasts(impl, device):
    plain = torch.tensor([[2.0], [5.0]], device=device)
    with_result = torch.tensor([1.0, 3.0, 4.5], device=device)
    actual = impl.keep_api_call(plain, 6.0, with_result, 1.0)
    expected = torch.tensor([[True, False, False], [True, True, False]], device=device)
    assert_close(
        actual, expected, what="keep_api_call(L_plain (2, 1), 6.0, L_with_result (3,), tau=1.0)"
    )


# --- augment --------------------------------------------------------------------------------------

TOOLS_NOTE = "tools {'Calculator': calculator}, tau=1.0"


@pytest.fixture
def lm(impl):
    return impl.CacheLM(impl.arithmetic_corpus(300, seed=0))


TEXT = "there are 7 boxes with 13 coins each , so 91 coins in all . the shop sold 15 books today ."


def run_augment(impl, lm, candidates, tau=1.0, text=TEXT):
    return impl.augment(text, candidates, lm, {"Calculator": impl.calculator}, tau)


def test_augment_keeps_a_helpful_call(impl, lm):
    candidates = [(10, "Calculator", "7 * 13")]
    actual = run_augment(impl, lm, candidates)
    expected = TEXT.replace("so 91", "so [Calculator(7 * 13) -> 91] 91")
    if actual != expected:
        fail(
            f"augment(text, {candidates}, lm, {TOOLS_NOTE}) returned\n  {actual!r}\nexpected\n  "
            f"{expected!r}\n(the result 91 is the next word, so the call is kept just before it)"
        )


def test_augment_rejects_useless_calls(impl, lm):
    candidates = [
        (10, "Calculator", "7 + 13"),
        (3, "Calculator", "2 * 2"),
        (18, "Calculator", "15 * 1"),
    ]
    actual = run_augment(impl, lm, candidates, tau=1.0)
    if actual != TEXT:
        fail(
            f"augment(text, {candidates}, lm, {TOOLS_NOTE}) returned\n  {actual!r}\nbut no "
            "candidate helps enough: 20 and 4 are not the next words, and '15 * 1' names 15 "
            "already without its result (L- = min(no call, the call without its result))"
        )


def test_augment_inserts_every_kept_call_at_its_position(impl, lm):
    text = "there are 27 boxes with 14 cards each , so 378 cards in all . she had 31 coins ."
    candidates = [
        (17, "Calculator", "20 + 11"),
        (10, "Calculator", "27 * 14"),
        (2, "Calculator", "20 + 7"),
    ]
    actual = run_augment(impl, lm, candidates, tau=0.5, text=text)
    expected = (
        "there are [Calculator(20 + 7) -> 27] 27 boxes with 14 cards each , so "
        "[Calculator(27 * 14) -> 378] 378 cards in all . she had "
        "[Calculator(20 + 11) -> 31] 31 coins ."
    )
    if actual != expected:
        fail(
            f"augment(text, {candidates}, lm, ..., tau=0.5) returned\n  {actual!r}\nexpected\n  "
            f"{expected!r}\n(insert from the last position back, or the earlier insertions "
            "shift the later positions)"
        )


def test_augment_one_call_per_position(impl, lm):
    # Both are kept at tau = 0.1, but "91 - 0" names 91 already without its result: the
    # product gains more (L- - L+), so it alone is inserted.
    candidates = [(10, "Calculator", "91 - 0"), (10, "Calculator", "7 * 13")]
    actual = run_augment(impl, lm, candidates, tau=0.1)
    expected = TEXT.replace("so 91", "so [Calculator(7 * 13) -> 91] 91")
    if actual != expected:
        fail(
            f"augment(text, {candidates}, lm, ..., tau=0.1) returned\n  {actual!r}\nexpected\n  "
            f"{expected!r}\n(one call per position: the kept one with the largest L- - L+)"
        )


@pytest.mark.parametrize("side", [-1, 1])
def test_augment_threshold_decides(impl, lm, side):
    # The spec computes L+ and L- itself, then sets tau just below or just above the gain.
    i, name, args = 18, "Calculator", "15 * 1"
    x = lm.tokenize(TEXT)

    def loss(prefix):
        z = lm.tokenize(prefix)
        return expected_weighted_loss(lm(z + x)[len(z) :], i).item()

    gain = min(loss(""), loss("[Calculator(15 * 1)]")) - loss("[Calculator(15 * 1) -> 15]")
    tau = gain - side * 1e-9
    actual = run_augment(impl, lm, [(i, name, args)], tau=tau)
    kept = actual != TEXT
    if kept != (side == 1):
        fail(
            f"augment(text, [{(i, name, args)}], lm, ..., tau={tau:.9f}): L- - L+ = {gain:.9f} "
            f"with L_i(z) = the weighted loss of the text from word {i} with z as prefix, so the "
            f"call should be {'kept' if side == 1 else 'dropped'}; it was "
            f"{'kept' if kept else 'dropped'}"
        )
