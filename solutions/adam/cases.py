"""Hidden grading cases for adam: problems, shapes, schedules and settings unlike the public specs'.

The public specs train noisy least squares at a constant learning rate; these train softmax
regression and a two-layer tanh network, with step, cosine and warm-up schedules (the functions
take lr afresh each step), in float64 and float32, resume from a saved state at step 1000, and
time one step of each optimizer on half a million parameters. Every case is deterministic (inputs
from a fixed seed, outputs compared within a tolerance), so none can fail by chance.
"""

import numpy as np

from graders.cases import Case

# float64: 200 steps agree with torch.optim to about 1e-12 (see the public specs); every mistake
# in mutants.py is off by 1e-7 or far more.
TIGHT = {"rtol": 1e-9, "atol": 1e-9}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def softmax_regression(m, optimizer, w0, x, labels, noise, lrs, hyper, scale=1.0):
    """Train softmax regression (w0 (d, k), x (n, d), labels (n,)) with one optimizer, noisy full
    gradients times `scale`, learning rate lrs[s] in step s: every parameter and the final state."""
    import numpy as np

    step = getattr(m, optimizer)
    adam = optimizer != "sgd_momentum_step"
    w = w0.copy()
    state = [np.zeros_like(w) for _ in range(2 if adam else 1)]
    onehot = np.eye(w.shape[1], dtype=w.dtype)[labels]
    path = [w.copy()]
    for s, lr in enumerate(lrs):
        logits = x @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = p / p.sum(axis=1, keepdims=True)
        g = scale * (x.T @ (p - onehot) / len(x) + noise[s])
        # float(lr): a Python float, so that float32 stays float32 in a sound step.
        w, *state = step(w, g, *state, *([s + 1] if adam else []), lr=float(lr), **hyper)
        path.append(np.array(w, copy=True))
    return {"path": np.stack(path), "state": [np.asarray(a) for a in state]}


def tanh_network(m, params, x, y, batches, lrs, hyper):
    """Train y ~ tanh(x @ w1 + b1) @ w2 + b2 on mini-batches (rows batches[s] in step s) with
    adamw_step on each of the four parameters: every parameter after every step, and m and v."""
    import numpy as np

    ps = [p.copy() for p in params]
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    paths = [[p.copy()] for p in ps]
    for s, (rows, lr) in enumerate(zip(batches, lrs, strict=True)):
        xb, yb = x[rows], y[rows]
        h = np.tanh(xb @ ps[0] + ps[1])
        d = (h @ ps[2] + ps[3] - yb) / len(rows)  # the gradient of the mean squared error / 2
        dh = d @ ps[2].T * (1 - h * h)
        grads = [xb.T @ dh, dh.sum(axis=0), h.T @ d, d.sum(axis=0)]
        for i, g in enumerate(grads):
            ps[i], ms[i], vs[i] = m.adamw_step(ps[i], g, ms[i], vs[i], s + 1, lr=float(lr), **hyper)
            paths[i].append(np.array(ps[i], copy=True))
    return {
        "paths": [np.stack(path) for path in paths],
        "m": [np.asarray(a) for a in ms],
        "v": [np.asarray(a) for a in vs],
    }


def one_step_each(m, param, grad, velocity, mom, vel, t, sgd, adam):
    """One step of each optimizer from the given state (mom, vel: Adam's m and v; t its step)."""
    import numpy as np

    def fresh(*arrays):  # each call gets its own copies: an update in place costs another case
        return [a.copy() for a in arrays]

    out = {
        "sgd": m.sgd_momentum_step(*fresh(param, grad, velocity), **sgd),
        "adam": m.adam_step(*fresh(param, grad, mom, vel), t, **adam),
        "adamw": m.adamw_step(*fresh(param, grad, mom, vel), t, **adam),
    }
    return {k: [np.asarray(a) for a in v] for k, v in out.items()}


def inputs_untouched(m, param, grad, mom, vel):
    """Each optimizer on its own copies of the inputs: what it returned and what it left behind."""
    import numpy as np

    out = {}
    for name in ("sgd_momentum_step", "adam_step", "adamw_step"):
        mine = [a.copy() for a in (param, grad, mom, vel)]
        if name == "sgd_momentum_step":
            new = m.sgd_momentum_step(*mine[:3], lr=0.1, weight_decay=0.1)
        else:
            new = getattr(m, name)(*mine, 7, lr=0.01, weight_decay=0.1)
        out[name] = {"returned": [np.asarray(a) for a in new], "inputs afterwards": mine}
    return out


