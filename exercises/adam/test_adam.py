"""Public specs for `adam`: `pytest exercises/adam` (`--impl=solutions`: the reference).

Oracles: torch.optim.SGD, Adam and AdamW, run for 100 steps on the same random problems with the
same gradients; the paper's properties (Adam's first step has size lr whatever the gradient's
scale, and Adam is blind to any rescaling of a coordinate's gradients); the two kinds of weight
decay written as identities; a constant gradient worked out by hand. No spec is statistical: every
input comes from a fixed seed and every check is deterministic.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, fail

# float64: 100 steps agree with torch to about 1e-12 (the reference's worst over many problems);
# every mistake the specs look for is off by 1e-6 or (much) more. See the README's table.
RTOL, ATOL = 1e-9, 1e-9
STEPS = 100

seeds = st.integers(0, 2**16)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


class Problem:
    """Noisy least squares: loss(w) = scale * |A w - b|^2 / 2, and each step's gradient carries
    fresh noise of its own, as a mini-batch's does. w has any shape; A acts on it flattened."""

    def __init__(self, shape, seed, scale=1.0, steps=STEPS):
        rng = np.random.default_rng(seed)
        n = int(np.prod(shape))
        self.shape, self.scale = shape, scale
        self.a = rng.normal(size=(n + 3, n)) / np.sqrt(n + 3)  # curvature up to about 4
        self.b = rng.normal(size=n + 3)
        self.noise = rng.normal(0.0, 0.5, (steps, *shape))
        self.w0 = rng.normal(size=shape)

    def grad(self, w, step):
        """The gradient at w in step `step` (0-based)."""
        exact = (self.a.T @ (self.a @ np.ravel(w) - self.b)).reshape(self.shape)
        return self.scale * (exact + self.noise[step])


