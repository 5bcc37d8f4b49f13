"""Specs for grpo: `pytest exercises/grpo` (`--impl=solutions`: the reference)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

# -- verifiable_reward -----------------------------------------------------------------------

WELL_FORMED = [
    ("<answer>7</answer>", 7, 1.0),
    ("<answer>12</answer>", 12, 1.0),
    ("  <answer> 12 </answer>\n", 12, 1.0),  # whitespace around the block and the number
    ("<answer>007</answer>", 7, 1.0),  # the number is compared as an integer
    ("<answer>-3</answer>", -3, 1.0),
    ("<answer>8</answer>", 7, 0.1),  # right format, wrong number: the format reward
    ("<answer>0</answer>", 10, 0.1),
]

MALFORMED = [
    "",
    "7",
    "<answer>7",
    "7</answer>",
    "<answer></answer>",
    "<answer>seven</answer>",
    "<answer>7.0</answer>",
    "<answer>7 8</answer>",
    "the sum is <answer>7</answer>",
    "<answer>7</answer> or 8",
    "<answer>8</answer><answer>7</answer>",
    "<answer><answer>7</answer></answer>",
]


def _reward(impl, completion, answer):
    r = impl.verifiable_reward(completion, answer)
    if isinstance(r, bool) or not isinstance(r, int | float):
        fail(f"verifiable_reward({completion!r}, {answer}) returned {r!r}; expected a float")
    return float(r)


@pytest.mark.parametrize(("completion", "answer", "expected"), WELL_FORMED)
def test_reward_of_well_formed_answers(impl, completion, answer, expected):
    got = _reward(impl, completion, answer)
    if got != expected:
        why = "the right number" if expected == 1.0 else "another number: the format reward"
        fail(
            f"verifiable_reward({completion!r}, answer={answer}) = {got}; expected {expected} "
            f"(a well-formed answer block holding {why})"
        )


@pytest.mark.parametrize("completion", MALFORMED)
def test_reward_of_malformed_completions(impl, completion):
    got = _reward(impl, completion, 7)
    if got != 0.0:
        fail(
            f"verifiable_reward({completion!r}, answer=7) = {got}; expected 0.0: a completion "
            "earns a reward only when it is exactly one <answer>N</answer> block, N an integer"
        )


@given(
    n=st.integers(-(10**6), 10**6), answer=st.integers(-(10**6), 10**6), junk=st.text(max_size=5)
)
def test_reward_of_any_integer(impl, n, answer, junk):
    completion = f"<answer>{n}</answer>"
    expected = 1.0 if n == answer else 0.1
    got = _reward(impl, completion, answer)
    if got != expected:
        fail(f"verifiable_reward({completion!r}, answer={answer}) = {got}; expected {expected}")
    if junk.strip():  # visible text outside the block breaks the format
        for bad in (junk + completion, completion + junk):
            if _reward(impl, bad, n) != 0.0:
                fail(
                    f"verifiable_reward({bad!r}, answer={n}) should be 0.0: text outside the block"
                )


# -- group_advantages ------------------------------------------------------------------------


def _advantages_by_hand(rewards, G, normalize_std=True, eps=1e-6):
    """One group at a time, in float64 numpy: the oracle."""
    r = rewards.detach().cpu().double().numpy().reshape(-1, G)
    a = r - r.mean(axis=1, keepdims=True)
    if normalize_std:
        a = a / (r.std(axis=1, ddof=1, keepdims=True) + eps)
    return torch.from_numpy(a.reshape(-1))


def test_groups_are_contiguous(impl, device):
    # Question 0's four answers come first, then question 1's.
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 1.0], device=device)
    actual = impl.group_advantages(rewards, 4, normalize_std=False)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, -0.225, -0.225, -0.225, 0.675])
    assert_close(
        actual,
        expected.to(device),
        rtol=1e-6,
        atol=1e-6,
        what="group_advantages([1, 0, 0, 0, 0.1, 0.1, 0.1, 1], group_size=4, "
        "normalize_std=False): groups are rewards[0:4] and rewards[4:8]",
    )


@pytest.mark.parametrize("normalize_std", [True, False])
def test_constant_group_gets_zero_advantage(impl, device, normalize_std):
    # Every answer to question 1 scored the same: no answer is better than its group.
    rewards = torch.tensor([1.0, 0.1, 0.1, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], device=device)
    actual = impl.group_advantages(rewards, 3, normalize_std=normalize_std)
    expected = _advantages_by_hand(rewards, 3, normalize_std).float().to(device)
    assert_close(
        actual,
        expected,
        rtol=1e-5,
        atol=1e-6,
        what=f"group_advantages({rewards.tolist()}, group_size=3, normalize_std={normalize_std})"
        " (groups 1 and 2 have the same reward throughout: their advantages are 0, not NaN)",
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    n_groups=st.integers(1, 6),
    G=st.integers(2, 9),
    normalize_std=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_group_advantages_formula(impl, device, dtype, n_groups, G, normalize_std, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(n_groups * G, generator=g, dtype=torch.float64) * 3).to(dtype)
    rewards = rewards.to(device)
    actual = impl.group_advantages(rewards, G, normalize_std=normalize_std)
    expected = _advantages_by_hand(rewards, G, normalize_std).to(dtype=dtype, device=device)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert_close(
        actual,
        expected,
        rtol=tol,
        atol=tol,
        what=f"group_advantages({describe(rewards=rewards)}, group_size={G}, "
        f"normalize_std={normalize_std}) (per group: (r - mean) / (unbiased std + eps))",
    )


@given(scale=st.floats(0.1, 10.0), shift=st.floats(-5.0, 5.0), seed=st.integers(0, 2**16))
def test_advantages_ignore_reward_shift_and_scale(impl, device, scale, shift, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (24,), generator=g).double().to(device)
    rewards[::6] = 2.0  # no group of 6 is constant
    rewards[1::6] = 0.0
    a = impl.group_advantages(rewards, 6, eps=0.0)
    b = impl.group_advantages(rewards * scale + shift, 6, eps=0.0)
    assert_close(
        b,
        a,
        rtol=1e-9,
        atol=1e-9,
        what=f"group_advantages(rewards * {scale:.3g} + {shift:.3g}, group_size=6, eps=0) against "
        "group_advantages(rewards, ...): normalised advantages do not depend on the reward's units",
    )
    sums = a.view(4, 6).sum(1)
    if not torch.allclose(sums, torch.zeros_like(sums), atol=1e-9):
        fail(
            f"the advantages of each group should sum to 0 (the group mean is the baseline); {sums}"
        )


# -- grpo_loss -------------------------------------------------------------------------------


def _objective_by_hand(logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta):
    """DeepSeekMath's objective J, one completion and one token at a time (float64 scalars)."""
    per_completion = []
    for i in range(logp_new.shape[0]):
        terms = []
        for t in range(logp_new.shape[1]):
            if not mask[i, t]:
                continue
            ratio = torch.exp(logp_new[i, t] - logp_old[i, t])
            clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
            surrogate = torch.minimum(ratio * advantages[i], clipped * advantages[i])
            kl = torch.exp(logp_ref[i, t] - logp_new[i, t]) - (logp_ref[i, t] - logp_new[i, t]) - 1
            terms.append(surrogate - beta * kl)
        per_completion.append(torch.stack(terms).mean())
    return torch.stack(per_completion).mean()


