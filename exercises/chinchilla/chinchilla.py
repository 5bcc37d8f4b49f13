"""Compute-optimal training, in numpy (Hoffmann et al., 2022: Chinchilla).

For a budget of C = 6 N D training FLOPs, how should N parameters and D tokens split it? Hoffmann
et al. answered three ways. Their second approach trains models of several sizes at one budget
(an isoFLOP profile), fits a parabola to the loss against log N and reads off its minimum. Their
third fits a parametric loss surface, L(N, D) = E + A / N^alpha + B / D^beta, to every run at once,
by minimising the Huber loss of the residuals of log L with L-BFGS from a grid of starting points;
the optimum under C = 6 N D then follows in closed form. All three found that N and D should grow
at about the same rate, about C^0.5 each.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np

__all__ = [
    "compute_optimal",
    "fit_loss_surface",
    "fit_objective",
    "isoflop_minimum",
    "lbfgs",
    "loss_surface",
]

# The paper's grid of initialisations for theta = (e, a, b, alpha, beta), with E = exp(e),
# A = exp(a), B = exp(b): 5 x 6 x 6 x 5 x 5 = 4500 starting points, shape (4500, 5).
GRID = np.array(
    list(
        product(
            np.linspace(-1.0, 1.0, 5),  # e
            np.arange(0.0, 30.0, 5.0),  # a
            np.arange(0.0, 30.0, 5.0),  # b
            np.linspace(0.0, 2.0, 5),  # alpha
            np.linspace(0.0, 2.0, 5),  # beta
        )
    )
)


def loss_surface(
    N: np.ndarray, D: np.ndarray, E: float, A: float, B: float, alpha: float, beta: float
) -> np.ndarray:
    """The parametric loss L(N, D) = E + A / N^alpha + B / D^beta (the paper's equation 2).

    N (parameters) and D (tokens): numbers or float64 arrays that broadcast together; the result
    has their broadcast shape. E is the loss of a perfect model of the data (the entropy of text),
    A / N^alpha what a model of N parameters falls short of it, B / D^beta what D tokens of
    training fall short of convergence.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "loss_surface: not implemented yet; see exercises/chinchilla/README.md"
    )


