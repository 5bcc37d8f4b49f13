"""Hidden grading cases for dropout: shapes, dtypes and drop probabilities unlike the public specs'.

A training forward is random, and a correct dropout may draw its mask in any order or way (uniform
draws compared with p, rng.binomial, ...), so those cases never ask for the reference's mask.
Their compare functions reduce an output to what it says about the dropout that made it: its form
(shapes, dtypes, finite values), whether y is x times the mask, the scale of the kept elements, the
dropped fraction, and, along each axis, how often two neighbours are both dropped (p^2 when drops
are independent). Exact features must be equal; statistical ones must agree within a two-sample
Hoeffding bound, so that a correct dropout fails a case with probability below DELTA = 1e-7. The
same comparison of a learner's output with each mutant's names the mistake. Evaluation, p = 0,
p = 1 and the backward with a given mask are deterministic and compared exactly.
"""

import math

import numpy as np

from graders.cases import Case

DELTA = 1e-7  # the false-failure chance each statistical case allows itself
# Kept values are x / (1 - p) up to rounding, whichever way it is computed.
SCALE_RTOL = {"float64": 1e-9, "float32": 1e-5}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def training_forward(m, x, p, seed):
    import numpy as np

    y, mask = m.dropout_forward(x, p, np.random.default_rng(seed))
    return {"y": y, "mask": mask}


def training_forward_rows(m, x, p, seed, step):
    """As training_forward, returning every step-th row of y and mask: the timing is the
    computation's, not that of writing megabytes of output."""
    import numpy as np

    y, mask = m.dropout_forward(x, p, np.random.default_rng(seed))
    return {"y": y[::step], "mask": mask[::step]}


def evaluation_forward(m, x, p, seed):
    import numpy as np

    y, mask = m.dropout_forward(x, p, np.random.default_rng(seed), False)
    return {"y": y, "mask": mask}


def extreme_probabilities(m, x, seed):
    """p = 0 keeps everything and p = 1 drops everything, in training."""
    import numpy as np

    out = {}
    for name, p in (("p0", 0.0), ("p1", 1.0)):
        y, mask = m.dropout_forward(x, p, np.random.default_rng(seed))
        out[name] = {"y": y, "mask": mask}
    return out


def reproducibility(m, x, p, seed):
    """Two calls on one generator, then a fresh generator with the same seed, then one that goes
    through an evaluation call before its first training call."""
    import numpy as np

    rng = np.random.default_rng(seed)
    first = m.dropout_forward(x, p, rng)[0]
    second = m.dropout_forward(x, p, rng)[0]
    same_seed = m.dropout_forward(x, p, np.random.default_rng(seed))[0]
    rng = np.random.default_rng(seed)
    m.dropout_forward(x, p, rng, False)
    after_evaluation = m.dropout_forward(x, p, rng)[0]
    return {
        "first": first,
        "second": second,
        "same_seed": same_seed,
        "after_evaluation": after_evaluation,
    }


def backward(m, dy, mask):
    return m.dropout_backward(dy, mask)


def layer_run(m, batches, dy, test_x, test_dy, p, seed):
    """Train on each of `batches` (steps, N, D), backward the last, evaluate, train once more."""
    import numpy as np

    layer = m.Dropout(p, rng=np.random.default_rng(seed))
    train_y = np.stack([np.asarray(layer.forward(x)) for x in batches])
    train_dx = layer.backward(dy)
    layer.eval()
    eval_y = layer.forward(test_x)
    eval_dx = layer.backward(test_dy)
    layer.train()
    return {
        "train_y": train_y,
        "train_dx": train_dx,
        "eval_y": eval_y,
        "eval_dx": eval_dx,
        "train_again_y": layer.forward(batches[0]),
    }


# -- what an output says about the dropout that made it -----------------------------------------


def _tolerance(n, statistics):
    """Two estimates of one frequency from n draws each differ by more than this with chance
    below DELTA / statistics (Hoeffding's bound for each, with half that chance)."""
    return 2 * math.sqrt(math.log(4 * statistics / DELTA) / (2 * max(n, 1)))


