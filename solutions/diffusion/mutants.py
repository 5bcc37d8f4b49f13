"""Common mistakes in diffusion, each replacing one function (or method) of the reference."""

import math

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("diffusion")


@mutant(
    "linear_beta_schedule",
    "the betas run from 1e-4 to 0.02 whatever T is: scale both ends by 1000 / T",
)
def linear_not_rescaled(T):
    return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)


@mutant(
    "cosine_beta_schedule",
    "the betas are not clipped at 0.999: the last one is 1 and wipes x out entirely",
)
def cosine_not_clipped(T, s=0.008):
    u = torch.arange(T + 1, dtype=torch.float64) / T
    alpha_bar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return 1 - alpha_bar[1:] / alpha_bar[:-1]


@mutant("cosine_beta_schedule", "the offset s is left out of cos((t/T + s) / (1 + s) * pi/2)")
def cosine_without_offset(T, s=0.008):
    return ref.cosine_beta_schedule(T, s=0.0)


@mutant(
    "Schedule.__init__",
    "alpha_bars is off by one: alpha_bars[t] multiplies alphas[0 .. t], so alpha_bars[0] is "
    "alphas[0], not 1",
)
def alpha_bars_off_by_one(self, betas):
    self.betas = betas.to(torch.float64)
    self.alphas = 1 - self.betas
    self.alpha_bars = torch.cat([self.alphas.new_ones(1), torch.cumprod(self.alphas, 0)[:-1]])


