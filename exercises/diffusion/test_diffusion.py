"""Public specs for `diffusion`: `pytest exercises/diffusion` (`--impl=solutions`: the reference).

Oracles: the papers' formulas worked out here from the betas alone (Ho et al.'s linear schedule,
Nichol and Dhariwal's cosine, DDIM's equation 12); Gaussian conditioning for the posterior; a chain
of single noising steps for q_sample; spy models that record what your functions feed them; the
exact denoiser of a Gaussian mixture; and, last, two small trainings judged by a kernel distance.
The statistical specs use fixed seeds; each states its chance of failing a correct implementation
(below 1e-7). The file takes about 10 s on the reference, most of it in the last two specs.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from graders.checks import assert_close, describe, fail

DTYPES = [torch.float32, torch.float64]
# One gather, two products and a sum: float64 loses about 1e-16, float32 about 1e-7.
TOL = {torch.float32: (1e-6, 1e-6), torch.float64: (1e-12, 1e-12)}
# A float32 step divides x_t - sqrt(1 - alpha_bar) eps, two nearly equal numbers when the model
# is good, by sqrt(alpha_bar): at t = T - 1 that is 0.002 here, which turns float32's 6e-8 into
# about 3e-5 (1e-4 through a model). One p_sample step stays within 1e-4; DDIM's chains, 1e-3.
SAMPLER_TOL, DDIM_TOL = 1e-4, 1e-3
Z = 6.0  # a 6-sigma bound: a normal statistic passes it with chance 1 - 2e-9

seeds = st.integers(0, 2**16)


# ---------------------------------------------------------------------------- the spec's own math


def linear_betas(T: int) -> torch.Tensor:
    """Ho et al.'s 1e-4 .. 0.02 over T = 1000 steps, both ends scaled by 1000 / T."""
    return torch.from_numpy(np.linspace(0.1 / T, 20.0 / T, T))


def alpha_bars_of(betas: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.cumprod(1.0 - betas.cpu().numpy())).to(betas.device)


def column(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] (B,) as a float64 (B, 1, ..., 1) column that broadcasts against `like`."""
    return values[t].reshape(-1, *([1] * (like.ndim - 1)))


def schedule(impl, betas: torch.Tensor):
    """Your Schedule of `betas`, after checking its alpha_bars (so later messages can trust it)."""
    s = impl.Schedule(betas)
    expected = alpha_bars_of(betas)
    got = getattr(s, "alpha_bars", None)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        fail(f"Schedule(betas ({len(betas)},)).alpha_bars should be a ({len(betas)},) tensor")
    if not torch.allclose(got.double(), expected, rtol=1e-12, atol=0):
        fail(
            "Schedule(betas).alpha_bars is wrong, so this spec cannot go on: fix "
            "test_schedule_holds_the_running_products first"
        )
    return s


def batch(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).to(device)


@st.composite
def shapes(draw):
    """(B, ...): a batch of vectors, images or plain numbers."""
    rest = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    return (draw(st.integers(1, 5)), *rest)


# ---------------------------------------------------------------------------- schedules


@given(T=st.integers(21, 4000))
def test_linear_schedule_matches_ho_et_al(impl, T):
    betas = impl.linear_beta_schedule(T)
    what = f"linear_beta_schedule({T})"
    if not isinstance(betas, torch.Tensor):
        fail(f"{what} returned a {type(betas).__name__}; expected a float64 tensor ({T},)")
    expected = linear_betas(T)
    assert_close(
        betas,
        expected,
        what=f"{what} (from {0.1 / T:.4g} to {20 / T:.4g}: Ho et al.'s 1e-4 .. 0.02 at T = 1000, "
        "both ends scaled by 1000 / T)",
        rtol=1e-12,
        atol=1e-15,
    )


def cosine_betas(T: int, s: float) -> list[float]:
    """Nichol and Dhariwal's eq. 17, one step at a time in plain Python."""

    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    alpha_bar = [f(t / T) / f(0) for t in range(T + 1)]
    return [min(1 - alpha_bar[t + 1] / alpha_bar[t], 0.999) for t in range(T)]


