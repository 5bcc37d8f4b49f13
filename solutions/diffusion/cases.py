"""Hidden cases for diffusion: schedule lengths, shapes, dtypes and models unlike the specs'.

Every call builds the learner's own Schedule from betas made here, and every model is defined in
the call (any model keeping the contract model(x, t) -> noise must work). The loss case is judged
by what the learner's ddpm_loss fed its model, not by its draws, so the order of the draws is
free; its statistical checks fail a correct ddpm_loss with chance below 1e-7.
"""

import math

import numpy as np
import torch

from graders.cases import Case
from graders.checks import chernoff_gap

DELTA = 1e-7  # the false-failure chance the statistical case allows itself
Z = 6.0  # 6-sigma bounds: chance 2e-9 each


def linear(T):
    return torch.linspace(0.1 / T, 20.0 / T, T, dtype=torch.float64)


def cosine(T, s=0.008):
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def alpha_bars(betas):
    return torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), 0)


# ---------------------------------------------------------------------------- schedules


def schedules(m, T_linear, T_cosine, s):
    return {
        "linear": m.linear_beta_schedule(T_linear),
        "cosine": m.cosine_beta_schedule(T_cosine, s=s),
        "cosine, default s": m.cosine_beta_schedule(T_cosine),
    }


def schedule_inputs(seed):
    return {"T_linear": 4000, "T_cosine": 333, "s": 0.02}


def products(m, betas):
    s = m.Schedule(betas)
    return {"betas": s.betas, "alphas": s.alphas, "alpha_bars": s.alpha_bars}


def products_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"betas": torch.rand(77, generator=g, dtype=torch.float64) * 0.3 + 1e-3}


# ---------------------------------------------------------------------------- forward and posterior


def noised(m, betas, x0, t, noise):
    return m.q_sample(x0, t, noise, m.Schedule(betas))


def images_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    T = 500
    t = torch.randint(0, T, (6,), generator=g)
    t[0], t[-1] = 0, T - 1
    return {
        "betas": cosine(T),
        "x0": torch.randn(6, 3, 5, 5, generator=g),
        "t": t,
        "noise": torch.randn(6, 3, 5, 5, generator=g),
    }


def vectors_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    T = 250
    return {
        "betas": linear(T),
        "x0": torch.randn(9, 7, generator=g, dtype=torch.float64),
        "t": torch.tensor([0, 1, 2, 50, 100, 150, 200, 248, 249]),
        "noise": torch.randn(9, 7, generator=g, dtype=torch.float64),
    }


def posterior(m, betas, x0, x_t, t):
    mean, variance = m.posterior_mean_variance(x0, x_t, t, m.Schedule(betas))
    return {"mean": mean, "variance": variance}


def posterior_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    T = 300
    t = torch.randint(0, T, (5,), generator=g)
    t[0], t[-1] = 0, T - 1
    return {
        "betas": cosine(T),
        "x0": torch.randn(5, 4, 4, generator=g, dtype=torch.float64),
        "x_t": torch.randn(5, 4, 4, generator=g, dtype=torch.float64),
        "t": t,
    }


def reverse_steps(m, betas, x_t, steps, seed):
    """One p_sample from x_t at each t in steps, each with its own generator."""
    import torch

    def model(x, t):  # any function of (x, t) keeps the contract
        return 0.3 * x + 0.1 * torch.sin(2 * x) + 0.002 * t.to(x.dtype)[:, None]

    s = m.Schedule(betas)
    return [
        m.p_sample(
            model,
            x_t,
            int(t),
            s,
            torch.Generator(x_t.device).manual_seed(int(seed) + 1000 + int(t)),
        )
        for t in steps
    ]


def reverse_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "betas": cosine(200),
        "x_t": torch.randn(4, 5, generator=g, dtype=torch.float64),
        "steps": [0, 1, 57, 199],
        "seed": seed,
    }


# ---------------------------------------------------------------------------- the loss


def loss_seen_by_the_model(m, betas, x0, seed):
    """ddpm_loss with a model that records what it is fed: the loss, its x_t and t, and calls."""
    import torch

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
            self.seen = []

        def forward(self, x, t):
            self.seen.append((x.detach().clone(), t.detach().clone()))
            return self.w * torch.tanh(x) + 0.01 * t.to(x.dtype)[:, None]

    model = Recorder().to(x0.device)
    g = torch.Generator(x0.device).manual_seed(int(seed) + 1)  # not x0's stream
    loss = m.ddpm_loss(model, x0, m.Schedule(betas), g)
    x_t, t = model.seen[0] if model.seen else (torch.zeros(0), torch.zeros(0))
    return {"loss": float(loss.detach()), "x_t": x_t, "t": t, "calls": len(model.seen)}


