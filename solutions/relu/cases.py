"""Hidden grading cases for relu: shapes, dtypes, fans and depths unlike the public specs'.

The initialisations are random, so their cases compare distributions, not numbers: a learner who
draws in another order (or with rng.normal) gets other weights from the same distribution and
full marks. Each statistical check below fails a correct answer with a chance far below 1e-6.
"""

import math

import numpy as np

from graders.cases import Case

# --- calls: run in the learner's sandbox and in the trusted reference worker ---------------------


def relu_and_input(m, x):
    y = m.relu(x)
    return {"relu(x)": y, "x after the call": x}


def backward(m, grad_out, x):
    return m.relu_backward(grad_out, x)


def init(m, name, fan_in, fan_out, seed):
    import numpy as np

    return getattr(m, name)(fan_in, fan_out, np.random.default_rng(seed))


def draws_from_rng(m, seed):
    import numpy as np

    verdicts = {}
    for name in ("xavier_normal", "kaiming_normal"):
        fn = getattr(m, name)
        np.random.seed(seed)  # the global state differs between the two calls ...
        a = fn(17, 23, np.random.default_rng(seed))
        np.random.seed(seed + 1)
        b = fn(17, 23, np.random.default_rng(seed))  # ... the generator's seed does not
        rng = np.random.default_rng(seed)
        c, d = fn(17, 23, rng), fn(17, 23, rng)  # one generator, two calls: it must advance
        verdicts[name] = bool(np.array_equal(a, b) and not np.array_equal(c, d))
    return verdicts


