"""Layer normalisation (Ba, Kiros and Hinton, 2016) and RMSNorm (Zhang and Sennrich, 2019).

Batch normalisation standardises each feature with statistics taken over the batch. Layer
normalisation turns the axis around: each example standardises its own features, with its own
mean and variance, so its output does not depend on the rest of the batch and is computed the
same way in training and at test time. RMSNorm keeps only the rescaling: it divides by the root
mean square and does not subtract the mean.

Every function normalises over the last axis of x: all leading axes are independent rows (the
examples of a batch, or the tokens of a sequence). As in batchnorm, each forward returns
(y, cache) and its backward takes (dy, cache).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["layernorm_backward", "layernorm_forward", "rmsnorm_backward", "rmsnorm_forward"]


def _check(name: str, x: np.ndarray, **params: np.ndarray) -> None:
    for key, p in params.items():
        if np.shape(p) != (x.shape[-1],):
            raise ValueError(
                f"{name} takes x (..., D) with {key} (D,); got x {x.shape}, {key} {np.shape(p)}"
            )


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, Any]:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, with each row's own statistics.

    Shapes: x (..., D), gamma (D,), beta (D,) -> y (..., D), float64.
    mean and var are taken over the last axis (a row's D features); var is the *biased* variance
    (divide by D, not D - 1), as in the paper and torch. x itself is left unchanged.
    Returns (y, cache): cache holds whatever layernorm_backward needs; only your backward reads it.
    """
    _check("layernorm_forward", x, gamma=gamma, beta=beta)
    # YOUR CODE HERE
    raise NotImplementedError(
        "layernorm_forward: not implemented yet; see exercises/layernorm/README.md"
    )


def layernorm_backward(dy: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of a loss L through layernorm_forward, given dy = dL/dy.

    Shapes: dy (..., D) -> (dx (..., D), dgamma (D,), dbeta (D,)), float64.
    dgamma and dbeta sum over every leading axis: all rows share the parameters. The mean and
    the variance depend on every x of their row, and dx includes those paths.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "layernorm_backward: not implemented yet; see exercises/layernorm/README.md"
    )


def rmsnorm_forward(x: np.ndarray, gamma: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, Any]:
    """y = gamma * x / sqrt(mean(x^2) + eps), the mean square over the last axis.

    Shapes: x (..., D), gamma (D,) -> y (..., D), float64. No mean is subtracted and there is no
    beta. x itself is left unchanged.
    Returns (y, cache): cache holds whatever rmsnorm_backward needs; only your backward reads it.
    """
    _check("rmsnorm_forward", x, gamma=gamma)
    # YOUR CODE HERE
    raise NotImplementedError(
        "rmsnorm_forward: not implemented yet; see exercises/layernorm/README.md"
    )


def rmsnorm_backward(dy: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray]:
    """The gradients of a loss L through rmsnorm_forward, given dy = dL/dy.

    Shapes: dy (..., D) -> (dx (..., D), dgamma (D,)), float64. dgamma sums over every leading
    axis. The root mean square depends on every x of its row, and dx includes that path.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "rmsnorm_backward: not implemented yet; see exercises/layernorm/README.md"
    )
