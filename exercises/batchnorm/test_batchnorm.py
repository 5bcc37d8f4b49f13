"""Public specs for `batchnorm`: `pytest exercises/batchnorm` (`--impl=solutions`: the reference).

Oracles: torch's F.batch_norm, nn.BatchNorm1d/2d and autograd on the same float64 numbers; the
paper's properties (standardised outputs, invariance to a channel's shift and scale); finite
differences of your own forward pass; running statistics worked out by hand. No spec is
statistical: every input comes from a fixed seed and every check is deterministic.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

# float64 throughout. A forward pass agrees with torch to about 1e-15 relative, gradients to about
# 1e-14; every mistake the specs look for is off by 1e-6 or (much) more. See the README's table.
RTOL, ATOL = 1e-10, 1e-10
GRAD_RTOL, GRAD_ATOL = 1e-9, 1e-10

seeds = st.integers(0, 2**16)


epsilons = st.sampled_from([1e-5, 1e-3, 0.1])


@st.composite
def shapes(draw):
    """(N, C), (N, C, L) or (N, C, H, W), with at least two values per channel."""
    n, c = draw(st.integers(2, 6)), draw(st.integers(1, 5))
    spatial = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    return (n, c, *spatial)


def data(shape, seed):
    """x with its own offset and scale per channel, gamma (some negative), beta, and a dy."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    scale = np.exp(rng.uniform(-1.0, 1.5, c)).reshape(per_channel)
    offset = rng.normal(0.0, 3.0, c).reshape(per_channel)
    x = rng.normal(size=shape) * scale + offset
    return x, rng.normal(size=c), rng.normal(size=c), rng.normal(size=shape)


def running_stats(c, seed):
    rng = np.random.default_rng(seed + 7)
    return rng.normal(size=c), rng.uniform(0.2, 3.0, c)


def torch_batchnorm(x, gamma, beta, dy=None, mean=None, var=None, eps=1e-5):
    """torch's y and, with dy, its (dx, dgamma, dbeta), all as numpy arrays."""
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    training = mean is None
    stats = (None, None) if training else (torch.tensor(mean), torch.tensor(var))
    y = F.batch_norm(xt, *stats, gt, bt, training=training, eps=eps)
    if dy is None:
        return y.detach().numpy()
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), (xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy())