def _coefficient(values, t, like):
    return values[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


@mutant(
    "q_sample",
    "q_sample scales by alpha_bar and 1 - alpha_bar, the variances, not by their square roots",
)
def q_sample_without_square_roots(x0, t, noise, schedule):
    a = _coefficient(schedule.alpha_bars, t, x0)
    return a * x0 + (1 - a) * noise


@mutant(
    "q_sample",
    "q_sample uses alpha_t, one step's factor, where the cumulative alpha_bar_t belongs",
)
def q_sample_with_one_step_alpha(x0, t, noise, schedule):
    a = _coefficient(schedule.alphas, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _draws(x0, schedule, generator, low=0):
    t = torch.randint(low, schedule.T, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return t, noise


@mutant("ddpm_loss", "the model is trained to predict x0, not the noise that was added")
def loss_targets_x0(model, x0, schedule, generator):
    t, noise = _draws(x0, schedule, generator)
    return (model(ref.q_sample(x0, t, noise, schedule), t) - x0).square().mean()


@mutant(
    "ddpm_loss",
    "the target is a fresh draw of noise, not the noise that q_sample put into x_t",
)
def target_noise_drawn_again(model, x0, schedule, generator):
    t, noise = _draws(x0, schedule, generator)
    target = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return (model(ref.q_sample(x0, t, noise, schedule), t) - target).square().mean()


@mutant(
    "ddpm_loss",
    "t is drawn from 1 .. T-1: the paper's t = 1 .. T is 0 .. T-1 here, so step 0 never trains",
)
def steps_drawn_from_one(model, x0, schedule, generator):
    t, noise = _draws(x0, schedule, generator, low=1)
    return (model(ref.q_sample(x0, t, noise, schedule), t) - noise).square().mean()


@mutant(
    "ddpm_loss",
    "the squared errors are summed, not averaged: the loss, and the step size it needs, grow with "
    "the batch",
)
def loss_summed(model, x0, schedule, generator):
    t, noise = _draws(x0, schedule, generator)
    return (model(ref.q_sample(x0, t, noise, schedule), t) - noise).square().sum()


@mutant(
    "posterior_mean_variance",
    "the posterior's variance is beta_t, the forward step's; it is beta_t (1 - alpha_bar_(t-1)) / "
    "(1 - alpha_bar_t)",
)
def posterior_variance_is_beta(x0, x_t, t, schedule):
    mean, _ = ref.posterior_mean_variance(x0, x_t, t, schedule)
    return mean, _coefficient(schedule.betas, t, x_t).expand_as(x_t)


@mutant(
    "posterior_mean_variance",
    "the posterior mean's two coefficients are swapped between x0 and x_t",
)
def posterior_coefficients_swapped(x0, x_t, t, schedule):
    return ref.posterior_mean_variance(x_t, x0, t, schedule)


def _p_sample_with(model, x_t, t, schedule, generator, mean_of=None, scale_of=torch.sqrt):
    """The reference's step with its mean or its noise scale swapped for a mistaken one."""
    steps = torch.full((x_t.shape[0],), t, dtype=torch.int64, device=x_t.device)
    a_bar = _coefficient(schedule.alpha_bars, steps, x_t)
    eps = model(x_t, steps)
    x0_hat = (x_t - (1 - a_bar).sqrt() * eps) / a_bar.sqrt()
    mean, variance = ref.posterior_mean_variance(x0_hat, x_t, steps, schedule)
    if mean_of is not None:
        mean = mean_of(x_t, eps, _coefficient(schedule.betas, steps, x_t), a_bar)
    if t == 0:
        return mean
    z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + scale_of(variance) * z


@mutant(
    "p_sample",
    "the noise z is scaled by the variance, not by its square root (the standard deviation)",
)
@torch.no_grad()
def p_sample_noise_times_variance(model, x_t, t, schedule, generator):
    return _p_sample_with(model, x_t, t, schedule, generator, scale_of=lambda v: v)


@mutant(
    "p_sample",
    "Algorithm 2's mean divides by sqrt(alpha_bar_t); it is 1 / sqrt(alpha_t), one step's alpha",
)
@torch.no_grad()
def p_sample_mean_with_alpha_bar(model, x_t, t, schedule, generator):
    def mean_of(x_t, eps, beta, a_bar):
        return (x_t - beta / (1 - a_bar).sqrt() * eps) / a_bar.sqrt()

    return _p_sample_with(model, x_t, t, schedule, generator, mean_of=mean_of)


def _ddim_with(model, shape, schedule, steps, eta, generator, visited=None, sigma_in_dir=True):
    """The reference's DDIM loop with its timesteps, or its direction term, swapped."""
    device = generator.device
    x = torch.randn(shape, generator=generator, device=device)
    visited = visited or ref.ddim_timesteps(schedule.T, steps)
    a_bars = schedule.alpha_bars.tolist()
    for t, t_prev in zip(reversed(visited), [*reversed(visited[:-1]), -1], strict=True):
        a_t, a_prev = a_bars[t], (a_bars[t_prev] if t_prev >= 0 else 1.0)
        eps = model(x, torch.full((shape[0],), t, dtype=torch.int64, device=device))
        x0_hat = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        z = torch.randn(shape, generator=generator, device=device)
        direction = math.sqrt(1 - a_prev - (sigma**2 if sigma_in_dir else 0.0))
        x = math.sqrt(a_prev) * x0_hat + direction * eps + sigma * z
    return x


@mutant(
    "ddim_sample",
    "the timesteps are 0, T/S, 2T/S, ... ('leading'): sampling never starts from T - 1, the "
    "noisiest step",
)
@torch.no_grad()
def ddim_leading_timesteps(model, shape, schedule, steps, eta, generator):
    leading = [i * (schedule.T // steps) for i in range(steps)]
    return _ddim_with(model, shape, schedule, steps, eta, generator, visited=leading)


@mutant(
    "ddim_sample",
    "the direction term is sqrt(1 - alpha_bar_prev) eps: it must leave out the sigma^2 that "
    "fresh noise brings",
)
@torch.no_grad()
def ddim_direction_ignores_sigma(model, shape, schedule, steps, eta, generator):
    return _ddim_with(model, shape, schedule, steps, eta, generator, sigma_in_dir=False)


@mutant(
    "q_sample",
    "q_sample noises one example at a time in a Python loop: index alpha_bars with the whole t",
    slow=True,
)
def q_sample_loop_over_examples(x0, t, noise, schedule):
    out = torch.empty_like(x0)
    for i in range(x0.shape[0]):
        a = schedule.alpha_bars[t[i]].to(x0.dtype)
        out[i] = a.sqrt() * x0[i] + (1 - a).sqrt() * noise[i]
    return out
