"""Hidden grading cases for layernorm: shapes, epsilons and inputs unlike the public specs'."""

import numpy as np

from graders.cases import Case

# -- calls (run in the learner's sandbox and in the trusted worker alike) ------------------------


def ln(m, x, gamma, beta, eps):
    return m.layernorm_forward(x, gamma, beta, eps=eps)[0]


def ln_backward(m, x, gamma, beta, dy, eps):
    _, cache = m.layernorm_forward(x, gamma, beta, eps=eps)
    return m.layernorm_backward(dy, cache)


def rms(m, x, gamma, eps):
    return m.rmsnorm_forward(x, gamma, eps=eps)[0]


def rms_backward(m, x, gamma, dy, eps):
    _, cache = m.rmsnorm_forward(x, gamma, eps=eps)
    return m.rmsnorm_backward(dy, cache)


def both(m, x, gamma, beta, dy, eps):
    z, rms_cache = m.rmsnorm_forward(x, gamma, eps=eps)
    y, cache = m.layernorm_forward(x, gamma, beta, eps=eps)
    return {
        "layernorm_forward": y,
        "layernorm_backward": m.layernorm_backward(dy, cache),
        "rmsnorm_forward": z,
        "rmsnorm_backward": m.rmsnorm_backward(dy, rms_cache),
    }


def inputs_after(m, x, gamma, beta, dy):
    # Both layers, forward and backward, on the same arrays; what comes back is those arrays.
    _, cache = m.layernorm_forward(x, gamma, beta)
    m.layernorm_backward(dy, cache)
    _, cache = m.rmsnorm_forward(x, gamma)
    m.rmsnorm_backward(dy, cache)
    return {"x": x, "gamma": gamma, "beta": beta, "dy": dy}


def forward_and_backward(m, x, gamma, beta, dy):
    # A training step's worth of both layers. Only every 64th row comes back, so that writing the
    # output weighs little on the time.
    z, cache = m.rmsnorm_forward(x, gamma, eps=1e-6)
    dx_rms, dgamma_rms = m.rmsnorm_backward(dy, cache)
    y, cache = m.layernorm_forward(x, gamma, beta, eps=1e-5)
    dx, dgamma, dbeta = m.layernorm_backward(dy, cache)
    return [y[::64], dx[::64], dgamma, dbeta, z[::64], dx_rms[::64], dgamma_rms]


# -- inputs (built on the trusted side from a seed) ----------------------------------------------


def _activations(seed, shape, offset=0.0, spread=1.0):
    """Heavy-tailed rows (Student's t, 3 degrees of freedom), each with its own offset and spread,
    like a transformer's residual stream with its outlier features."""
    r = np.random.default_rng(seed)
    rows = (*shape[:-1], 1)
    x = r.standard_t(3, size=shape) * spread * r.uniform(0.3, 4.0, size=rows)
    x = x + offset + r.normal(0.0, 3.0 * spread, size=rows)
    D = shape[-1]
    return {
        "x": x,
        "gamma": r.uniform(0.2, 2.0, size=D) * r.choice([-1.0, 1.0], size=D),
        "beta": r.normal(0.0, 1.0, size=D),
        "dy": r.standard_t(3, size=shape),
    }


def _only(inputs, *names, **extra):
    return {**{k: inputs[k] for k in names}, **extra}


def ln_tokens(seed):
    return _only(_activations(seed, (4, 9, 48)), "x", "gamma", "beta", eps=1e-5)


def ln_quiet_large_eps(seed):
    return _only(_activations(seed, (6, 20), spread=0.05), "x", "gamma", "beta", eps=0.3)


def ln_far_offset(seed):
    return _only(_activations(seed, (5, 32), offset=1e6), "x", "gamma", "beta", eps=1e-5)


def ln_backward_tokens(seed):
    return _only(_activations(seed, (2, 6, 40)), "x", "gamma", "beta", "dy", eps=1e-4)


def rms_4d(seed):
    return _only(_activations(seed, (2, 3, 5, 32)), "x", "gamma", eps=1e-6)


def rms_quiet_large_eps(seed):
    return _only(_activations(seed, (7, 24), spread=0.05), "x", "gamma", eps=0.5)


def rms_backward_rows(seed):
    return _only(_activations(seed, (8, 72)), "x", "gamma", "dy", eps=1e-5)


def one_feature(seed):
    return {**_activations(seed, (3, 4, 1)), "eps": 1e-5}


def untouched(seed):
    return _activations(seed, (6, 10))


def big(seed):
    return _only(_activations(seed, (8192, 64)), "x", "gamma", "beta", "dy")


CASES = [
    Case(
        "layer norm over 48 features of (4, 9) tokens",
        call=ln,
        inputs=ln_tokens,
        points=2,
        seed=101,
    ),
    Case(
        "layer norm with eps 0.3 on quiet rows (variance below eps)",
        call=ln,
        inputs=ln_quiet_large_eps,
        points=1,
        seed=102,
    ),
    Case("layer norm of rows offset by 1e6", call=ln, inputs=ln_far_offset, points=1, seed=103),
    Case(
        "layer norm forward and backward over (2, 6) rows of 40",
        call=ln_backward,
        inputs=ln_backward_tokens,
        points=3,
        seed=104,
    ),
    Case("RMSNorm of a 4-D input (2, 3, 5, 32)", call=rms, inputs=rms_4d, points=2, seed=201),
    Case(
        "RMSNorm with eps 0.5 on quiet rows (mean square below eps)",
        call=rms,
        inputs=rms_quiet_large_eps,
        points=1,
        seed=202,
    ),
    Case(
        "RMSNorm forward and backward over 8 rows of 72",
        call=rms_backward,
        inputs=rms_backward_rows,
        points=3,
        seed=203,
    ),
    Case(
        "one feature per row: layer norm returns beta, both layers forward and backward",
        call=both,
        inputs=one_feature,
        points=1,
        seed=301,
    ),
    Case(
        "both layers leave every input unchanged",
        call=inputs_after,
        inputs=untouched,
        points=1,
        seed=302,
    ),
    Case(
        "forward and backward of both over 8192 rows of 64 (speed)",
        call=forward_and_backward,
        inputs=big,
        points=1,
        seed=401,
        speed_ratio=4.0,
        speed_points=2,
    ),
]