def forward(impl, x, gamma, beta, mean=None, var=None, eps=1e-5):
    """The learner's forward, checked to return (y, cache)."""
    out = impl.batchnorm_forward(x, gamma, beta, mean, var, eps)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(
            f"batchnorm_forward should return a pair (y, cache); got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        )
    return out


def check_grads(grads, expected, what, rtol=GRAD_RTOL, atol=GRAD_ATOL):
    if not isinstance(grads, tuple) or len(grads) != 3:
        fail(f"{what} should return a triple (dx, dgamma, dbeta); got {type(grads).__name__}")
    for name, actual, wanted in zip(("dx", "dgamma", "dbeta"), grads, expected, strict=True):
        assert_close(actual, wanted, what=f"{what}: {name}", rtol=rtol, atol=atol)


# -- the forward pass ---------------------------------------------------------------------------


@given(shape=shapes(), seed=seeds, eps=epsilons)
def test_training_forward_matches_torch(impl, shape, seed, eps):
    x, gamma, beta, _ = data(shape, seed)
    y, _ = forward(impl, x, gamma, beta, eps=eps)
    expected = torch_batchnorm(x, gamma, beta, eps=eps)
    what = f"batchnorm_forward({describe(x=x, gamma=gamma, beta=beta)}, eps={eps}) in training"
    assert_close(y, expected, what=what, rtol=RTOL, atol=ATOL)


@given(shape=shapes(), seed=seeds)
def test_training_output_is_standardised(impl, shape, seed):
    x, _, _, _ = data(shape, seed)
    c, eps = shape[1], 1e-5
    y, _ = forward(impl, x, np.ones(c), np.zeros(c), eps=eps)
    axes = (0, *range(2, x.ndim))
    what = f"batchnorm_forward(x {shape}, gamma=1, beta=0) in training"
    if np.shape(y) != shape:
        fail(f"{what} returned shape {np.shape(y)}; expected {shape}, like x")
    n = x.size // c  # values per channel
    means, variances = np.mean(y, axis=axes), np.var(y, axis=axes)
    expected_var = x.var(axis=axes) / (x.var(axis=axes) + eps)  # 1, but for eps
    for ch in range(c):
        if abs(means[ch]) > 1e-9:
            fail(
                f"{what}: channel {ch} of y has mean {means[ch]:.6g}; each channel must have mean "
                f"0 over its {n} values (the statistics pool every axis but axis 1)"
            )
        if abs(variances[ch] - expected_var[ch]) > 1e-9:
            ratio = variances[ch] / expected_var[ch]
            why = (
                f" = {n}/{n - 1} too small: normalise with the biased variance (/ n), not / (n - 1)"
                if abs(ratio - (n - 1) / n) < 1e-3
                else ""
            )
            fail(
                f"{what}: channel {ch} of y has variance {variances[ch]:.6g}, expected "
                f"{expected_var[ch]:.6g} (var / (var + eps)); that is {ratio:.6g} times it{why}"
            )


@given(shape=shapes(), seed=seeds)
def test_eps_goes_inside_the_square_root(impl, shape, seed):
    x, gamma, beta, _ = data(shape, seed)
    x = x * 1e-3  # channel variances around 1e-6, comparable with eps
    eps = 1e-5
    y, _ = forward(impl, x, gamma, beta, eps=eps)
    what = (
        f"batchnorm_forward(x {shape} with channel variances near 1e-6, eps={eps}) in training "
        "(divide by sqrt(var + eps))"
    )
    assert_close(y, torch_batchnorm(x, gamma, beta, eps=eps), what=what, rtol=RTOL, atol=ATOL)


@given(shape=shapes(), seed=seeds, offset=st.sampled_from([1e6, -3e6]))
def test_large_offsets_stay_accurate(impl, shape, seed, offset):
    x, gamma, beta, _ = data(shape, seed)
    x = x + offset  # a channel's mean a million times its spread
    y, _ = forward(impl, x, gamma, beta)
    # Batch normalisation ignores a shift, and x - offset is exact in float64: the oracle sees the
    # same values without the offset, where nothing cancels.
    expected = torch_batchnorm(x - offset, gamma, beta)
    what = (
        f"batchnorm_forward(x {shape} offset by {offset:g}) in training (compute the variance "
        "as the mean of (x - mean)^2, not as E[x^2] - E[x]^2)"
    )
    assert_close(y, expected, what=what, rtol=1e-7, atol=1e-7)


@given(shape=shapes(), seed=seeds)
def test_shifting_or_scaling_a_channel_changes_nothing(impl, shape, seed):
    x, gamma, beta, _ = data(shape, seed)
    rng = np.random.default_rng(seed + 1)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    a = np.exp(rng.uniform(-2, 2, shape[1])).reshape(per_channel)
    b = rng.normal(0, 10, shape[1]).reshape(per_channel)
    # With eps = 0 the output is exactly invariant: the paper's BN(a W u + b) = BN(W u).
    y, _ = forward(impl, x, gamma, beta, eps=0.0)
    y2, _ = forward(impl, a * x + b, gamma, beta, eps=0.0)
    what = (
        f"batchnorm_forward(a * x + b, ..., eps=0) vs batchnorm_forward(x, ..., eps=0), x {shape}, "
        "a > 0 and b per channel (a channel's own shift and scale must not reach y)"
    )
    assert_close(y2, y, what=what, rtol=1e-8, atol=1e-8)


@given(shape=shapes(), seed=seeds, eps=epsilons)
def test_evaluation_forward_matches_torch(impl, shape, seed, eps):
    x, gamma, beta, _ = data(shape, seed)
    mean, var = running_stats(shape[1], seed)
    y, _ = forward(impl, x, gamma, beta, mean, var, eps)
    expected = torch_batchnorm(x, gamma, beta, mean=mean, var=var, eps=eps)
    what = (
        f"batchnorm_forward({describe(x=x, gamma=gamma, beta=beta, mean=mean, var=var)}, "
        f"eps={eps}) in evaluation (normalise with the given mean and var, not the batch's)"
    )
    assert_close(y, expected, what=what, rtol=RTOL, atol=ATOL)


# -- the backward pass --------------------------------------------------------------------------


@given(shape=shapes(), seed=seeds, eps=epsilons)
def test_training_backward_matches_torch(impl, shape, seed, eps):
    x, gamma, beta, dy = data(shape, seed)
    _, cache = forward(impl, x, gamma, beta, eps=eps)
    grads = impl.batchnorm_backward(dy, cache)
    _, expected = torch_batchnorm(x, gamma, beta, dy, eps=eps)
    what = f"batchnorm_backward(dy {shape}, cache) after a training forward (eps={eps})"
    check_grads(grads, expected, what)


@given(shape=shapes(), seed=seeds, eps=epsilons)
def test_evaluation_backward_matches_torch(impl, shape, seed, eps):
    x, gamma, beta, dy = data(shape, seed)
    mean, var = running_stats(shape[1], seed)
    _, cache = forward(impl, x, gamma, beta, mean, var, eps)
    grads = impl.batchnorm_backward(dy, cache)
    _, expected = torch_batchnorm(x, gamma, beta, dy, mean=mean, var=var, eps=eps)
    what = (
        f"batchnorm_backward(dy {shape}, cache) after an evaluation forward with given mean and "
        f"var (eps={eps}; they are constants, so dx = dy * gamma / sqrt(var + eps))"
    )
    check_grads(grads, expected, what)


@given(
    shape=st.tuples(st.integers(2, 4), st.integers(1, 3), st.integers(1, 3)).map(
        lambda s: s if s[2] > 1 else s[:2]
    ),
    seed=seeds,
)
def test_backward_matches_finite_differences(impl, shape, seed):
    x, gamma, beta, dy = data(shape, seed)
    _, cache = forward(impl, x, gamma, beta)
    grads = impl.batchnorm_backward(dy, cache)

    def loss(x, gamma, beta):  # L = sum(y * dy), so dL/dy = dy
        return float(np.sum(forward(impl, x, gamma, beta)[0] * dy))

    h, numeric = 1e-6, []
    args = [x, gamma, beta]
    for i, arg in enumerate(args):
        g = np.zeros_like(arg)
        for j in np.ndindex(arg.shape):
            moved = [a.copy() for a in args]
            moved[i][j] += h
            up = loss(*moved)
            moved[i][j] -= 2 * h
            g[j] = (up - loss(*moved)) / (2 * h)
        numeric.append(g)
    what = (
        f"batchnorm_backward(dy {shape}, cache) after a training forward, against central "
        "differences (h = 1e-6) of your own batchnorm_forward"
    )
    check_grads(grads, numeric, what, rtol=1e-5, atol=1e-6)


@given(shape=shapes(), seed=seeds)
def test_input_gradient_is_blind_to_shift_and_scale(impl, shape, seed):
    x, gamma, beta, dy = data(shape, seed)
    _, cache = forward(impl, x, gamma, beta, eps=0.0)
    grads = impl.batchnorm_backward(dy, cache)
    if not isinstance(grads, tuple) or len(grads) != 3:
        fail(f"batchnorm_backward should return (dx, dgamma, dbeta); got {type(grads).__name__}")
    dx = np.asarray(grads[0])
    if dx.shape != shape:
        fail(f"batchnorm_backward(dy {shape}, cache) returned dx of shape {dx.shape}; expected x's")
    axes = (0, *range(2, x.ndim))
    xhat = (x - x.mean(axis=axes, keepdims=True)) / x.std(axis=axes, keepdims=True)
    # In training, y does not change when a channel of x is shifted or scaled (eps = 0), so the
    # loss does not either: per channel, sum(dx) = 0 and sum(dx * xhat) = 0.
    # The size of dx without the two correction terms, to judge what counts as zero.
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    inv_std = 1 / x.std(axis=axes, keepdims=True)
    scale = np.abs(dy * gamma.reshape(per_channel) * inv_std).sum(axis=axes)
    for name, totals, path in [
        ("dx", dx.sum(axis=axes), "the batch mean"),
        ("dx * xhat", (dx * xhat).sum(axis=axes), "the batch variance"),
    ]:
        ch = int(np.argmax(np.abs(totals) / scale))
        if abs(totals[ch]) > 1e-9 * scale[ch]:
            fail(
                f"batchnorm_backward(dy {shape}, cache) after a training forward with eps=0: the "
                f"sum of {name} over channel {ch} is {totals[ch]:.6g}, but it must be 0 because y "
                f"ignores a shift and a scale of the channel; dx is missing the path through "
                f"{path}"
            )


# -- the layer ----------------------------------------------------------------------------------


def torch_layer(c, ndim, eps, momentum, gamma, beta):
    layer = (torch.nn.BatchNorm2d if ndim == 4 else torch.nn.BatchNorm1d)(
        c, eps=eps, momentum=momentum, dtype=torch.float64
    )
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma))
        layer.bias.copy_(torch.tensor(beta))
    return layer


