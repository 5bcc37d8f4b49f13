"""Hidden grading cases for backprop.

Each `call` builds a graph with the submission's Tensor from plain numpy inputs, runs backward()
and returns the gradients as a dict of arrays. The graphs, shapes and seeds differ from the public
specs': an unrolled recurrent net with shared weights, wider MLPs, other broadcasting patterns.
"""

import numpy as np

from graders.cases import Case

# -- calls: each runs in the sandbox on the submission and in the trusted worker on the reference


def mlp_cross_entropy(m, x, labels, W1, b1, W2, b2):
    """A two-layer tanh MLP with softmax cross-entropy: the loss and every parameter's grad."""
    import numpy as np

    params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    p = {k: m.Tensor(v, requires_grad=True) for k, v in params.items()}
    onehot = np.eye(W2.shape[1])[labels]
    h = (x @ p["W1"] + p["b1"]).tanh()
    logits = h @ p["W2"] + p["b2"]
    log_probs = logits - logits.exp().sum(axis=1, keepdims=True).log()
    loss = -(log_probs * onehot).sum(axis=1).mean()
    loss.backward()
    return {"loss": np.asarray(loss.data), **{k: np.asarray(t.grad) for k, t in p.items()}}


def unrolled_rnn(m, xs, target, Wx, Wh, b, h0):
    """Rumelhart et al.'s unfolding in time: one set of weights used at every step."""
    import numpy as np

    Wx, Wh, b, h0 = (m.Tensor(v, requires_grad=True) for v in (Wx, Wh, b, h0))
    h = h0
    for x in xs:  # xs (T, batch, d_in): the same Wx, Wh and b at each of the T steps
        h = (x @ Wx + h @ Wh + b).tanh()
    loss = ((h - target) ** 2).mean()
    loss.backward()
    return {"loss": np.asarray(loss.data), "Wx": Wx.grad, "Wh": Wh.grad, "b": b.grad, "h0": h0.grad}


def broadcast_and_reduce(m, a, b, c, d):
    """Broadcasting on several axes at once, reductions over tuples of axes and negative axes."""
    a, b, c, d = (m.Tensor(v, requires_grad=True) for v in (a, b, c, d))
    u = (a * b + c).tanh()  # a (5, 1, 4), b (3, 1), c (4,) -> (5, 3, 4)
    v = u.mean(axis=(0, 2), keepdims=True) * d - u.sum(axis=-1, keepdims=True) / 4
    w = (v**2).sum(axis=(0, -1)) + (1 - u).relu().sum(axis=0).mean(axis=-1)
    (w * w).sum().backward()
    return {"a": a.grad, "b": b.grad, "c": c.grad, "d": d.grad}


def shape_ops(m, x, y):
    """reshape, .T, exp, log, relu, powers and division chained together."""
    import numpy as np

    x, y = m.Tensor(x, requires_grad=True), m.Tensor(y, requires_grad=True)
    z = x.reshape(3, 8).T @ y  # (8, 3) @ (3, 2)
    r = (z.relu() + 1).log() - (z * 0.3).exp() / (y.sum() ** 2 + 1) + 2 / (z**2 + 1) ** 0.5
    out = r.reshape(-1).sum() - (x**3).mean()
    out.backward()
    return {"out": np.asarray(out.data), "x": x.grad, "y": y.grad}


def unbroadcast_alone(m, grad):
    """unbroadcast on its own, to several shapes that broadcast to grad's (2, 3, 4, 5)."""
    import numpy as np

    shapes = [(3, 1, 5), (1, 4, 1), (5,), (2, 1, 1, 1), (), (2, 3, 4, 5)]
    return [np.asarray(m.unbroadcast(grad.copy(), s), dtype=np.float64) for s in shapes]


def numerical_gradient_of(m, x, a):
    """Central differences of a smooth function of a (3, 4) array, with eps = 1e-5."""
    import numpy as np

    return np.asarray(
        m.numerical_gradient(lambda v: np.sum(np.tanh(a * v) ** 2 + v**3), x, eps=1e-5)
    )


def long_chain(m, x, n):
    """A chain of 4n operations: backward must not recurse once per node."""
    t = m.Tensor(x, requires_grad=True)
    y = t
    for _ in range(int(n)):
        y = (y * 0.9999 + t * 1e-4).tanh()
    y.sum().backward()
    return t.grad


def accumulation(m, x, c):
    """Gradients add up over backward() calls on fresh graphs; constants get none; relu at 0."""
    import numpy as np

    t, k = m.Tensor(x, requires_grad=True), m.Tensor(c)
    grads = []
    for reset in (False, False, True):
        if reset:
            t.grad = None
        ((t * k).relu() * (t + 1)).sum().backward()
        grads.append(np.array(t.grad, dtype=np.float64))
    return {"grads": grads, "constant_grad_is_none": float(k.grad is None)}


