"""Specs for reward_model: `pytest exercises/reward_model` (`--impl=solutions`: the reference).

One spec is statistical (`test_sample_preferences_follow_bradley_terry`): its chance of failing a
correct implementation is below 1e-7, stated beside it. The training spec is deterministic.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: (1e-6, 1e-6), torch.float64: (1e-12, 1e-12)}
DELTA = 1e-7  # the false-failure chance the statistical spec allows itself


def rewards(shape, dtype, device, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(tuple(shape), generator=g, dtype=dtype)).to(device)


def pair(n, dtype, device, seed=0, scale=2.0):
    """Rewards of n chosen and n rejected items, as leaf tensors that collect gradients."""
    r = rewards((2, n), dtype, device, seed, scale)
    return r[0].clone().requires_grad_(), r[1].clone().requires_grad_()


# -- preference_probability ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    broadcast=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_preference_probability_is_a_sigmoid_of_the_difference(
    impl, device, dtype, shape, broadcast, seed
):
    r_a = rewards(shape, dtype, device, seed)
    r_b = rewards(shape[-1:] if broadcast else shape, dtype, device, seed + 1)
    rtol, atol = TOL[dtype]
    assert_close(
        impl.preference_probability(r_a, r_b),
        torch.sigmoid(r_a - r_b),
        what=f"preference_probability({describe(r_a=r_a, r_b=r_b)}) (Bradley-Terry: "
        "exp(r_a) / (exp(r_a) + exp(r_b)))",
        rtol=rtol,
        atol=atol,
    )


def test_a_higher_reward_is_preferred(impl, device):
    r_a = torch.tensor([1.0, 0.0, -2.0, 3.0], dtype=torch.float64, device=device)
    r_b = torch.tensor([0.0, 0.0, -3.0, 3.0 + math.log(3.0)], dtype=torch.float64, device=device)
    p = impl.preference_probability(r_a, r_b)
    expected = [1 / (1 + math.exp(-1)), 0.5, 1 / (1 + math.exp(-1)), 0.25]
    if not isinstance(p, torch.Tensor) or p.shape != (4,):
        fail(f"preference_probability(r_a (4,), r_b (4,)) should return a (4,) tensor; got {p!r}")
    if not torch.allclose(p.cpu(), torch.tensor(expected, dtype=torch.float64), atol=1e-12):
        fail(
            f"preference_probability(r_a={r_a.tolist()}, r_b=[0, 0, -3, 3 + log 3]) should be "
            f"P(a preferred) = {[round(e, 4) for e in expected]}; got "
            f"{[round(x, 4) for x in p.tolist()]}. A reward one higher makes a preferred with "
            "chance sigmoid(1) = 0.731, and three times as strong a b gives a only 1/4"
        )


@given(
    n=st.integers(1, 12),
    c=st.floats(-1e3, 1e3, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_adding_a_constant_changes_nothing(impl, device, n, c, seed):
    # Bradley-Terry sees only differences of rewards: a reward model is defined up to a constant.
    r_c, r_r = pair(n, torch.float64, device, seed)
    s_c, s_r = (r_c.detach() + c).requires_grad_(), (r_r.detach() + c).requires_grad_()
    what = f"with rewards (n={n}) and the same rewards + {c:.6g}"
    assert_close(
        impl.preference_probability(s_c, s_r),
        impl.preference_probability(r_c, r_r).detach(),
        what=f"preference_probability {what} (only r_a - r_b may matter)",
        rtol=1e-9,
        atol=1e-9,
    )
    loss, shifted = impl.bradley_terry_loss(r_c, r_r), impl.bradley_terry_loss(s_c, s_r)
    assert_close(
        shifted.detach(), loss.detach(), what=f"bradley_terry_loss {what}", rtol=1e-9, atol=1e-9
    )
    loss.backward()
    shifted.backward()
    for name, a, b in [("r_chosen", s_c, r_c), ("r_rejected", s_r, r_r)]:
        assert_close(
            a.grad, b.grad, what=f"the gradient of bradley_terry_loss in {name} {what}", atol=1e-9
        )


# -- bradley_terry_loss ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_bradley_terry_loss_matches_torch(impl, device, dtype, n, seed):
    r_c, r_r = pair(n, dtype, device, seed)
    loss = impl.bradley_terry_loss(r_c, r_r)
    what = f"bradley_terry_loss({describe(r_chosen=r_c, r_rejected=r_r)})"
    if not isinstance(loss, torch.Tensor) or loss.shape != ():
        fail(f"{what} should return a 0-dim tensor (the mean over pairs); got {loss!r}")
    if not loss.requires_grad:
        fail(f"{what} returned a tensor without a gradient: keep it in torch operations")
    # The oracle: binary cross-entropy with label 1 on the logit r_chosen - r_rejected.
    t_c, t_r = r_c.detach().clone().requires_grad_(), r_r.detach().clone().requires_grad_()
    expected = F.binary_cross_entropy_with_logits(t_c - t_r, torch.ones_like(t_c))
    rtol, atol = TOL[dtype]
    assert_close(
        loss.detach(),
        expected.detach(),
        what=what + " (-log sigmoid of the margin, averaged over pairs)",
        rtol=rtol,
        atol=atol,
    )
    loss.backward()
    expected.backward()
    assert_close(
        r_c.grad, t_c.grad, what=f"the gradient of {what} in r_chosen", rtol=rtol, atol=atol
    )
    assert_close(
        r_r.grad, t_r.grad, what=f"the gradient of {what} in r_rejected", rtol=rtol, atol=atol
    )


def test_bradley_terry_loss_is_stable_for_large_margins(impl, device):
    r_c = torch.tensor([300.0, -300.0, 0.0, 120.0], device=device, requires_grad=True)
    r_r = torch.tensor([-300.0, 300.0, 0.0, 0.0], device=device, requires_grad=True)
    loss = impl.bradley_terry_loss(r_c, r_r)
    # softplus(-600) + softplus(600) + softplus(0) + softplus(-120), over 4.
    expected = (0.0 + 600.0 + math.log(2.0) + 0.0) / 4
    if not torch.isfinite(loss) or abs(loss.item() - expected) > 1e-3:
        fail(
            f"bradley_terry_loss with float32 margins (600, -600, 0, 120) should be "
            f"{expected:.4f}; got {loss.item()}. sigmoid(-600) underflows to 0 in float32, so "
            "log(sigmoid(d)) gives -inf: compute -log sigmoid(d) as softplus(-d) (or -logsigmoid)"
        )
    loss.backward()
    expected_grad = torch.tensor([0.0, -0.25, -0.125, 0.0])
    if not torch.allclose(r_c.grad.cpu(), expected_grad, atol=1e-6):
        fail(
            f"the gradient of bradley_terry_loss in r_chosen at margins (600, -600, 0, 120) "
            f"should be {expected_grad.tolist()} (-(1 - sigmoid(d)) / N); got {r_c.grad.tolist()}"
        )


def test_bradley_terry_loss_is_a_mean_over_pairs(impl, device):
    r_c, r_r = pair(7, torch.float64, device, seed=3)
    once = impl.bradley_terry_loss(r_c, r_r).item()
    thrice = impl.bradley_terry_loss(r_c.repeat(3), r_r.repeat(3)).item()
    if abs(once - thrice) > 1e-12:
        fail(
            f"bradley_terry_loss on 7 pairs gave {once:.6f} and on the same pairs three times "
            f"{thrice:.6f}: take the mean over pairs, not the sum, so that the loss (and the "
            "learning rate) does not depend on the batch size"
        )
    tie = impl.bradley_terry_loss(r_c[:1].detach(), r_c[:1].detach()).item()
    if abs(tie - math.log(2.0)) > 1e-12:
        fail(
            f"bradley_terry_loss with r_chosen == r_rejected should be log 2 = {math.log(2):.6f} "
            f"(a coin flip); got {tie:.6f}"
        )


# -- sample_preferences ----------------------------------------------------------------------

GAPS = [-4.0, -1.5, -0.5, 0.0, 0.7, 2.0, 5.0]  # r_a - r_b in each cell


def test_sample_preferences_follow_bradley_terry(impl, device):
    # Statistical. For each gap, N pairs with r_a - r_b = gap on top of random base rewards. For a
    # cell with chance p and frequency p^, Chernoff's bound P(N KL(p^ || p) >= c) <= 2 exp(-c)
    # with c = ln(2 * cells / DELTA) makes a false failure less likely than DELTA = 1e-7.
    N = 4000
    base = rewards((len(GAPS), N), torch.float64, device, seed=5)
    gaps = torch.tensor(GAPS, dtype=torch.float64, device=device)[:, None]
    r_a, r_b = (base + gaps).flatten(), base.flatten()
    g = torch.Generator(device=device).manual_seed(2024)
    labels = impl.sample_preferences(r_a, r_b, g)
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.bool:
        fail(f"sample_preferences should return a bool tensor (True: a preferred); got {labels!r}")
    if labels.shape != r_a.shape:
        fail(f"sample_preferences(r_a {tuple(r_a.shape)}, ...) returned shape {labels.shape}")
    freq = labels.view(len(GAPS), N).double().mean(1).cpu()
    c = math.log(2 * len(GAPS) / DELTA)
    for gap, f in zip(GAPS, freq.tolist(), strict=True):
        p = 1 / (1 + math.exp(-gap))
        kl = sum(x * math.log(x / y) for x, y in [(f, p), (1 - f, 1 - p)] if x > 0)
        if N * kl > c:
            fail(
                f"sample_preferences: with r_a - r_b = {gap}, a should be preferred with chance "
                f"sigmoid({gap}) = {p:.4f}; it was preferred in {f:.4f} of {N} pairs. A gap this "
                f"large has a chance below {DELTA:g} for a correct sampler (True means a is "
                "preferred, and the label is random: u < sigmoid(r_a - r_b))"
            )


def test_sample_preferences_use_the_generator(impl, device):
    r_a, r_b = rewards((2, 500), torch.float64, device, seed=9)

    def draw(seed):
        return impl.sample_preferences(r_a, r_b, torch.Generator(device=device).manual_seed(seed))

    first, again, other = draw(1), draw(1), draw(2)
    if first.device != r_a.device:
        fail(f"sample_preferences returned labels on {first.device}; the rewards are on {device}")
    if not torch.equal(first, again):
        fail(
            "sample_preferences with two generators of the same seed gave different labels: "
            "draw every random number with `generator`"
        )
    if torch.equal(first, other):
        fail(
            "sample_preferences gave the same 500 labels for generator seeds 1 and 2: "
            "the labels should be random draws made with `generator`"
        )


# -- bayes_optimal_accuracy ------------------------------------------------------------------


@given(n=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_bayes_optimal_accuracy(impl, device, n, seed):
    r_a, r_b = rewards((2, n), torch.float64, device, seed)
    p = torch.sigmoid(r_a - r_b)
    expected = torch.maximum(p, 1 - p).mean()
    what = f"bayes_optimal_accuracy({describe(r_a=r_a, r_b=r_b)})"
    assert_close(
        impl.bayes_optimal_accuracy(r_a, r_b),
        expected,
        what=what + " (the best guess picks the higher true reward and is right with chance "
        "max(p, 1 - p))",
        rtol=1e-12,
        atol=1e-12,
    )
    assert_close(
        impl.bayes_optimal_accuracy(r_b, r_a),
        expected,
        what=what + " with a and b swapped (which item is called a does not matter)",
        rtol=1e-12,
        atol=1e-12,
    )


# -- RewardModel and train_reward_model ------------------------------------------------------


def test_reward_model_gives_one_reward_per_item(impl, device):
    torch.manual_seed(0)
    model = impl.RewardModel(5, 16).to(device)
    for shape in [(7, 5), (2, 3, 5), (5,)]:
        x = torch.randn(*shape, device=device)
        r = model(x)
        if not isinstance(r, torch.Tensor) or r.shape != shape[:-1]:
            got = tuple(r.shape) if isinstance(r, torch.Tensor) else r
            fail(
                f"RewardModel(5, 16)(x {shape}) should return rewards of shape {shape[:-1]}, "
                f"one per item; got {got}. Squeeze the head's last axis of size 1"
            )
    x = torch.randn(6, 5, device=device)
    model(x).sum().backward()
    params = list(model.named_parameters())
    if not params:
        fail("RewardModel(5, 16) has no parameters: its layers must be attributes of the module")
    for name, p in params:
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0:
            fail(f"RewardModel: the gradient of {name} is missing, zero or not finite")


def teacher_task(seed, n_train, n_test, d):
    """Pairs of items x in R^d, a hidden true reward (a random tanh network), and noisy labels."""
    g = torch.Generator().manual_seed(seed)
    W, w = torch.randn(d, 16, generator=g), 0.75 * torch.randn(16, generator=g)

    def true_reward(x):
        return torch.tanh(x @ W) @ w

    n = n_train + n_test
    x_a, x_b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    r_a, r_b = true_reward(x_a), true_reward(x_b)
    a_wins = (torch.rand(n, generator=g) < torch.sigmoid(r_a - r_b))[:, None]
    chosen, rejected = torch.where(a_wins, x_a, x_b), torch.where(a_wins, x_b, x_a)
    train = chosen[:n_train], rejected[:n_train]
    test = x_a[n_train:], x_b[n_train:], r_a[n_train:], r_b[n_train:]
    return train, test


def test_training_approaches_the_bayes_optimal_accuracy(impl, device):
    # Deterministic: every draw is seeded. On 4000 noisy pairs the reference ends 0.01 below the
    # Bayes-optimal accuracy of 0.82; the bar leaves 0.03, which any sound loop clears.
    (chosen, rejected), (x_a, x_b, r_a, r_b) = teacher_task(0, 4000, 4000, d=4)
    torch.manual_seed(0)
    model = impl.RewardModel(4, 32).to(device)
    steps = 200
    losses = impl.train_reward_model(
        model, chosen.to(device), rejected.to(device), torch.Generator().manual_seed(1), steps=steps
    )
    if not isinstance(losses, list) or len(losses) != steps:
        fail(
            f"train_reward_model(steps={steps}) should return a list of {steps} losses, one per "
            f"step; got {type(losses).__name__} {str(losses)[:80]}"
        )
    if not all(isinstance(x, float) and math.isfinite(x) for x in losses):
        fail("train_reward_model should return finite Python floats (loss.item()), one per step")
    with torch.no_grad():
        a_higher = (model(x_a.to(device)) > model(x_b.to(device))).cpu()
    # The chance that a label drawn from the true rewards agrees with the model: no label noise.
    p = torch.sigmoid(r_a - r_b)
    accuracy = torch.where(a_higher, p, 1 - p).mean().item()
    bayes = torch.maximum(p, 1 - p).mean().item()
    if accuracy < bayes - 0.03:
        first, last = losses[0], sum(losses[-20:]) / 20
        fail(
            f"after train_reward_model(RewardModel(4, 32), 4000 pairs, steps={steps}) the model "
            f"agrees with held-out labels with chance {accuracy:.4f}; the Bayes-optimal accuracy "
            f"is {bayes:.4f} and the bar {bayes - 0.03:.4f}. Loss: {first:.3f} at the first step, "
            f"{last:.3f} over the last 20 (log 2 = 0.693 is a coin flip). Accuracy below 0.5 "
            "means the model learned to prefer the rejected items; a loss that does not fall "
            "points at the loop: zero the gradients every step, and step the optimizer"
        )