@given(T=st.integers(1, 2000), s=st.sampled_from([None, 0.0, 0.02, 0.1]))
def test_cosine_schedule_matches_nichol_and_dhariwal(impl, T, s):
    betas = impl.cosine_beta_schedule(T) if s is None else impl.cosine_beta_schedule(T, s=s)
    what = f"cosine_beta_schedule({T}{'' if s is None else f', s={s}'})"
    if not isinstance(betas, torch.Tensor):
        fail(f"{what} returned a {type(betas).__name__}; expected a float64 tensor ({T},)")
    expected = torch.tensor(cosine_betas(T, 0.008 if s is None else s), dtype=torch.float64)
    assert_close(
        betas,
        expected,
        what=f"{what} (beta_t = 1 - alpha_bar(t + 1) / alpha_bar(t), at most 0.999; the last "
        f"expected value is {expected[-1].item():.6g})",
        rtol=1e-9,
        atol=1e-12,
    )


@given(T=st.integers(1, 60), seed=seeds)
def test_schedule_holds_the_running_products(impl, device, T, seed):
    g = torch.Generator().manual_seed(seed)
    betas = (torch.rand(T, generator=g, dtype=torch.float64) * 0.4 + 1e-3).to(device)
    s = impl.Schedule(betas)
    expected = {"betas": betas, "alphas": 1 - betas, "alpha_bars": alpha_bars_of(betas)}
    for name, value in expected.items():
        got = getattr(s, name, None)
        if got is None:
            fail(f"Schedule(betas ({T},)) has no attribute {name!r}")
        why = (
            " (alpha_bars[t] multiplies alphas[0] .. alphas[t]: alpha_bars[0] is alphas[0], not 1)"
            if name == "alpha_bars"
            else ""
        )
        assert_close(
            got,
            value,
            what=f"Schedule(betas ({T},) float64 on {device}).{name}{why}",
            rtol=1e-12,
            atol=1e-15,
        )


# ---------------------------------------------------------------------------- the forward process


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes(), T=st.integers(21, 300), seed=seeds)
def test_q_sample_is_the_closed_form(impl, device, dtype, shape, T, seed):
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    x0, noise = batch(shape, dtype, device, seed), batch(shape, dtype, device, seed + 1)
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, T, (shape[0],), generator=g).to(device)
    copies = (x0.clone(), noise.clone(), t.clone())
    a = column(alpha_bars_of(betas), t, x0)
    expected = (a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()).to(dtype)
    actual = impl.q_sample(x0, t, noise, s)
    if any(not torch.equal(u, v) for u, v in zip((x0, noise, t), copies, strict=True)):
        fail("q_sample changed one of its inputs in place; it must leave x0, t and noise alone")
    rtol, atol = TOL[dtype]
    assert_close(
        actual,
        expected,
        what=f"q_sample({describe(x0=x0, noise=noise)}, t={t.tolist()}, T={T}) "
        "= sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise",
        rtol=rtol,
        atol=atol,
    )


