"""Public specs for `relu`: run `pytest exercises/relu` (add `--impl=solutions` for the reference).

Oracles: torch's relu and its autograd for relu and relu_backward (exact), the moments and the
shape of the weight distribution for the initialisations (fixed seeds, stated false-failure
chances), and the experiment that made He initialisation the default: the scale of activations
and gradients through a 50-layer ReLU network.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from graders.checks import assert_close, describe, fail

INITS = ["xavier_normal", "kaiming_normal"]
TARGET_STD = {
    "xavier_normal": lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out)),
    "kaiming_normal": lambda fan_in, fan_out: math.sqrt(2 / fan_in),
}
FORMULA = {"xavier_normal": "sqrt(2 / (fan_in + fan_out))", "kaiming_normal": "sqrt(2 / fan_in)"}

# The deep network of the last specs: 50 square layers of width 512, a batch of 64 inputs.
WIDTH, DEPTH, BATCH = 512, 50, 64
# With He initialisation the RMS of every layer's activations (and gradients) has expectation
# about 1, but a finite width makes each layer multiply it by a slightly random factor. In 300
# simulated networks the natural log of the last layer's RMS was close to normal with mean -0.15
# and sd 0.33 (gradients: sd 0.17); the lowest of the 50 layers had mean -0.32 and sd 0.23. The
# band [1/8, 8] is 5.4 sd from the last layer's mean even after allowing for the drift, and by
# the reflection principle any layer leaves it with at most twice that chance: a correct answer
# fails with a chance below 1e-7.
BAND = (1 / 8, 8.0)
# With Xavier initialisation each ReLU layer halves the mean square: after 50 layers the RMS is
# near 2**-25 = 3e-8. Anything above 1e-5 did not collapse.
COLLAPSED = 1e-5


@st.composite
def float_arrays(draw, dtype):
    """Arrays of 1 to 3 axes: normal values of any scale, with exact zeros (of both signs)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), label="shape")
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    x = g.standard_normal(shape) * 10.0 ** g.integers(-3, 4)
    x[g.random(shape) < draw(st.sampled_from([0.0, 0.2, 0.5]), label="share of zeros")] = 0.0
    x[g.random(shape) < 0.1] *= -1  # flip a tenth of the signs: some zeros become -0.0
    return x.astype(dtype)


def gradients(x):
    """An upstream gradient of x's shape and dtype, both signs, from a seed derived from x."""
    g = np.random.default_rng(x.size)
    return g.standard_normal(x.shape).astype(x.dtype)


# --- relu and relu_backward ----------------------------------------------------------------------


