"""Public specs for `dropout`: `pytest exercises/dropout` (`--impl=solutions`: the reference).

Oracles: what inverted dropout must be element by element (each output is 0 or x / (1 - p), and it
is x times the mask returned with it); the laws of the random mask (the dropped fraction is p, the
expectation of y is x, elements are dropped independently), checked on large draws; finite
differences of your own forward pass with its mask held fixed by the seed.

Statistical specs use fixed seeds and Hoeffding's inequality, P(|mean - E| >= t) <= 2 exp(-2 n t^2)
for n independent draws in [0, 1], with t chosen so that a correct dropout fails each check with
probability below 1e-7 (each spec's comment says how), while the mistakes they look for miss by
several times t.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

DELTA = 1e-7  # the false-failure chance each statistical check allows itself
# Scaling by 1 / (1 - p) in float64 is exact to a few units in the last place: 1e-12 is a million
# times that, yet far below the size of any mistake (the smallest, a scale of 1 or 1 / p, is off by
# p or more). float32 keeps about 7 digits.
RTOL = {"float64": 1e-12, "float32": 1e-6}

seeds = st.integers(0, 2**16)
probabilities = st.floats(0.05, 0.95)
dtypes = st.sampled_from(["float64", "float32"])
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


def data(shape, seed, dtype="float64"):
    """Values of either sign, between 0.5 and 2 in size (never 0, so a zero in y means dropped)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def hoeffding(n, delta=DELTA):
    """t such that n independent draws in [0, 1] have |mean - E| >= t with chance below delta."""
    return math.sqrt(math.log(2 / delta) / (2 * n))


def call(x, p, training=True):
    return f"dropout_forward(x {x.shape} {x.dtype}, p={p:g}, rng" + (
        ")" if training else ", training=False)"
    )


def forward(impl, x, p, rng, training=True):
    """The learner's (y, mask), checked to be two arrays shaped like x, of x's dtype."""
    out = impl.dropout_forward(x, p, rng, training)
    what = call(x, p, training)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"{what} should return a pair (y, mask); got {type(out).__name__}")
    for name, value in zip(("y", "mask"), out, strict=True):
        if not isinstance(value, np.ndarray):
            fail(f"{what} returned {name} as a {type(value).__name__}; expected a numpy array")
        if value.shape != x.shape or value.dtype != x.dtype:
            fail(
                f"{what} returned {name} {value.shape} {value.dtype}; expected {x.shape} {x.dtype}"
                + (
                    " (a bool mask? return the scaled mask, keep / (1 - p), in x's dtype)"
                    if value.dtype == bool
                    else " (build the mask in x's dtype: keep.astype(x.dtype) / (1 - p))"
                    if value.dtype != x.dtype
                    else ""
                )
            )
    return out


def index(where):
    """The first True position of a boolean array, as a tuple of ints."""
    return tuple(int(i) for i in np.argwhere(where)[0])


def dropped(y):
    """Where y is 0: the dropped elements (the specs' x is never 0)."""
    return np.asarray(y) == 0


# -- the forward pass, element by element -------------------------------------------------------


