"""Common mistakes in fitting and using the Chinchilla loss surface, each replacing one function."""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("chinchilla")

# -- the loss surface ---------------------------------------------------------------------------


@mutant(
    "loss_surface",
    "the exponents were applied to the ratios, (A / N)^alpha, as in Kaplan's (N_c / N)^alpha_N; "
    "Chinchilla's terms are A / N^alpha and B / D^beta",
)
def exponent_over_the_ratio(N, D, E, A, B, alpha, beta):
    N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return E + (A / N) ** alpha + (B / D) ** beta


# -- the objective ------------------------------------------------------------------------------


def _objective(theta, log_n, log_d, log_l, delta, *, huber=True, half=True, log_space=True):
    """The reference's objective with one mistake switched on: squared loss (huber=False), the
    linear piece without its - delta / 2 (half=False), or residuals of L (log_space=False)."""
    theta = np.asarray(theta, dtype=np.float64)
    e, a, b, alpha, beta = (theta[..., i, None] for i in range(5))
    model, data = a - alpha * log_n, b - beta * log_d
    terms = np.stack([model, data, np.broadcast_to(e, model.shape)])
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    log_pred = top + np.log(total)
    weights /= total
    if log_space:
        r, dr_dlog = log_pred - log_l, 1.0
    else:
        r, dr_dlog = np.exp(log_pred) - np.exp(log_l), np.exp(log_pred)
    if huber:
        linear = delta * (np.abs(r) - 0.5 * delta) if half else delta * np.abs(r)
        value = np.where(np.abs(r) <= delta, 0.5 * r**2, linear).sum(-1)
        dr = np.clip(r, -delta, delta)
    else:
        value, dr = (0.5 * r**2).sum(-1), r
    g_a, g_b, g_e = weights * dr * dr_dlog
    grad = np.stack(
        [g_e.sum(-1), g_a.sum(-1), g_b.sum(-1), -(g_a * log_n).sum(-1), -(g_b * log_d).sum(-1)],
        axis=-1,
    )
    return value, grad


@mutant(
    "fit_objective",
    "the residuals are squared everywhere; the Huber loss is linear beyond delta, so that runs far "
    "off the surface (outliers) pull on the fit no harder than delta each",
)
def squared_loss_not_huber(theta, log_n, log_d, log_l, delta=1e-3):
    with np.errstate(over="ignore", invalid="ignore"):  # the worst grid points overflow
        return _objective(theta, log_n, log_d, log_l, delta, huber=False)


@mutant(
    "fit_objective",
    "the residuals are taken between the losses, L_hat - L; the paper's are between their "
    "logarithms, log L_hat - log L",
)
def residuals_of_the_loss_not_its_log(theta, log_n, log_d, log_l, delta=1e-3):
    with np.errstate(over="ignore", invalid="ignore"):
        return _objective(theta, log_n, log_d, log_l, delta, log_space=False)


@mutant(
    "fit_objective",
    "beyond delta the Huber loss is delta (|r| - delta / 2); without the - delta / 2 its two "
    "pieces do not meet at |r| = delta",
)
def huber_linear_piece_without_the_half(theta, log_n, log_d, log_l, delta=1e-3):
    return _objective(theta, log_n, log_d, log_l, delta, half=False)


# -- the fit ------------------------------------------------------------------------------------


@mutant(
    "fit_loss_surface",
    "the fit returns the log-parameters e, a, b; the surface's E, A, B are their exponentials",
)
def returns_log_parameters(N, D, L, delta=1e-3, starts=6):
    E, A, B, alpha, beta = ref.fit_loss_surface(N, D, L, delta, starts)
    return float(np.log(E)), float(np.log(A)), float(np.log(B)), alpha, beta


@mutant(
    "fit_loss_surface",
    "L-BFGS started from the grid points where the objective is highest; np.argsort sorts "
    "upwards, so the lowest come first: take np.argsort(values)[:starts]",
)
def starts_from_the_worst_grid_points(N, D, L, delta=1e-3, starts=6):
    log_n, log_d, log_l = (np.log(np.asarray(v, dtype=np.float64)) for v in (N, D, L))

    def objective(theta):
        return ref.fit_objective(theta, log_n, log_d, log_l, delta)

    values, _ = objective(ref.GRID)
    fits = [ref.lbfgs(objective, theta) for theta in ref.GRID[np.argsort(values)[-starts:]]]
    e, a, b, alpha, beta = min(fits, key=lambda fit: fit[1])[0]
    return float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta)


# -- the compute-optimal split ------------------------------------------------------------------


@mutant(
    "compute_optimal",
    "the exponents are swapped: N_opt grows as C^(beta / (alpha + beta)) and D_opt as "
    "C^(alpha / (alpha + beta)), each with the other term's exponent",
)
def exponents_swapped(C, E, A, B, alpha, beta):
    nd = np.asarray(C, dtype=np.float64) / 6
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = g * nd ** (alpha / (alpha + beta))
    return n_opt, nd / n_opt


@mutant(
    "compute_optimal",
    "the budget was taken as C = N D; training costs C = 6 N D FLOPs, so N_opt D_opt = C / 6",
)
def budget_without_the_six(C, E, A, B, alpha, beta):
    return ref.compute_optimal(6 * np.asarray(C, dtype=np.float64), E, A, B, alpha, beta)


@mutant(
    "compute_optimal",
    "G is upside down: the optimum balances alpha A / N^alpha = beta B / D^beta, so "
    "G = (alpha A / (beta B))^(1 / (alpha + beta))",
)
def ratio_upside_down(C, E, A, B, alpha, beta):
    nd = np.asarray(C, dtype=np.float64) / 6
    g = (beta * B / (alpha * A)) ** (1 / (alpha + beta))
    n_opt = g * nd ** (beta / (alpha + beta))
    return n_opt, nd / n_opt


# -- the isoFLOP parabola -----------------------------------------------------------------------


@mutant(
    "isoflop_minimum",
    "the parabola was fitted against N itself; the isoFLOP valley is a parabola in log N",
)
def parabola_in_n_not_log_n(N, L):
    N, L = np.asarray(N, dtype=np.float64), np.asarray(L, dtype=np.float64)
    scale = N.mean()
    c2, c1, c0 = np.polyfit(N / scale, L, 2)
    if c2 <= 0:
        raise ValueError("isoflop_minimum: the fitted parabola has no minimum (it opens downwards)")
    u = -c1 / (2 * c2)
    return float(u * scale), float(c0 - c1**2 / (4 * c2))


@mutant(
    "isoflop_minimum",
    "the run with the lowest loss was returned; the minimum is the fitted parabola's vertex, "
    "which usually lies between two runs",
)
def best_run_not_the_vertex(N, L):
    N, L = np.asarray(N, dtype=np.float64), np.asarray(L, dtype=np.float64)
    i = int(np.argmin(L))
    return float(N[i]), float(L[i])


@mutant(
    "isoflop_minimum",
    "the vertex of c2 u^2 + c1 u + c0 is at u = -c1 / (2 c2), not -c1 / c2",
)
def vertex_without_the_two(N, L):
    log_n, L = np.log(np.asarray(N, dtype=np.float64)), np.asarray(L, dtype=np.float64)
    mid = log_n.mean()
    c2, c1, c0 = np.polyfit(log_n - mid, L, 2)
    if c2 <= 0:
        raise ValueError("isoflop_minimum: the fitted parabola has no minimum (it opens downwards)")
    u = -c1 / c2
    return float(np.exp(mid + u)), float(c2 * u**2 + c1 * u + c0)