def make_layer(impl, c, eps, momentum, gamma, beta):
    layer = impl.BatchNorm(c, eps=eps, momentum=momentum)
    layer.gamma, layer.beta = gamma.copy(), beta.copy()
    return layer


def test_layer_starts_like_torch(impl):
    layer = impl.BatchNorm(5)
    what = "BatchNorm(5)"
    for name, value in [("gamma", 1.0), ("beta", 0.0), ("running_mean", 0.0), ("running_var", 1.0)]:
        attr = getattr(layer, name, None)
        if not isinstance(attr, np.ndarray):
            fail(f"{what}.{name} should be a numpy array of shape (5,); found {attr!r}")
        assert_close(attr, np.full(5, value), what=f"{what}.{name}", rtol=0, atol=0)
    if layer.training is not True:
        fail(f"{what}.training should start True (a new layer trains), found {layer.training!r}")
    if layer.eval() is not layer or layer.training is not False:
        fail(f"{what}.eval() should set training to False and return the layer")


@pytest.mark.parametrize("statistic", ["mean", "var"])
def test_layer_running_statistics_by_hand(impl, statistic):
    # One channel holding 0 and 2: mean 1, biased variance 1, unbiased variance 2. From the start
    # (running_mean 0, running_var 1), one step with momentum 0.1 gives 0.1 and 1.1.
    layer = impl.BatchNorm(1, momentum=0.1)
    layer.forward(np.array([[0.0], [2.0]]))
    name = f"running_{statistic}"
    got = float(np.ravel(getattr(layer, name))[0])
    start, batch = (0.0, 1.0) if statistic == "mean" else (1.0, 2.0)
    want = 0.9 * start + 0.1 * batch
    if abs(got - want) < 1e-12:
        return
    known = {
        0.1 * start + 0.9 * batch: "momentum is the weight of the new batch (0.1), not of the old "
        "running value",
    }
    if statistic == "var":
        known[0.9 * start + 0.1 * 1.0] = (
            "that used the biased batch variance 1 (/ n); running_var takes the unbiased one, "
            "2 (/ (n - 1))"
        )
    why = next((text for value, text in known.items() if abs(got - value) < 1e-9), "")
    fail(
        f"BatchNorm(1, momentum=0.1), one training forward on x = [[0], [2]]: {name} should be "
        f"0.9 * {start:g} + 0.1 * {batch:g} = {want:g}, got {got:.6g}" + (f"; {why}" if why else "")
    )


