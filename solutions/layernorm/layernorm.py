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
    ### BEGIN SOLUTION
    # Each row is standardised with its own statistics: nothing here looks across the batch.
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean  # a new array: the caller's x stays as it was
    # Two passes (the mean first, then the mean square of the centred values) keep every digit
    # when the mean is large next to the spread; mean(x^2) - mean(x)^2 would cancel them away.
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    # eps sits inside the root: a constant row divides by sqrt(eps) instead of by zero.
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = centred * inv_std
    # gamma and beta, one per feature, give back the scale and offset that standardising took
    # away, as learned parameters.
    return gamma * x_hat + beta, (x_hat, inv_std, gamma)
    ### END SOLUTION


def layernorm_backward(dy: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of a loss L through layernorm_forward, given dy = dL/dy.

    Shapes: dy (..., D) -> (dx (..., D), dgamma (D,), dbeta (D,)), float64.
    dgamma and dbeta sum over every leading axis: all rows share the parameters. The mean and
    the variance depend on every x of their row, and dx includes those paths.
    """
    ### BEGIN SOLUTION
    x_hat, inv_std, gamma = cache
    rows = tuple(range(dy.ndim - 1))  # every axis but the features
    dgamma = np.sum(dy * x_hat, axis=rows)
    dbeta = np.sum(dy, axis=rows)
    g = dy * gamma  # dL/dx_hat
    # x_hat_i depends on every x_j of its row, through the mean and through the variance:
    #   dx_hat_i / dx_j = inv_std * (delta_ij - 1/D - x_hat_i * x_hat_j / D).
    # Applied to g, the first correction removes g's mean (the direction of a shift of the row,
    # which the output ignores), the second its projection on x_hat (a rescaling, which the
    # output ignores too while eps is small next to var).
    dx = inv_std * (
        g - g.mean(axis=-1, keepdims=True) - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True)
    )
    return dx, dgamma, dbeta
    ### END SOLUTION


def rmsnorm_forward(x: np.ndarray, gamma: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, Any]:
    """y = gamma * x / sqrt(mean(x^2) + eps), the mean square over the last axis.

    Shapes: x (..., D), gamma (D,) -> y (..., D), float64. No mean is subtracted and there is no
    beta. x itself is left unchanged.
    Returns (y, cache): cache holds whatever rmsnorm_backward needs; only your backward reads it.
    """
    _check("rmsnorm_forward", x, gamma=gamma)
    ### BEGIN SOLUTION
    # Zhang and Sennrich keep only layer norm's rescaling: dividing by the root mean square makes
    # the output ignore the scale of its input, and skipping the mean saves a reduction.
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    x_hat = x * inv_rms
    return gamma * x_hat, (x_hat, inv_rms, gamma)
    ### END SOLUTION


def rmsnorm_backward(dy: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray]:
    """The gradients of a loss L through rmsnorm_forward, given dy = dL/dy.

    Shapes: dy (..., D) -> (dx (..., D), dgamma (D,)), float64. dgamma sums over every leading
    axis. The root mean square depends on every x of its row, and dx includes that path.
    """
    ### BEGIN SOLUTION
    x_hat, inv_rms, gamma = cache
    dgamma = np.sum(dy * x_hat, axis=tuple(range(dy.ndim - 1)))
    g = dy * gamma  # dL/dx_hat
    # Layer norm's rule without the mean:
    #   dx_hat_i / dx_j = inv_rms * (delta_ij - x_hat_i * x_hat_j / D),
    # so following the root mean square removes g's projection on x_hat.
    dx = inv_rms * (g - x_hat * np.mean(g * x_hat, axis=-1, keepdims=True))
    return dx, dgamma
    ### END SOLUTION