def _batch(B, T, seed, device, dtype=torch.float64, spread=0.5):
    g = torch.Generator().manual_seed(seed)
    logp_old = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    logp_new = logp_old + spread * torch.randn(B, T, generator=g, dtype=dtype)
    logp_ref = logp_old + spread * torch.randn(B, T, generator=g, dtype=dtype)
    advantages = torch.randn(B, generator=g, dtype=dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return [x.to(device) for x in (logp_new, logp_old, logp_ref, advantages, mask)]


def _loss_and_grad(impl, logp_new, *rest, **kw):
    x = logp_new.detach().clone().requires_grad_(True)
    loss = impl.grpo_loss(x, *rest, **kw)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        fail(
            f"grpo_loss returned {type(loss).__name__} {getattr(loss, 'shape', '')}; "
            "expected a 0-dim tensor"
        )
    if not loss.requires_grad:
        fail("grpo_loss's result has no gradient: keep logp_new's graph (no .item(), no detach)")
    loss.backward()
    return loss.detach(), x.grad


def test_loss_at_the_start_is_minus_the_mean_advantage(impl, device):
    # Before the first step the policy *is* the old one and the reference: ratio 1, KL 0.
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.8, 0.3]], dtype=torch.float64))
    logp = logp.to(device)
    adv = torch.tensor([1.5, -0.5], dtype=torch.float64, device=device)
    mask = torch.tensor([[True, True, True], [True, False, False]], device=device)
    loss, grad = _loss_and_grad(impl, logp, logp, logp, adv, mask, clip_eps=0.2, beta=0.04)
    if abs(loss.item() - (-0.5)) > 1e-12:
        fail(
            f"grpo_loss with logp_new == logp_old == logp_ref and advantages (1.5, -0.5) is "
            f"{loss.item():.6g}; expected -mean(advantages) = -0.5. The loss is minus the objective"
            " (an optimizer minimises it), and with ratio 1 the objective is the mean advantage"
        )
    expected = torch.tensor([[-0.25, -0.25, -0.25], [0.25, 0.0, 0.0]], dtype=torch.float64)
    assert_close(
        grad,
        expected.to(device),
        rtol=1e-12,
        atol=1e-12,
        what="d grpo_loss / d logp_new at ratio 1 (-A_i / (|o_i| B) on each token, 0 on padding)",
    )