def _array_problem(name, value, like):
    if not isinstance(value, np.ndarray):
        return f"{name} is a {type(value).__name__}, not a numpy array"
    if value.shape != like.shape or value.dtype != like.dtype:
        return f"{name} is {value.shape} {value.dtype}; expected {like.shape} {like.dtype}, like x"
    if not np.isfinite(value).all():
        return f"{name} holds NaN or inf"
    return None


def _forward_features(x, y, mask=None):
    """Features of one forward output; without a mask (the layer), kept elements are y's nonzeros
    (x is never 0 in these cases) and their mask values are y / x."""
    x = np.asarray(x)
    arrays = {"y": y} if mask is None else {"y": y, "mask": mask}
    for name, value in arrays.items():
        problem = _array_problem(name, value, x)
        if problem:
            return {"form": problem}
    if mask is None:
        kept = y != 0
        values = y[kept] / x[kept]
        consistent = True
    else:
        kept = mask != 0
        values = mask[kept]
        rtol = SCALE_RTOL.get(str(x.dtype), 1e-9)
        consistent = bool(np.allclose(y, x * mask, rtol=rtol, atol=0))
    dropped = ~kept
    pairs = []
    for axis, length in enumerate(x.shape):
        if length >= 2:
            a = dropped.take(range(0, length - 1, 2), axis=axis)
            b = dropped.take(range(1, length, 2), axis=axis)
            pairs.append((axis, float((a & b).mean()), a.size))
    return {
        "form": "ok",
        "y is x * mask": consistent,
        "the mask on kept elements": (float(values.min()), float(values.max()))
        if values.size
        else None,
        "dropped": (float(dropped.mean()), dropped.size),
        "pairs": pairs,
    }


def _backward_features(dy, dx, y):
    """Features of a layer's dx, against the elements its last forward kept (y's nonzeros)."""
    problem = _array_problem("dx", dx, np.asarray(dy))
    if problem:
        return {"form": problem}
    kept = y != 0
    ratio = dx[kept] / dy[kept]
    return {
        "form": "ok",
        "dx / dy where the forward kept": (float(ratio.min()), float(ratio.max()))
        if ratio.size
        else None,
        "dx nonzero where the forward dropped": (
            float((dx[~kept] != 0).mean()) if (~kept).any() else 0.0,
            int((~kept).sum()),
        ),
    }


def _differ(what, fa, fe, p, statistics):
    """None when two feature sets agree (exactly, or within the statistical bound), else why."""
    if fa["form"] != fe["form"]:
        return f"{what}: {fa['form']}" if fa["form"] != "ok" else f"{what}: {fe['form']} expected"
    for key in fa:
        a, e = fa[key], fe[key]
        if key in ("the mask on kept elements", "dx / dy where the forward kept"):
            same = (a is None) == (e is None) and (
                a is None or np.allclose(a, e, rtol=SCALE_RTOL["float32"], atol=0)
            )
            if not same:
                show = (
                    "none kept"
                    if a is None
                    else f"is {a[0]:.6g}"
                    if np.isclose(a[0], a[1])
                    else f"runs from {a[0]:.6g} to {a[1]:.6g}"
                )
                want = "none kept" if e is None else f"{e[0]:.6g}"
                why = ""
                if key == "the mask on kept elements" and e is not None and not np.isclose(e[0], 1):
                    why = f" (1 / (1 - p) with p = {p:g})"
                return f"{what}: {key} {show}; expected {want}{why}"
        elif key in ("dropped", "dx nonzero where the forward dropped"):
            (got, n), (want, _) = a, e
            # A fraction of exactly 0 or 1 comes from p = 0, p = 1 or evaluation, where nothing is
            # random: it must match exactly. Otherwise two draws of n may differ by the bound.
            exact = want in (0.0, 1.0)
            wrong = got != want if exact else abs(got - want) > _tolerance(n, statistics)
            if wrong:
                expect = f"{want:.2%}" if exact else f"about {want:.2%}"
                extra = f" (p = {p:g})" if key == "dropped" and not exact else ""
                return f"{what}: {key}: {got:.2%} of {n} elements; expected {expect}{extra}"
        elif key == "pairs":
            for (axis, rate, n), (_, want, _) in zip(a, e, strict=True):
                if abs(rate - want) > _tolerance(n, statistics):
                    return (
                        f"{what}: neighbours along axis {axis} were both dropped {rate:.2%} of "
                        f"the time; expected about {want:.2%} (p^2 = {p * p:.2%} when every "
                        "element is dropped on its own)"
                    )
        elif key == "y is x * mask" and a != e:
            return (
                f"{what}: y is not x * mask" if e else f"{what}: y is x * mask, unexpectedly"
            ) + " (y must be x times the mask returned with it)"
    return None