def one_step_each_sampled(m, param, grad, velocity, mom, vel, t, sgd, adam):
    """As one_step_each, returning every 512th value: the timing is the computation's, not that of
    writing megabytes of output."""
    import numpy as np

    def fresh(*arrays):  # each call gets its own copies: an update in place costs another case
        return [a.copy() for a in arrays]

    out = {
        "sgd": m.sgd_momentum_step(*fresh(param, grad, velocity), **sgd),
        "adam": m.adam_step(*fresh(param, grad, mom, vel), t, **adam),
        "adamw": m.adamw_step(*fresh(param, grad, mom, vel), t, **adam),
    }
    return {k: [np.asarray(a)[::512] for a in v] for k, v in out.items()}


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def _classes(seed, d, k, n, steps, noise, dtype=np.float64):
    """Softmax regression: n points in d dimensions from k Gaussian clusters, and gradient noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (k, d))
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.normal(size=(n, d))
    return {
        "w0": rng.normal(0, 0.5, (d, k)).astype(dtype),
        "x": x.astype(dtype),
        "labels": labels,
        "noise": rng.normal(0, noise, (steps, d, k)).astype(dtype),
    }


def _cosine(steps, peak, warmup=0, floor=0.0):
    """Linear warm-up to `peak`, then a cosine down to `floor`: one lr per step."""
    s = np.arange(steps)
    ramp = peak * (s + 1) / max(warmup, 1)
    progress = (s - warmup) / max(steps - warmup - 1, 1)
    cosine = floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * progress))
    return np.where(s < warmup, ramp, cosine)


def sgd_plain(seed):
    return {
        **_classes(seed, d=6, k=3, n=80, steps=150, noise=0.05),
        "optimizer": "sgd_momentum_step",
        "lrs": np.full(150, 0.1),
        "hyper": {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False},
    }


def sgd_nesterov(seed):
    return {
        **_classes(seed, d=4, k=5, n=60, steps=90, noise=0.1),
        "optimizer": "sgd_momentum_step",
        "lrs": np.repeat([0.2, 0.05, 0.01], 30),  # a step schedule
        "hyper": {"momentum": 0.7, "weight_decay": 0.05, "nesterov": True},
    }


def adam_defaults(seed):
    return {
        **_classes(seed, d=6, k=3, n=80, steps=200, noise=0.05),
        "optimizer": "adam_step",
        "lrs": np.full(200, 0.01),
        "hyper": {},
    }


def adam_l2(seed):
    return {
        **_classes(seed, d=5, k=4, n=70, steps=120, noise=0.1),
        "optimizer": "adam_step",
        "lrs": _cosine(120, 0.03),
        "hyper": {"beta1": 0.8, "beta2": 0.95, "eps": 1e-7, "weight_decay": 0.05},
    }


def adam_tiny_gradients(seed):
    return {
        **_classes(seed, d=3, k=3, n=40, steps=50, noise=0.05),
        "optimizer": "adam_step",
        "lrs": np.full(50, 0.02),
        "hyper": {},
        "scale": 1e-6,  # gradients near 1e-7, so eps = 1e-8 is a tenth of sqrt(v_hat)
    }


def adamw_float32(seed):
    return {
        **_classes(seed, d=7, k=4, n=90, steps=60, noise=0.1, dtype=np.float32),
        "optimizer": "adamw_step",
        "lrs": np.full(60, 0.01),
        "hyper": {"beta2": 0.99, "weight_decay": 0.3},
    }


def network(seed):
    rng = np.random.default_rng(seed)
    d, h, o, n, steps, batch = 5, 12, 2, 64, 120, 16
    x = rng.normal(size=(n, d))
    y = np.stack([np.sin(x[:, 0] + x[:, 1]), x[:, 2] * x[:, 3]], axis=1)
    params = [
        rng.normal(0, 1 / np.sqrt(d), (d, h)),
        np.zeros(h),
        rng.normal(0, 1 / np.sqrt(h), (h, o)),
        np.zeros(o),
    ]
    return {
        "params": params,
        "x": x,
        "y": y,
        "batches": np.stack([rng.choice(n, batch, replace=False) for _ in range(steps)]),
        "lrs": _cosine(steps, 0.01, warmup=20, floor=1e-3),
        "hyper": {"beta1": 0.9, "beta2": 0.98, "weight_decay": 0.1},
    }


def _state(rng, shape, t, scales):
    """A parameter, a gradient whose coordinates have the given scales, and an optimizer's state
    consistent with t - 1 earlier steps of gradients like it."""
    grad = rng.normal(size=shape) * scales
    return {
        "param": rng.normal(size=shape),
        "grad": grad,
        "velocity": rng.normal(size=shape) * scales * 3,
        "mom": rng.normal(0, 0.5, shape) * scales * (1 - 0.9 ** (t - 1)),
        "vel": rng.uniform(0.3, 2.0, shape) * scales**2 * (1 - 0.999 ** (t - 1)),
        "t": t,
    }


def first_step(seed):
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-4, 4, (9, 7))
    return {
        **_state(rng, (9, 7), 1, scales),
        "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3},
        "adam": {"lr": 0.05, "beta1": 0.85, "beta2": 0.995, "weight_decay": 1e-3},
    }


def resume(seed):
    rng = np.random.default_rng(seed)
    return {
        **_state(rng, (3, 4, 5), 1000, 1.0),
        "sgd": {"lr": 0.03, "momentum": 0.95, "weight_decay": 0.01, "nesterov": True},
        "adam": {"lr": 3e-4, "weight_decay": 0.02},
    }


def untouched(seed):
    rng = np.random.default_rng(seed)
    state = _state(rng, (6, 2), 7, 1.0)
    return {k: state[k] for k in ("param", "grad", "mom", "vel")}


def big(seed):
    rng = np.random.default_rng(seed)
    return {
        **_state(rng, (2**19,), 10, 1.0),
        "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True},
        "adam": {"lr": 1e-3, "weight_decay": 1e-2},
    }


CASES = [
    Case(
        "SGD, momentum 0.9: 150 steps of softmax regression, weights (6, 3)",
        call=softmax_regression,
        inputs=sgd_plain,
        points=2,
        seed=101,
        **TIGHT,
    ),
    Case(
        "SGD, Nesterov momentum 0.7, weight decay 0.05, a step schedule: 90 steps",
        call=softmax_regression,
        inputs=sgd_nesterov,
        points=2,
        seed=202,
        **TIGHT,
    ),
    Case(
        "Adam, torch's defaults but lr 0.01: 200 steps of softmax regression",
        call=softmax_regression,
        inputs=adam_defaults,
        points=2,
        seed=303,
        **TIGHT,
    ),
    Case(
        "Adam with L2 weight decay 0.05, betas (0.8, 0.95), eps 1e-7, a cosine schedule",
        call=softmax_regression,
        inputs=adam_l2,
        points=2,
        seed=404,
        **TIGHT,
    ),
    Case(
        "Adam on gradients near 1e-7, where eps = 1e-8 counts",
        call=softmax_regression,
        inputs=adam_tiny_gradients,
        points=1,
        seed=505,
        **TIGHT,
    ),
    Case(
        "AdamW, weight decay 0.1, warm-up and cosine: a two-layer tanh network, 120 mini-batches",
        call=tanh_network,
        inputs=network,
        points=3,
        seed=606,
        **TIGHT,
    ),
    # float32 keeps about 7 digits, and 60 steps of a sound implementation drift from the
    # reference by about 1e-6 relative; the mistakes are off by 1e-3 or more, or return float64.
    Case(
        "AdamW in float32 (which it must keep), weight decay 0.3, beta2 0.99: 60 steps",
        call=softmax_regression,
        inputs=adamw_float32,
        points=1,
        seed=707,
        rtol=1e-4,
        atol=1e-5,
    ),
    Case(
        "the first step of each optimizer, gradient scales from 1e-4 to 1e4 per coordinate",
        call=one_step_each,
        inputs=first_step,
        points=1,
        seed=808,
        **TIGHT,
    ),
    Case(
        "resuming each optimizer from a saved state at step 1000",
        call=one_step_each,
        inputs=resume,
        points=1,
        seed=909,
        **TIGHT,
    ),
    Case(
        "each optimizer returns new arrays and leaves its inputs untouched",
        call=inputs_untouched,
        inputs=untouched,
        points=1,
        seed=1010,
        rtol=1e-12,
        atol=1e-12,
    ),
    Case(
        "one step of each optimizer on 2^19 parameters (speed)",
        call=one_step_each_sampled,
        inputs=big,
        points=1,
        seed=1111,
        speed_ratio=4.0,
        speed_points=2,
        **TIGHT,
    ),
]
