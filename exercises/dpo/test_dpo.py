"""Specs for dpo: `pytest exercises/dpo` (`--impl=solutions`: the reference).

Every spec is deterministic. The two convergence specs optimise a one-step categorical policy
against the exact expected loss over all pairs of outcomes, so no sampling is involved.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}
LOSSES = ["dpo_loss", "ipo_loss"]


def batch(B, T, V, dtype, device, seed=0, masked_label=-100):
    """logits (B, T, V), labels (B, T) and a response mask with at least one True per row."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, T, V, generator=g, dtype=dtype)
    labels = torch.randint(V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[:, -1] = True
    labels = labels.masked_fill(~mask, masked_label)
    return logits.to(device), labels.to(device), mask.to(device)


def logps(n, dtype, device, seed=0):
    """Sequence log-probabilities of n pairs under a policy and a reference: four leaf tensors."""
    g = torch.Generator().manual_seed(seed)
    lp = -20 + 5 * torch.randn(4, n, generator=g, dtype=dtype)
    lp[2:] = lp[:2] + torch.randn(2, n, generator=g, dtype=dtype)  # the reference is nearby
    return [x.to(device).requires_grad_() for x in lp]


# -- sequence_logprobs -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 9),
    V=st.integers(2, 17),
    seed=st.integers(0, 2**16),
)
def test_sequence_logprobs_match_cross_entropy(impl, device, dtype, B, T, V, seed):
    logits, labels, mask = batch(B, T, V, dtype, device, seed)
    logits.requires_grad_()
    actual = impl.sequence_logprobs(logits, labels, mask)
    what = f"sequence_logprobs({describe(logits=logits, labels=labels, loss_mask=mask)})"
    # The oracle: -cross_entropy per token, with -100 (masked) ignored, summed over positions.
    ref_logits = logits.detach().clone().requires_grad_()
    expected = -F.cross_entropy(ref_logits.transpose(1, 2), labels, reduction="none").sum(-1)
    rtol, atol = TOL[dtype]
    assert_close(actual.detach(), expected.detach(), what=what, rtol=rtol, atol=atol)
    actual.sum().backward()
    expected.sum().backward()
    assert_close(
        logits.grad,
        ref_logits.grad,
        what=f"the gradient of {what} in logits",
        rtol=rtol,
        atol=atol,
    )


def test_sequence_logprobs_ignore_masked_positions(impl, device):
    logits, labels, mask = batch(3, 8, 11, torch.float64, device, seed=1)
    base = impl.sequence_logprobs(logits, labels, mask)
    noise = 100 * torch.randn(
        logits.shape, generator=torch.Generator().manual_seed(2), dtype=logits.dtype
    )
    noisy_logits = torch.where(mask[..., None], logits, noise.to(device))
    for name, fill in [("-100", -100), ("vocab_size + 5", 16), ("token 3", 3)]:
        other = impl.sequence_logprobs(noisy_logits, labels.masked_fill(~mask, fill), mask)
        assert_close(
            other,
            base,
            what=f"sequence_logprobs with masked labels set to {name} and masked logits changed "
            "(positions where loss_mask is False must not count, and their labels must not be "
            "read)",
            rtol=1e-12,
            atol=1e-12,
        )