def _statistics(x):
    """How many statistical features one forward output yields: the dropped fraction and a pair
    rate per axis."""
    return 1 + sum(n >= 2 for n in np.shape(x))


def _compare_forward(actual, expected, inputs, training=True):
    if not isinstance(actual, dict) or set(actual) != {"y", "mask"}:
        return "dropout_forward should return a pair (y, mask)"
    x, p = np.asarray(inputs["x"]), inputs["p"]
    mode = "" if training else ", training=False"
    what = f"dropout_forward(x {x.shape} {x.dtype}, p={p:g}, rng{mode})"
    if "step" in inputs:  # the call returned every step-th row
        x = x[:: inputs["step"]]
        what += f", every {inputs['step']}th row of y and mask"
    fa = _forward_features(x, actual["y"], actual["mask"])
    fe = _forward_features(x, expected["y"], expected["mask"])
    return _differ(what, fa, fe, p, _statistics(x))


def compare_forward(actual, expected, inputs):
    return _compare_forward(actual, expected, inputs)


def compare_evaluation(actual, expected, inputs):
    return _compare_forward(actual, expected, inputs, training=False)


def compare_extremes(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != {"p0", "p1"}:
        return "expected the outputs for p = 0 and p = 1"
    for name, p in (("p0", 0.0), ("p1", 1.0)):
        message = compare_forward(actual[name], expected[name], {"x": inputs["x"], "p": p})
        if message:
            return message
    return None


def compare_reproducibility(actual, expected, inputs):
    keys = {"first", "second", "same_seed", "after_evaluation"}
    if not isinstance(actual, dict) or set(actual) != keys:
        return f"expected a dict with keys {sorted(keys)}"
    properties = [
        (
            "same_seed",
            True,
            "two generators with the same seed gave different masks; draw from "
            "the rng argument, not from np.random.* or a generator of your own",
        ),
        (
            "second",
            False,
            "two calls on one generator gave the same mask; each call must draw "
            "new numbers from rng",
        ),
        (
            "after_evaluation",
            True,
            "an evaluation call moved the generator (the next training "
            "mask differs from the first); evaluation must not draw from rng",
        ),
    ]

    def equal(out, key):
        a, b = np.asarray(out["first"]), np.asarray(out[key])
        return a.shape == b.shape and bool(np.array_equal(a, b))

    for key, _, why in properties:
        if equal(actual, key) != equal(expected, key):
            return f"dropout_forward(x {np.shape(inputs['x'])}, p={inputs['p']:g}, rng): {why}"
    return None


def compare_layer(actual, expected, inputs):
    keys = {"train_y", "train_dx", "eval_y", "eval_dx", "train_again_y"}
    if not isinstance(actual, dict) or set(actual) != keys:
        return f"expected a dict with keys {sorted(keys)}"
    p, batches = inputs["p"], np.asarray(inputs["batches"])
    steps = len(batches)
    layer = f"Dropout({p:g})"
    checks = [
        # Stacked along a new first axis, the pair rate along axis 0 says whether consecutive
        # training steps drew independent masks.
        (
            f"{layer}.forward on {steps} training batches {batches.shape[1:]}, stacked",
            lambda o: _forward_features(batches, o["train_y"]),
            _statistics(batches),
        ),
        (
            f"{layer}.backward(dy) after the last training step",
            lambda o: _backward_features(inputs["dy"], o["train_dx"], o["train_y"][-1]),
            1,
        ),
        (
            f"{layer}.forward after eval()",
            lambda o: _forward_features(inputs["test_x"], o["eval_y"]),
            3,
        ),
        (
            f"{layer}.backward(dy) after eval()",
            lambda o: _backward_features(inputs["test_dy"], o["eval_dx"], o["eval_y"]),
            1,
        ),
        (
            f"{layer}.forward after eval() then train()",
            lambda o: _forward_features(batches[0], o["train_again_y"]),
            3,
        ),
    ]
    for what, features, statistics in checks:
        try:
            fa = features(actual)
        except Exception as err:  # a malformed output that the features cannot even read
            return f"{what}: the output could not be read ({type(err).__name__}: {err})"
        message = _differ(what, fa, features(expected), p, statistics * len(checks))
        if message:
            return message
    return None


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def _x(rng, shape, dtype="float64"):
    """Values of either sign, between 0.25 and 4 in size: never 0, so a zero in y means dropped."""
    size = np.exp(rng.uniform(np.log(0.25), np.log(4.0), shape))
    return (size * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def features_float64(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (257, 389)), "p": 0.3, "seed": seed + 1}


def images_float32(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (16, 3, 32, 32), "float32"), "p": 0.75, "seed": seed + 1}