def test_q_sample_matches_t_single_steps(impl, device):
    # N = 100,000 draws of x_t made two ways: t + 1 single steps x <- sqrt(1 - beta) x +
    # sqrt(beta) noise (here), and one jump of your q_sample with fresh noise. Both are Gaussian;
    # their means and variances are compared with 6-sigma bounds (the difference of two means, and
    # the log of the ratio of two variances, which is normal with variance 2 / (N - 1) each). Eight
    # comparisons fail a correct q_sample with chance below 8 * 2e-9 < 2e-8.
    T, N, x0_value = 40, 100_000, 1.5
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    g = torch.Generator(device=device).manual_seed(7)
    x0 = torch.full((N, 1), x0_value, dtype=torch.float64, device=device)
    for t in (0, 1, 9, T - 1):
        x = x0.clone()
        for k in range(t + 1):
            noise = torch.randn(N, 1, generator=g, dtype=torch.float64, device=device)
            x = (1 - betas[k]).sqrt() * x + betas[k].sqrt() * noise
        steps = torch.full((N,), t, dtype=torch.int64, device=device)
        fresh = torch.randn(N, 1, generator=g, dtype=torch.float64, device=device)
        jump = impl.q_sample(x0, steps, fresh, s)
        m1, m2, v1, v2 = x.mean().item(), jump.mean().item(), x.var().item(), jump.var().item()
        mean_gap = abs(m1 - m2) / math.sqrt((v1 + v2) / N)
        log_ratio = abs(math.log(v2 / v1)) / math.sqrt(4 / (N - 1))
        if mean_gap > Z or log_ratio > Z:
            fail(
                f"x_{t} (0-based: {t + 1} noising steps from x_0 = {x0_value}, linear schedule, "
                f"T = {T}): {t + 1} single steps give mean {m1:.4f}, variance {v1:.4f}; one jump "
                f"of q_sample gives mean {m2:.4f}, variance {v2:.4f}. The exact values are "
                f"sqrt(alpha_bar) x_0 = {math.sqrt(s.alpha_bars[t]) * x0_value:.4f} and "
                f"1 - alpha_bar = {1 - s.alpha_bars[t].item():.4f}"
            )


# ---------------------------------------------------------------------------- the reverse process


def conditioned(x0, x_t, t, betas):
    """Mean and variance of x_{t-1} given x_t and x_0 by conditioning their joint Gaussian."""
    a_bars = alpha_bars_of(betas)
    before = torch.cat([a_bars.new_ones(1), a_bars])  # before[t]: alpha_bar before step t
    a_prev, beta = column(before, t, x_t), column(betas, t, x_t)
    # Given x_0: x_{t-1} ~ N(sqrt(a_prev) x_0, 1 - a_prev), and x_t = sqrt(1 - beta) x_{t-1} +
    # sqrt(beta) noise. So cov(x_{t-1}, x_t) = sqrt(1 - beta) (1 - a_prev) and var(x_t) = (1 -
    # beta)(1 - a_prev) + beta; condition on x_t.
    m1, v1 = a_prev.sqrt() * x0, 1 - a_prev
    cov, v2 = (1 - beta).sqrt() * v1, (1 - beta) * v1 + beta
    mean = m1 + cov / v2 * (x_t - (1 - beta).sqrt() * m1)
    return mean, (v1 - cov**2 / v2).expand_as(x_t)


@given(shape=shapes(), T=st.integers(21, 300), seed=seeds)
def test_posterior_matches_gaussian_conditioning(impl, device, shape, T, seed):
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    x0 = batch(shape, torch.float64, device, seed)
    x_t = batch(shape, torch.float64, device, seed + 1)
    t = torch.randint(0, T, (shape[0],), generator=torch.Generator().manual_seed(seed))
    t[0] = 0  # the first step of every batch: the step before is x_0 itself
    if shape[0] > 1:
        t[-1] = T - 1
    t = t.to(device)
    mean, variance = impl.posterior_mean_variance(x0, x_t, t, s)
    expected_mean, expected_variance = conditioned(x0, x_t, t, betas)
    what = f"posterior_mean_variance({describe(x0=x0, x_t=x_t)}, t={t.tolist()}, T={T})"
    assert_close(mean, expected_mean, what=f"{what}: the mean", rtol=1e-10, atol=1e-12)
    assert_close(
        variance,
        expected_variance,
        what=f"{what}: the variance (beta_t (1 - alpha_bar_(t-1)) / (1 - alpha_bar_t), shaped "
        "like x_t)",
        rtol=1e-10,
        atol=1e-12,
    )


class Spy(nn.Module):
    """A deterministic noise guess that remembers every (x, t) it was called with."""

    def __init__(self, scale: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(scale, dtype=torch.float64))
        self.calls = []

    def forward(self, x, t):
        self.calls.append((x.detach().clone(), t.detach().clone()))
        shift = 0.01 * t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return self.weight.to(x.dtype) * torch.tanh(x) + shift


