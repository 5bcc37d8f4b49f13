"""Denoising diffusion: DDPM (Ho, Jain and Abbeel, 2020) and DDIM (Song, Meng and Ermon, 2021).

The forward process destroys data a little at a time: T steps, each scaling x down and adding a
little Gaussian noise, until nothing but noise is left. Because every step is Gaussian, x_t can be
drawn from x_0 in one jump. A network learns to undo one step by predicting the noise that was
added; sampling starts from pure noise and walks back. DDIM walks back along a subsequence of the
steps with the same network, deterministically when eta = 0.

Conventions: timesteps are 0-based, t = 0 .. T-1 (the paper's t = 1 .. T); alpha_bars[t] is the
product of alphas[0 .. t], so x_t is data after t + 1 noising steps. Schedules are float64; each
function casts the coefficients it gathers to the dtype of the samples. A model is called as
model(x, t) with x (B, ...) and t (B,) int64 on x's device, and returns its noise guess, shaped
like x. Every random draw comes from the `generator` argument, which lives on the samples' device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "Schedule",
    "cosine_beta_schedule",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_loss",
    "linear_beta_schedule",
    "p_sample",
    "posterior_mean_variance",
    "q_sample",
]

Model = Callable[[Tensor, Tensor], Tensor]  # model(x (B, ...), t (B,) int64) -> noise (B, ...)


def linear_beta_schedule(T: int) -> Tensor:
    """Ho et al.'s linear schedule: T betas evenly spaced from 1e-4 to 0.02 when T = 1000.

    For other T both ends are scaled by 1000 / T (as Nichol and Dhariwal do), so the total amount
    of noise stays about the same: betas from 0.1 / T to 20 / T. Returns (T,) float64.
    """
    if T <= 20:
        raise ValueError(f"linear_beta_schedule needs T > 20 (its last beta is 20 / T); got {T}")
    ### BEGIN SOLUTION
    scale = 1000 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    ### END SOLUTION


def cosine_beta_schedule(T: int, s: float = 0.008) -> Tensor:
    """Nichol and Dhariwal's cosine schedule, from f(u) = cos((u + s) / (1 + s) * pi/2)^2.

    alpha_bar(t) = f(t / T) / f(0) for t = 0 .. T, and beta for step t = 0 .. T-1 is
    1 - alpha_bar(t + 1) / alpha_bar(t), clipped to at most 0.999. Returns (T,) float64.
    """
    if T < 1:
        raise ValueError(f"cosine_beta_schedule needs T >= 1; got {T}")
    ### BEGIN SOLUTION
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    # The last ratio is 0 (f(1) = 0): clipping keeps beta below 1, so no step erases x entirely.
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    ### END SOLUTION


class Schedule:
    """The noise schedule's running products, from betas (T,) on any device.

    Attributes, each (T,) float64 on the betas' device: betas; alphas = 1 - betas; alpha_bars,
    where alpha_bars[t] is the product of alphas[0 .. t] (x_t keeps sqrt(alpha_bars[t]) of x_0).
    The other functions read these three attributes and nothing else.
    """

    def __init__(self, betas: Tensor) -> None:
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a (T,) tensor of values in (0, 1)")
        self.betas = betas.to(torch.float64)
        ### BEGIN SOLUTION
        self.alphas = 1 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        ### END SOLUTION

    @property
    def T(self) -> int:
        return len(self.betas)


def _gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] (B,) as (B, 1, ..., 1) in like's dtype, to scale a batch shaped like `like`."""
    return values[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, schedule: Schedule) -> Tensor:
    """x_t drawn from q(x_t | x_0) in one jump: sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.

    Shapes: x0 (B, ...), t (B,) int64 (each example its own step), noise like x0 -> like x0.
    """
    ### BEGIN SOLUTION
    # A chain of Gaussian steps is Gaussian: the signal shrinks by the product of sqrt(alpha)s and
    # the noise variances add up to 1 - alpha_bar_t, so t + 1 steps collapse into one.
    a = _gather(schedule.alpha_bars, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
    ### END SOLUTION


def ddpm_loss(model: Model, x0: Tensor, schedule: Schedule, generator: torch.Generator) -> Tensor:
    """Ho et al.'s simplified loss: mean over every value of (model(x_t, t) - noise)^2.

    For a batch x0 (B, ...): t uniform on 0 .. T-1 per example, noise standard normal like x0, both
    drawn from `generator`; x_t = q_sample(x0, t, noise). Returns a scalar that autograd follows
    back to the model's parameters.
    """
    ### BEGIN SOLUTION
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    # The network sees a noised example and its step, and guesses the noise: a denoising score
    # matching loss, with every step weighted the same (the paper's L_simple).
    return (model(q_sample(x0, t, noise, schedule), t) - noise).square().mean()
    ### END SOLUTION


def posterior_mean_variance(
    x0: Tensor, x_t: Tensor, t: Tensor, schedule: Schedule
) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0), the forward process run backwards (eqs. 6-7).

    Shapes: x0 and x_t (B, ...), t (B,) int64 -> (mean, variance), both shaped like x_t. At t = 0
    the step before is the data itself: mean x0, variance 0 (alpha_bar before step 0 is 1).
    """
    ### BEGIN SOLUTION
    a_bar = _gather(schedule.alpha_bars, t, x_t)
    a_bar_prev = _gather(torch.cat([schedule.alpha_bars.new_ones(1), schedule.alpha_bars]), t, x_t)
    beta, alpha = _gather(schedule.betas, t, x_t), _gather(schedule.alphas, t, x_t)
    # Both x_{t-1} given x_0 and x_t given x_{t-1} are Gaussian, so by Bayes so is x_{t-1} given
    # both: a blend of where x_0 points and where x_t came from.
    mean = (a_bar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - a_bar_prev) * x_t) / (1 - a_bar)
    variance = beta * (1 - a_bar_prev) / (1 - a_bar)
    return mean, variance.expand_as(x_t)
    ### END SOLUTION


@torch.no_grad()
def p_sample(
    model: Model, x_t: Tensor, t: int, schedule: Schedule, generator: torch.Generator
) -> Tensor:
    """One ancestral step of DDPM (Algorithm 2): x_{t-1} drawn given x_t (B, ...) at step t (int).

    The model's noise guess gives x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t);
    the step returns mean + sqrt(variance) z of posterior_mean_variance(x0_hat, x_t, t), with
    z = torch.randn(x_t.shape, generator=generator, ...) in x_t's dtype and device. At t = 0 it
    returns the mean: the last step adds no noise.
    """
    ### BEGIN SOLUTION
    steps = torch.full((x_t.shape[0],), t, dtype=torch.int64, device=x_t.device)
    a_bar = _gather(schedule.alpha_bars, steps, x_t)
    eps = model(x_t, steps)
    x0_hat = (x_t - (1 - a_bar).sqrt() * eps) / a_bar.sqrt()
    mean, variance = posterior_mean_variance(x0_hat, x_t, steps, schedule)
    if t == 0:
        return mean
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + variance.sqrt() * z
    ### END SOLUTION


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The timesteps DDIM visits, increasing: the i-th (i = 1 .. steps) is i * T // steps - 1.

    They are evenly spaced and the last is always T - 1, the noisiest step; steps = T gives every
    step. For T = 1000 and 4 steps: [249, 499, 749, 999]. Sampling walks them from last to first.
    """
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM needs 1 <= steps <= T = {T}; got steps = {steps}")
    return [i * T // steps - 1 for i in range(1, steps + 1)]


@torch.no_grad()
def ddim_sample(
    model: Model,
    shape: tuple[int, ...],
    schedule: Schedule,
    steps: int,
    eta: float,
    generator: torch.Generator,
) -> Tensor:
    """Samples (shape) float32 on the generator's device, walking back along ddim_timesteps.

    x_T = torch.randn(shape, generator=generator, device=generator.device) is the first draw. Each
    step from t to the previous visited step (alpha_bar = 1 after the first one) is DDIM's eq. 12:
        x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),  eps = model(x_t, t)
        sigma = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
        x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z
    with a = alpha_bar and z = torch.randn(shape, generator=generator, ...) drawn at each step.
    eta = 0: deterministic given x_T; eta = 1 and steps = T: DDPM's ancestral sampler.
    """
    if not 0 <= eta <= 1:
        raise ValueError(f"ddim_sample takes 0 <= eta <= 1; got {eta}")
    ### BEGIN SOLUTION
    device = generator.device
    x = torch.randn(shape, generator=generator, device=device)
    visited = ddim_timesteps(schedule.T, steps)
    a_bars = schedule.alpha_bars.tolist()
    for t, t_prev in zip(reversed(visited), [*reversed(visited[:-1]), -1], strict=True):
        a_t, a_prev = a_bars[t], (a_bars[t_prev] if t_prev >= 0 else 1.0)
        eps = model(x, torch.full((shape[0],), t, dtype=torch.int64, device=device))
        x0_hat = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        # sigma interpolates between DDIM (eta = 0, no fresh noise) and the DDPM posterior's
        # standard deviation (eta = 1); the direction term gives back the noise sigma leaves out.
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        z = torch.randn(shape, generator=generator, device=device)
        x = math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    return x
    ### END SOLUTION