def deep_scales(m, width, depth, batch, seed):
    """log2 of the RMS after `depth` layers relu(h @ W): He activations and gradients, Xavier."""
    import numpy as np

    def log2_rms(a):
        value = np.log2(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
        return float(np.nan_to_num(value, nan=9999.0, posinf=9999.0, neginf=-9999.0))

    def net(init, s):
        rng = np.random.default_rng(s)
        h = np.random.default_rng(s + 1).standard_normal((batch, width))
        pre, weights = [], []
        for _ in range(depth):
            w = init(width, width, rng)
            y = h @ w
            h = m.relu(y)
            pre.append(y)
            weights.append(w)
        return pre, weights, h

    with np.errstate(all="ignore"):
        pre, weights, h = net(m.kaiming_normal, seed)
        out = {"He activations": log2_rms(h)}
        g = np.random.default_rng(seed + 2).standard_normal((batch, width))
        for y, w in zip(reversed(pre), reversed(weights), strict=True):
            g = m.relu_backward(g, y) @ w.T
        out["He gradients"] = log2_rms(g)
        out["Xavier activations"] = log2_rms(net(m.xavier_normal, seed + 3)[2])
    return out


def relu_pair(m, x, grad_out):
    y = m.relu(x)
    g = m.relu_backward(grad_out, x)
    return [y[::64, ::64], g[::64, ::64]]  # a sample of both, so the reply stays small


# --- comparisons ---------------------------------------------------------------------------------


def same_distribution(actual, expected, inputs):
    """Two samples of weights: same shape and dtype, and the same distribution.

    With n >= 90,000 draws per sample, for two correct samples: the difference of the means has
    sd 0.0047 std (the bound 0.05 std is 10 sd away); the ratio of RMS has sd 0.0033 (the bound
    5% is 15 sd away); the two-sample Kolmogorov-Smirnov distance exceeds 0.02 with a chance
    about 2 exp(-2 (0.02)^2 n / 2) < 1e-15.
    """
    call = f"{inputs['name']}({inputs['fan_in']}, {inputs['fan_out']}, rng)"
    if not isinstance(actual, np.ndarray):
        return f"{call} returned a {type(actual).__name__}; expected a numpy array"
    if actual.shape != expected.shape:
        return (
            f"{call} returned shape {actual.shape}; expected (fan_in, fan_out) = {expected.shape}"
        )
    if actual.dtype != expected.dtype:
        return f"{call} returned dtype {actual.dtype}; expected {expected.dtype}"
    if not np.isfinite(actual).all():
        return f"{call} returned non-finite values"
    std = math.sqrt(np.mean(expected**2))
    if abs(actual.mean() - expected.mean()) > 0.05 * std:
        mean, wanted = actual.mean(), expected.mean()
        return f"{call}: the weights' mean is {mean:.3g}; expected about {wanted:.3g}"
    ratio = math.sqrt(np.mean(actual**2)) / std
    if not 0.95 <= ratio <= 1.05:
        return (
            f"{call}: the weights' standard deviation is {ratio * std:.4g}; expected about "
            f"{std:.4g}"
        )
    a, e = np.sort(actual.ravel()), np.sort(expected.ravel())
    grid = np.concatenate([a, e])
    gap = np.max(
        np.abs(
            np.searchsorted(a, grid, "right") / a.size - np.searchsorted(e, grid, "right") / e.size
        )
    )
    if gap > 0.02:
        return (
            f"{call}: the mean and standard deviation are right, but the weights are not "
            f"normally distributed (Kolmogorov-Smirnov distance {gap:.3f}, up to 0.02 allowed)"
        )
    return None


def close_scales(actual, expected, inputs):
    """Deep networks: each log2 RMS within 5 (a factor 32) of the expected one.

    For two correct answers that draw differently, the difference of two such values has an sd
    near 0.77 (from 300 simulated networks of width 512, scaled to width 384): 5 is 6.5 sd away,
    a false failure below 1e-9 per value. A mistake that loses or gains a factor sqrt(2) per
    layer is off by 25.
    """
    if not isinstance(actual, dict) or set(actual) != set(expected):
        return f"expected a dict with keys {sorted(expected)}, got {actual!r:.120}"
    for key, e in expected.items():
        a = actual[key]
        if not isinstance(a, float) or not abs(a - e) <= 5:
            return (
                f"{key} after {inputs['depth']} ReLU layers of width {inputs['width']}: the "
                f"RMS is 2**{a:.1f}; expected about 2**{e:.1f} (within a factor 32)"
            )
    return None


# --- inputs: built on the trusted side from a seed -----------------------------------------------


def with_zeros(g, shape, dtype):
    x = g.standard_normal(shape).astype(dtype)
    x[g.random(shape) < 0.2] = 0.0  # exact zeros, where the slope convention matters
    return x


def relu_float32(seed):
    return {"x": with_zeros(np.random.default_rng(seed), (3, 5, 7), np.float32)}


def relu_extremes(seed):
    g = np.random.default_rng(seed)
    x = g.choice([-1e300, -1.0, -1e-300, -0.0, 0.0, 1e-300, 1.0, 1e300], size=(41,))
    return {"x": x * g.random(41)}


def backward_float64(seed):
    g = np.random.default_rng(seed)
    return {"grad_out": g.standard_normal((6, 4, 9)), "x": with_zeros(g, (6, 4, 9), np.float64)}


def backward_float32(seed):
    g = np.random.default_rng(seed)
    return {
        "grad_out": g.standard_normal((2, 3, 50)).astype(np.float32),
        "x": with_zeros(g, (2, 3, 50), np.float32),
    }


def fans(name, fan_in, fan_out):
    return lambda seed: {"name": name, "fan_in": fan_in, "fan_out": fan_out, "seed": seed}


def kaiming_600_150(seed):
    return fans("kaiming_normal", 600, 150)(seed)


def kaiming_96_1200(seed):
    return fans("kaiming_normal", 96, 1200)(seed)


def xavier_200_700(seed):
    return fans("xavier_normal", 200, 700)(seed)


def rng_seed(seed):
    return {"seed": seed}


def deep(seed):
    return {"width": 384, "depth": 50, "batch": 48, "seed": seed}


def big_activations(seed):
    g = np.random.default_rng(seed)
    return {
        "x": with_zeros(g, (2048, 2048), np.float64),
        "grad_out": g.standard_normal((2048, 2048)),
    }


CASES = [
    Case(
        "relu of a float32 (3, 5, 7) array, its input left alone",
        call=relu_and_input,
        inputs=relu_float32,
        points=1,
        seed=11,
        rtol=0,
        atol=0,
    ),
    Case(
        "relu of values from 1e-300 to 1e300",
        call=relu_and_input,
        inputs=relu_extremes,
        points=1,
        seed=12,
        rtol=0,
        atol=0,
    ),
    Case(
        "relu_backward, float64 (6, 4, 9), exact zeros in x",
        call=backward,
        inputs=backward_float64,
        points=2,
        seed=21,
        rtol=0,
        atol=0,
    ),
    Case(
        "relu_backward, float32 (2, 3, 50)",
        call=backward,
        inputs=backward_float32,
        points=1,
        seed=22,
        rtol=0,
        atol=0,
    ),
    Case(
        "kaiming_normal(600, 150): N(0, 2 / 600)",
        call=init,
        inputs=kaiming_600_150,
        points=2,
        seed=31,
        compare=same_distribution,
    ),
    Case(
        "kaiming_normal(96, 1200): N(0, 2 / 96)",
        call=init,
        inputs=kaiming_96_1200,
        points=1,
        seed=32,
        compare=same_distribution,
    ),
    Case(
        "xavier_normal(200, 700): N(0, 2 / 900)",
        call=init,
        inputs=xavier_200_700,
        points=2,
        seed=33,
        compare=same_distribution,
    ),
    Case(
        "the initialisations draw from the rng argument",
        call=draws_from_rng,
        inputs=rng_seed,
        points=1,
        seed=41,
    ),
    Case(
        "50 ReLU layers of width 384: He keeps the scale, Xavier loses it",
        call=deep_scales,
        inputs=deep,
        points=2,
        seed=51,
        compare=close_scales,
    ),
    Case(
        "relu and relu_backward on 4M values (speed)",
        call=relu_pair,
        inputs=big_activations,
        points=1,
        seed=61,
        rtol=0,
        atol=0,
        speed_ratio=5.0,
        speed_points=2,
    ),
]
