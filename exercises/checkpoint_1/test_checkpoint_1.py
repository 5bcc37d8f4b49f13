"""Checkpoint 1, "a deep net trains": your Tensor, ReLU and He initialisation, batch normalisation,
dropout and AdamW train a multilayer perceptron on three interleaved spirals.

Run `pytest exercises/checkpoint_1`. Every piece comes from your own exercises (`load_impl`), so
this passes once they all work together; the first specs referee the pieces against torch on one
small network, the last one trains it.
"""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from graders.checks import assert_close, fail

PIECES = ("backprop", "relu", "batchnorm", "dropout", "adam")
SIZES = (2, 64, 64, 3)  # inputs, two hidden layers, three classes
STEPS, BATCH, LR, WEIGHT_DECAY, DROP = 200, 128, 1e-2, 1e-4, 0.1
TARGET_ACCURACY = 0.95


@pytest.fixture(scope="module")
def own(load_impl):
    return SimpleNamespace(**{name: load_impl(name) for name in PIECES})


def spirals(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three interleaved spirals in the plane: points (3n, 2), labels (3n,)."""
    rng = np.random.default_rng(seed)
    r = np.tile(np.linspace(0.05, 1.0, n_per_class), 3)
    label = np.repeat(np.arange(3), n_per_class)
    angle = 4.0 * r + label * 2 * np.pi / 3 + rng.normal(0, 0.15, r.shape)
    return np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1), label


# The glue: each numpy piece becomes one operation of your Tensor through its `_make` hook.


def relu(own, x):
    return x._make(own.relu.relu(x.data), (x,), lambda g: (own.relu.relu_backward(g, x.data),))


def batchnorm(own, x, gamma, beta):
    y, cache = own.batchnorm.batchnorm_forward(x.data, gamma.data, beta.data)
    return x._make(y, (x, gamma, beta), lambda g: own.batchnorm.batchnorm_backward(g, cache))


def dropout(own, x, rng):
    y, mask = own.dropout.dropout_forward(x.data, DROP, rng, training=True)
    return x._make(y, (x,), lambda g: (own.dropout.dropout_backward(g, mask),))


def cross_entropy(own, logits, labels):
    """Mean of -log softmax(logits)[label], with the row maximum taken out first (a constant)."""
    z = logits - logits.data.max(axis=1, keepdims=True)
    log_probs = z - z.exp().sum(axis=1, keepdims=True).log()
    return -(log_probs * np.eye(logits.shape[1])[labels]).sum() / len(labels)


def init(own, seed):
    """He-initialised weights (fan_in, fan_out) for x @ W, zero biases, batch norms at 1 and 0."""
    rng = np.random.default_rng(seed)
    T = own.backprop.Tensor
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        params[f"W{i}"] = T(own.relu.kaiming_normal(n_in, n_out, rng), requires_grad=True)
        params[f"b{i}"] = T(np.zeros(n_out), requires_grad=True)
        if i < len(SIZES) - 2:
            params[f"gamma{i}"] = T(np.ones(n_out), requires_grad=True)
            params[f"beta{i}"] = T(np.zeros(n_out), requires_grad=True)
    return params


def forward(own, params, x, rng=None):
    """Logits for x (B, 2): [linear, batch norm, ReLU, dropout] twice, then linear. rng=None: no
    dropout (and batch statistics throughout, as the functional batch norm has no running ones)."""
    h = own.backprop.Tensor(x)
    for i in range(len(SIZES) - 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = relu(own, batchnorm(own, h, params[f"gamma{i}"], params[f"beta{i}"]))
            if rng is not None:
                h = dropout(own, h, rng)
    return h


def torch_forward(params, x):
    """The same network in torch, from the same weights (no dropout)."""
    h = torch.tensor(x)
    for i in range(len(SIZES) - 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = torch.relu(
                torch.nn.functional.batch_norm(
                    h, None, None, params[f"gamma{i}"], params[f"beta{i}"], training=True
                )
            )
    return h


def loss_and_gradients(own, x, labels, seed):
    """Your network's loss on (x, labels) and d loss / d parameter, from weights drawn by `seed`."""
    params = init(own, seed)
    loss = cross_entropy(own, forward(own, params, x), labels)
    loss.backward()
    return loss.item(), {name: p.grad for name, p in params.items()}


def test_your_network_computes_torchs_loss_and_gradients(own):
    x, labels = spirals(40, seed=1)
    loss, grads = loss_and_gradients(own, x, labels, seed=2)
    theirs = {k: torch.tensor(p.data, requires_grad=True) for k, p in init(own, seed=2).items()}
    expected = torch.nn.functional.cross_entropy(torch_forward(theirs, x), torch.tensor(labels))
    expected.backward()
    assert_close(
        np.float64(loss),
        np.float64(expected.item()),
        rtol=1e-9,
        atol=1e-12,
        what="the loss of your network (Tensor, ReLU, batch norm) on 120 spiral points",
    )
    for name, grad in grads.items():
        if grad is None:
            fail(f"after loss.backward(), {name}.grad is None: the gradient did not reach it")
        assert_close(
            grad,
            theirs[name].grad.numpy(),
            rtol=1e-7,
            atol=1e-10,
            what=f"d loss / d {name} through your network",
        )


def test_your_adamw_moves_weights_as_torchs(own):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 4))
    grads = [rng.normal(size=(5, 4)) * 10.0**k for k in (-3, 0, 2)]
    m, v = np.zeros_like(w), np.zeros_like(w)
    mine = w
    theirs = torch.tensor(w, requires_grad=True)
    opt = torch.optim.AdamW([theirs], lr=LR, weight_decay=WEIGHT_DECAY)
    for t, g in enumerate(grads, start=1):
        mine, m, v = own.adam.adamw_step(mine, g, m, v, t, lr=LR, weight_decay=WEIGHT_DECAY)
        theirs.grad = torch.tensor(g)
        opt.step()
    assert_close(
        mine,
        theirs.detach().numpy(),
        rtol=1e-9,
        atol=1e-12,
        what="three steps of your adamw_step against torch.optim.AdamW",
    )