def show(**arrays):
    """describe(), plus the values of arrays small enough to read."""
    return ", ".join(
        describe(**{k: v}) + (f" = {v.tolist()}" if v.size <= 8 else "") for k, v in arrays.items()
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_relu_matches_torch(impl, dtype, data):
    x = data.draw(float_arrays(dtype), label="x")
    expected = torch.relu(torch.from_numpy(x.copy())).numpy()
    actual = impl.relu(x.copy())
    assert_close(actual, expected, what=f"relu({show(x=x)})", rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_relu_backward_matches_torch(impl, dtype, data):
    x = data.draw(float_arrays(dtype), label="x")
    grad_out = gradients(x)
    x_t = torch.tensor(x, requires_grad=True)
    torch.relu(x_t).backward(torch.from_numpy(grad_out.copy()))
    actual = impl.relu_backward(grad_out.copy(), x.copy())
    assert_close(
        actual,
        x_t.grad.numpy(),
        what=f"relu_backward({show(grad_out=grad_out, x=x)})",
        rtol=0,
        atol=0,
    )


def test_relu_backward_is_zero_at_zero(impl):
    x = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    grad_out = np.array([5.0, 5.0, 5.0, 5.0, 5.0])
    actual = impl.relu_backward(grad_out, x)
    expected = np.array([0.0, 0.0, 0.0, 5.0, 5.0])
    assert_close(
        actual,
        expected,
        rtol=0,
        atol=0,
        what="relu_backward(grad_out=[5, 5, 5, 5, 5], x=[-2, -0.0, 0.0, 1e-300, 3]) "
        "(the slope at x == 0 is taken to be 0; only x > 0 passes the gradient)",
    )


def test_relu_backward_masks_by_x_not_by_the_gradient(impl):
    x = np.array([[1.0, 2.0, -1.0], [-3.0, 0.5, 4.0]])
    grad_out = np.array([[-1.0, 2.0, 3.0], [-4.0, -5.0, 6.0]])
    actual = impl.relu_backward(grad_out, x)
    expected = np.array([[-1.0, 2.0, 0.0], [0.0, -5.0, 6.0]])
    assert_close(
        actual,
        expected,
        rtol=0,
        atol=0,
        what=f"relu_backward(grad_out={grad_out.tolist()}, x={x.tolist()}) (negative "
        "gradients pass where x > 0; any gradient is blocked where x <= 0)",
    )


def test_relu_and_relu_backward_leave_their_inputs_alone(impl):
    g = np.random.default_rng(3)
    x, grad_out = g.standard_normal((4, 5)), g.standard_normal((4, 5))
    x_before, grad_before = x.copy(), grad_out.copy()
    y = impl.relu(x)
    if not np.array_equal(x, x_before):
        fail(
            "relu(x) changed x in place; return a new array (the backward pass needs the "
            "original x, and the caller may still use it)"
        )
    if y is x:
        fail("relu(x) returned x itself; return a new array")
    impl.relu_backward(grad_out, x)
    if not (np.array_equal(x, x_before) and np.array_equal(grad_out, grad_before)):
        fail("relu_backward(grad_out, x) changed grad_out or x in place; return a new array")


# --- the initialisations -------------------------------------------------------------------------


def draw(impl, name, fan_in, fan_out, rng):
    w = getattr(impl, name)(fan_in, fan_out, rng)
    call = f"{name}({fan_in}, {fan_out}, rng)"
    if not isinstance(w, np.ndarray):
        fail(f"{call} returned a {type(w).__name__}; expected a numpy array")
    if w.shape != (fan_in, fan_out):
        fail(
            f"{call} returned shape {w.shape}; expected (fan_in, fan_out) = {(fan_in, fan_out)}, "
            "the layout for x @ W with x of shape (batch, fan_in)"
        )
    if w.dtype != np.float64:
        fail(f"{call} returned dtype {w.dtype}; expected float64")
    if not np.isfinite(w).all():
        fail(f"{call} returned non-finite values")
    return w


@pytest.mark.parametrize("name", INITS)
@given(fan_in=st.integers(1, 40), fan_out=st.integers(1, 40))
def test_init_shape_and_dtype(impl, name, fan_in, fan_out):
    draw(impl, name, fan_in, fan_out, np.random.default_rng(fan_in * 41 + fan_out))


# Each matrix holds n = 65,536 independent draws. Their mean square divided by the target variance
# is chi-square(n) / n: by the Laurent-Massart bound it leaves [0.94, 1.06] with a chance below
# 1e-20. Their mean leaves 6 standard errors with a chance of 2e-9. Each mistake the README's
# hints list (a missing 2, the wrong fan, He for Xavier) is off by 25% or more on some shape.
FANS = [(512, 128), (128, 512), (256, 256)]


@pytest.mark.parametrize("name", INITS)
@pytest.mark.parametrize(("fan_in", "fan_out"), FANS)
def test_init_mean_and_variance(impl, name, fan_in, fan_out):
    w = draw(impl, name, fan_in, fan_out, np.random.default_rng(2015 + fan_in))
    std = TARGET_STD[name](fan_in, fan_out)
    call = f"{name}({fan_in}, {fan_out}, rng)"
    mean, ratio = w.mean(), np.mean(w**2) / std**2
    if abs(mean) > 6 * std / math.sqrt(w.size):
        fail(
            f"{call}: the weights' mean is {mean:.4g} = {mean / std:.3f} std; the weights are "
            "drawn from a distribution centred on 0 (rng.random is uniform on [0, 1); "
            "rng.standard_normal is what you want)"
        )
    if not 0.94 <= ratio <= 1.06:
        fail(
            f"{call}: the weights' standard deviation is {math.sqrt(np.mean(w**2)):.5f}; "
            f"expected {FORMULA[name]} = {std:.5f} (ratio of variances {ratio:.3f})"
        )


def normal_cdf(z):
    return 0.5 * (1 + np.frompyfunc(math.erf, 1, 1)(z / math.sqrt(2)).astype(np.float64))


@pytest.mark.parametrize("name", INITS)
def test_init_is_gaussian(impl, name):
    # Kolmogorov-Smirnov distance between the standardised weights and N(0, 1). By the
    # Dvoretzky-Kiefer-Wolfowitz inequality, a normal sample of n = 65,536 exceeds d = 0.012 with
    # a chance below 2 exp(-2 n d^2) = 1.3e-8 (estimating the scale only lowers it). A uniform
    # with the right variance is 0.05 away.
    w = draw(impl, name, 256, 256, np.random.default_rng(2010))
    z = np.sort(w.ravel()) / math.sqrt(np.mean(w**2))
    n, cdf = z.size, normal_cdf(z)
    distance = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    if distance > 0.012:
        fail(
            f"{name}(256, 256, rng): the weights do not look normally distributed: the largest "
            f"gap between their distribution function and a normal one is {distance:.3f} "
            "(up to 0.012 expected); draw with rng.standard_normal (or rng.normal)"
        )


@pytest.mark.parametrize("name", INITS)
def test_init_draws_from_the_given_rng(impl, name):
    state = np.random.get_state()
    try:
        np.random.seed(1)
        first = draw(impl, name, 30, 20, np.random.default_rng(7))
        np.random.seed(2)
        again = draw(impl, name, 30, 20, np.random.default_rng(7))
    finally:
        np.random.set_state(state)
    if not np.array_equal(first, again):
        fail(
            f"{name}(30, 20, rng) gave different weights for two generators with the same seed; "
            "draw from the rng argument, not from np.random's global state"
        )
    rng = np.random.default_rng(7)
    one, two = draw(impl, name, 30, 20, rng), draw(impl, name, 30, 20, rng)
    if np.array_equal(one, two):
        fail(
            f"two calls of {name}(30, 20, rng) with the same generator gave the same weights; "
            "draw from rng itself (it advances), do not make a new generator from a fixed seed"
        )


# --- why ReLU and He initialisation won: 50 layers deep -----------------------------------------


def deep_relu_net(impl, init, seed):
    """Pre-activations, weights and the RMS of each layer's activations for a (BATCH, WIDTH) input
    of unit variance through DEPTH layers h <- relu(h @ W), W = init(WIDTH, WIDTH, rng)."""
    rng = np.random.default_rng(seed)
    h = np.random.default_rng(seed + 1).standard_normal((BATCH, WIDTH))
    pre, weights, rms = [], [], []
    for _ in range(DEPTH):
        w = draw(impl, init, WIDTH, WIDTH, rng)
        y = h @ w
        h = impl.relu(y)
        pre.append(y)
        weights.append(w)
        rms.append(math.sqrt(np.mean(h**2)))
    return pre, weights, np.array(rms)


def layers(rms):
    return ", ".join(f"{i}: {rms[i - 1]:.3g}" for i in (1, 2, 5, 10, 20, 30, 40, 50))


def test_he_keeps_activations_in_band_through_50_relu_layers(impl):
    _, _, rms = deep_relu_net(impl, "kaiming_normal", seed=50)
    lo, hi = BAND
    if not ((rms >= lo) & (rms <= hi)).all():
        worst = int(np.argmax(np.abs(np.log(rms)))) + 1
        fail(
            f"through {DEPTH} layers relu(h @ W) of width {WIDTH}, W = kaiming_normal({WIDTH}, "
            f"{WIDTH}, rng), with inputs of RMS 1, every layer's activations should keep an RMS in "
            f"[1/8, 8]; layer {worst} has {rms[worst - 1]:.3g}. RMS by layer: {layers(rms)}"
        )


def test_xavier_activations_collapse_through_50_relu_layers(impl):
    _, _, rms = deep_relu_net(impl, "xavier_normal", seed=50)
    if not rms[-1] < COLLAPSED:
        fail(
            f"through {DEPTH} layers relu(h @ W) of width {WIDTH}, W = xavier_normal({WIDTH}, "
            f"{WIDTH}, rng), each ReLU layer should halve the activations' mean square, leaving "
            f"an RMS near 2**-25 = 3e-8 (below {COLLAPSED:g}); got {rms[-1]:.3g}. "
            f"RMS by layer: {layers(rms)}"
        )


def test_he_keeps_gradients_in_band_through_50_relu_layers(impl):
    pre, weights, _ = deep_relu_net(impl, "kaiming_normal", seed=60)
    grad = np.random.default_rng(61).standard_normal((BATCH, WIDTH))  # d loss / d output, RMS 1
    rms = []
    for y, w in zip(reversed(pre), reversed(weights), strict=True):
        grad = impl.relu_backward(grad, y)
        if not isinstance(grad, np.ndarray) or grad.shape != y.shape:
            fail(
                f"relu_backward(grad_out {y.shape}, x {y.shape}) returned "
                f"{getattr(grad, 'shape', type(grad).__name__)}; expected shape {y.shape}"
            )
        grad = grad @ w.T  # back through h @ W
        rms.append(math.sqrt(np.mean(grad**2)))
    rms = np.array(rms[::-1])  # rms[i]: the gradient's RMS at the input of layer i + 1
    lo, hi = BAND
    if not ((rms >= lo) & (rms <= hi)).all():
        worst = int(np.argmax(np.abs(np.log(rms)))) + 1
        fail(
            f"backward through {DEPTH} layers relu(h @ W), W = kaiming_normal({WIDTH}, {WIDTH}, "
            f"rng), with relu_backward and an output gradient of RMS 1, the gradient at every "
            f"layer's input should keep an RMS in [1/8, 8]; at layer {worst} it is "
            f"{rms[worst - 1]:.3g}. RMS by layer: {layers(rms)}"
        )