def unpack(out, names, what, like):
    """The learner's tuple, checked to hold len(names) arrays shaped and typed like `like`."""
    if not isinstance(out, tuple) or len(out) != len(names):
        fail(
            f"{what} should return a tuple ({', '.join(names)}); got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        )
    for name, array in zip(names, out, strict=True):
        if not isinstance(array, np.ndarray) or array.shape != like.shape:
            got = f"shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            fail(f"{what}: the new {name} should be a numpy array of shape {like.shape}; got {got}")
        if array.dtype != like.dtype:
            fail(
                f"{what}: the new {name} has dtype {array.dtype}; expected {like.dtype}, the "
                "dtype of param (see the hint about numpy scalars)"
            )
    return out


def learner_run(impl, name, problem, steps=STEPS, **hyper):
    """The learner's trajectory: (steps + 1, *shape) parameters, and the final state arrays."""
    step = getattr(impl, name)
    names = ("param", "velocity") if name == "sgd_momentum_step" else ("param", "m", "v")
    w = problem.w0.copy()
    state = [np.zeros_like(w) for _ in names[1:]]
    adam = len(names) == 3  # Adam and AdamW take the step number t
    path = [w.copy()]  # copies: an update in place is test_inputs_are_not_modified's business
    for s in range(steps):
        g = problem.grad(w, s)
        what = f"{name}(param {w.shape}, ...) in step {s + 1}"
        w, *state = unpack(step(w, g, *state, *([s + 1] if adam else []), **hyper), names, what, w)
        path.append(w.copy())
    return np.stack(path), state


def torch_run(make, problem, steps=STEPS):
    """torch's trajectory with the optimizer `make([p])`, and its state for p."""
    p = torch.tensor(problem.w0.copy(), requires_grad=True)
    optimizer = make([p])
    path = [problem.w0.copy()]
    for s in range(steps):
        p.grad = torch.tensor(problem.grad(p.detach().numpy(), s))
        optimizer.step()
        path.append(p.detach().numpy().copy())
    return np.stack(path), {k: v.numpy() for k, v in optimizer.state[p].items() if v.ndim}


def close_state(actual, expected, what):
    """State arrays scale with the gradient (v with its square): compare relative to their size."""
    size = float(np.max(np.abs(expected)))
    assert_close(actual, expected, what=what, rtol=RTOL, atol=ATOL * size)


# -- torch's trajectories -----------------------------------------------------------------------


@given(
    shape=shapes,
    seed=seeds,
    lr=st.sampled_from([0.01, 0.05]),
    momentum=st.sampled_from([0.5, 0.9, 0.99]),
    weight_decay=st.sampled_from([0.0, 0.01, 0.1]),
    nesterov=st.booleans(),
)
def test_sgd_momentum_matches_torch(impl, shape, seed, lr, momentum, weight_decay, nesterov):
    problem = Problem(shape, seed)
    hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    path, (velocity,) = learner_run(impl, "sgd_momentum_step", problem, **hyper)
    expected, state = torch_run(lambda ps: torch.optim.SGD(ps, **hyper), problem)
    what = (
        f"sgd_momentum_step(param {shape}, grad, velocity, "
        f"{', '.join(f'{k}={v}' for k, v in hyper.items())}) against torch.optim.SGD over "
        f"{STEPS} steps of noisy least squares"
    )
    assert_close(
        path, expected, what=f"{what}: param after each step, [step, ...]", rtol=RTOL, atol=ATOL
    )
    close_state(velocity, state["momentum_buffer"], f"{what}: the final velocity (torch's buffer)")


adam_betas = st.sampled_from([(0.9, 0.999), (0.8, 0.99), (0.0, 0.999), (0.95, 0.9)])


def adam_what(name, shape, hyper, scale, oracle):
    args = ", ".join(f"{k}={v}" for k, v in hyper.items())
    return (
        f"{name}(param {shape}, grad, m, v, t, {args}) against {oracle} over {STEPS} steps of "
        f"noisy least squares, gradients of scale {scale:g}"
    )


@given(
    shape=shapes,
    seed=seeds,
    lr=st.sampled_from([1e-3, 1e-2, 0.1]),
    betas=adam_betas,
    eps=st.sampled_from([1e-8, 1e-6]),
    weight_decay=st.sampled_from([0.0, 0.01, 0.1]),
    scale=st.integers(-3, 3).map(lambda k: 10.0**k),
)
def test_adam_matches_torch(impl, shape, seed, lr, betas, eps, weight_decay, scale):
    problem = Problem(shape, seed, scale)
    hyper = dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
    path, (m, v) = learner_run(impl, "adam_step", problem, **hyper)
    expected, state = torch_run(
        lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
        problem,
    )
    what = adam_what("adam_step", shape, hyper, scale, "torch.optim.Adam")
    assert_close(
        path, expected, what=f"{what}: param after each step, [step, ...]", rtol=RTOL, atol=ATOL
    )
    close_state(m, state["exp_avg"], f"{what}: the final m (torch's exp_avg)")
    close_state(v, state["exp_avg_sq"], f"{what}: the final v (torch's exp_avg_sq)")


@given(
    shape=shapes,
    seed=seeds,
    lr=st.sampled_from([1e-3, 1e-2, 0.1]),
    betas=adam_betas,
    eps=st.sampled_from([1e-8, 1e-6]),
    weight_decay=st.sampled_from([0.0, 0.01, 0.1, 1.0]),
    scale=st.integers(-3, 3).map(lambda k: 10.0**k),
)
def test_adamw_matches_torch(impl, shape, seed, lr, betas, eps, weight_decay, scale):
    problem = Problem(shape, seed, scale)
    hyper = dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
    path, (m, v) = learner_run(impl, "adamw_step", problem, **hyper)
    expected, state = torch_run(
        lambda ps: torch.optim.AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
        problem,
    )
    what = adam_what("adamw_step", shape, hyper, scale, "torch.optim.AdamW")
    assert_close(
        path, expected, what=f"{what}: param after each step, [step, ...]", rtol=RTOL, atol=ATOL
    )
    close_state(m, state["exp_avg"], f"{what}: the final m (torch's exp_avg)")
    close_state(v, state["exp_avg_sq"], f"{what}: the final v (torch's exp_avg_sq)")


# -- the paper's properties ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adam_step", "adamw_step"])
@given(
    shape=shapes,
    seed=seeds,
    exponent=st.integers(-3, 6),
    lr=st.sampled_from([1e-3, 0.1]),
    betas=adam_betas,
)
def test_first_step_has_size_lr(impl, name, shape, seed, exponent, lr, betas):
    rng = np.random.default_rng(seed)
    param, grad = rng.normal(size=shape), rng.normal(size=shape) * 10.0**exponent
    beta1, beta2, eps = *betas, 1e-8
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=0.0)
    what = (
        f"{name}(param {shape}, grad of scale 1e{exponent}, m=0, v=0, t=1, "
        f"{', '.join(f'{k}={v}' for k, v in hyper.items())})"
    )
    new, _, _ = unpack(
        getattr(impl, name)(param, grad, np.zeros(shape), np.zeros(shape), 1, **hyper),
        ("param", "m", "v"),
        what,
        param,
    )
    # On step 1, m_hat = g and v_hat = g^2 exactly: each coordinate moves by lr * g / (|g| + eps),
    # which is lr against the gradient's sign unless |g| is as small as eps.
    step = param - new
    expected = lr * grad / (np.abs(grad) + eps)
    big = np.abs(grad) > 1e3 * eps
    if big.any() and not np.allclose(step, expected, rtol=1e-9, atol=1e-12 * lr):
        ratios = np.abs(step[big]) / lr
        ratio, lowest, highest = float(np.median(ratios)), float(ratios.min()), float(ratios.max())
        known = {
            (1 - beta1) / np.sqrt(1 - beta2): "neither m nor v is bias-corrected",
            1 / np.sqrt(1 - beta2): "m is bias-corrected but v is not",
            (1 - beta1): "v is bias-corrected but m is not",
            np.sqrt(1 + beta2) / (1 + beta1): "the bias correction uses t + 1; t counts from 1",
        }
        why = next((text for r, text in known.items() if abs(ratio - r) < 1e-6 * r), "")
        fail(
            f"{what}: the first step should move every coordinate by lr = {lr:g} against its "
            f"gradient's sign (exactly lr * g / (|g| + eps)), whatever the gradient's scale; the "
            f"median coordinate moved {ratio:.6g} * lr"
            + (f" ({why})" if why else "")
            + (
                f"; and coordinates moved by different amounts, {lowest:.3g} to {highest:.3g} "
                "times lr: keep one v per element (g * g, elementwise)"
                if highest - lowest > 1e-6 * highest
                else ""
            )
        )
    assert_close(step, expected, what=f"{what}: param - new param", rtol=1e-9, atol=1e-12 * lr)