def test_clipping_stops_the_gradient(impl, device):
    # Four one-token completions, beta = 0: the ratio has moved past 1 +- clip_eps in both ways.
    logp_old = torch.zeros(4, 1, dtype=torch.float64, device=device)
    ratio = torch.tensor([[1.5], [1.5], [0.5], [0.5]], dtype=torch.float64, device=device)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64, device=device)
    mask = torch.ones(4, 1, dtype=torch.bool, device=device)
    loss, grad = _loss_and_grad(impl, ratio.log(), logp_old, logp_old, adv, mask, 0.2, 0.0)
    # min(r A, clip(r) A): (1.2, -1.5, 0.5, -0.8); the clipped branch has no gradient.
    expected_loss = -(1.2 - 1.5 + 0.5 - 0.8) / 4
    expected_grad = torch.tensor([[0.0], [1.5 / 4], [-0.5 / 4], [0.0]], dtype=torch.float64)
    what = "grpo_loss(ratio (1.5, 1.5, 0.5, 0.5), advantages (1, -1, 1, -1), clip_eps=0.2, beta=0)"
    if abs(loss.item() - expected_loss) > 1e-12:
        fail(
            f"{what} = {loss.item():.6g}; expected {expected_loss:.6g}: per token the objective is "
            "min(r A, clip(r, 0.8, 1.2) A), the pessimistic one of the two"
        )
    assert_close(
        grad,
        expected_grad.to(device),
        rtol=1e-12,
        atol=1e-12,
        what=f"the gradient of {what} in logp_new (0 where the clipped branch is the minimum)",
    )


def test_k3_penalty_is_the_kl_to_the_reference(impl, device):
    # pi(v) = (8, 4, 2, 1, 1) / 16: a completion holding each token v 16 pi(v) times averages the
    # k3 estimator over pi exactly, which is KL(pi || pi_ref) (zero advantage, beta = 1).
    pi = torch.tensor([8, 4, 2, 1, 1], dtype=torch.float64) / 16
    ref = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64)
    tokens = torch.repeat_interleave(torch.arange(5), (pi * 16).long())
    logp_new = pi.log()[tokens][None].to(device)
    logp_ref = ref.log()[tokens][None].to(device)
    zero = torch.zeros(1, dtype=torch.float64, device=device)
    mask = torch.ones(1, 16, dtype=torch.bool, device=device)
    loss, _ = _loss_and_grad(impl, logp_new, logp_new, logp_ref, zero, mask, 0.2, 1.0)
    kl = (pi * (pi / ref).log()).sum().item()
    if abs(loss.item() - kl) > 1e-12:
        fail(
            f"grpo_loss with zero advantages and beta=1 should be the mean k3 penalty, here "
            f"KL(pi || pi_ref) = {kl:.6f}; got {loss.item():.6f}. k3 per token is "
            "exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1, and the loss adds beta times it"
        )
    loss2, _ = _loss_and_grad(impl, logp_new, logp_new, logp_ref, zero, mask, 0.2, 2.0)
    if not abs(loss2.item() - 2 * kl) < 1e-12:
        fail(
            f"grpo_loss should grow linearly with beta: {loss.item():.6g} at 1, {loss2.item():.6g}"
            " at 2"
        )


