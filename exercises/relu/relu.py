"""Rectified linear units (Nair and Hinton, 2010) and the initialisations that let deep ReLU
networks train: Xavier (Glorot and Bengio, 2010) and He (He, Zhang, Ren and Sun, 2015).

A ReLU passes positive inputs unchanged and zeroes the rest, so its gradient is exactly 1 or 0:
it never shrinks a gradient the way a saturated sigmoid does. But it zeroes half of its inputs,
and so halves the signal's second moment at every layer. He initialisation doubles the weights'
variance to pay that back, and the scale of activations and gradients survives any depth.

Weights are laid out (fan_in, fan_out), for `x @ W` with x of shape (batch, fan_in).
"""

from __future__ import annotations

import numpy as np

__all__ = ["kaiming_normal", "relu", "relu_backward", "xavier_normal"]


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) elementwise: a new array of x's shape and dtype; x itself is left unchanged.

    Shapes: x (...) -> (...).
    """
    # YOUR CODE HERE
    raise NotImplementedError("relu: not implemented yet; see exercises/relu/README.md")


def relu_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The gradient of the loss with respect to x, given its gradient with respect to relu(x).

    Shapes: grad_out (...), x (...) of the same shape -> (...), with grad_out's dtype.
    relu has slope 1 where x > 0 and slope 0 where x < 0; at x == 0 exactly the slope is taken
    to be 0, as torch and most frameworks do.
    """
    # YOUR CODE HERE
    raise NotImplementedError("relu_backward: not implemented yet; see exercises/relu/README.md")


def xavier_normal(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Glorot and Bengio's initialisation: a (fan_in, fan_out) float64 array of independent
    N(0, 2 / (fan_in + fan_out)) draws from `rng`.
    """
    # YOUR CODE HERE
    raise NotImplementedError("xavier_normal: not implemented yet; see exercises/relu/README.md")


def kaiming_normal(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He et al.'s initialisation for ReLU layers: a (fan_in, fan_out) float64 array of
    independent N(0, 2 / fan_in) draws from `rng`.
    """
    # YOUR CODE HERE
    raise NotImplementedError("kaiming_normal: not implemented yet; see exercises/relu/README.md")