def loss_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "betas": cosine(30),
        "x0": torch.randn(30_000, 2, generator=g, dtype=torch.float64),
        "seed": seed,
    }


def _model_output(x_t, t):
    return 0.7 * np.tanh(x_t) + 0.01 * t[:, None]


def loss_problem(out, inputs):
    """What is wrong with a ddpm_loss's record (None: nothing), judged from x_t, t and the loss."""
    x0, betas = np.asarray(inputs["x0"]), np.asarray(inputs["betas"])
    T, B = len(betas), len(x0)
    x_t, t = np.asarray(out["x_t"], dtype=np.float64), np.asarray(out["t"])
    if out["calls"] != 1:
        return f"ddpm_loss called the model {out['calls']} times; once, on the whole batch"
    if x_t.shape != x0.shape or t.shape != (B,) or t.dtype.kind not in "iu":
        return (
            f"ddpm_loss called the model with x {x_t.shape} and t {t.dtype} {t.shape}; expected "
            f"x {x0.shape} and t ({B},) int64"
        )
    if t.min() < 0 or t.max() >= T:
        return f"ddpm_loss drew steps {t.min()} .. {t.max()}; they run 0 .. T - 1 = {T - 1}"
    counts = np.bincount(t, minlength=T)
    for k, n in enumerate(counts):
        if chernoff_gap(n, B, 1 / T, T, DELTA):  # Chernoff per step, union over the T steps
            return (
                f"ddpm_loss drew step {k} {n} times in {B}; uniform steps 0 .. {T - 1} give about "
                f"{B // T} each (a gap this large has chance < {DELTA:g})"
            )
    a_bar = np.cumprod(1 - betas)[t][:, None]
    noise = (x_t - np.sqrt(a_bar) * x0) / np.sqrt(1 - a_bar)
    n, mean, var = noise.size, noise.mean(), noise.var()
    if abs(mean) * math.sqrt(n) > Z or abs(var - 1) > Z * math.sqrt(2 / n):
        return (
            f"the noise in the x_t that ddpm_loss fed its model has mean {mean:.4f} and variance "
            f"{var:.4f}; x_t = q_sample(x0, t, noise) with standard normal noise gives 0 and 1"
        )
    expected = float(np.mean((_model_output(x_t, t) - noise) ** 2))
    if not math.isclose(out["loss"], expected, rel_tol=1e-7, abs_tol=1e-12):
        return (
            f"ddpm_loss returned {out['loss']:.6g}; the mean of (model(x_t, t) - noise)^2 with the "
            f"noise behind the x_t the model saw is {expected:.6g}"
        )
    return None


def loss_features(out, inputs):
    """A mistake's fingerprint, whatever the draws: per step, how much of x0 the x_t holds and how
    much noise is left (each with its standard error), the steps never drawn, and which target
    the loss regressed on."""
    x0 = np.asarray(inputs["x0"])
    x_t, t = np.asarray(out["x_t"], dtype=np.float64), np.asarray(out["t"])
    if out["calls"] != 1 or x_t.shape != x0.shape or t.shape != x0.shape[:1]:
        return None
    T = len(inputs["betas"])
    fit = np.zeros((4, T))  # signal, its standard error, spread, its standard error
    for k in range(T):
        rows = t == k
        if rows.sum() > 1:
            power = (x0[rows] ** 2).sum()
            signal = (x_t[rows] * x0[rows]).sum() / power  # x_t = signal x0 + spread noise
            spread = (x_t[rows] - signal * x0[rows]).std()
            fit[:, k] = (
                signal,
                spread / math.sqrt(power),
                spread,
                spread / math.sqrt(2 * rows.sum()),
            )
    guess = _model_output(x_t, t)
    a_bar = np.cumprod(1 - np.asarray(inputs["betas"]))[t.clip(0, T - 1)][:, None]
    targets = {"x0": x0, "noise": (x_t - np.sqrt(a_bar) * x0) / np.sqrt(1 - a_bar)}
    target = next(
        (
            f"{reduce.__name__} of (guess - {name})^2"
            for name, v in targets.items()
            for reduce in (np.mean, np.sum)
            if math.isclose(out["loss"], reduce((guess - v) ** 2))
        ),
        "other",
    )
    return fit, np.bincount(t.clip(0, T), minlength=T + 1) == 0, target