@given(shape=shapes, seed=seeds, betas=adam_betas)
def test_adam_is_blind_to_rescaled_gradients(impl, shape, seed, betas):
    # Kingma and Ba, section 2.1: the step is invariant to rescaling the gradient, coordinate by
    # coordinate (with eps = 0 exactly). Multiply each coordinate's gradients by its own c > 0,
    # from 1e-4 to 1e4: the trajectory must not move.
    c = 10.0 ** np.random.default_rng(seed + 1).uniform(-4, 4, shape)
    hyper = dict(lr=0.05, beta1=betas[0], beta2=betas[1], eps=0.0)
    path, _ = learner_run(impl, "adam_step", Problem(shape, seed, steps=30), steps=30, **hyper)
    rescaled = Problem(shape, seed, scale=c, steps=30)  # the same problem, gradients times c
    moved, _ = learner_run(impl, "adam_step", rescaled, steps=30, **hyper)
    what = (
        f"adam_step(param {shape}, ..., lr=0.05, beta1={betas[0]}, beta2={betas[1]}, eps=0) over "
        "30 steps with each coordinate's gradients multiplied by its own c from 1e-4 to 1e4, vs "
        "the same without c (each coordinate's step must depend only on its own gradients' "
        "signal-to-noise ratio): param after each step, [step, ...]"
    )
    assert_close(moved, path, what=what, rtol=1e-8, atol=1e-8)


