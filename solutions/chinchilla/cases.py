"""Hidden grading cases for chinchilla: surfaces, designs, noise and deltas unlike the public
specs'.

Every case is deterministic (inputs from a fixed seed). Closed forms are compared to 1e-10 or so.
The fits are compared to 1e-4 relative: two sound implementations of the objective, run through
the given lbfgs from the same starts, end within about 1e-7 of each other (rounding steers their
paths a little apart), while a different minimum or a wrong objective is off by 1e-3 and more.
"""

import numpy as np

from graders.cases import Case

# Besiroglu, Erdil, Barnett and You (2024) refitted the paper's third approach to data read off its
# figure and found these constants (rounded here), which agree with the first two approaches.
REFIT = {"E": 1.82, "A": 482.0, "B": 2085.4, "alpha": 0.35, "beta": 0.37}
FIT = {"rtol": 1e-4, "atol": 1e-12}

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def surface_grid(m, N, D, E, A, B, alpha, beta):
    import numpy as np

    return np.asarray(m.loss_surface(N, D, E, A, B, alpha, beta))


def objective_batch(m, theta, log_n, log_d, log_l, delta):
    import numpy as np

    value, grad = m.fit_objective(theta, log_n, log_d, log_l, delta)
    return {"value": np.asarray(value, dtype=np.float64), "grad": np.asarray(grad)}


def fit(m, N, D, L):
    return [float(v) for v in m.fit_loss_surface(N, D, L)]


def optimal_split(m, C, E, A, B, alpha, beta):
    import numpy as np

    n_opt, d_opt = m.compute_optimal(C, E, A, B, alpha, beta)
    return {"N_opt": np.asarray(n_opt, dtype=np.float64), "D_opt": np.asarray(d_opt)}


def isoflop_profiles(m, N, L):
    """isoflop_minimum on each row of N and L (profiles, runs); 'ValueError' where it raises."""
    out = []
    for n, loss in zip(N, L, strict=True):
        try:
            out.append([float(v) for v in m.isoflop_minimum(n, loss)])
        except ValueError:
            out.append("ValueError")
    return out


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def _surface(n, d, c):
    return c["E"] + c["A"] / n ** c["alpha"] + c["B"] / d ** c["beta"]


def _runs(c, budgets, sizes, noise, seed, outliers=0):
    """At each budget, `sizes` models over 1.4 decades around 20 tokens per parameter."""
    rng = np.random.default_rng(seed)
    n = np.concatenate(
        [
            np.sqrt(b / 120) * np.logspace(-0.7, 0.7, sizes) * 10 ** rng.uniform(-0.1, 0.1, sizes)
            for b in budgets
        ]
    )
    d = np.repeat(budgets, sizes) / (6 * n)
    loss = _surface(n, d, c) * np.exp(rng.normal(0, noise, n.size))
    loss[rng.choice(n.size, outliers, replace=False)] *= 1.2
    return {"N": n, "D": d, "L": loss}


def refit_grid(seed):
    rng = np.random.default_rng(seed)
    return {
        "N": 10 ** rng.uniform(7, 12, (6, 1)),
        "D": 10 ** rng.uniform(9, 13, (1, 7)),
        **REFIT,
    }


def objective_inputs(seed, delta):
    rng = np.random.default_rng(seed)
    runs = _runs(REFIT, np.geomspace(1e18, 1e21, 5), 8, 0.01, seed)
    theta = np.column_stack(
        [rng.uniform(-1, 1, 16), rng.uniform(0, 25, (16, 2)), rng.uniform(0, 2, (16, 2))]
    )
    theta[0] = [np.log(1.8), np.log(480), np.log(2000), 0.35, 0.37]  # near the optimum
    return {
        "theta": theta,
        "log_n": np.log(runs["N"]),
        "log_d": np.log(runs["D"]),
        "log_l": np.log(runs["L"]),
        "delta": delta,
    }