def rare_drops(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (4000, 25)), "p": 0.02, "seed": seed + 1}


def evaluation(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (3, 7, 11, 13)), "p": 0.4, "seed": seed + 1}


def extremes(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (31, 17)), "seed": seed + 1}


def reproducible(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (9, 40)), "p": 0.35, "seed": seed + 1}


def backward_float32(seed):
    rng = np.random.default_rng(seed)
    shape, p = (40, 6, 9), 0.6
    mask = ((rng.random(shape) >= p) / (1 - p)).astype(np.float32)
    return {"dy": _x(rng, shape, "float32"), "mask": mask}


def layer_inputs(seed):
    rng = np.random.default_rng(seed)
    steps, shape = 4, (64, 48)
    return {
        "batches": np.stack([_x(rng, shape) for _ in range(steps)]),
        "dy": _x(rng, shape),
        "test_x": _x(rng, (5, 48)),
        "test_dy": _x(rng, (5, 48)),
        "p": 0.35,
        "seed": seed + 1,
    }


def big_features(seed):
    rng = np.random.default_rng(seed)
    return {"x": _x(rng, (1024, 2048)), "p": 0.2, "seed": seed + 1, "step": 64}


CASES = [
    Case(
        "training, 257 x 389 float64, p = 0.3",
        call=training_forward,
        inputs=features_float64,
        points=2,
        seed=101,
        compare=compare_forward,
    ),
    Case(
        "training on float32 images (16, 3, 32, 32), p = 0.75",
        call=training_forward,
        inputs=images_float32,
        points=2,
        seed=202,
        compare=compare_forward,
    ),
    Case(
        "training, 4000 x 25, rare drops (p = 0.02)",
        call=training_forward,
        inputs=rare_drops,
        points=1,
        seed=303,
        compare=compare_forward,
    ),
    Case(
        "p = 0 keeps everything and p = 1 drops everything, (31, 17)",
        call=extreme_probabilities,
        inputs=extremes,
        points=1,
        seed=404,
        compare=compare_extremes,
    ),
    Case(
        "evaluation is the identity, (3, 7, 11, 13), p = 0.4",
        call=evaluation_forward,
        inputs=evaluation,
        points=2,
        seed=505,
        compare=compare_evaluation,
    ),
    Case(
        "masks come from the given generator: same seed, same mask; a new mask every call",
        call=reproducibility,
        inputs=reproducible,
        points=1,
        seed=606,
        compare=compare_reproducibility,
    ),
    Case(
        "backward with a given float32 mask, (40, 6, 9), p = 0.6",
        call=backward,
        inputs=backward_float32,
        points=2,
        seed=707,
        rtol=1e-6,
        atol=0.0,
    ),
    Case(
        "the layer: 4 training steps, backward, evaluation, training again",
        call=layer_run,
        inputs=layer_inputs,
        points=3,
        seed=808,
        compare=compare_layer,
    ),
    Case(
        "training, 1024 x 2048, p = 0.2 (speed)",
        call=training_forward_rows,
        inputs=big_features,
        points=1,
        seed=909,
        compare=compare_forward,
        speed_ratio=5.0,
        speed_points=2,
    ),
]