@given(shape=shapes(), seed=seeds, eps=epsilons, momentum=st.sampled_from([0.1, 0.3, 1.0]))
def test_layer_training_matches_torch(impl, shape, seed, eps, momentum):
    x, gamma, beta, _ = data(shape, seed)
    c = shape[1]
    layer = make_layer(impl, c, eps, momentum, gamma, beta)
    theirs = torch_layer(c, len(shape), eps, momentum, gamma, beta)
    for step in range(3):
        batch = x * (1 + step) + step  # batches whose statistics move
        what = (
            f"BatchNorm({c}, eps={eps}, momentum={momentum}), training step {step + 1}, x {shape}"
        )
        expected = theirs(torch.tensor(batch)).detach().numpy()
        assert_close(layer.forward(batch), expected, what=f"{what}: y", rtol=RTOL, atol=ATOL)
        for name in ("running_mean", "running_var"):
            assert_close(
                np.asarray(getattr(layer, name)),
                getattr(theirs, name).numpy(),
                what=f"{what}: {name} afterwards",
                rtol=RTOL,
                atol=ATOL,
            )


@given(shape=shapes(), seed=seeds)
def test_layer_evaluation_uses_running_statistics(impl, shape, seed):
    x, gamma, beta, _ = data(shape, seed)
    c = shape[1]
    layer = make_layer(impl, c, 1e-5, 0.1, gamma, beta)
    theirs = torch_layer(c, len(shape), 1e-5, 0.1, gamma, beta)
    for step in range(2):
        layer.forward(x + step)
        theirs(torch.tensor(x + step))
    layer.eval()
    theirs.eval()
    mean, var = np.array(layer.running_mean, copy=True), np.array(layer.running_var, copy=True)
    what = (
        f"BatchNorm({c}) after two training steps, then eval(): forward(x {shape}) (evaluation "
        "normalises with running_mean and running_var)"
    )
    y = layer.forward(x * 2)
    assert_close(y, theirs(torch.tensor(x * 2)).detach().numpy(), what=what, rtol=RTOL, atol=ATOL)
    assert_close(np.asarray(layer.running_mean), mean, what=f"{what}: running_mean", rtol=0, atol=0)
    assert_close(np.asarray(layer.running_var), var, what=f"{what}: running_var", rtol=0, atol=0)
    alone = layer.forward(x[:1] * 2)
    assert_close(
        alone,
        y[:1],
        what=f"{what}: the first sample, given alone (in evaluation no sample sees the others)",
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("mode", ["training", "evaluation"])
@given(shape=shapes(), seed=seeds)
def test_layer_backward_matches_torch(impl, mode, shape, seed):
    x, gamma, beta, dy = data(shape, seed)
    c = shape[1]
    layer = make_layer(impl, c, 1e-3, 0.1, gamma, beta)
    theirs = torch_layer(c, len(shape), 1e-3, 0.1, gamma, beta)
    layer.forward(x - 1)  # one training step, so that the running statistics differ from the start
    theirs(torch.tensor(x - 1))
    if mode == "evaluation":
        layer.eval()
        theirs.eval()
    xt = torch.tensor(x, requires_grad=True)
    theirs(xt).backward(torch.tensor(dy))
    expected = (xt.grad.numpy(), theirs.weight.grad.numpy(), theirs.bias.grad.numpy())
    layer.forward(x)
    check_grads(layer.backward(dy), expected, f"BatchNorm({c}).backward(dy {shape}) in {mode}")


def test_inputs_are_not_modified(impl):
    x, gamma, beta, dy = data((4, 3, 2, 2), 5)
    mean, var = running_stats(3, 5)
    copies = [a.copy() for a in (x, gamma, beta, dy, mean, var)]
    for stats in [(None, None), (mean, var)]:
        _, cache = forward(impl, x, gamma, beta, *stats)
        impl.batchnorm_backward(dy, cache)
    layer = make_layer(impl, 3, 1e-5, 0.1, gamma, beta)
    layer.forward(x)
    layer.backward(dy)
    for name, array, copy in zip(
        ("x", "gamma", "beta", "dy", "mean", "var"),
        (x, gamma, beta, dy, mean, var),
        copies,
        strict=True,
    ):
        if not np.array_equal(array, copy):
            fail(
                f"batchnorm_forward / batchnorm_backward / BatchNorm changed the caller's {name} "
                "in place; compute new arrays instead (x -= mean would rewrite the caller's data)"
            )