@given(shape=shapes, p=probabilities, dtype=dtypes, seed=seeds)
def test_kept_values_are_scaled_and_dropped_values_are_zero(impl, shape, p, dtype, seed):
    x = data(shape, seed, dtype)
    y, mask = forward(impl, x, p, np.random.default_rng(seed))
    what = call(x, p)
    scale = 1 / (1 - p)
    kept = mask != 0
    wrong = kept & ~np.isclose(mask, scale, rtol=RTOL[dtype], atol=0)
    if wrong.any():
        value = float(mask[wrong][0])
        why = (
            "kept elements must be scaled up by 1 / (1 - p)"
            if np.isclose(value, 1)
            else "p is the probability of dropping, not of keeping: scale by 1 / (1 - p)"
            if np.isclose(value, 1 / p)
            else "each mask element is 0 (dropped) or 1 / (1 - p) (kept)"
        )
        fail(
            f"{what}: the mask holds {value:.6g} at index {index(wrong)}; expected "
            f"0 or 1 / (1 - p) = {scale:.6g}: {why}"
        )
    assert_close(
        y,
        x * mask,
        what=f"{what}: y against x * mask (y must be x times the mask returned with it)",
        rtol=RTOL[dtype],
        atol=0,
    )


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8, 0.95])
def test_dropped_fraction_is_p(impl, p):
    # n = 10^6 independent drops: the fraction is within t = 0.0029 of p but for a chance below
    # 1e-7 (Hoeffding); keeping with probability p instead misses by |1 - 2p| >= 0.1.
    x = np.ones((1000, 1000))
    y, _ = forward(impl, x, p, np.random.default_rng(2014))
    fraction, t = dropped(y).mean(), hoeffding(x.size)
    if abs(fraction - p) > t:
        why = (
            ": that is 1 - p; p is the probability of dropping (PyTorch's convention), so keep an "
            "element when a uniform draw u >= p"
            if abs(fraction - (1 - p)) <= t
            else ""
        )
        fail(
            f"{call(x, p)} dropped {fraction:.4%} of the elements; expected p = {p:.0%} "
            f"(+- {t:.2%}){why}"
        )


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_expectation_is_preserved(impl, p):
    # Each of the 60 elements of x is dropped K = 20000 times over; y / (x / (1 - p)) is a draw in
    # [0, 1] with mean 1 - p, so by Hoeffding with a union bound over the 60 elements every average
    # of y is within t |x| / (1 - p) of x, t = 0.023, but for a chance below 1e-7. Without the
    # 1 / (1 - p) the averages come out (1 - p) x, off by p |x|: 3.9 to 11 times that bound.
    k, base = 20_000, data((6, 10), 11)
    x = np.tile(base, (k, 1, 1))
    y, _ = forward(impl, x, p, np.random.default_rng(1929))
    t = hoeffding(k, DELTA / base.size)
    average = np.asarray(y).mean(axis=0)
    error = np.abs(average - base) / (np.abs(base) / (1 - p))
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(error), base.shape))
    if error[worst] > t:
        ratio = average[worst] / base[worst]
        copies = np.asarray(y)[(slice(None), *worst)]
        why = (
            f"all {k} copies of that element were treated alike (all kept or all dropped): is "
            "one mask shared along axis 0?"
            if np.all(copies == copies[0])
            else "which is why kept elements are divided by 1 - p"
        )
        fail(
            f"{call(x, p)}, x being {k} copies of one (6, 10) array: element {worst} of x is "
            f"{base[worst]:.4f}, but y averaged over the copies is {average[worst]:.4f}, "
            f"{ratio:.3f} times it; E[y] must equal x (1 +- {t / (1 - p):.3f} times it here), "
            + why
        )


def test_each_element_is_dropped_independently(impl):
    # Along each axis, the disjoint pairs of neighbours (0, 1), (2, 3), ... are both dropped with
    # probability p^2 = 0.16 when drops are independent, and with probability p = 0.4 when a mask
    # is shared along that axis. Each pair rate is within t = 0.012 of p^2 (Hoeffding, 60000 pairs),
    # for all three axes at once, but for a chance below 1e-7.
    p, x = 0.4, np.ones((60, 50, 40))
    y, _ = forward(impl, x, p, np.random.default_rng(1958))
    d = dropped(y)
    for axis, length in enumerate(x.shape):
        first = d.take(range(0, length - 1, 2), axis=axis)
        second = d.take(range(1, length, 2), axis=axis)
        rate, t = (first & second).mean(), hoeffding(first.size, DELTA / 3)
        if abs(rate - p**2) > t:
            fail(
                f"{call(x, p)}: neighbours along axis {axis} were both dropped "
                f"{rate:.2%} of the time; independent drops give p^2 = {p**2:.0%} (+- {t:.1%}). "
                f"Is one mask shared along axis {axis}? Draw one random number per element: "
                "rng.random(x.shape)"
            )