# -- weight decay, two ways ---------------------------------------------------------------------


def random_state(shape, seed, t):
    """param, grad, m, v as they might be after t - 1 steps: v > 0, m of the gradient's size."""
    rng = np.random.default_rng(seed)
    param, grad = rng.normal(size=shape), rng.normal(size=shape)
    m = rng.normal(0, 0.5, shape) * (1 - 0.9 ** (t - 1))
    v = rng.uniform(0.2, 2.0, shape) * (1 - 0.999 ** (t - 1))
    return param, grad, m, v


def fresh(*arrays):
    """Copies for each call: these specs check one thing each (and an update in place another)."""
    return [a.copy() for a in arrays]


@given(shape=shapes, seed=seeds, t=st.integers(1, 50), weight_decay=st.sampled_from([0.01, 1.0]))
def test_adam_weight_decay_joins_the_gradient(impl, shape, seed, t, weight_decay):
    param, grad, m, v = random_state(shape, seed, t)
    names = ("param", "m", "v")
    what = f"adam_step(param {shape}, grad, m, v, t={t}, lr=0.01, weight_decay={weight_decay})"
    decayed = unpack(
        impl.adam_step(*fresh(param, grad, m, v), t, lr=0.01, weight_decay=weight_decay),
        names,
        what,
        param,
    )
    plain_what = f"adam_step(param, grad + {weight_decay} * param, m, v, t={t}, weight_decay=0)"
    plain = unpack(
        impl.adam_step(*fresh(param, grad + weight_decay * param, m, v), t, lr=0.01),
        names,
        plain_what,
        param,
    )
    # torch.optim.Adam's weight decay is an L2 penalty: its gradient weight_decay * param joins
    # grad before anything else, so m and v (and the step) see it.
    for name, a, b in zip(names, decayed, plain, strict=True):
        assert_close(
            a,
            b,
            what=f"{what} vs {plain_what}: the new {name} (Adam's decay is L2, "
            "added to the gradient, so it enters m and v)",
            rtol=1e-12,
            atol=1e-12,
        )


def shrink_diagnosis(shrink, param, lr, weight_decay):
    """What a wrong decay looks like: the fraction of the old param that it took away."""
    fraction = float(np.median(shrink / param))
    said = f"the median coordinate shrank by {fraction:.6g} of itself"
    if abs(fraction - weight_decay) < 1e-6 * weight_decay:
        return f"{said}: multiply the decay by lr, as torch does (lr * weight_decay)"
    if abs(fraction - lr * weight_decay) < 0.1 * lr * weight_decay:
        return (
            f"{said}, close but not exact: shrink the old param, param * (1 - lr * "
            "weight_decay), and subtract Adam's step from that (not shrink the updated param)"
        )
    return said


