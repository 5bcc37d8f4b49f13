"""Specs for rlhf: `pytest exercises/rlhf` (`--impl=solutions`: the reference)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

TOL = {torch.float32: (1e-6, 1e-6), torch.float64: (1e-12, 1e-12)}


def _batch(B, T, seed, device, dtype=torch.float64, left_padded=False):
    """Log-probabilities of sampled tokens, scores and a mask with every row holding a token."""
    g = torch.Generator().manual_seed(seed)
    logp_policy = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    logp_ref = logp_policy + 0.5 * torch.randn(B, T, generator=g, dtype=dtype)
    scores = torch.randn(B, generator=g, dtype=dtype) * 2
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    if left_padded:  # padding first, as batched generation often lays prompts out
        mask = mask.flip(1)
    return [x.to(device) for x in (scores, logp_policy, logp_ref, mask)]


def _by_hand(scores, logp_policy, logp_ref, mask, beta):
    """One completion and one token at a time, in float64: the oracle."""
    rewards = torch.zeros(logp_policy.shape, dtype=torch.float64)
    for i in range(logp_policy.shape[0]):
        tokens = [t for t in range(logp_policy.shape[1]) if mask[i, t]]
        for t in tokens:
            rewards[i, t] = -beta * (logp_policy[i, t] - logp_ref[i, t]).item()
        rewards[i, tokens[-1]] += scores[i].item()
    return rewards


# -- kl_shaped_rewards -----------------------------------------------------------------------


def test_the_score_lands_on_each_completions_last_token(impl, device):
    # Three completions of 1, 4 and 2 tokens, policy equal to the reference: no penalty at all.
    logp = torch.full((3, 4), -1.0, dtype=torch.float64, device=device)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], device=device).bool()
    scores = torch.tensor([5.0, -2.0, 7.0], dtype=torch.float64, device=device)
    actual = impl.kl_shaped_rewards(scores, logp, logp, mask, 0.1)
    expected = torch.tensor(
        [[5.0, 0, 0, 0], [0, 0, 0, -2.0], [0, 7.0, 0, 0]], dtype=torch.float64, device=device
    )
    assert_close(
        actual,
        expected,
        rtol=0,
        atol=1e-12,
        what="kl_shaped_rewards(scores (5, -2, 7), completions of 1, 4 and 2 tokens, "
        "logp_policy == logp_ref) (each score sits on its own completion's last token)",
    )


def test_left_padded_masks(impl, device):
    scores, logp_policy, logp_ref, mask = _batch(4, 6, 3, device, left_padded=True)
    actual = impl.kl_shaped_rewards(scores, logp_policy, logp_ref, mask, 0.3)
    expected = _by_hand(scores, logp_policy, logp_ref, mask.cpu(), 0.3).to(device)
    assert_close(
        actual,
        expected,
        rtol=1e-12,
        atol=1e-12,
        what=f"kl_shaped_rewards with left padding, mask {mask.int().tolist()} (the last token is "
        "the last True of each row, not row length - 1)",
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    B=st.integers(1, 5),
    T=st.integers(1, 8),
    beta=st.sampled_from([0.0, 0.02, 0.2, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_kl_shaped_rewards_formula(impl, device, dtype, B, T, beta, seed):
    scores, logp_policy, logp_ref, mask = _batch(B, T, seed, device, dtype)
    actual = impl.kl_shaped_rewards(scores, logp_policy, logp_ref, mask, beta)
    expected = _by_hand(scores, logp_policy, logp_ref, mask.cpu(), beta).to(dtype).to(device)
    rtol, atol = TOL[dtype]
    assert_close(
        actual,
        expected,
        rtol=rtol,
        atol=atol,
        what=f"kl_shaped_rewards({describe(scores=scores, logp_policy=logp_policy, mask=mask)}, "
        f"beta={beta}) (-beta * log-ratio on every token, the score added on the last one)",
    )


@given(seed=st.integers(0, 2**16), beta=st.floats(0.0, 2.0))
def test_rewards_sum_to_score_minus_beta_kl(impl, device, seed, beta):
    scores, logp_policy, logp_ref, mask = _batch(6, 7, seed, device)
    rewards = impl.kl_shaped_rewards(scores, logp_policy, logp_ref, mask, beta)
    kl = impl.sequence_kl(logp_policy, logp_ref, mask)
    assert_close(
        rewards.sum(1),
        scores - beta * kl,
        rtol=1e-10,
        atol=1e-10,
        what=f"kl_shaped_rewards(...).sum(1) against scores - {beta:.3g} * sequence_kl(...): "
        "with gamma = 1 a completion's return is its score minus beta times its log-ratio",
    )
    if (rewards[~mask] != 0).any():
        fail("kl_shaped_rewards: padding positions (mask False) must get reward 0")


def test_rewards_are_data_not_a_graph(impl, device):
    scores, logp_policy, logp_ref, mask = _batch(3, 4, 1, device)
    logp_policy.requires_grad_(True)
    rewards = impl.kl_shaped_rewards(scores, logp_policy, logp_ref, mask, 0.1)
    if rewards.requires_grad:
        fail(
            "kl_shaped_rewards returned a tensor that requires grad: rewards are fixed numbers "
            "for PPO, so detach the log-ratio (or compute it under torch.no_grad())"
        )
    if rewards.shape != mask.shape or rewards.dtype != logp_policy.dtype:
        fail(
            f"kl_shaped_rewards returned {tuple(rewards.shape)} {rewards.dtype}; expected "
            f"{tuple(mask.shape)} {logp_policy.dtype}"
        )


# -- sequence_kl -----------------------------------------------------------------------------


def test_sequence_kl_is_the_kl_of_whole_completions(impl, device):
    # Two-token completions over 3 words, policy pi and reference rho independent per token: the
    # exact KL(pi || rho) of whole completions is the pi-weighted mean of sequence_kl over all 9.
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    rho = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    first, second = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    tokens = torch.stack([first.flatten(), second.flatten()], 1)
    weights = pi[tokens].prod(1)
    mask = torch.ones(9, 2, dtype=torch.bool, device=device)
    kl = impl.sequence_kl(pi.log()[tokens].to(device), rho.log()[tokens].to(device), mask)
    exact = 2 * (pi * (pi / rho).log()).sum().item()
    got = (weights.to(device) * kl).sum().item()
    if abs(got - exact) > 1e-12:
        fail(
            f"averaging sequence_kl over every two-token completion, weighted by its policy "
            f"probability, gives {got:.6f}; the KL of whole completions is {exact:.6f} (the KL of "
            "independent tokens adds up: sum the log-ratios, don't average them)"
        )


@given(B=st.integers(1, 5), T=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_sequence_kl_formula(impl, device, B, T, seed):
    _, logp_policy, logp_ref, mask = _batch(B, T, seed, device)
    actual = impl.sequence_kl(logp_policy, logp_ref, mask)
    expected = torch.tensor(
        [
            sum((logp_policy[i, t] - logp_ref[i, t]).item() for t in range(T) if mask[i, t])
            for i in range(B)
        ],
        dtype=torch.float64,
    )
    assert_close(
        actual,
        expected.to(device),
        rtol=1e-12,
        atol=1e-12,
        what=f"sequence_kl({describe(logp_policy=logp_policy, mask=mask)}) (the sum over each "
        "completion's tokens of logp_policy - logp_ref)",
    )


# -- AdaptiveKLController --------------------------------------------------------------------


def test_controller_follows_ziegler_et_al(impl):
    c = impl.AdaptiveKLController(0.1, 6.0, 10_000)
    if c.value != 0.1:
        fail(f"AdaptiveKLController(0.1, 6.0, 10000).value = {c.value!r}; expected 0.1")
    expected, got = 0.1, []
    for kl, n in [(9.0, 512), (6.3, 512), (3.0, 1024), (6.0, 256), (0.0, 512), (100.0, 64)]:
        error = min(max(kl / 6.0 - 1, -0.2), 0.2)
        expected *= 1 + error * n / 10_000
        returned = c.update(kl, n)
        got.append((kl, n, returned, c.value, expected))
    for kl, n, returned, value, exp in got:
        if abs(value - exp) > 1e-15 or abs(returned - exp) > 1e-15:
            fail(
                f"AdaptiveKLController(0.1, target=6, horizon=10000): after update(kl={kl}, "
                f"n_steps={n}) beta should be {exp:.12g}; .value is {value!r} and update returned "
                f"{returned!r}. error = clip(kl / target - 1, -0.2, 0.2), beta *= 1 + error * "
                "n_steps / horizon"
            )


@given(
    kl=st.floats(0.0, 50.0),
    target=st.floats(0.5, 10.0),
    n=st.integers(1, 1000),
    beta=st.floats(0.01, 1.0),
)
def test_controller_pushes_the_kl_towards_its_target(impl, kl, target, n, beta):
    c = impl.AdaptiveKLController(beta, target, 1000.0)
    new = c.update(kl, n)
    step, error = new / beta - 1, kl / target - 1
    if (error > 1e-6 and step <= 0) or (error < -1e-6 and step >= 0):
        fail(
            f"AdaptiveKLController(beta={beta:.3g}, target={target:.3g}).update(kl={kl:.3g}): beta "
            f"went to {new:.6g}; a KL above the target must raise beta (a higher price for drift), "
            "one below must lower it"
        )
    if abs(step) > 0.2 * n / 1000.0 + 1e-12:
        fail(
            f"AdaptiveKLController(...).update(kl={kl:.3g}, n_steps={n}) changed beta by a factor "
            f"{new / beta:.6g}; the error is clipped to +-0.2, so one update moves it at most "
            f"1 +- 0.2 * {n} / 1000"
        )


# -- the whole loop --------------------------------------------------------------------------


def test_rlhf_raises_the_score_within_the_kl_bound(impl, device):
    # Deterministic for a seed. Over seeds 0..11 the reference ends at scores 1.97 to 2.00 (from
    # -0.15 to 0.15) with KL 2.0 to 2.5 nats.
    result = impl.train_rlhf(seed=0, iterations=15, device=device)
    before, after, kl = result["score_before"], result["score_after"], result["kl_after"]
    if not (after >= before + 1.5 and kl <= 3.0):
        fail(
            f"train_rlhf(seed=0, iterations=15, beta=0.2): the mean score went from {before:.2f} "
            f"to {after:.2f} with KL(pi || pi_ref) = {kl:.2f} nats; PPO on the KL-shaped rewards "
            "should raise it by at least 1.5 while the KL stays at most 3 nats "
            f"(batch scores: {[round(s, 2) for s in result['score']]})"
        )


def test_without_the_penalty_the_policy_hacks_the_score(impl, device):
    # beta = 0: nothing holds the policy near the reviews it learned. Over seeds 0..11 it ends on
    # word salads that score 3.1 to 5 (no review scores above 2) at KL 23 to 115 nats (seed 0:
    # 4.0 at 37 nats).
    result = impl.train_rlhf(seed=0, iterations=15, init_beta=0.0, device=device)
    after, kl = result["score_after"], result["kl_after"]
    if not (after > 3.0 and kl > 10.0):
        fail(
            f"train_rlhf(seed=0, iterations=15, beta=0): the mean score reached {after:.2f} at "
            f"KL {kl:.2f} nats; without the penalty the score alone (placed on each completion's "
            "last token) should drive the policy to ungrammatical strings of positive words "
            "(score > 3, KL > 10 nats)"
        )