def test_masks_come_from_the_given_rng(impl):
    x, p = data((20, 30), 3), 0.5
    first, _ = forward(impl, x, p, np.random.default_rng(7))
    again, _ = forward(impl, x, p, np.random.default_rng(7))
    if not np.array_equal(first, again):
        fail(
            f"{call(x, p)} twice, each time with a new np.random.default_rng(7), gave different "
            "outputs; the same seed must give the same mask: draw from rng (rng.random(...)), not "
            "from np.random.* or a generator of your own"
        )
    rng = np.random.default_rng(8)
    one, _ = forward(impl, x, p, rng)
    two, _ = forward(impl, x, p, rng)
    # Two independent masks of 600 elements agree everywhere with chance 2^-600.
    if np.array_equal(one, two):
        fail(
            f"{call(x, p)} twice with the same generator gave the same output; each call must draw "
            "new random numbers from rng, so that every step drops different units"
        )


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_p_zero_keeps_everything_and_p_one_drops_everything(impl, p):
    x = data((5, 7), 4)
    y, mask = forward(impl, x, p, np.random.default_rng(5))
    what = call(x, p)
    for name, value in (("y", y), ("mask", mask)):
        if not np.isfinite(value).all():
            fail(
                f"{what} returned a {name} with NaN or inf: with p = 1 every element is dropped "
                "and 1 / (1 - p) is infinite, so return zeros without dividing"
            )
    expected = x if p == 0 else np.zeros_like(x)
    assert_close(mask, np.full_like(x, 1 - p), what=f"{what}: mask", rtol=0, atol=0)
    assert_close(y, expected, what=f"{what}: y", rtol=0, atol=0)


@given(shape=shapes, p=st.sampled_from([0.1, 0.5, 0.9, 1.0]), dtype=dtypes, seed=seeds)
def test_evaluation_is_the_identity(impl, shape, p, dtype, seed):
    x = data(shape, seed, dtype)
    rng = np.random.default_rng(seed)
    state = rng.bit_generator.state
    y, mask = forward(impl, x, p, rng, training=False)
    what = call(x, p, training=False)
    assert_close(
        y,
        x,
        what=f"{what}: y (evaluation drops nothing and scales nothing: y = x)",
        rtol=0,
        atol=0,
    )
    assert_close(mask, np.ones_like(x), what=f"{what}: mask (all ones)", rtol=0, atol=0)
    if rng.bit_generator.state != state:
        fail(
            f"{what} drew random numbers from rng; evaluation must not touch it, so that "
            "evaluating between training steps leaves the training's random stream as it was"
        )


# -- the backward pass --------------------------------------------------------------------------


@given(shape=shapes, p=probabilities, dtype=dtypes, seed=seeds)
def test_backward_multiplies_by_the_mask(impl, shape, p, dtype, seed):
    rng = np.random.default_rng(seed)
    mask = ((rng.random(shape) >= p) / (1 - p)).astype(dtype)  # a mask as dropout_forward makes
    dy = data(shape, seed + 1, dtype)
    dx = impl.dropout_backward(dy, mask)
    assert_close(
        dx,
        dy * mask,
        what=(
            f"dropout_backward({describe(dy=dy, mask=mask)}), mask with values 0 and "
            f"1 / (1 - p) = {1 / (1 - p):.6g}; expected dy * mask"
        ),
        rtol=RTOL[dtype],
        atol=0,
    )


@given(seed=seeds, p=st.sampled_from([0.2, 0.5, 0.7]))
def test_backward_matches_finite_differences(impl, seed, p):
    x, dy = data((3, 4), seed), data((3, 4), seed + 1)

    def loss(x):  # L = sum(y * dy), so dL/dy = dy; the seed fixes the mask
        return float(np.sum(forward(impl, x, p, np.random.default_rng(seed))[0] * dy))

    _, mask = forward(impl, x, p, np.random.default_rng(seed))
    dx = impl.dropout_backward(dy, mask)
    h, numeric = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (loss(up) - loss(down)) / (2 * h)
    assert_close(
        dx,
        numeric,
        what=(
            f"dropout_backward(dy (3, 4), mask) after {call(x, p)}, against central differences "
            "(h = 1e-6) of your own dropout_forward with the same seed, hence the same mask"
        ),
        rtol=1e-6,
        atol=1e-8,
    )


