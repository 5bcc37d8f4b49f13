"""Checkpoint 3, "predict before you train": your parameter and FLOP counts, checked against
torch's own FLOP counter, and your power-law fit predict the loss of the widest run of a sweep of
tiny GPTs from the narrower ones; your loss surface fit and compute-optimal split match the
reference's on the same runs.

Run `pytest exercises/checkpoint_3`. Every piece comes from your own exercises (`load_impl`); the
runs are data the kit ships (data/checkpoint_3/sweep.json, made once by make_sweep.py with the
reference GPT). The first specs referee each piece on its own, the last four run them together.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from graders.checks import assert_close, fail
from graders.curriculum import kit_root

PIECES = ("scaling_laws", "chinchilla")
MAX_PREDICTION_ERROR = 0.05  # |predicted - measured| / measured, for the widest run's loss
MAX_SPLIT_RATIO = 1.05  # N_opt and D_opt within this factor of the reference's
ISOFLOP_BUDGET = 1e12  # FLOPs: the isoFLOP profile that your two approaches must agree on
MAX_VALLEY_RATIO = 1.05  # isoflop_minimum's valley within this factor of compute_optimal's N_opt
PLOT_SIZE = (240, 320)  # (height, width) of the plot of the fit, in pixels


@pytest.fixture(scope="module")
def own(load_impl):
    return SimpleNamespace(**{name: load_impl(name) for name in PIECES})


@pytest.fixture(scope="module")
def sweep():
    return json.loads((kit_root() / "data" / "checkpoint_3" / "sweep.json").read_text())


# The glue: plain functions of your pieces and the runs (a list of dicts, as in sweep.json).


def sizes_and_compute(own, runs):
    """Each run's N (your count_params) and C = training FLOPs (your training_flops), (R,) each."""
    N = np.array([own.scaling_laws.count_params(r["n_layer"], r["d_model"]) for r in runs])
    D = np.array([r["tokens"] for r in runs], dtype=np.float64)
    return N.astype(np.float64), np.asarray(own.scaling_laws.training_flops(N, D), np.float64)


def longest_row(runs):
    """The runs of the longest token budget, narrowest first."""
    longest = max(r["tokens"] for r in runs)
    return sorted((r for r in runs if r["tokens"] == longest), key=lambda r: r["d_model"])


def predict_widest(own, runs):
    """Fit L = coefficient * C ** exponent to the runs of the longest budget but the widest, and
    predict the widest one's loss from its compute: (prediction, coefficient, exponent)."""
    row = longest_row(runs)
    _, C = sizes_and_compute(own, row)
    L = np.array([r["loss"] for r in row])
    coefficient, exponent = own.scaling_laws.fit_power_law(C[:-1], L[:-1])
    return float(coefficient * C[-1] ** exponent), float(coefficient), float(exponent)


def compute_optimal_split(own, runs, budget):
    """Fit the loss surface to every run (N from your count_params) and split `budget` FLOPs:
    (N_opt, D_opt) and the fit (E, A, B, alpha, beta)."""
    N, _ = sizes_and_compute(own, runs)
    D = np.array([r["tokens"] for r in runs], dtype=np.float64)
    L = np.array([r["loss"] for r in runs])
    surface = own.chinchilla.fit_loss_surface(N, D, L)
    n_opt, d_opt = own.chinchilla.compute_optimal(budget, *surface)
    return float(n_opt), float(d_opt), tuple(float(s) for s in surface)


def isoflop_valley(own, surface, budget):
    """The paper's second approach on a fitted surface: seven models from a quarter to four times
    compute_optimal's N_opt (evenly in log N, shifted by a factor 1.3 so that no model sits at the
    optimum), each given the tokens the budget leaves, D = budget / (6 N); your isoflop_minimum
    finds the valley of their losses. Returns (N at the valley, compute_optimal's N_opt)."""
    n_opt, _ = own.chinchilla.compute_optimal(budget, *surface)
    N = float(n_opt) * 1.3 * np.geomspace(0.25, 4.0, 7)
    L = np.asarray(own.chinchilla.loss_surface(N, budget / (6 * N), *surface), dtype=np.float64)
    valley, _ = own.chinchilla.isoflop_minimum(N, L)
    return float(valley), float(n_opt)