# -- inputs: built on the trusted side from a seed


def _mlp_inputs(seed, n, d_in, d_hidden, classes):
    r = np.random.default_rng(seed)
    return {
        "x": r.normal(size=(n, d_in)),
        "labels": r.integers(0, classes, size=n),
        "W1": r.normal(size=(d_in, d_hidden)) / np.sqrt(d_in),
        "b1": r.normal(size=d_hidden) * 0.1,
        "W2": r.normal(size=(d_hidden, classes)) / np.sqrt(d_hidden),
        "b2": r.normal(size=classes) * 0.1,
    }


def mlp_inputs(seed):
    return _mlp_inputs(seed, n=32, d_in=7, d_hidden=16, classes=5)


def big_mlp_inputs(seed):
    return _mlp_inputs(seed, n=512, d_in=128, d_hidden=256, classes=10)


def rnn_inputs(seed):
    r = np.random.default_rng(seed)
    steps, batch, d_in, d_h = 12, 4, 3, 5
    return {
        "xs": r.normal(size=(steps, batch, d_in)),
        "target": r.normal(size=(batch, d_h)),
        "Wx": r.normal(size=(d_in, d_h)) * 0.5,
        "Wh": r.normal(size=(d_h, d_h)) * 0.4,
        "b": r.normal(size=d_h) * 0.1,
        "h0": r.normal(size=(1, d_h)),  # broadcast over the batch
    }


def broadcast_inputs(seed):
    r = np.random.default_rng(seed)
    return {
        "a": r.normal(size=(5, 1, 4)),
        "b": r.normal(size=(3, 1)),
        "c": r.normal(size=(4,)),
        "d": r.normal(size=(1, 3, 1)),
    }


def shape_inputs(seed):
    r = np.random.default_rng(seed)
    return {"x": r.normal(size=(6, 4)), "y": r.normal(size=(3, 2))}


def unbroadcast_inputs(seed):
    return {"grad": np.random.default_rng(seed).normal(size=(2, 3, 4, 5))}


def numerical_inputs(seed):
    r = np.random.default_rng(seed)
    return {"x": r.normal(size=(3, 4)), "a": r.normal(size=(3, 4))}


def chain_inputs(seed):
    return {"x": np.random.default_rng(seed).normal(size=(3,)), "n": 1000}


def accumulation_inputs(seed):
    r = np.random.default_rng(seed)
    x = r.normal(size=(4, 3))
    x[0, 0] = x[2, 1] = 0.0  # relu's input is exactly 0 there: its gradient must be 0
    return {"x": x, "c": r.normal(size=(3,))}


CASES = [
    Case(
        "MLP cross-entropy, batch 32",
        call=mlp_cross_entropy,
        inputs=mlp_inputs,
        points=3,
        seed=101,
    ),
    Case(
        "recurrent net unrolled over 12 steps (shared weights)",
        call=unrolled_rnn,
        inputs=rnn_inputs,
        points=3,
        seed=102,
    ),
    Case(
        "broadcasting over several axes, reductions over tuples of axes",
        call=broadcast_and_reduce,
        inputs=broadcast_inputs,
        points=2,
        seed=103,
    ),
    Case(
        "reshape, transpose, exp, log, relu, powers, division",
        call=shape_ops,
        inputs=shape_inputs,
        points=2,
        seed=104,
    ),
    Case(
        "unbroadcast to six shapes",
        call=unbroadcast_alone,
        inputs=unbroadcast_inputs,
        points=1,
        seed=105,
    ),
    # The reference and a correct submission differ by rounding only (~1e-11); a one-sided
    # difference is off by O(eps) = 1e-5.
    Case(
        "numerical_gradient with eps=1e-5",
        call=numerical_gradient_of,
        inputs=numerical_inputs,
        points=1,
        seed=106,
        rtol=1e-7,
        atol=1e-8,
    ),
    Case(
        "gradients accumulate over backward() calls; constants get none; relu at 0",
        call=accumulation,
        inputs=accumulation_inputs,
        points=1,
        seed=107,
    ),
    # Speed: bookkeeping per node (the topological sort, one dict or set lookup per node) and the
    # vector-Jacobian products on big matrices. A quadratic sort or an explicit Jacobian loses.
    Case(
        "chain of 4000 operations (no recursion, linear time)",
        call=long_chain,
        inputs=chain_inputs,
        points=1,
        seed=108,
        speed_ratio=5.0,
        speed_points=1,
    ),
    Case(
        "speed: MLP, batch 512, 256 hidden units",
        call=mlp_cross_entropy,
        inputs=big_mlp_inputs,
        points=1,
        seed=109,
        speed_ratio=3.0,
        speed_points=1,
    ),
]
