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
    # YOUR CODE HERE
    raise NotImplementedError(
        "linear_beta_schedule: not implemented yet; see exercises/diffusion/README.md"
    )


def cosine_beta_schedule(T: int, s: float = 0.008) -> Tensor:
    """Nichol and Dhariwal's cosine schedule, from f(u) = cos((u + s) / (1 + s) * pi/2)^2.

    alpha_bar(t) = f(t / T) / f(0) for t = 0 .. T, and beta for step t = 0 .. T-1 is
    1 - alpha_bar(t + 1) / alpha_bar(t), clipped to at most 0.999. Returns (T,) float64.
    """
    if T < 1:
        raise ValueError(f"cosine_beta_schedule needs T >= 1; got {T}")
    # YOUR CODE HERE
    raise NotImplementedError(
        "cosine_beta_schedule: not implemented yet; see exercises/diffusion/README.md"
    )


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
        # YOUR CODE HERE
        raise NotImplementedError(
            "Schedule.__init__: not implemented yet; see exercises/diffusion/README.md"
        )

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
    # YOUR CODE HERE
    raise NotImplementedError("q_sample: not implemented yet; see exercises/diffusion/README.md")


def ddpm_loss(model: Model, x0: Tensor, schedule: Schedule, generator: torch.Generator) -> Tensor:
    """Ho et al.'s simplified loss: mean over every value of (model(x_t, t) - noise)^2.

    For a batch x0 (B, ...): t uniform on 0 .. T-1 per example, noise standard normal like x0, both
    drawn from `generator`; x_t = q_sample(x0, t, noise). Returns a scalar that autograd follows
    back to the model's parameters.
    """
    # YOUR CODE HERE
    raise NotImplementedError("ddpm_loss: not implemented yet; see exercises/diffusion/README.md")


def posterior_mean_variance(
    x0: Tensor, x_t: Tensor, t: Tensor, schedule: Schedule
) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0), the forward process run backwards (eqs. 6-7).

    Shapes: x0 and x_t (B, ...), t (B,) int64 -> (mean, variance), both shaped like x_t. At t = 0
    the step before is the data itself: mean x0, variance 0 (alpha_bar before step 0 is 1).
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "posterior_mean_variance: not implemented yet; see exercises/diffusion/README.md"
    )


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
    # YOUR CODE HERE
    raise NotImplementedError("p_sample: not implemented yet; see exercises/diffusion/README.md")


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
    # YOUR CODE HERE
    raise NotImplementedError("ddim_sample: not implemented yet; see exercises/diffusion/README.md")