def objective_small_delta(seed):
    return objective_inputs(seed, 1e-3)


def objective_large_delta(seed):
    inputs = objective_inputs(seed, 0.05)
    inputs["theta"] = inputs["theta"][3]  # one theta: value () and gradient (5,)
    return inputs


def refit_exact(seed):
    return _runs(REFIT, np.array([3e18, 1e19, 3e19, 1e20, 3e20, 1e21, 3e21]), 7, 0.0, seed)


def refit_noisy_outliers(seed):
    return _runs(REFIT, np.geomspace(1e18, 1e21, 6), 8, 0.005, seed, outliers=4)


def other_surface(seed):
    c = {"E": 2.4, "A": 90.0, "B": 5000.0, "alpha": 0.25, "beta": 0.45}
    return _runs(c, np.geomspace(1e17, 1e20, 5), 6, 0.03, seed)


def big_sweep(seed):
    return _runs(REFIT, np.geomspace(1e18, 1e22, 12), 12, 0.004, seed, outliers=6)


def budgets(seed):
    rng = np.random.default_rng(seed)
    return {"C": 10 ** rng.uniform(18, 26, 11), **REFIT}


def profiles(seed):
    # Six isoFLOP profiles of the refit surface, 5 to 11 runs each, unevenly spaced and off-centre,
    # with 0.2% noise; the last is a hill (no minimum), which must raise ValueError.
    rng = np.random.default_rng(seed)
    ns, losses = [], []
    for k, budget in enumerate(np.geomspace(1e18, 1e23, 6)):
        n = np.sqrt(budget / 120) * 10 ** np.sort(rng.uniform(-0.8, 0.9, 11))
        loss = _surface(n, budget / (6 * n), REFIT) * np.exp(rng.normal(0, 0.002, n.size))
        if k == 5:
            loss = 3.0 - 0.05 * (np.log(n) - np.log(n).mean()) ** 2
        ns.append(n)
        losses.append(loss)
    return {"N": np.array(ns), "L": np.array(losses)}


CASES = [
    Case(
        "the loss surface of the 2024 refit on a 6 x 7 grid",
        call=surface_grid,
        inputs=refit_grid,
        points=1,
        seed=11,
        rtol=1e-12,
    ),
    Case(
        "the objective and its gradient for 16 thetas, delta 1e-3",
        call=objective_batch,
        inputs=objective_small_delta,
        points=2,
        seed=22,
        rtol=1e-9,
        atol=1e-14,
    ),
    Case(
        "the objective and its gradient for one theta, delta 0.05",
        call=objective_batch,
        inputs=objective_large_delta,
        points=1,
        seed=33,
        rtol=1e-9,
        atol=1e-14,
    ),
    Case(
        "the fit on 49 exact runs of the 2024 refit",
        call=fit,
        inputs=refit_exact,
        points=2,
        seed=44,
        **FIT,
    ),
    Case(
        "the fit on 48 runs with 0.5% noise and 4 outliers",
        call=fit,
        inputs=refit_noisy_outliers,
        points=2,
        seed=55,
        **FIT,
    ),
    Case(
        "the fit of another surface, 30 runs with 3% noise",
        call=fit,
        inputs=other_surface,
        points=1,
        seed=33,
        **FIT,
    ),
    Case(
        "the compute-optimal split of 11 budgets from 1e18 to 1e26",
        call=optimal_split,
        inputs=budgets,
        points=2,
        seed=77,
        rtol=1e-10,
    ),
    Case(
        "isoFLOP minima of six profiles, one of them a hill",
        call=isoflop_profiles,
        inputs=profiles,
        points=2,
        seed=88,
        rtol=1e-8,
    ),
    Case(
        "the fit on 144 runs over four decades of compute (speed)",
        call=fit,
        inputs=big_sweep,
        points=1,
        seed=99,
        speed_ratio=5.0,
        speed_points=1,
        **FIT,
    ),
]
