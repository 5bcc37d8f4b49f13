"""Public specs for `layernorm`: `pytest exercises/layernorm` (`--impl=solutions`: the reference).

Oracles: torch's nn.LayerNorm and nn.RMSNorm on the same float64 numbers (values and autograd
gradients), the invariances that define the two layers, worked examples, and central finite
differences of your own forward functions. No spec is random: hypothesis runs a fixed,
derandomised set of examples, so a spec that passes once passes every time.
"""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

# float64 throughout. A row of a dozen features is normalised to about 1e-15 relative, and the
# gradients are amplified by at most 1/sqrt(eps), about 300. Every real mistake is off by far
# more than 1e-9 (see the README's table).
RTOL, ATOL = 1e-9, 1e-9

seeds = st.integers(0, 2**16)
epsilons = st.sampled_from([1e-5, 1e-3, 0.1])
# x (..., D): no, one or two leading axes of rows, then D features.
shapes = st.tuples(st.lists(st.integers(1, 4), max_size=2), st.integers(1, 12)).map(
    lambda t: (*t[0], t[1])
)
wide_shapes = st.tuples(st.lists(st.integers(1, 4), max_size=2), st.integers(4, 12)).map(
    lambda t: (*t[0], t[1])
)
LN_GRADS = ["dx", "dgamma", "dbeta"]
RMS_GRADS = ["dx", "dgamma"]


def make(shape, seed):
    """Activations with their own offset and spread per row, gamma near 1, a small beta, dy."""
    r = np.random.default_rng(seed)
    rows = (*shape[:-1], 1)
    x = r.normal(size=shape) * r.uniform(0.5, 3.0, size=rows) + r.normal(0.0, 2.0, size=rows)
    gamma = r.normal(1.0, 0.5, size=shape[-1])
    beta = r.normal(0.0, 0.5, size=shape[-1])
    return x, gamma, beta, r.normal(size=shape)


