"""Dropout, forward and backward, in numpy (Srivastava, Hinton, Krizhevsky, Sutskever and
Salakhutdinov, 2014).

In training, each unit of a layer's output is dropped (set to zero) with probability p, afresh for
every element of every batch, so that no unit can count on particular others being there: each
has to be useful in many random "thinned" networks that share one set of weights. At test time the
whole network runs, and should output what the average of those thinned networks would.

This is *inverted* dropout, as in PyTorch: training scales the kept units by 1 / (1 - p), so each
output's expectation over the random mask equals its input and evaluation is the identity. (The
paper leaves training unscaled and multiplies the weights by the retention probability at test
time instead; the two agree in expectation.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["Dropout", "dropout_backward", "dropout_forward"]


def dropout_forward(
    x: np.ndarray, p: float, rng: np.random.Generator, training: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout: y = x * mask, each element of mask being 0 (dropped) or 1 / (1 - p) (kept).

    Shapes: x (...) floating point, at least 1-D -> (y, mask), each shaped like x, of x's dtype.
    p is the probability of *dropping* an element (PyTorch's convention; the paper's p is the
    probability of keeping one). In training, every element is dropped on its own, independently
    of all the others, with probability p, by random numbers drawn from rng (a numpy Generator) and
    from nowhere else. p = 0 keeps everything (mask all ones); p = 1 drops everything (y and mask
    all zeros).
    In evaluation (training=False), y has x's values, mask is all ones, and rng is not touched.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_forward takes a drop probability p in [0, 1]; got {p}")
    # YOUR CODE HERE
    raise NotImplementedError(
        "dropout_forward: not implemented yet; see exercises/dropout/README.md"
    )


def dropout_backward(dy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The gradient of a loss L through dropout_forward, given dy = dL/dy and the forward's mask.

    Shapes: dy (...), mask like dy (as dropout_forward returned it) -> dx like dy, of dy's dtype.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "dropout_backward: not implemented yet; see exercises/dropout/README.md"
    )


class Dropout:
    """A dropout layer with PyTorch's conventions (nn.Dropout): p is the probability of dropping.

    Attributes: p; rng, the numpy Generator that masks are drawn from; training, True until eval().
    In training, each forward(x) draws a fresh mask (a new one every call) and backward(dy) sends
    the gradient back through the mask of the last forward. In evaluation, forward is the identity
    and backward returns dy. layer(x) is layer.forward(x).
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        """p in [0, 1]; rng: the Generator to draw masks from (None: a fresh, unseeded one)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout takes a drop probability p in [0, 1]; got {p}")
        self.p = p
        self.rng = np.random.default_rng() if rng is None else rng
        self.training = True
        self._mask: np.ndarray | None = None  # the mask of the last forward call

    def train(self, mode: bool = True) -> Dropout:
        """Switch to training (mode=True) or evaluation (mode=False); returns the layer."""
        self.training = mode
        return self

    def eval(self) -> Dropout:
        """Switch to evaluation; returns the layer."""
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """y shaped like x: dropout with a fresh mask in training, the identity in evaluation."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Dropout.forward: not implemented yet; see exercises/dropout/README.md"
        )

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx for the last forward call, given dy = dL/dy shaped like that call's x."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Dropout.backward: not implemented yet; see exercises/dropout/README.md"
        )