@given(
    shape=shapes,
    seed=seeds,
    t=st.integers(1, 50),
    lr=st.sampled_from([1e-3, 0.1]),
    weight_decay=st.sampled_from([0.01, 1.0]),
)
def test_adamw_decay_is_decoupled(impl, shape, seed, t, lr, weight_decay):
    param, grad, m, v = random_state(shape, seed, t)
    names = ("param", "m", "v")
    # With no gradient yet, Adam's step is 0 / (0 + eps) = 0: AdamW only shrinks the weights.
    what = f"adamw_step(param {shape}, grad=0, m=0, v=0, t=1, lr={lr}, weight_decay={weight_decay})"
    alone, _, _ = unpack(
        impl.adamw_step(
            param.copy(), *(np.zeros(shape) for _ in range(3)), 1, lr=lr, weight_decay=weight_decay
        ),
        names,
        what,
        param,
    )
    if not np.allclose(alone, param * (1 - lr * weight_decay), rtol=1e-12, atol=1e-12):
        moved = np.abs(param - alone)
        fail(
            f"{what}: with no gradient, AdamW only shrinks the weights, to param * (1 - lr * "
            f"weight_decay), each by {lr * weight_decay:g} of itself; "
            + (
                f"yours moved each by about lr = {lr:g}: the decay went into the gradient, and "
                "Adam's normalisation turned it into a whole step"
                if np.allclose(moved, lr, rtol=1e-3)
                else shrink_diagnosis(param - alone, param, lr, weight_decay)
            )
        )

    what = f"adamw_step(param {shape}, grad, m, v, t={t}, lr={lr}, weight_decay={weight_decay})"
    decayed = unpack(
        impl.adamw_step(*fresh(param, grad, m, v), t, lr=lr, weight_decay=weight_decay),
        names,
        what,
        param,
    )
    plain_what = "the same with weight_decay=0"
    plain = unpack(
        impl.adamw_step(*fresh(param, grad, m, v), t, lr=lr, weight_decay=0.0),
        names,
        plain_what,
        param,
    )
    for name, a, b in zip(names[1:], decayed[1:], plain[1:], strict=True):
        assert_close(
            a,
            b,
            what=f"{what}: the new {name} vs {plain_what} (AdamW's decay must stay out of m and v)",
            rtol=1e-12,
            atol=1e-12,
        )
    shrink = plain[0] - decayed[0]
    if not np.allclose(shrink, lr * weight_decay * param, rtol=1e-9, atol=1e-12):
        fail(
            f"{what} vs {plain_what}: the new param should differ by lr * weight_decay * param, "
            f"the old param shrunk by {lr * weight_decay:g} of itself; "
            + shrink_diagnosis(shrink, param, lr, weight_decay)
        )


# -- momentum by hand ---------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_velocity_under_a_constant_gradient(impl, nesterov):
    # A constant gradient g from velocity 0: after t steps the velocity is
    # g * (1 + mu + ... + mu^(t-1)) = g * (1 - mu^t) / (1 - mu), heading for g / (1 - mu) = 10 g.
    g = np.array([1.0, -2.0, 0.5])
    mu, lr = 0.9, 0.1
    param, velocity = np.zeros(3), np.zeros(3)
    expected_param = np.zeros(3)
    for t in range(1, 31):
        what = (
            f"sgd_momentum_step(param (3,), grad=[1, -2, 0.5] in every step, velocity, lr={lr}, "
            f"momentum={mu}, nesterov={nesterov}) from velocity 0, step {t}"
        )
        param, velocity = unpack(
            impl.sgd_momentum_step(param, g, velocity, lr=lr, momentum=mu, nesterov=nesterov),
            ("param", "velocity"),
            what,
            g,
        )
        want = g * (1 - mu**t) / (1 - mu)
        if not np.allclose(velocity, want, rtol=1e-12, atol=0):
            ratio = float(velocity[0] / want[0])
            why = (
                ": that is an average of the gradients, (1 - momentum) * g each step; torch's "
                "velocity adds the whole gradient, velocity = momentum * velocity + g"
                if abs(ratio - (1 - mu)) < 1e-9
                else ""
            )
            fail(
                f"{what}: velocity should be g * (1 - {mu}^{t}) / (1 - {mu}) = "
                f"{np.round(want, 6).tolist()}; got {np.round(velocity, 6).tolist()}{why}"
            )
        expected_param = expected_param - lr * (g + mu * want if nesterov else want)
        rule = "(g + momentum * velocity), with the new velocity" if nesterov else "velocity"
        assert_close(
            param,
            expected_param,
            what=f"{what}: param (each step is lr * {rule})",
            rtol=1e-12,
            atol=1e-12,
        )


# -- contracts: inputs and dtypes ---------------------------------------------------------------