def torch_objective(theta, log_n, log_d, log_l, delta):
    """The paper's objective and its gradient by torch's autograd: the Huber loss of
    log(E + A / N^alpha + B / D^beta) - log L, summed over the runs."""
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    log_n, log_d, log_l = (torch.tensor(v, dtype=torch.float64) for v in (log_n, log_d, log_l))
    terms = torch.stack([t[1] - t[3] * log_n, t[2] - t[4] * log_d, t[0].expand(log_n.shape)])
    r = torch.logsumexp(terms, dim=0) - log_l
    huber = torch.where(r.abs() <= delta, r**2 / 2, delta * (r.abs() - delta / 2)).sum()
    huber.backward()
    return huber.item(), t.grad.numpy(), r.detach().numpy()


# The referee for the counts: torch's FLOP counter on a plain model of the sweep's shape.


def counted(fn, *args):
    """fn(*args) and the FLOPs torch.utils.flop_counter counts for it (its matmuls: 2 per
    multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return out, counter.get_total_flops()


def torch_counts(n_layer, d_model, n_ctx):
    """(weights, forward FLOPs per token, training FLOPs per weight and token) of a decoder of
    n_layer blocks, each W_q, W_k, W_v, W_o (d_model x d_model) and the feed-forward pair
    d_model -> 4 d_model -> d_model, as counted by torch on one window of n_ctx tokens."""
    g = torch.Generator().manual_seed(0)
    shapes = [(d_model, d_model)] * 4 + [(d_model, 4 * d_model), (4 * d_model, d_model)]
    blocks = [[torch.randn(s, generator=g) / s[0] ** 0.5 for s in shapes] for _ in range(n_layer)]
    h = torch.randn(n_ctx, d_model, generator=g)
    causal = torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril()
    weights = matmuls = attention = 0
    for w_q, w_k, w_v, w_o, w_up, w_down in blocks:
        weights += sum(w.numel() for w in (w_q, w_k, w_v, w_o, w_up, w_down))
        (q, k, v), flops = counted(lambda x, a, b, c: (x @ a, x @ b, x @ c), h, w_q, w_k, w_v)
        matmuls += flops
        scores, flops = counted(torch.matmul, q, k.T / d_model**0.5)
        attention += flops
        mixed, flops = counted(torch.matmul, scores.masked_fill(~causal, -torch.inf).softmax(-1), v)
        attention += flops
        out, flops = counted(torch.matmul, mixed, w_o)
        matmuls += flops
        h = h + out
        up, flops = counted(torch.matmul, h, w_up)
        matmuls += flops
        down, flops = counted(torch.matmul, up.relu(), w_down)
        matmuls += flops
        h = h + down
    # torch multiplies the whole n_ctx x n_ctx square of scores and weighted values; under the
    # causal mask a token attends to n_ctx / 2 others on average, so half of it is Kaplan's count.
    forward = (matmuls + attention / 2) / n_ctx

    # Training: one weight matrix's forward and backward pass (the gradients with respect to its
    # input and to itself), per weight and per token.
    x = torch.randn(n_ctx, d_model, generator=g, requires_grad=True)
    w = torch.randn(d_model, d_model, generator=g, requires_grad=True)
    _, train = counted(lambda: (x @ w).sum().backward())
    return weights, forward, train / (n_ctx * w.numel())


def shapes_of(runs):
    return sorted({(r["n_layer"], r["d_model"], r["n_ctx"]) for r in runs})


def points_of(image, colour):
    """The centres (column, row) of the separate squares drawn in `colour`, left to right."""
    rows, cols = np.nonzero((image == np.array(colour, dtype=np.uint8)).all(axis=-1))
    order = np.argsort(cols, kind="stable")
    rows, cols = rows[order], cols[order]
    groups = np.split(np.arange(len(cols)), np.nonzero(np.diff(cols) > 1)[0] + 1)
    return [(cols[g].mean(), rows[g].mean()) for g in groups if len(g)]


# The specs.


def test_your_parameter_count_matches_the_sweeps_models(own, sweep):
    for n_layer, d_model, n_ctx in shapes_of(sweep["runs"]):
        weights, _, _ = torch_counts(n_layer, d_model, n_ctx)
        got = own.scaling_laws.count_params(n_layer, d_model)
        if got != weights:
            fail(
                f"count_params(n_layer={n_layer}, d_model={d_model}) returned {got}; the sweep's "
                f"model of that shape has {weights} weights in its blocks' matrices (four "
                "attention projections and two feed-forward matrices per layer)"
            )
    for r in sweep["runs"]:
        if own.scaling_laws.count_params(r["n_layer"], r["d_model"]) != r["n_params"]:
            fail(f"count_params disagrees with the n_params the sweep stored for the run {r}")


def test_your_flop_counter_matches_torchs(own, sweep):
    for n_layer, d_model, n_ctx in shapes_of(sweep["runs"]):
        _, forward, per_weight = torch_counts(n_layer, d_model, n_ctx)
        got = own.scaling_laws.forward_flops_per_token(n_layer, d_model, n_ctx)
        assert_close(
            np.float64(got),
            np.float64(forward),
            rtol=1e-12,
            atol=0,
            what=(
                f"forward_flops_per_token(n_layer={n_layer}, d_model={d_model}, n_ctx={n_ctx}) "
                "against torch's FLOP counter (2 per weight, plus the causal half of the scores "
                "and weighted values)"
            ),
        )
    N = np.array([r["n_params"] for r in sweep["runs"]], dtype=np.float64)
    D = np.array([r["tokens"] for r in sweep["runs"]], dtype=np.float64)
    assert_close(
        np.asarray(own.scaling_laws.training_flops(N, D), dtype=np.float64),
        per_weight * N * D,
        rtol=1e-12,
        atol=0,
        what=(
            f"training_flops(N {N.shape}, D {D.shape}) for the sweep's runs, against torch's "
            f"count of a forward and backward pass: {per_weight:g} per weight and token"
        ),
    )


def test_your_power_law_fit_is_least_squares_in_log_space(own):
    rng = np.random.default_rng(3)
    x = np.geomspace(1e9, 1e13, 7)
    y = 40.0 * x**-0.08 * np.exp(rng.normal(0, 0.02, x.shape))
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    assert_close(
        np.array(own.scaling_laws.fit_power_law(x, y), dtype=np.float64),
        np.array([np.exp(intercept), slope]),
        rtol=1e-8,
        atol=0,
        what="fit_power_law(x (7,), y (7,)) -> (coefficient, exponent) on scattered points",
    )


def test_your_loss_surface_and_split_on_a_known_surface(own):
    truth = (1.2, 30.0, 90.0, 0.4, 0.35)  # E, A, B, alpha, beta
    N, D = (g.ravel() for g in np.meshgrid(np.geomspace(1e3, 3e4, 5), np.geomspace(1e4, 7e4, 3)))
    L = truth[0] + truth[1] / N ** truth[3] + truth[2] / D ** truth[4]
    fit = own.chinchilla.fit_loss_surface(N, D, L)
    assert_close(
        np.asarray(own.chinchilla.loss_surface(N, D, *fit), dtype=np.float64),
        L,
        rtol=1e-3,
        atol=0,
        what="loss_surface(N, D, *fit_loss_surface(N, D, L)) at 15 noiseless runs (N, D, L (15,))",
    )
    # The optimum by brute force: the lowest loss along N D = C / 6, on a fine grid of N.
    C = 1e12
    grid = np.geomspace(1e3, 1e9, 200001)
    brute = grid[np.argmin(truth[1] / grid ** truth[3] + truth[2] / (C / 6 / grid) ** truth[4])]
    n_opt, d_opt = own.chinchilla.compute_optimal(C, *truth)
    assert_close(
        np.array([n_opt, d_opt], dtype=np.float64),
        np.array([brute, C / 6 / brute]),
        rtol=1e-3,
        atol=0,
        what=f"compute_optimal(C={C:g}, E, A, B, alpha, beta={truth}) -> (N_opt, D_opt)",
    )


def test_your_fit_objective_matches_torchs_autograd(own, sweep):
    log_n, log_d, log_l = (
        np.log(np.array([r[key] for r in sweep["runs"]], dtype=np.float64))
        for key in ("n_params", "tokens", "loss")
    )
    theta = np.array([np.log(0.01), np.log(45.0), np.log(150.0), 0.39, 0.40])
    delta = 0.02  # wide enough that some runs fall on each piece of the Huber loss
    value, grad, r = torch_objective(theta, log_n, log_d, log_l, delta)
    assert (np.abs(r) <= delta).any() and (np.abs(r) > delta).any(), "the spec's theta is stale"
    got_value, got_grad = own.chinchilla.fit_objective(theta, log_n, log_d, log_l, delta)
    assert_close(
        np.array([float(got_value), *np.asarray(got_grad, dtype=np.float64)]),
        np.array([value, *grad]),
        rtol=1e-8,
        atol=1e-12,
        what=(
            f"fit_objective(theta={np.round(theta, 3).tolist()}, the sweep's {len(r)} runs, "
            f"delta={delta}) -> (value, gradient (5,)), against torch's autograd"
        ),
    )


def test_predict_the_widest_run(own, sweep):
    widest = longest_row(sweep["runs"])[-1]
    prediction, coefficient, exponent = predict_widest(own, sweep["runs"])
    error = abs(prediction - widest["loss"]) / widest["loss"]
    if not error <= MAX_PREDICTION_ERROR:
        fail(
            f"your fit L = {coefficient:.4g} C^{exponent:.4f} of the narrower runs predicts "
            f"{prediction:.4f} for the widest run (d_model {widest['d_model']}, "
            f"{widest['tokens']} tokens); it measured {widest['loss']:.4f}, an error of "
            f"{error:.1%} (the bar is {MAX_PREDICTION_ERROR:.0%}): check count_params, "
            "training_flops and fit_power_law"
        )


def test_your_plot_shows_the_fit_on_log_log_axes(own, sweep, tmp_path):
    row = longest_row(sweep["runs"])
    _, C = sizes_and_compute(own, row)
    L = np.array([r["loss"] for r in row])
    _, coefficient, exponent = predict_widest(own, sweep["runs"])
    path = tmp_path / "checkpoint_3_fit.png"
    image = np.asarray(own.scaling_laws.plot_fit(C, L, coefficient, exponent, path, PLOT_SIZE))
    if image.shape != (*PLOT_SIZE, 3) or not path.is_file():
        fail(
            f"plot_fit(C (5,), L (5,), ..., size={PLOT_SIZE}) returned an image of shape "
            f"{image.shape} (expected {(*PLOT_SIZE, 3)}) or wrote no file at {path.name}"
        )
    points = points_of(image, own.scaling_laws.RED)
    if len(points) != len(row):
        fail(f"plot_fit drew {len(points)} separate red squares for the {len(row)} runs")
    cols, rows = np.array(points).T
    # On log-log axes a point's column is affine in log C and its row in log L.
    for name, pixels, values, sign in (("column", cols, C, 1), ("row", rows, L, -1)):
        slope, intercept = np.polyfit(np.log(values), pixels, 1)
        worst = np.abs(slope * np.log(values) + intercept - pixels).max()
        if not (sign * slope > 0 and worst <= 2.0):
            fail(
                f"plot_fit: the runs' {name}s {np.round(pixels, 1)} are not a straight line in "
                f"log {'C' if name == 'column' else 'L'} (off by up to {worst:.1f} pixels, "
                f"slope {slope:.1f}): both axes logarithmic, larger values right and up"
            )


def test_two_of_chinchillas_approaches_agree(own, sweep):
    _, _, surface = compute_optimal_split(own, sweep["runs"], ISOFLOP_BUDGET)
    valley, n_opt = isoflop_valley(own, surface, ISOFLOP_BUDGET)
    ratio = max(valley / n_opt, n_opt / valley) if valley > 0 else np.inf
    if not (np.isfinite(ratio) and ratio <= MAX_VALLEY_RATIO):
        fail(
            f"on your fitted surface at C = {ISOFLOP_BUDGET:g} FLOPs, isoflop_minimum finds the "
            f"valley of seven models at N = {valley:.4g}, but compute_optimal puts it at "
            f"N_opt = {n_opt:.4g} (the bar: within a factor {MAX_VALLEY_RATIO}): the vertex of "
            "the parabola in log N, at -c1 / (2 c2), not the best of the seven models"
        )


def test_your_compute_optimal_split_matches_the_references(own, sweep):
    ref = sweep["reference"]
    n_opt, d_opt, surface = compute_optimal_split(own, sweep["runs"], ref["budget_flops"])
    for name, got, want in (("N_opt", n_opt, ref["n_opt"]), ("D_opt", d_opt, ref["d_opt"])):
        if not (np.isfinite(got) and got > 0 and max(got / want, want / got) <= MAX_SPLIT_RATIO):
            fail(
                f"for C = {ref['budget_flops']:g} FLOPs your split gives {name} = {got:.4g}; the "
                f"reference's is {want:.4g} (the bar: within a factor {MAX_SPLIT_RATIO}). Your "
                f"surface (E, A, B, alpha, beta) = {tuple(round(s, 4) for s in surface)}, the "
                f"reference's {tuple(round(v, 4) for v in ref['surface'].values())}: check "
                "fit_loss_surface, fit_objective and compute_optimal"
            )