def test_padding_is_ignored(impl, device):
    logp_new, logp_old, logp_ref, adv, mask = _batch(4, 5, 7, device)
    mask[:, -1] = False
    expected, expected_grad = _loss_and_grad(impl, logp_new, logp_old, logp_ref, adv, mask)
    noisy = [x.clone() for x in (logp_new, logp_old, logp_ref)]
    for x in noisy:
        x[~mask] = -30.0 * torch.rand(int((~mask).sum()), dtype=x.dtype).to(device)
    loss, grad = _loss_and_grad(impl, *noisy, adv, mask)
    what = f"grpo_loss({describe(logp_new=logp_new, mask=mask)}) after changing the padded tokens"
    assert_close(loss, expected, rtol=1e-12, atol=1e-12, what=what)
    assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12, what=f"the gradient of {what}")


def test_each_completion_weighs_the_same(impl, device):
    # A 1-token completion with A = 1 and a 3-token one with A = -1: per-completion means first.
    logp = torch.full((2, 3), -1.0, dtype=torch.float64, device=device)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64, device=device)
    mask = torch.tensor([[True, False, False], [True, True, True]], device=device)
    loss, _ = _loss_and_grad(impl, logp, logp, logp, adv, mask, 0.2, 0.04)
    if abs(loss.item()) > 1e-12:
        fail(
            f"grpo_loss with completions of 1 and 3 tokens, advantages (1, -1), ratio 1 = "
            f"{loss.item():.6g}; expected 0: average each completion over its own tokens "
            "(1/|o_i|), then the completions; a mean over all 4 tokens gives 0.5"
        )


@given(
    B=st.integers(1, 5),
    T=st.integers(1, 7),
    clip_eps=st.sampled_from([0.1, 0.2, 0.3]),
    beta=st.sampled_from([0.0, 0.04, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_grpo_loss_matches_the_formula(impl, device, B, T, clip_eps, beta, seed):
    logp_new, logp_old, logp_ref, adv, mask = _batch(B, T, seed, device)
    loss, grad = _loss_and_grad(impl, logp_new, logp_old, logp_ref, adv, mask, clip_eps, beta)
    x = logp_new.detach().clone().requires_grad_(True)
    expected = -_objective_by_hand(x, logp_old, logp_ref, adv, mask, clip_eps, beta)
    expected.backward()
    what = (
        f"grpo_loss({describe(logp_new=logp_new, advantages=adv, mask=mask)}, "
        f"clip_eps={clip_eps}, beta={beta})"
    )
    assert_close(loss, expected.detach(), rtol=1e-9, atol=1e-12, what=what)
    assert_close(grad, x.grad, rtol=1e-9, atol=1e-12, what=f"the gradient of {what} in logp_new")


# -- the whole loop --------------------------------------------------------------------------


def test_grpo_training_improves_accuracy(impl, device):
    # Deterministic for a seed; over seeds 0..19 the reference gains 0.16 to 0.36 in 40 steps.
    result = impl.train_grpo(seed=0, iterations=40, device=device)
    before, after = result["accuracy_before"], result["accuracy_after"]
    if not after >= before + 0.10:
        fail(
            f"train_grpo(seed=0, iterations=40): the expected accuracy on the 100 sums went from "
            f"{before:.3f} to {after:.3f}; GRPO should raise it by at least 0.10 "
            f"(mean reward per iteration: {np.round(result['mean_reward'][::8], 2).tolist()})"
        )