# -- the layer ----------------------------------------------------------------------------------


def test_layer_training_and_evaluation(impl):
    x, dy = data((40, 25), 21), data((40, 25), 22)
    layer = impl.Dropout(0.3, rng=np.random.default_rng(23))
    what = "Dropout(0.3)"
    if layer.training is not True:
        fail(f"{what}.training should start True (a new layer trains); found {layer.training!r}")
    y = np.asarray(layer.forward(x))
    if not dropped(y).any():
        fail(f"{what}.forward(x {x.shape}) in training dropped nothing (no zero in y)")
    if layer.eval() is not layer or layer.training is not False:
        fail(f"{what}.eval() should set training to False and return the layer")
    assert_close(
        layer.forward(x), x, what=f"{what}.forward(x {x.shape}) after eval()", rtol=0, atol=0
    )
    assert_close(
        layer.backward(dy), dy, what=f"{what}.backward(dy {dy.shape}) after eval()", rtol=0, atol=0
    )
    if layer.train() is not layer or layer.training is not True:
        fail(f"{what}.train() should set training to True and return the layer")
    if not dropped(layer(x)).any():
        fail(f"{what}(x {x.shape}) after eval() and then train() dropped nothing (no zero in y)")
    if impl.Dropout().p != 0.5:
        fail(f"Dropout().p should be 0.5, as in nn.Dropout; found {impl.Dropout().p!r}")


@given(shape=shapes, p=st.floats(0.2, 0.8), seed=seeds)
def test_layer_backward_uses_the_last_forward_mask(impl, shape, p, seed):
    shape = (*shape, 64)  # 64 or more elements: two masks agree everywhere with chance < 1e-10
    x, dy = data(shape, seed), data(shape, seed + 1)
    layer = impl.Dropout(p, rng=np.random.default_rng(seed))
    what = f"Dropout({p:.4g}) in training, x {shape}"
    first = np.asarray(layer.forward(x))
    y = np.asarray(layer.forward(x))
    if np.array_equal(first, y):
        fail(f"{what}: two forward calls dropped the same elements; draw a new mask every call")
    kept = ~dropped(y)
    assert_close(
        y,
        np.where(kept, x / (1 - p), 0.0),
        what=f"{what}: forward(x), kept elements against x / (1 - p)",
        rtol=RTOL["float64"],
        atol=0,
    )
    assert_close(
        np.asarray(layer.backward(dy)),
        np.where(kept, dy / (1 - p), 0.0),
        what=(
            f"{what}: backward(dy) after two forward calls (0 where the last forward dropped, "
            "dy / (1 - p) where it kept: use the mask of the last forward, not a new one)"
        ),
        rtol=RTOL["float64"],
        atol=0,
    )


def test_inputs_are_not_modified(impl):
    x, dy = data((8, 9), 31), data((8, 9), 32)
    copies = x.copy(), dy.copy()
    rng = np.random.default_rng(33)
    _, mask = forward(impl, x, 0.4, rng)
    mask_copy = mask.copy()
    impl.dropout_backward(dy, mask)
    forward(impl, x, 0.4, rng, training=False)
    layer = impl.Dropout(0.4, rng=rng)
    layer.forward(x)
    layer.backward(dy)
    for name, array, copy in (
        ("x", x, copies[0]),
        ("dy", dy, copies[1]),
        ("mask", mask, mask_copy),
    ):
        if not np.array_equal(array, copy):
            fail(
                f"dropout_forward / dropout_backward / Dropout changed the caller's {name} in "
                "place; compute new arrays instead (x *= mask would rewrite the caller's data)"
            )