def test_your_dropout_keeps_the_expectation(own):
    # 200,000 units, p = 0.1: a correct mask's mean is 1 within 0.01 but with a chance below 2e-14
    # (Hoeffding: 2 exp(-2 n t^2 / (b - a)^2) with n = 2e5, t = 0.01, mask values in [0, 1/0.9]).
    x = np.ones((400, 500))
    _, mask = own.dropout.dropout_forward(x, DROP, np.random.default_rng(4))
    kept = mask[mask != 0]
    if not np.allclose(kept, 1 / (1 - DROP)) or abs(mask.mean() - 1) > 0.01:
        fail(
            f"dropout_forward(p={DROP}): kept units should be scaled to {1 / (1 - DROP):.4f} and "
            f"the mask's mean should be 1; got kept values {np.unique(kept)[:3]} and mean "
            f"{mask.mean():.4f}"
        )
    _, again = own.dropout.dropout_forward(x, DROP, np.random.default_rng(4))
    if not np.array_equal(mask, again):
        fail("dropout_forward drew different masks from two generators with the same seed")
    g = np.random.default_rng(5).normal(size=x.shape)
    assert_close(
        own.dropout.dropout_backward(g, mask),
        g * mask,
        what="dropout_backward(dy (400, 500), mask): the gradient flows through the kept units",
    )
    same, _ = own.dropout.dropout_forward(x, DROP, np.random.default_rng(4), training=False)
    assert_close(same, x, what="dropout_forward(x, p, rng, training=False) (evaluation)")


def test_your_relu_and_he_initialisation(own):
    x = np.array([-2.0, -0.0, 0.0, 3.0])
    kept = x.copy()
    own.relu.relu(x)
    if not np.array_equal(x, kept):
        fail("relu(x) changed its input x: return a new array")
    assert_close(
        own.relu.relu_backward(np.ones(4), x),
        np.array([0.0, 0.0, 0.0, 1.0]),
        what="relu_backward(ones, x = [-2, -0, 0, 3]) (the gradient is 0 at 0)",
    )
    # 300 x 100 draws: the sample variance of a correct He draw is within 5% of 2 / fan_in except
    # with chance below 1e-9 (its relative standard error is sqrt(2 / 30000) = 0.8%).
    w = own.relu.kaiming_normal(300, 100, np.random.default_rng(6))
    if w.shape != (300, 100):
        fail(
            f"kaiming_normal(fan_in=300, fan_out=100) returned shape {w.shape}; expected (300, 100)"
        )
    if abs(w.var() / (2 / 300) - 1) > 0.05 or abs(w.mean()) > 0.01:
        fail(
            "kaiming_normal(fan_in=300, fan_out=100): the draws should have mean 0 and variance "
            f"2 / fan_in = {2 / 300:.5f}; got mean {w.mean():.5f} and variance {w.var():.5f}"
        )
    if not np.array_equal(w, own.relu.kaiming_normal(300, 100, np.random.default_rng(6))):
        fail("kaiming_normal drew different weights from two generators with the same seed")


def train(own, x, labels, seed):
    """STEPS steps of AdamW on random batches of (x, labels); the trained parameters and the last
    batch's loss. Weights, batches and dropout masks all come from `seed`."""
    params = init(own, seed)
    state = {k: (np.zeros_like(p.data), np.zeros_like(p.data)) for k, p in params.items()}
    rng = np.random.default_rng(seed + 1)
    for step in range(1, STEPS + 1):
        batch = rng.choice(len(x), BATCH, replace=False)
        for p in params.values():
            p.grad = None
        loss = cross_entropy(own, forward(own, params, x[batch], rng), labels[batch])
        loss.backward()
        for k, p in params.items():
            m, v = state[k]
            p.data, m, v = own.adam.adamw_step(
                p.data, p.grad, m, v, step, lr=LR, weight_decay=WEIGHT_DECAY
            )
            state[k] = (m, v)
    return params, loss.item()


def predict(own, params, x):
    """Class predictions (B,) of the trained network, without dropout."""
    return forward(own, params, x).data.argmax(axis=1)


def test_a_deep_net_trains(own):
    x, labels = spirals(300, seed=5)
    x_test, labels_test = spirals(100, seed=6)
    params, loss = train(own, x, labels, seed=7)
    accuracy = (predict(own, params, x_test) == labels_test).mean()
    if not accuracy >= TARGET_ACCURACY:
        fail(
            f"after {STEPS} steps your network classifies {accuracy:.1%} of 300 held-out spiral "
            f"points; the bar is {TARGET_ACCURACY:.0%} (last training loss {loss:.3f})"
        )