def torch_layernorm(x, gamma, beta, eps, dy=None):
    """nn.LayerNorm's output, or with dy its gradients (dx, dgamma, dbeta)."""
    layer = torch.nn.LayerNorm(x.shape[-1], eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    if dy is None:
        return y.detach().numpy()
    y.backward(torch.from_numpy(dy))
    return xt.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()


def torch_rmsnorm(x, gamma, eps, dy=None):
    """nn.RMSNorm's output, or with dy its gradients (dx, dgamma)."""
    layer = torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    if dy is None:
        return y.detach().numpy()
    y.backward(torch.from_numpy(dy))
    return xt.grad.numpy(), layer.weight.grad.numpy()


def unpack(result, names, what):
    """The tuple a function returns, checked for its length."""
    if not isinstance(result, tuple | list) or len(result) != len(names):
        got = (
            f"a {type(result).__name__} of {len(result)} items"
            if isinstance(result, tuple | list)
            else f"a {type(result).__name__}"
        )
        fail(f"{what} should return a tuple ({', '.join(names)}); it returned {got}")
    return result


def layernorm(impl, x, gamma, beta, eps, dy=None):
    """(y, what) from the learner's forward, or with dy (grads, what) from forward and backward."""
    what = f"layernorm_forward({describe(x=x, gamma=gamma, beta=beta)}, eps={eps:g})"
    y, cache = unpack(impl.layernorm_forward(x, gamma, beta, eps=eps), ["y", "cache"], what)
    if dy is None:
        return y, what
    what = f"{what}, then layernorm_backward(dy {dy.shape}, cache)"
    return unpack(impl.layernorm_backward(dy, cache), LN_GRADS, what), what


def rmsnorm(impl, x, gamma, eps, dy=None):
    what = f"rmsnorm_forward({describe(x=x, gamma=gamma)}, eps={eps:g})"
    y, cache = unpack(impl.rmsnorm_forward(x, gamma, eps=eps), ["y", "cache"], what)
    if dy is None:
        return y, what
    what = f"{what}, then rmsnorm_backward(dy {dy.shape}, cache)"
    return unpack(impl.rmsnorm_backward(dy, cache), RMS_GRADS, what), what


def check_grads(actual, expected, names, what, rtol=RTOL, atol=ATOL):
    for name, a, e in zip(names, actual, expected, strict=True):
        assert_close(a, e, what=f"{what}: {name}", rtol=rtol, atol=atol)


# -- against torch ------------------------------------------------------------------------------


@given(shape=shapes, seed=seeds, eps=epsilons)
def test_layernorm_forward_matches_torch(impl, shape, seed, eps):
    x, gamma, beta, _ = make(shape, seed)
    expected = torch_layernorm(x, gamma, beta, eps)
    y, what = layernorm(impl, x, gamma, beta, eps)
    assert_close(y, expected, what=what, rtol=RTOL, atol=ATOL)


@given(shape=shapes, seed=seeds, eps=epsilons)
def test_layernorm_backward_matches_torch(impl, shape, seed, eps):
    x, gamma, beta, dy = make(shape, seed)
    expected = torch_layernorm(x, gamma, beta, eps, dy)
    grads, what = layernorm(impl, x, gamma, beta, eps, dy)
    check_grads(grads, expected, LN_GRADS, what)


@given(shape=shapes, seed=seeds, eps=epsilons)
def test_rmsnorm_forward_matches_torch(impl, shape, seed, eps):
    x, gamma, _, _ = make(shape, seed)
    expected = torch_rmsnorm(x, gamma, eps)
    y, what = rmsnorm(impl, x, gamma, eps)
    assert_close(y, expected, what=what, rtol=RTOL, atol=ATOL)


@given(shape=shapes, seed=seeds, eps=epsilons)
def test_rmsnorm_backward_matches_torch(impl, shape, seed, eps):
    x, gamma, _, dy = make(shape, seed)
    expected = torch_rmsnorm(x, gamma, eps, dy)
    grads, what = rmsnorm(impl, x, gamma, eps, dy)
    check_grads(grads, expected, RMS_GRADS, what)


# -- the invariances that define the two layers (eps = 0, so that they hold exactly) ------------


@given(shape=wide_shapes, seed=seeds, shift=st.floats(-1e5, 1e5), scale=st.floats(0.5, 20.0))
@example(shape=(3, 8), seed=0, shift=1e5, scale=0.5)  # a mean far larger than the spread
def test_layernorm_ignores_shift_and_scale(impl, shape, seed, shift, scale):
    x, gamma, beta, _ = make(shape, seed)
    base, _ = layernorm(impl, x, gamma, beta, 0.0)
    moved, _ = layernorm(impl, x * scale + shift, gamma, beta, 0.0)
    assert_close(
        moved,
        base,
        what=f"layernorm_forward(x * {scale:g} + {shift:g}) against layernorm_forward(x), "
        f"x {shape}, eps=0 (subtracting each row's mean removes any shift, dividing by its "
        "standard deviation any positive scale; if only large shifts fail, compute the variance "
        "from x - mean, not as mean(x^2) - mean^2, whose digits cancel when the mean dwarfs the "
        "spread)",
        rtol=1e-8,
        atol=1e-8,
    )


@given(shape=shapes, seed=seeds, scale=st.floats(1e-3, 1e3))
def test_rmsnorm_ignores_scale(impl, shape, seed, scale):
    x, gamma, _, _ = make(shape, seed)
    base, _ = rmsnorm(impl, x, gamma, 0.0)
    scaled, _ = rmsnorm(impl, x * scale, gamma, 0.0)
    assert_close(
        scaled,
        base,
        what=f"rmsnorm_forward(x * {scale:g}) against rmsnorm_forward(x), x {shape}, eps=0 "
        "(dividing each row by its root mean square removes any positive scale)",
        rtol=1e-10,
        atol=1e-10,
    )


def _worst_row(dot, size, what, message):
    """Fail when some row's |dot| is not tiny next to that row's gradient size."""
    ratio = np.abs(dot) / size
    worst = np.unravel_index(np.argmax(ratio), np.shape(dot))
    if not ratio[worst] <= 1e-9:  # also catches NaN
        row = f"row {tuple(int(i) for i in worst)}" if worst else "the row"
        fail(f"{what}: {message.format(row=row, value=dot[worst])}")


@given(shape=wide_shapes, seed=seeds)
def test_layernorm_dx_ignores_shift_and_scale(impl, shape, seed):
    x, gamma, beta, dy = make(shape, seed)
    (dx, _, _), what = layernorm(impl, x, gamma, beta, 0.0, dy)
    if np.shape(dx) != shape:
        fail(f"{what}: dx has shape {np.shape(dx)}; expected {shape}, the shape of x")
    size = np.sqrt(np.sum(dx * dx, axis=-1) * shape[-1]) + 1.0
    centred = x - x.mean(axis=-1, keepdims=True)
    centred /= np.sqrt(np.sum(centred * centred, axis=-1, keepdims=True))
    why = (
        "; it must be 0, because the output does not change under {} (the paths through the "
        "mean and the variance cancel that component of the gradient)"
    )
    _worst_row(
        np.sum(dx, axis=-1),
        size,
        what,
        "dx sums to {value:.3g} over {row}" + why.format("a shift of the row"),
    )
    _worst_row(
        np.sum(dx * centred, axis=-1),
        size,
        what,
        "dx . (x - mean) / |x - mean| is {value:.3g} for {row}"
        + why.format("a rescaling of the row"),
    )


@given(shape=shapes, seed=seeds)
def test_rmsnorm_dx_ignores_scale(impl, shape, seed):
    x, gamma, _, dy = make(shape, seed)
    (dx, _), what = rmsnorm(impl, x, gamma, 0.0, dy)
    if np.shape(dx) != shape:
        fail(f"{what}: dx has shape {np.shape(dx)}; expected {shape}, the shape of x")
    unit = x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    _worst_row(
        np.sum(dx * unit, axis=-1),
        np.sqrt(np.sum(dx * dx, axis=-1)) + 1.0,
        what,
        "dx . x / |x| is {value:.3g} for {row}; it must be 0, because the output does not "
        "change when the row is rescaled (the path through the root mean square cancels that "
        "component of the gradient)",
    )


# -- single behaviours, each on one small input -------------------------------------------------


@pytest.mark.parametrize("layer", ["layernorm", "rmsnorm"])
def test_eps_goes_inside_the_square_root(impl, layer):
    # Quiet rows (variance 0.01) and a large eps: sqrt(0.01 + 0.5) = 0.71, while
    # sqrt(0.01) + 0.5 = 0.6. With eps = 1e-5 and unit variance they would agree to 5 digits.
    x, gamma, beta, _ = make((3, 6), 7)
    x = (x - x.mean(axis=-1, keepdims=True)) * 0.1 / x.std(axis=-1, keepdims=True)
    eps = 0.5
    if layer == "layernorm":
        expected = torch_layernorm(x, gamma, beta, eps)
        y, what = layernorm(impl, x, gamma, beta, eps)
    else:
        expected = torch_rmsnorm(x, gamma, eps)
        y, what = rmsnorm(impl, x, gamma, eps)
    assert_close(
        y,
        expected,
        what=f"{what} on rows of variance 0.01, where eps dominates (it belongs under the root: "
        "sqrt(var + eps), not sqrt(var) + eps)",
        rtol=RTOL,
        atol=ATOL,
    )


def test_worked_examples(impl):
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / np.sqrt(1.25)
    y, _ = layernorm(impl, x, np.ones(4), np.zeros(4), 0.0)
    assert_close(
        y,
        expected,
        what="layernorm_forward([[1, 2, 3, 4]], gamma=ones, beta=zeros, eps=0): the row's mean "
        "is 2.5 and its variance (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 4 = 1.25 (divide by D = 4), "
        "so y = (x - 2.5) / sqrt(1.25) = [-1.342, -0.447, 0.447, 1.342]",
        rtol=1e-12,
        atol=1e-12,
    )
    x = np.array([[1.0, 7.0]])
    y, _ = rmsnorm(impl, x, np.ones(2), 0.0)
    assert_close(
        y,
        np.array([[0.2, 1.4]]),
        what="rmsnorm_forward([[1, 7]], gamma=ones, eps=0): the mean square is (1 + 49) / 2 = 25 "
        "and the root mean square 5, so y = x / 5 = [0.2, 1.4] (no mean is subtracted)",
        rtol=1e-12,
        atol=1e-12,
    )


def test_rows_are_normalised_independently(impl):
    x, gamma, beta, _ = make((4, 3, 6), 11)
    changed = x.copy()
    changed[1, 2] = changed[1, 2] * 5.0 - 40.0  # one row (one token of one example) changes
    others = np.ones((4, 3), dtype=bool)
    others[1, 2] = False
    for name, forward in [
        ("layernorm_forward", lambda x: layernorm(impl, x, gamma, beta, 1e-5)[0]),
        ("rmsnorm_forward", lambda x: rmsnorm(impl, x, gamma, 1e-6)[0]),
    ]:
        before, after = np.asarray(forward(x.copy())), np.asarray(forward(changed.copy()))
        if before.shape != x.shape or after.shape != x.shape:
            fail(f"{name}(x {x.shape}) returned y of shape {before.shape}; expected {x.shape}")
        assert_close(
            after[others],
            before[others],
            what=f"{name}(x (4, 3, 6)): the other rows' outputs after row x[1, 2] changed "
            "(each row is normalised with its own statistics, over the last axis; statistics "
            "across rows are batch norm's)",
            rtol=0,
            atol=1e-12,
        )


@pytest.mark.parametrize("layer", ["layernorm", "rmsnorm"])
def test_backward_matches_finite_differences(impl, layer):
    # L = sum(dy * y). Each partial derivative by central differences of your own forward:
    # with h = 1e-6 in float64 the estimate is good to about 1e-9.
    x, gamma, beta, dy = make((2, 3, 5), 3)
    eps, h = 1e-3, 1e-6
    if layer == "layernorm":
        args, names = {"x": x, "gamma": gamma, "beta": beta}, LN_GRADS
        grads, what = layernorm(impl, x.copy(), gamma.copy(), beta.copy(), eps, dy.copy())
        forward = impl.layernorm_forward
    else:
        args, names = {"x": x, "gamma": gamma}, RMS_GRADS
        grads, what = rmsnorm(impl, x.copy(), gamma.copy(), eps, dy.copy())
        forward = impl.rmsnorm_forward

    def loss(**changed):
        inputs = {k: v.copy() for k, v in {**args, **changed}.items()}
        return float(np.sum(dy * forward(**inputs, eps=eps)[0]))

    expected = []
    for arg, value in args.items():
        grad = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[i] += h
            down[i] -= h
            grad[i] = (loss(**{arg: up}) - loss(**{arg: down})) / (2 * h)
        expected.append(grad)
    what = f"{what}, against central differences of your {layer}_forward"
    check_grads(grads, expected, names, what, rtol=1e-6, atol=1e-7)


def test_inputs_are_not_modified(impl):
    x, gamma, beta, dy = make((3, 7), 5)
    for layer in ("layernorm", "rmsnorm"):
        args = {"x": x.copy(), "gamma": gamma.copy(), "dy": dy.copy()}
        if layer == "layernorm":
            args["beta"] = beta.copy()
            layernorm(impl, args["x"], args["gamma"], args["beta"], 1e-5, args["dy"])
        else:
            rmsnorm(impl, args["x"], args["gamma"], 1e-6, args["dy"])
        original = {"x": x, "gamma": gamma, "beta": beta, "dy": dy}
        for name, value in args.items():
            if not np.array_equal(value, original[name]):
                fail(
                    f"{layer}_forward and {layer}_backward changed the caller's {name} "
                    f"{value.shape} in place; a layer must leave its inputs as it found them "
                    "(write x - mean into a new array rather than x -= mean)"
                )