def fit_objective(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    delta: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """The Huber loss of the log-space residuals, summed over the runs, and its gradient.

    theta: (5,) = (e, a, b, alpha, beta), or a batch (S, 5) of them. log_n, log_d, log_l: (R,), the
    natural logarithms of each run's N, D and final loss. For one run the model's log loss is
        log L_hat = logsumexp(a - alpha log N, b - beta log D, e)
    (the log of E + A / N^alpha + B / D^beta with E = e^e, A = e^a, B = e^b), the residual is
    r = log L_hat - log L, and Huber_delta(r) = r^2 / 2 if |r| <= delta, else
    delta (|r| - delta / 2). Returns (value, gradient), the gradient taken with respect to theta:
    value () and gradient (5,) for one theta, (S,) and (S, 5) for a batch.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "fit_objective: not implemented yet; see exercises/chinchilla/README.md"
    )


def lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iter: int = 500,
    memory: int = 10,
    gtol: float = 1e-10,
    ftol: float = 1e-10,
) -> tuple[np.ndarray, float]:
    """Minimise fun from x0 with L-BFGS (given: you need not change it).

    fun(x) returns (value, gradient) for x of shape (k,). Each step moves along the quasi-Newton
    direction built from the last `memory` steps and gradient changes (Nocedal's two-loop
    recursion), halving the step until the value falls enough (Armijo's rule). Stops when every
    entry of the gradient is within gtol of 0, when a step lowers the value by less than ftol
    times the value, when no step lowers it, or after max_iter steps. Returns (x, value).
    """
    x = np.array(x0, dtype=np.float64)
    value, grad = fun(x)
    steps, changes = [], []
    for _ in range(max_iter):
        if np.abs(grad).max() <= gtol:
            break
        q, rhos = grad.copy(), []
        for s, y in zip(reversed(steps), reversed(changes), strict=True):
            rhos.append((s @ q) / (y @ s))
            q -= rhos[-1] * y
        if steps:
            q *= (steps[-1] @ changes[-1]) / (changes[-1] @ changes[-1])
        for s, y, rho in zip(steps, changes, reversed(rhos), strict=True):
            q += (rho - (y @ q) / (y @ s)) * s
        direction = -q
        if not grad @ direction < 0:  # not a descent direction: forget the history
            direction, steps, changes = -grad, [], []
        t = 1.0 if steps else 1.0 / max(1.0, np.abs(grad).sum())
        while True:
            new_value, new_grad = fun(x + t * direction)
            if new_value <= value + 1e-4 * t * (grad @ direction):
                break
            t /= 2
            if t < 1e-20:
                return x, float(value)
        s, y = t * direction, new_grad - grad
        if s @ y > 1e-12 * (y @ y):  # keep only pairs with positive curvature
            steps, changes = [*steps, s][-memory:], [*changes, y][-memory:]
        converged = value - new_value <= ftol * abs(new_value)
        x, value, grad = x + s, new_value, new_grad
        if converged:
            break
    return x, float(value)


def fit_loss_surface(
    N: np.ndarray, D: np.ndarray, L: np.ndarray, delta: float = 1e-3, starts: int = 6
) -> tuple[float, float, float, float, float]:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta to training runs (the paper's third approach).

    N, D, L: (R,) positive, each run's parameters, tokens and final loss. Minimises the summed
    fit_objective over theta = (e, a, b, alpha, beta) with lbfgs, from the `starts` points of GRID
    where the objective is lowest (the paper starts from all 4500; the lowest few reach its best
    minimum), and keeps the lowest end. Returns the floats (E, A, B, alpha, beta) =
    (e^e, e^a, e^b, alpha, beta).
    """
    log_n, log_d, log_l = (np.log(np.asarray(v, dtype=np.float64)) for v in (N, D, L))
    if not log_n.shape == log_d.shape == log_l.shape or log_n.ndim != 1:
        raise ValueError(f"fit_loss_surface takes N, D, L of one shape (R,); got {log_n.shape}")

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        return fit_objective(theta, log_n, log_d, log_l, delta)

    # YOUR CODE HERE
    raise NotImplementedError(
        "fit_loss_surface: not implemented yet; see exercises/chinchilla/README.md"
    )


def compute_optimal(
    C: float | np.ndarray, E: float, A: float, B: float, alpha: float, beta: float
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """The N and D that minimise loss_surface(N, D) under the budget C = 6 N D (FLOPs).

    C: a number or a float64 array; returns (N_opt, D_opt), each shaped like C, with
        N_opt = G (C / 6)^(beta / (alpha + beta)),   D_opt = (C / 6)^(alpha / (alpha + beta)) / G,
        G = (alpha A / (beta B))^(1 / (alpha + beta)),
    so that 6 N_opt D_opt = C. E does not move the optimum; it is passed for symmetry with the fit.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "compute_optimal: not implemented yet; see exercises/chinchilla/README.md"
    )


def isoflop_minimum(N: np.ndarray, L: np.ndarray) -> tuple[float, float]:
    """The minimum of a parabola fitted to L against log N (the paper's second approach).

    N, L: (R,), R >= 3, the sizes and final losses of runs that spent one compute budget (an
    isoFLOP profile). Fits L = c2 (log N)^2 + c1 log N + c0 by least squares and returns the
    floats (N_opt, L_min) at its vertex. Raises ValueError if the parabola opens downwards (the
    runs show no valley).
    """
    log_n, L = np.log(np.asarray(N, dtype=np.float64)), np.asarray(L, dtype=np.float64)
    if log_n.ndim != 1 or log_n.shape != L.shape or len(np.unique(log_n)) < 3:
        raise ValueError(
            "isoflop_minimum takes N and L of one shape (R,) with 3 distinct N at least"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "isoflop_minimum: not implemented yet; see exercises/chinchilla/README.md"
    )