def test_sequence_logprobs_sum_over_tokens(impl, device):
    # Under a uniform model every token has log-probability -log V, so a response of n tokens
    # has -n log V: a sum, not a mean.
    V = 10
    logits = torch.zeros(3, 6, V, dtype=torch.float64, device=device)
    labels = torch.randint(V, (3, 6), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.tensor(
        [[0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]], dtype=torch.bool
    ).to(device)
    actual = impl.sequence_logprobs(logits, labels, mask)
    expected = -mask.sum(-1).double() * math.log(V)
    if not isinstance(actual, torch.Tensor) or actual.shape != (3,):
        fail(f"sequence_logprobs(logits (3, 6, {V}), ...) should return shape (3,); got {actual!r}")
    if not torch.allclose(actual, expected, atol=1e-12):
        fail(
            f"sequence_logprobs under a uniform model over {V} tokens, with 2, 6 and 1 response "
            f"tokens, should give -n log {V} = {[round(x, 4) for x in expected.tolist()]}; got "
            f"{[round(x, 4) for x in actual.tolist()]}. Sum the log-probabilities of the masked "
            "tokens (a mean or a missing log_softmax gives other numbers)"
        )


def test_sequence_logprobs_read_row_t_for_label_t(impl, device):
    # Row t of logits puts almost all its mass on labels[t]: the aligned log-probability is ~0.
    V, T = 7, 5
    labels = torch.tensor([[3, 1, 4, 1, 5]], device=device)
    logits = torch.full((1, T, V), -30.0, dtype=torch.float64, device=device)
    logits[0, torch.arange(T), labels[0]] = 30.0
    mask = torch.ones(1, T, dtype=torch.bool, device=device)
    actual = impl.sequence_logprobs(logits, labels, mask)
    if not actual.abs().item() < 1e-10:
        fail(
            "sequence_logprobs: row t of logits is the distribution of labels[:, t] (the caller "
            "has already shifted them); with each row certain of its own label the sum should be "
            f"about 0, got {actual.item():.4g}. Do not shift again inside the function"
        )


# -- dpo_loss and ipo_loss -------------------------------------------------------------------


def dpo_oracle(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def ipo_oracle(pc, pr, rc, rr, beta):
    return (((pc - rc) - (pr - rr) - 1 / (2 * beta)) ** 2).mean()


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(1, 20), beta=st.sampled_from([0.05, 0.1, 0.5, 2.0]), seed=st.integers(0, 99))
def test_loss_matches_the_formula(impl, device, name, dtype, n, beta, seed):
    pc, pr, rc, rr = logps(n, dtype, device, seed)
    loss, chosen_rewards, rejected_rewards = getattr(impl, name)(pc, pr, rc, rr, beta)
    what = f"{name}({describe(policy_chosen=pc)} x 4, beta={beta})"
    oracle = dpo_oracle if name == "dpo_loss" else ipo_oracle
    t = [x.detach().clone().requires_grad_() for x in (pc, pr, rc, rr)]
    expected = oracle(*t, beta)
    rtol, atol = TOL[dtype]
    formula = (
        "-log sigmoid(beta * ((pc - rc) - (pr - rr))), averaged"
        if name == "dpo_loss"
        else "((pc - rc) - (pr - rr) - 1 / (2 beta))^2, averaged"
    )
    if not isinstance(loss, torch.Tensor) or loss.shape != ():
        fail(f"{what} should return a 0-dim loss first; got {loss!r}")
    assert_close(
        loss.detach(), expected.detach(), what=f"{what}: the loss, {formula}", rtol=rtol, atol=atol
    )
    assert_close(
        chosen_rewards,
        (beta * (pc - rc)).detach(),
        what=f"{what}: chosen_rewards, beta * (policy_chosen - ref_chosen)",
        rtol=rtol,
        atol=atol,
    )
    assert_close(
        rejected_rewards,
        (beta * (pr - rr)).detach(),
        what=f"{what}: rejected_rewards, beta * (policy_rejected - ref_rejected)",
        rtol=rtol,
        atol=atol,
    )
    loss.backward()
    expected.backward()
    for label, a, e in [("policy_chosen", pc, t[0]), ("policy_rejected", pr, t[1])]:
        assert_close(
            a.grad, e.grad, what=f"the gradient of {what} in {label}", rtol=rtol, atol=atol
        )


@pytest.mark.parametrize("name", LOSSES)
def test_rewards_are_detached_and_shaped(impl, device, name):
    pc, pr, rc, rr = logps(5, torch.float32, device, seed=7)
    loss, chosen_rewards, rejected_rewards = getattr(impl, name)(pc, pr, rc, rr, 0.1)
    for label, r in [("chosen_rewards", chosen_rewards), ("rejected_rewards", rejected_rewards)]:
        if not isinstance(r, torch.Tensor) or r.shape != (5,):
            fail(f"{name} on 5 pairs should return {label} of shape (5,); got {r!r}")
        if r.requires_grad:
            fail(
                f"{name}: {label} carries a gradient; the rewards are for logging and accuracy, "
                "so return them .detach()ed (only the loss is trained on)"
            )
    if not loss.requires_grad:
        fail(f"{name}: the loss has no gradient: keep it in torch operations")


@pytest.mark.parametrize("name", LOSSES)
@given(
    n=st.integers(1, 10),
    shift=st.floats(-50, 50, allow_nan=False),
    seed=st.integers(0, 99),
)
def test_loss_sees_the_policy_only_through_log_ratios(impl, device, name, n, shift, seed):
    # Shifting a response's policy and reference log-probabilities by the same amount leaves its
    # log-ratio, and so the loss and the rewards, unchanged: the reference is what makes a
    # response's log-probability mean "more likely than before".
    pc, pr, rc, rr = (x.detach() for x in logps(n, torch.float64, device, seed))
    fn = getattr(impl, name)
    before = fn(pc, pr, rc, rr, 0.5)
    after = fn(pc + shift, pr - 2 * shift, rc + shift, rr - 2 * shift, 0.5)
    what = (
        f"{name} after adding {shift:.4g} to policy_chosen and ref_chosen and {-2 * shift:.4g} to "
        "policy_rejected and ref_rejected"
    )
    for i, part in enumerate(["the loss", "chosen_rewards", "rejected_rewards"]):
        assert_close(after[i], before[i], what=f"{what}: {part}", rtol=1e-9, atol=1e-9)


def test_dpo_loss_starts_at_log_2(impl, device):
    # At the start of training the policy is the reference: every log-ratio is 0.
    lp = logps(6, torch.float64, device, seed=3)
    pc, pr = lp[0].detach().clone().requires_grad_(), lp[1].detach().clone().requires_grad_()
    beta = 0.2
    loss, chosen_rewards, rejected_rewards = impl.dpo_loss(
        pc, pr, lp[0].detach(), lp[1].detach(), beta
    )
    if abs(loss.item() - math.log(2)) > 1e-12:
        fail(
            f"dpo_loss with the policy equal to the reference should be log 2 = 0.693147 (every "
            f"pair a coin flip), whatever beta; got {loss.item():.6f}"
        )
    if chosen_rewards.abs().max() > 1e-12 or rejected_rewards.abs().max() > 1e-12:
        fail("dpo_loss with the policy equal to the reference should give rewards of 0")
    loss.backward()
    # d/dm softplus(-m) = -1/2 at m = 0, and m = beta * (pc - ...): each pair pulls with beta / 2.
    expected = torch.full((6,), -beta / 2 / 6, dtype=torch.float64)
    if not torch.allclose(pc.grad.cpu(), expected, atol=1e-12):
        fail(
            f"the gradient of dpo_loss (beta={beta}, 6 pairs, policy = reference) in "
            f"policy_chosen should be -beta / 2 / N = {-beta / 12:.6f} per pair; got "
            f"{[round(x, 6) for x in pc.grad.tolist()]}"
        )


def test_dpo_loss_is_stable_for_large_margins(impl, device):
    pc = torch.tensor([0.0, -900.0, -5.0], device=device, requires_grad=True)
    pr = torch.tensor([-900.0, 0.0, -5.0], device=device, requires_grad=True)
    ref = torch.zeros(3, device=device)
    loss, _, _ = impl.dpo_loss(pc, pr, ref, ref, 1.0)
    expected = (0.0 + 900.0 + math.log(2)) / 3
    if not torch.isfinite(loss) or abs(loss.item() - expected) > 1e-3:
        fail(
            f"dpo_loss at float32 margins (900, -900, 0) should be {expected:.4f}; got "
            f"{loss.item()}. log(sigmoid(m)) is log(0) = -inf once m < -104 in float32: use "
            "F.logsigmoid(m) or F.softplus(-m)"
        )
    loss.backward()
    if not torch.isfinite(pc.grad).all():
        fail(f"the gradient of dpo_loss at margins (900, -900, 0) is not finite: {pc.grad}")


# -- convergence on a one-step categorical policy --------------------------------------------


def fit_categorical(loss_fn, ref_logits, rewards, beta):
    """Minimise the expected loss over all ordered pairs (i, j) of K outcomes, where i is labelled
    chosen with Bradley-Terry's chance sigmoid(r_i - r_j), with respect to the policy's logits.
    Each pair goes through loss_fn alone, so its weight is exact. Returns the policy's probs."""
    K = len(rewards)
    ref_logp = torch.log_softmax(ref_logits, 0)
    pairs = [(i, j) for i in range(K) for j in range(K) if i != j]
    weights = [torch.sigmoid(rewards[i] - rewards[j]).item() / len(pairs) for i, j in pairs]
    theta = ref_logits.clone().requires_grad_()
    optimizer = torch.optim.LBFGS(
        [theta],
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        logp = torch.log_softmax(theta, 0)
        total = sum(
            w
            * loss_fn(
                logp[i : i + 1], logp[j : j + 1], ref_logp[i : i + 1], ref_logp[j : j + 1], beta
            )[0]
            for (i, j), w in zip(pairs, weights, strict=True)
        )
        total.backward()
        return total

    optimizer.step(closure)  # a convex problem: L-BFGS converges to about 1e-9 in 15 evaluations
    return torch.softmax(theta.detach(), 0)


REF_LOGITS = [0.5, -1.0, 1.2, 0.0, -0.3]
REWARDS = [1.0, 0.2, -0.5, 2.0, -1.5]


def test_dpo_converges_to_the_closed_form_optimum(impl, device):
    # The KL-regularised optimum is pi*(y) = pi_ref(y) exp(r(y) / beta) / Z; DPO's loss, with
    # pairs labelled by Bradley-Terry from r, is minimised exactly there.
    beta = 0.5
    ref_logits = torch.tensor(REF_LOGITS, dtype=torch.float64, device=device)
    rewards = torch.tensor(REWARDS, dtype=torch.float64, device=device)
    policy = fit_categorical(impl.dpo_loss, ref_logits, rewards, beta)
    expected = torch.softmax(torch.log_softmax(ref_logits, 0) + rewards / beta, 0)
    assert_close(
        policy,
        expected,
        what=f"the policy that minimises dpo_loss (beta={beta}) over 5 outcomes, against "
        "pi_ref(y) exp(r(y) / beta) / Z",
        rtol=1e-6,
        atol=1e-6,
    )


def test_ipo_converges_to_its_closed_form(impl, device):
    # IPO regresses each log-ratio gap onto (2 p - 1) / (2 beta); over all pairs of K outcomes
    # the least-squares answer is pi(y_i) = pi_ref(y_i) exp(mean_j (p_ij - 1/2) / beta) / Z. It
    # stays finite even for pairs that are (almost) always ordered the same way.
    beta = 0.5
    ref_logits = torch.tensor(REF_LOGITS, dtype=torch.float64, device=device)
    rewards = torch.tensor([1.0, 0.2, -0.5, 12.0, -9.0], dtype=torch.float64, device=device)
    policy = fit_categorical(impl.ipo_loss, ref_logits, rewards, beta)
    p = torch.sigmoid(rewards[:, None] - rewards[None, :])
    expected = torch.softmax(torch.log_softmax(ref_logits, 0) + (p - 0.5).mean(1) / beta, 0)
    assert_close(
        policy,
        expected,
        what=f"the policy that minimises ipo_loss (beta={beta}) over 5 outcomes, against "
        "pi_ref(y_i) exp(mean_j (p_ij - 1/2) / beta) / Z",
        rtol=1e-6,
        atol=1e-6,
    )
