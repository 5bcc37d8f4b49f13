"""Hidden grading cases for batchnorm: shapes, scales and settings unlike the public specs'.

Every case is deterministic (inputs from a fixed seed, outputs compared within a tolerance), so
none can fail by chance.
"""

import numpy as np

from graders.cases import Case

# float64: one forward pass agrees with another sound implementation to about 1e-14 relative and
# gradients to about 1e-13; every mistake in mutants.py is off by 1e-6 or far more.
TIGHT = {"rtol": 1e-9, "atol": 1e-10}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def training_step(m, x, gamma, beta, dy, eps):
    y, cache = m.batchnorm_forward(x, gamma, beta, eps=eps)
    dx, dgamma, dbeta = m.batchnorm_backward(dy, cache)
    return {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def training_step_rows(m, x, gamma, beta, dy, eps):
    """As training_step, returning every 64th row of y and dx: the timing is the computation's,
    not that of writing megabytes of output."""
    y, cache = m.batchnorm_forward(x, gamma, beta, eps=eps)
    dx, dgamma, dbeta = m.batchnorm_backward(dy, cache)
    return {"y": y[::64], "dx": dx[::64], "dgamma": dgamma, "dbeta": dbeta}


def training_forward(m, x, gamma, beta, eps):
    return m.batchnorm_forward(x, gamma, beta, eps=eps)[0]


def evaluation_step(m, x, gamma, beta, mean, var, dy, eps):
    y, cache = m.batchnorm_forward(x, gamma, beta, mean, var, eps)
    dx, dgamma, dbeta = m.batchnorm_backward(dy, cache)
    return {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def layer_run(m, batches, gamma, beta, dy, test_x, test_dy, eps, momentum):
    """Train on each of `batches` (steps, N, C, ...), backward the last, then evaluate test_x."""
    import numpy as np

    layer = m.BatchNorm(gamma.shape[0], eps=eps, momentum=momentum)
    layer.gamma, layer.beta = gamma.copy(), beta.copy()
    ys, means, variances = [], [], []
    for x in batches:
        ys.append(np.asarray(layer.forward(x)))
        means.append(np.array(layer.running_mean, copy=True))
        variances.append(np.array(layer.running_var, copy=True))
    out = {
        "train_y": np.stack(ys),
        "running_mean": np.stack(means),
        "running_var": np.stack(variances),
    }
    out["train_dx"], out["train_dgamma"], out["train_dbeta"] = layer.backward(dy)
    layer.eval()
    out["eval_y"] = layer.forward(test_x)
    out["eval_dx"], out["eval_dgamma"], out["eval_dbeta"] = layer.backward(test_dy)
    out["running_mean_after_eval"] = np.array(layer.running_mean, copy=True)
    out["running_var_after_eval"] = np.array(layer.running_var, copy=True)
    return out


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def _x(rng, shape, spread=(-1.0, 1.5), offset=3.0):
    """Values with their own scale and offset per channel."""
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    scale = np.exp(rng.uniform(*spread, c)).reshape(per_channel)
    return rng.normal(size=shape) * scale + rng.normal(0.0, offset, c).reshape(per_channel)


def _step(seed, shape, eps, **x_options):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = _x(rng, shape, **x_options)
    return {
        "x": x,
        "gamma": rng.normal(0.5, 1.0, c),
        "beta": rng.normal(size=c),
        "dy": rng.normal(size=shape),
        "eps": eps,
    }


def features(seed):
    return _step(seed, (37, 11), 1e-3)


def images(seed):
    return _step(seed, (5, 6, 7, 3), 1e-5)


def images_forward(seed):
    inputs = _step(seed, (3, 4, 9, 5), 1e-4)
    del inputs["dy"]
    return inputs


def tiny_variances(seed):
    return _step(seed, (64, 8), 1e-4, spread=(-9.0, -5.0), offset=1e-3)  # var 1e-8 ... 1e-4


def huge_means(seed):
    inputs = _step(seed, (50, 6), 1e-5, spread=(-0.5, 0.5), offset=1.0)
    inputs["x"] = inputs["x"] + np.array([5e5, -5e5, 2e5, 8e5, -1e5, 5e5]).reshape(1, 6)
    return inputs


def evaluation(seed):
    inputs = _step(seed, (7, 5, 6), 1e-3)
    rng = np.random.default_rng(seed + 1)
    return {**inputs, "mean": rng.normal(0, 2, 5), "var": rng.uniform(0.1, 4.0, 5)}


def _layer(seed, shape, steps, eps, momentum):
    rng = np.random.default_rng(seed)
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    # Each batch drifts a little, as a layer's inputs do while the layers before it learn.
    drift = rng.normal(0, 1, (steps, c)).cumsum(axis=0)
    batches = np.stack([_x(rng, shape) + drift[s].reshape(per_channel) for s in range(steps)])
    return {
        "batches": batches,
        "gamma": rng.normal(1.0, 0.5, c),
        "beta": rng.normal(size=c),
        "dy": rng.normal(size=shape),
        "test_dy": rng.normal(size=(3, *shape[1:])),
        "test_x": _x(rng, (3, *shape[1:])) + drift[-1].reshape(per_channel),
        "eps": eps,
        "momentum": momentum,
    }


def layer_images(seed):
    return _layer(seed, (8, 3, 5, 4), steps=4, eps=1e-4, momentum=0.2)


def layer_small_batches(seed):
    return _layer(seed, (2, 9), steps=6, eps=1e-5, momentum=0.1)


def big_features(seed):
    return _step(seed, (512, 1024), 1e-5)


CASES = [
    Case(
        "training, 37 samples x 11 features, eps 1e-3",
        call=training_step,
        inputs=features,
        points=2,
        seed=101,
        **TIGHT,
    ),
    Case(
        "training on images (5, 6, 7, 3): forward and backward",
        call=training_step,
        inputs=images,
        points=2,
        seed=202,
        **TIGHT,
    ),
    Case(
        "training forward on images (3, 4, 9, 5)",
        call=training_forward,
        inputs=images_forward,
        points=1,
        seed=303,
        **TIGHT,
    ),
    Case(
        "channel variances from 1e-8 to 1e-4, eps 1e-4",
        call=training_step,
        inputs=tiny_variances,
        points=1,
        seed=404,
        **TIGHT,
    ),
    # A mean 5e5 times the spread: a sound implementation loses about 1e-11; E[x^2] - E[x]^2 1e-5.
    Case(
        "channel means up to 8e5 with unit spread",
        call=training_step,
        inputs=huge_means,
        points=1,
        seed=505,
        rtol=1e-8,
        atol=1e-8,
    ),
    Case(
        "evaluation with given statistics, (7, 5, 6)",
        call=evaluation_step,
        inputs=evaluation,
        points=2,
        seed=606,
        **TIGHT,
    ),
    Case(
        "the layer on images: 4 training steps, backward, evaluation",
        call=layer_run,
        inputs=layer_images,
        points=3,
        seed=707,
        **TIGHT,
    ),
    Case(
        "the layer on batches of 2: 6 training steps, backward, evaluation",
        call=layer_run,
        inputs=layer_small_batches,
        points=2,
        seed=808,
        **TIGHT,
    ),
    Case(
        "training, 512 samples x 1024 features (speed)",
        call=training_step_rows,
        inputs=big_features,
        points=1,
        seed=909,
        speed_ratio=4.0,
        speed_points=2,
        **TIGHT,
    ),
]