def compare_loss(actual, expected, inputs):
    """Against the reference: the learner's record must pass every check. Against a mutant (for
    the diagnosis): the same fingerprint, within 6 standard errors."""
    if loss_problem(expected, inputs) is None:
        return loss_problem(actual, inputs)
    mine, theirs = loss_features(actual, inputs), loss_features(expected, inputs)
    if mine is None or theirs is None:
        return "not the same mistake"
    (a, never_a, target_a), (b, never_b, target_b) = mine, theirs
    close = all(
        (np.abs(a[i] - b[i]) <= Z * np.hypot(a[i + 1], b[i + 1]) + 0.01).all() for i in (0, 2)
    )
    same = close and (never_a == never_b).all() and target_a == target_b
    return None if same else "not the same mistake"


# ---------------------------------------------------------------------------- DDIM


def sampled(m, betas, shape, steps, eta, seed):
    """ddim_sample with a denoiser defined here (exact for N(0, 0.25 I) data, plus a wiggle)."""
    import torch

    a_bars = torch.cumprod(1 - betas, 0)

    def model(x, t):
        a = a_bars[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * x / (0.25 * a + 1 - a) + 0.2 * a.sqrt() * torch.cos(2 * x)

    g = torch.Generator(betas.device).manual_seed(int(seed))
    return m.ddim_sample(model, tuple(shape), m.Schedule(betas), int(steps), float(eta), g)


def ddim_inputs(seed):
    return {"betas": linear(140), "shape": [64, 3], "steps": 7, "eta": 0.3, "seed": seed}


def ddim_ho_inputs(seed):
    return {"betas": linear(1000), "shape": [32, 2], "steps": 20, "eta": 0.0, "seed": seed}


# ---------------------------------------------------------------------------- speed


def noised_many_times(m, betas, x0, t, noise, repeats):
    s = m.Schedule(betas)
    for _ in range(int(repeats)):
        out = m.q_sample(x0, t, noise, s)
    return out[:, :8]


def speed_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    B, D, T = 2048, 1024, 1000
    return {
        "betas": linear(T),
        "x0": torch.randn(B, D, generator=g),
        "t": torch.randint(0, T, (B,), generator=g),
        "noise": torch.randn(B, D, generator=g),
        "repeats": 2,
    }


CASES = [
    Case(
        "linear schedule at T = 4000, cosine at T = 333 (s = 0.02 and the default)",
        call=schedules,
        inputs=schedule_inputs,
        points=2,
        rtol=1e-9,
        atol=1e-12,
    ),
    Case(
        "Schedule's running products over 77 random betas",
        call=products,
        inputs=products_inputs,
        points=1,
        seed=101,
        rtol=1e-12,
        atol=1e-15,
    ),
    Case(
        "q_sample on a batch of 6 images (3, 5, 5), float32, cosine schedule T = 500",
        call=noised,
        inputs=images_inputs,
        points=2,
        seed=202,
    ),
    Case(
        "q_sample on 9 vectors, float64, linear schedule T = 250, first and last steps",
        call=noised,
        inputs=vectors_inputs,
        points=1,
        seed=303,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "posterior_mean_variance on (5, 4, 4), float64, cosine T = 300",
        call=posterior,
        inputs=posterior_inputs,
        points=2,
        seed=404,
        rtol=1e-10,
        atol=1e-12,
    ),
    Case(
        "p_sample at t = 0, 1, 57 and 199 with a model defined by the grader",
        call=reverse_steps,
        inputs=reverse_inputs,
        points=2,
        seed=505,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "ddpm_loss: what the model is fed (30,000 examples, T = 30) and the loss it returns",
        call=loss_seen_by_the_model,
        inputs=loss_inputs,
        points=3,
        seed=606,
        compare=compare_loss,
    ),
    Case(
        "ddim_sample, 7 of 140 steps, eta = 0.3, shape (64, 3)",
        call=sampled,
        inputs=ddim_inputs,
        points=2,
        seed=707,
        rtol=1e-3,
        atol=1e-3,
    ),
    Case(
        "ddim_sample, 20 of Ho et al.'s 1000 steps, eta = 0",
        call=sampled,
        inputs=ddim_ho_inputs,
        points=1,
        seed=808,
        rtol=1e-3,
        atol=1e-3,
    ),
    Case(
        "speed: q_sample on 2048 examples of 1024 values, twice",
        call=noised_many_times,
        inputs=speed_inputs,
        points=0.5,
        seed=909,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
