"""Batch normalisation, forward and backward, in numpy (Ioffe and Szegedy, 2015).

Each channel of a layer's input is standardised with the mean and variance of the current
mini-batch, then scaled and shifted by two learned vectors, gamma and beta. The next layer sees
inputs whose scale no longer drifts as the weights before it change, so training tolerates larger
learning rates and careless initialisation. At evaluation time there is no batch to average over:
the layer uses running averages of the statistics it saw in training, as PyTorch does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BatchNorm", "batchnorm_backward", "batchnorm_forward"]


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray | None = None,
    var: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, Any]:
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel.

    Shapes: x (N, C), (N, C, L) or (N, C, H, W); gamma (C,), beta (C,) -> y, shaped like x.
    The statistics are per channel (axis 1), over every other axis: over N for (N, C), over
    N, H and W for images.
    mean, var: None (training): use the batch's own mean and *biased* variance (divide by the
    number of values per channel, not by one less). Given, each (C,) (evaluation): use them, as
    constants that do not depend on x.
    Returns (y, cache): cache holds whatever batchnorm_backward needs; only your backward reads it.
    """
    if x.ndim < 2 or gamma.shape != (x.shape[1],) or beta.shape != (x.shape[1],):
        raise ValueError(
            f"batchnorm_forward takes x (N, C, ...) with gamma and beta (C,); got x {x.shape}, "
            f"gamma {gamma.shape}, beta {beta.shape}"
        )
    if (mean is None) != (var is None):
        raise ValueError("give both mean and var (evaluation) or neither (training)")
    ### BEGIN SOLUTION
    axes = (0, *range(2, x.ndim))  # every axis but the channels
    shape = (1, -1) + (1,) * (x.ndim - 2)  # a (C,) vector, ready to broadcast against x
    batch = mean is None
    if batch:
        # Algorithm 1 of the paper: the mini-batch mean and variance. np.var subtracts the mean
        # before squaring (two passes), which stays accurate when the mean dwarfs the spread.
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    # eps sits inside the square root: a channel that is constant over the batch divides by
    # sqrt(eps) instead of by zero.
    inv_std = 1.0 / np.sqrt(var + eps).reshape(shape)
    xhat = (x - mean.reshape(shape)) * inv_std  # mean 0, variance 1 per channel (in training)
    # gamma and beta give back what the standardisation took away: gamma = sqrt(var + eps) and
    # beta = mean would restore x exactly, so the layer can represent the identity.
    y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    return y, (xhat, inv_std, gamma.reshape(shape), batch)
    ### END SOLUTION


def batchnorm_backward(dy: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of a loss L through batchnorm_forward, given dy = dL/dy.

    Shapes: dy like x -> (dx like x, dgamma (C,), dbeta (C,)).
    When the forward pass used the batch's statistics (training), the mean and variance depend on
    every x of the channel, and dx includes those paths. When it was given mean and var
    (evaluation), they are constants and dx is only dy * gamma / sqrt(var + eps).
    """
    ### BEGIN SOLUTION
    xhat, inv_std, gamma, batch = cache
    axes = (0, *range(2, dy.ndim))
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    dxhat = dy * gamma
    if batch:
        # Each x also moved its channel's mean and variance, which every other output used.
        # Following those two paths subtracts from dxhat its mean (the shift path) and its
        # projection on xhat (the scale path): dx is blind to shifting or scaling a channel.
        dxhat = (
            dxhat
            - dxhat.mean(axis=axes, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
        )
    return dxhat * inv_std, dgamma, dbeta
    ### END SOLUTION


class BatchNorm:
    """A batch normalisation layer with PyTorch's conventions (nn.BatchNorm1d and nn.BatchNorm2d).

    Attributes, each a float64 array of shape (num_features,) that you may read and reassign:
    gamma (starts at ones) and beta (zeros), the learned scale and shift; running_mean (zeros) and
    running_var (ones), the statistics that evaluation uses. `training` is True until eval().

    Training, each forward(x) normalises with the batch's statistics and then updates
        running_mean = (1 - momentum) * running_mean + momentum * batch mean
        running_var  = (1 - momentum) * running_var  + momentum * unbiased batch variance
    where the unbiased variance divides by n - 1, n being the number of values per channel.
    Evaluation normalises with the running statistics and changes nothing. layer(x) is
    layer.forward(x).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        """A layer for num_features channels (C); eps and momentum as in nn.BatchNorm1d/2d."""
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.training = True
        ### BEGIN SOLUTION
        self.gamma = np.ones(num_features)
        self.beta = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)
        ### END SOLUTION

    def train(self, mode: bool = True) -> BatchNorm:
        """Switch to training (mode=True) or evaluation (mode=False); returns the layer."""
        self.training = mode
        return self

    def eval(self) -> BatchNorm:
        """Switch to evaluation; returns the layer."""
        return self.train(False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Normalise x (N, C, ...) with C = num_features; returns y shaped like x."""
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm({self.num_features}) takes x (N, {self.num_features}, ...); "
                f"got {x.shape}"
            )
        if self.training and x.size // x.shape[1] < 2:
            raise ValueError(
                f"BatchNorm in training needs more than one value per channel; got x {x.shape}"
            )
        ### BEGIN SOLUTION
        if not self.training:
            y, self._cache = batchnorm_forward(
                x, self.gamma, self.beta, self.running_mean, self.running_var, self.eps
            )
            return y
        y, self._cache = batchnorm_forward(x, self.gamma, self.beta, eps=self.eps)
        # The running variance estimates the population's variance, so it takes the unbiased
        # batch variance (the paper's m / (m - 1) correction), while y used the biased one.
        axes = (0, *range(2, x.ndim))
        m = self.momentum  # PyTorch's convention: momentum is the weight of the new batch
        self.running_mean = (1 - m) * self.running_mean + m * x.mean(axis=axes)
        self.running_var = (1 - m) * self.running_var + m * x.var(axis=axes, ddof=1)
        return y
        ### END SOLUTION

    def backward(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dx, dgamma, dbeta) for the last forward call, in its mode: see batchnorm_backward."""
        ### BEGIN SOLUTION
        return batchnorm_backward(dy, self._cache)
        ### END SOLUTION