def test_inputs_are_not_modified(impl):
    param, grad, m, v = random_state((4, 3), 7, t=5)
    calls = {
        "sgd_momentum_step(param, grad, velocity, weight_decay=0.1)": lambda a: (
            impl.sgd_momentum_step(a[0], a[1], a[2], lr=0.1, weight_decay=0.1)
        ),
        "adam_step(param, grad, m, v, t=5, weight_decay=0.1)": lambda a: impl.adam_step(
            a[0], a[1], a[2], a[3], 5, lr=0.1, weight_decay=0.1
        ),
        "adamw_step(param, grad, m, v, t=5, weight_decay=0.1)": lambda a: impl.adamw_step(
            a[0], a[1], a[2], a[3], 5, lr=0.1, weight_decay=0.1
        ),
    }
    for call, run in calls.items():
        arrays = [param.copy(), grad.copy(), m.copy(), v.copy()]
        run(arrays)
        for name, before, after in zip(
            ("param", "grad", "m (or velocity)", "v"), (param, grad, m, v), arrays, strict=True
        ):
            if not np.array_equal(before, after):
                fail(
                    f"{call} changed the caller's {name} in place; return new arrays instead "
                    "(m *= beta1 or param -= ... write into the caller's arrays; "
                    "m = beta1 * m + (1 - beta1) * g makes a new one)"
                )


def torch_one_step(name, param, grad, state, t, hyper):
    """torch's optimizer resumed from `state` at step t: (new param, new state arrays)."""
    p = torch.tensor(param, requires_grad=True)
    p.grad = torch.tensor(grad)
    if name == "sgd_momentum_step":
        optimizer = torch.optim.SGD([p], **hyper)
        optimizer.state[p] = {"momentum_buffer": torch.tensor(state[0])}
        optimizer.step()
        return p.detach().numpy(), [optimizer.state[p]["momentum_buffer"].numpy()]
    kinds = {"adam_step": torch.optim.Adam, "adamw_step": torch.optim.AdamW}
    b1, b2 = hyper["beta1"], hyper["beta2"]
    optimizer = kinds[name]([p], lr=hyper["lr"], betas=(b1, b2), weight_decay=hyper["weight_decay"])
    optimizer.state[p] = {
        "step": torch.tensor(float(t - 1)),
        "exp_avg": torch.tensor(state[0]),
        "exp_avg_sq": torch.tensor(state[1]),
    }
    optimizer.step()
    return p.detach().numpy(), [optimizer.state[p][k].numpy() for k in ("exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize("name", ["sgd_momentum_step", "adam_step", "adamw_step"])
@given(shape=shapes, seed=seeds, t=st.integers(1, 1000))
def test_float32_stays_float32(impl, name, shape, seed, t):
    param, grad, m, v = (a.astype(np.float32) for a in random_state(shape, seed, t))
    if name == "sgd_momentum_step":
        names, state = ("param", "velocity"), [m]
        hyper, args = dict(lr=0.1, momentum=0.9, weight_decay=0.01), ()
    else:
        names, state = ("param", "m", "v"), [m, v]
        hyper, args = dict(lr=0.01, beta1=0.9, beta2=0.999, weight_decay=0.1), (t,)
    what = f"{name}(param {shape} float32, ..., {', '.join(f'{k}={v}' for k, v in hyper.items())})"
    if args:
        what = what.replace("...", f"..., t={t}")
    out = unpack(
        getattr(impl, name)(*fresh(param, grad, *state), *args, **hyper), names, what, param
    )
    expected, expected_state = torch_one_step(name, param, grad, state, t, hyper)
    # float32 keeps about 7 digits; one step against torch's float32 step.
    assert_close(out[0], expected, what=f"{what}: the new param", rtol=1e-5, atol=1e-6)
    for key, actual, wanted in zip(names[1:], out[1:], expected_state, strict=True):
        size = float(np.max(np.abs(wanted)))
        assert_close(actual, wanted, what=f"{what}: the new {key}", rtol=1e-5, atol=1e-6 * size)