def check_model_call(model, what, x_shape, t_values, device):
    """The model was called once per value of t_values, each time with t (B,) int64 = that value."""
    if len(model.calls) != len(t_values):
        fail(f"{what} called the model {len(model.calls)} times; expected {len(t_values)}")
    for (x, t), value in zip(model.calls, t_values, strict=True):
        if tuple(x.shape) != tuple(x_shape):
            fail(f"{what} called the model on x {tuple(x.shape)}; expected {tuple(x_shape)}")
        if t.dtype != torch.int64 or tuple(t.shape) != (x_shape[0],) or t.device != x.device:
            fail(
                f"{what} called the model with t {t.dtype} {tuple(t.shape)} on {t.device}; "
                f"expected t (B,) = ({x_shape[0]},) int64 on {device}, one step per example"
            )
        if not (t == value).all():
            fail(f"{what} called the model with t = {t.unique().tolist()}; expected {value}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [0, 1, 30, 99])
def test_p_sample_steps_to_the_posterior_of_its_x0_guess(impl, device, dtype, t):
    T, shape = 100, (6, 3)
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    x_t = batch(shape, dtype, device, 11 + t)
    model = Spy().to(device)
    actual = impl.p_sample(model, x_t, t, s, torch.Generator(device=device).manual_seed(5))
    what = f"p_sample(model, {describe(x_t=x_t)}, t={t}, T={T})"
    check_model_call(model, what, shape, [t], device)
    steps = torch.full((shape[0],), t, device=device)
    a = column(alpha_bars_of(betas), steps, x_t)
    eps = model(x_t, steps).double()
    x0_hat = (x_t.double() - (1 - a).sqrt() * eps) / a.sqrt()
    mean, variance = conditioned(x0_hat, x_t.double(), steps, betas)
    g = torch.Generator(device=device).manual_seed(5)
    z = torch.randn(shape, generator=g, dtype=dtype, device=device)
    expected = (mean + variance.sqrt() * z.double()).to(dtype)
    rtol, atol = (SAMPLER_TOL, SAMPLER_TOL) if dtype == torch.float32 else (1e-10, 1e-10)
    assert_close(
        actual,
        expected,
        what=f"{what}: x0_hat from the model's noise guess, then the posterior's mean + "
        "sqrt(variance) z" + (" (no noise at t = 0)" if t == 0 else ""),
        rtol=rtol,
        atol=atol,
    )


# ---------------------------------------------------------------------------- the training loss


def recovered_noise(model, x0, betas):
    """From the spy's one call: t, the noise that q_sample must have used, and the model's guess."""
    x_t, t = model.calls[0]
    a = column(alpha_bars_of(betas), t, x0)
    noise = (x_t.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
    return t, noise, model(x_t, t).double()


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes(), T=st.integers(21, 300), seed=seeds)
def test_ddpm_loss_is_the_noise_prediction_error(impl, device, dtype, shape, T, seed):
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    x0 = batch(shape, dtype, device, seed)
    model = Spy().to(device)
    g = torch.Generator(device=device).manual_seed(seed + 1)  # not the stream x0 came from
    loss = impl.ddpm_loss(model, x0, s, g)
    what = f"ddpm_loss(model, {describe(x0=x0)}, T={T})"
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        fail(f"{what} should return a 0-dim tensor (a scalar to call backward on); got {loss!r}")
    if len(model.calls) != 1:
        fail(f"{what} called the model {len(model.calls)} times; once, on the whole batch")
    x_t, t = model.calls[0]
    if tuple(x_t.shape) != shape or t.dtype != torch.int64 or tuple(t.shape) != (shape[0],):
        fail(
            f"{what} called the model with x {tuple(x_t.shape)} and t {t.dtype} "
            f"{tuple(t.shape)}; expected x {shape} and t ({shape[0]},) int64"
        )
    if t.min() < 0 or t.max() >= T:
        fail(f"{what} drew t = {t.tolist()}; steps are 0 .. T - 1 = {T - 1}")
    t, noise, guess = recovered_noise(model, x0, betas)
    expected = (guess - noise).square().mean()
    rtol = 1e-4 if dtype == torch.float32 else 1e-9
    assert_close(
        loss.detach().double(),
        expected,
        what=f"{what}: the mean of (model(x_t, t) - noise)^2, where noise is the one q_sample "
        "used to make the x_t the model saw",
        rtol=rtol,
        atol=1e-9,
    )
    loss.backward()
    if model.weight.grad is None or not torch.isfinite(model.weight.grad) or model.weight.grad == 0:
        fail(f"{what}: loss.backward() gave the model's weight no gradient; keep the graph")


def test_ddpm_loss_draws_uniform_steps_and_standard_noise(impl, device):
    # One batch of B = 40,000 examples (80,000 noise values) over T = 25 steps. The count of each
    # step is checked with Chernoff's bound, P(B KL(k/B || 1/T) >= c) <= 2 exp(-c), with
    # c = ln(2 T / 1e-7) for the union over the T steps; the noise's mean and variance with
    # 6-sigma bounds (2e-9 each). A correct ddpm_loss fails with chance below 1.1e-7.
    T, B = 25, 40_000
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    x0 = batch((B, 2), torch.float64, device, 3)
    model = Spy().to(device)
    impl.ddpm_loss(model, x0, s, torch.Generator(device=device).manual_seed(17))
    t, noise, _ = recovered_noise(model, x0, betas)
    counts = torch.bincount(t.cpu(), minlength=T).double()
    c = math.log(2 * T / 1e-7)
    freq = counts / B
    kl = (
        torch.where(freq > 0, freq * (freq * T).log(), torch.zeros_like(freq))
        + (1 - freq) * ((1 - freq) / (1 - 1 / T)).log()
    )
    if (B * kl > c).any():
        worst = int((B * kl).argmax())
        fail(
            f"ddpm_loss over {B} examples drew step {worst} {int(counts[worst])} times; uniform "
            f"steps 0 .. {T - 1} give about {B // T} each (a gap this large has chance < 1e-7)"
        )
    n, mean, var = noise.numel(), noise.mean().item(), noise.var().item()
    if abs(mean) * math.sqrt(n) > Z or abs(var - 1) > Z * math.sqrt(2 / n):
        fail(
            f"the noise behind ddpm_loss's x_t has mean {mean:.4f} and variance {var:.4f} over "
            f"{n} values; standard normal noise gives 0 and 1 (within {Z / math.sqrt(n):.4f} "
            f"and {Z * math.sqrt(2 / n):.4f})"
        )


# ---------------------------------------------------------------------------- DDIM


def trailing(T, steps):
    return [i * T // steps - 1 for i in range(steps, 0, -1)]


@given(T=st.integers(21, 300), steps=st.integers(1, 30), eta=st.sampled_from([0.0, 1.0]))
def test_ddim_visits_the_trailing_timesteps(impl, device, T, steps, eta):
    steps = min(steps, T)
    s = schedule(impl, linear_betas(T).to(device))
    model = Spy().to(device)
    shape = (7, 2)
    out = impl.ddim_sample(model, shape, s, steps, eta, torch.Generator(device=device))
    what = f"ddim_sample(model, shape={shape}, T={T}, steps={steps}, eta={eta})"
    check_model_call(model, what, shape, trailing(T, steps), device)
    if not isinstance(out, torch.Tensor) or out.shape != shape or out.dtype != torch.float32:
        fail(f"{what} should return float32 samples {shape}; got {out!r}")
    if out.device.type != torch.device(device).type:
        fail(f"{what} returned samples on {out.device}; the generator lives on {device}")


def gaussian_denoiser(alpha_bars, spread=0.5):
    """E[noise | x_t] for data ~ N(0, spread^2 I), plus a small nonlinear term: a fair model."""

    def model(x, t):
        a = alpha_bars[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        exact = (1 - a).sqrt() * x / (a * spread**2 + 1 - a)
        return exact + 0.1 * a.sqrt() * torch.tanh(3 * x)

    return model


def equation_12(model, shape, betas, steps, eta, seed, device):
    """DDIM's eq. 12 written out in float64, with the same draws: x_T first, then one z a step."""
    g = torch.Generator(device=device).manual_seed(seed)
    a_bars = alpha_bars_of(betas).tolist()
    x = torch.randn(shape, generator=g, device=device).double()
    visited = trailing(len(betas), steps)
    for t, t_prev in zip(visited, [*visited[1:], -1], strict=True):
        a, a_prev = a_bars[t], a_bars[t_prev] if t_prev >= 0 else 1.0
        eps = model(x.float(), torch.full(shape[:1], t, device=device)).double()
        x0_hat = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        z = torch.randn(shape, generator=g, device=device).double()
        x = math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    return x.float()


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@given(steps=st.integers(1, 8), seed=seeds)
def test_ddim_follows_equation_12(impl, device, eta, steps, seed):
    T, shape = 40, (5, 3)
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    model = gaussian_denoiser(alpha_bars_of(betas))
    actual = impl.ddim_sample(
        model, shape, s, steps, eta, torch.Generator(device=device).manual_seed(seed)
    )
    assert_close(
        actual,
        equation_12(model, shape, betas, steps, eta, seed, device),
        what=f"ddim_sample(model, shape={shape}, T={T}, steps={steps}, eta={eta}): x_T = "
        "randn(shape) first, then at each step eq. 12 with one fresh z",
        rtol=DDIM_TOL,
        atol=DDIM_TOL,
    )


def test_ddim_with_eta_1_over_every_step_is_ddpm(impl, device):
    T, shape = 50, (8, 2)
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    model = gaussian_denoiser(alpha_bars_of(betas))
    g = torch.Generator(device=device).manual_seed(21)
    x = torch.randn(shape, generator=g, device=device)
    for t in reversed(range(T)):
        x = impl.p_sample(model, x, t, s, g)
    ddim = impl.ddim_sample(model, shape, s, T, 1.0, torch.Generator(device=device).manual_seed(21))
    assert_close(
        ddim,
        x,
        what=f"ddim_sample(steps=T={T}, eta=1) against x_T = randn(shape) followed by {T} "
        "p_sample steps on the same generator (DDIM with eta = 1 is DDPM's ancestral sampler)",
        rtol=DDIM_TOL,
        atol=DDIM_TOL,
    )


# Three Gaussians in the plane, far apart: weights, centres and spreads.
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
CENTRES = torch.tensor([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]], dtype=torch.float64)
SPREADS = torch.tensor([0.4, 0.3, 0.5], dtype=torch.float64)


def mixture_denoiser(alpha_bars):
    """The exact E[noise | x_t] for data drawn from the mixture above: the best possible model."""
    w, mu, sd = (v.to(alpha_bars.device) for v in (WEIGHTS, CENTRES, SPREADS))

    def model(x, t):
        a = alpha_bars[t][:, None, None]  # (B, 1, 1)
        var = a * sd[None, :, None] ** 2 + 1 - a  # x_t's variance in each component: (B, K, 1)
        d = x.double()[:, None, :] - a.sqrt() * mu[None]  # (B, K, 2)
        logits = w.log() - d.square().sum(-1) / (2 * var[..., 0]) - var[..., 0].log()
        resp = torch.softmax(logits, dim=1)[..., None]  # which component x_t came from
        x0 = (resp * (mu + a.sqrt() * sd[None, :, None] ** 2 * d / var)).sum(1)
        return ((x.double() - a[:, 0].sqrt() * x0) / (1 - a[:, 0]).sqrt()).to(x.dtype)

    return model


@pytest.mark.parametrize(("steps", "eta"), [(50, 0.0), (100, 1.0)])
def test_samplers_draw_a_known_mixture(impl, device, steps, eta):
    # With the exact denoiser, N = 10,000 samples are sorted to their nearest centre. Each
    # component's share, mean and spread are checked against the mixture within a margin for the
    # sampler's own discretisation error (measured at 50 DDIM steps and at 100 DDPM steps: shares
    # within 0.006, means within 0.1 spread, spreads 9% too small at worst), plus 6 standard
    # errors (chance 2e-9 each, 15 checks: a correct sampler fails with chance below 3e-8).
    T, N = 100, 10_000
    betas = linear_betas(T).to(device)
    s = schedule(impl, betas)
    model = mixture_denoiser(alpha_bars_of(betas))
    g = torch.Generator(device=device).manual_seed(31)
    x = impl.ddim_sample(model, (N, 2), s, steps, eta, g).double().cpu()
    what = f"ddim_sample(exact mixture denoiser, shape=({N}, 2), T={T}, steps={steps}, eta={eta})"
    if not torch.isfinite(x).all():
        fail(f"{what} returned non-finite samples")
    nearest = torch.cdist(x, CENTRES).argmin(1)
    for k in range(3):
        mine = x[nearest == k]
        share, w, sd = len(mine) / N, WEIGHTS[k].item(), SPREADS[k].item()
        if abs(share - w) > 0.01 + Z * math.sqrt(w * (1 - w) / N):
            fail(f"{what}: {share:.1%} of the samples fall nearest centre {k}; its weight is {w}")
        offset = (mine.mean(0) - CENTRES[k]).abs().max().item() / sd
        spread = mine.std(0) / sd
        se, se_spread = 1 / math.sqrt(len(mine)), 1 / math.sqrt(2 * len(mine))
        low, high = 0.8 - Z * se_spread, 1.1 + Z * se_spread
        if offset > 0.2 + Z * se or not ((spread > low) & (spread < high)).all():
            fail(
                f"{what}: component {k} (centre {CENTRES[k].tolist()}, spread {sd}) came out "
                f"centred {mine.mean(0).tolist()} with spreads {(spread * sd).tolist()}"
            )


# ---------------------------------------------------------------------------- training


class Denoiser(nn.Module):
    """A small MLP noise guesser: x (B, d) and t (B,) in, noise (B, d) out. Sines and cosines of x
    at four frequencies let it draw sharp shapes; sines and cosines of t / T tell it the step."""

    def __init__(self, dim: int, T: int, hidden: int = 64) -> None:
        super().__init__()
        self.T = T
        self.register_buffer("freqs", 2.0 ** torch.arange(4))
        self.net = nn.Sequential(
            nn.Linear(dim * 9 + 8, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x, t):
        ux = (x[..., None] * self.freqs).flatten(1)
        ut = (t.to(x.dtype) / self.T * math.pi)[:, None] * self.freqs
        return self.net(torch.cat([x, ux.sin(), ux.cos(), ut.sin(), ut.cos()], dim=1))


def fit(model, loss_of, data, steps, seed, lr=1e-2, batch_size=512):
    """Adam with a cosine-decaying learning rate on random batches of `data`; the last loss."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator(device=data.device).manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        rows = torch.randint(0, len(data), (batch_size,), generator=g, device=data.device)
        loss = loss_of(data[rows], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def probe(impl, s, device):
    """Call ddpm_loss and ddim_sample once on tiny inputs, so that a missing piece fails at once,
    not after a training run."""
    g = torch.Generator(device=device).manual_seed(0)
    impl.ddpm_loss(Spy().to(device), torch.zeros(2, 2, device=device), s, g)
    impl.ddim_sample(Spy().to(device), (2, 2), s, 1, 0.0, g)


def train_and_sample(impl, data, n_samples, seed, steps=600, T=100):
    """Your ddpm_loss trains a Denoiser on data (N, d); your ddim_sample draws n_samples (50
    steps, eta = 0). Returns the samples and the last training loss."""
    s = schedule(impl, linear_betas(T).to(data.device))
    probe(impl, s, data.device)
    torch.manual_seed(seed)
    model = Denoiser(data.shape[1], T).to(data.device)
    loss = fit(model, lambda x0, g: impl.ddpm_loss(model, x0, s, g), data, steps, seed)
    g = torch.Generator(device=data.device).manual_seed(seed + 1)
    return impl.ddim_sample(model, (n_samples, data.shape[1]), s, 50, 0.0, g), loss


def ring(n, seed, device="cpu"):
    """Eight Gaussians (spread 0.15) on a circle of radius 2."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.randint(0, 8, (n,), generator=g) * math.pi / 4
    centres = 2 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return (centres + 0.15 * torch.randn(n, 2, generator=g)).to(device)


def mmd(x, y, bandwidth):
    """The kernel distance of two samples: sqrt of the (biased) squared MMD, Gaussian kernel."""
    xy = torch.cat([x, y]).double().cpu()
    k = torch.exp(-torch.cdist(xy, xy).square() / (2 * bandwidth**2))
    n = len(x)
    return (k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()).clamp(min=0).sqrt().item()


RING_BAR = 0.1  # two fresh samples of the ring are 0.03 apart; a Gaussian with its spread, 0.2


def test_a_small_denoiser_learns_eight_gaussians(impl, device):
    samples, loss = train_and_sample(impl, ring(20_000, 1, device), 2000, seed=2)
    distance = mmd(samples, ring(2000, 3), bandwidth=0.3)
    if not distance < RING_BAR:
        fail(
            f"a denoiser trained 600 steps with your ddpm_loss, sampled with your ddim_sample "
            f"(50 steps, eta = 0), lands at kernel distance {distance:.3f} from the ring of eight "
            f"Gaussians; the bar is {RING_BAR} (last training loss {loss:.3f})"
        )


# The latent-diffusion idea on a toy: each data point p (2,) becomes an 8 x 8 image of a blob
# centred at p. An autoencoder squeezes the 64 pixels into 2 numbers; diffusion runs there.
PIXELS = torch.stack(torch.meshgrid(*[torch.linspace(-3, 3, 8)] * 2, indexing="xy"), -1)
PIXELS = PIXELS.reshape(64, 2)
LATENT_BAR = 0.15  # images of two fresh samples are 0.03 apart; decoded Gaussian latents, 0.3


def render(points):
    """Images (N, 64) of Gaussian blobs at points (N, 2)."""
    return torch.exp(-torch.cdist(points, PIXELS.to(points.device)).square() / (2 * 0.7**2))


def autoencoder(images, steps, seed):
    """An MLP autoencoder 64 -> 2 -> 64 fitted to images; (encode, decode)."""
    torch.manual_seed(seed)
    encode = nn.Sequential(nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2)).to(images.device)
    decode = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64)).to(images.device)
    ae = nn.Sequential(encode, decode)
    fit(ae, lambda x, g: (ae(x) - x).square().mean(), images, steps, seed, batch_size=256)
    return encode, decode


def test_latent_diffusion_on_a_tiny_autoencoder(impl, device):
    probe(impl, schedule(impl, linear_betas(100).to(device)), device)
    images = render(ring(20_000, 4, device))
    encode, decode = autoencoder(images, steps=400, seed=5)
    with torch.no_grad():
        z = encode(images)
    # Rombach et al. rescale latents to unit variance so that the noise schedule fits them.
    shift, scale = z.mean(0), z.std()
    latents, loss = train_and_sample(impl, (z - shift) / scale, 2000, seed=6, steps=400)
    with torch.no_grad():
        decoded = decode(latents * scale + shift)
    distance = mmd(decoded, render(ring(2000, 7)), bandwidth=1.0)
    if not distance < LATENT_BAR:
        fail(
            f"diffusion on the autoencoder's 2-number latents (your ddpm_loss and ddim_sample), "
            f"decoded to 8 x 8 images, lands at kernel distance {distance:.3f} from images of "
            f"the ring; the bar is {LATENT_BAR} (last training loss {loss:.3f})"
        )
