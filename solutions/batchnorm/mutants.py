"""Common mistakes in batch normalisation, each replacing one function or method of the reference.

The forward mutants return a cache in the reference's layout, (xhat, inv_std, gamma, batch) with
the vectors shaped to broadcast against x, so the reference's backward carries their mistake on.
"""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("batchnorm")


def _channels(x):
    """The reference's reduction axes and broadcast shape of a (C,) vector."""
    return (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)


def _normalise(x, gamma, beta, mean, var, eps, batch, *, eps_outside=False, stat_shape=None):
    _, shape = _channels(x)
    stat_shape = stat_shape or shape
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    inv_std = 1.0 / std.reshape(stat_shape)
    xhat = (x - mean.reshape(stat_shape)) * inv_std
    y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    return y, (xhat, inv_std, gamma.reshape(shape), batch)


# -- the forward pass ---------------------------------------------------------------------------


@mutant(
    "batchnorm_forward",
    "the batch is normalised with the unbiased variance (/ (n - 1)); normalisation uses the biased "
    "one (/ n), only running_var gets the unbiased one",
)
def unbiased_variance_in_normalisation(x, gamma, beta, mean=None, var=None, eps=1e-5):
    if mean is not None:
        return ref.batchnorm_forward(x, gamma, beta, mean, var, eps)
    axes, _ = _channels(x)
    return _normalise(x, gamma, beta, x.mean(axis=axes), x.var(axis=axes, ddof=1), eps, True)


@mutant(
    "batchnorm_forward",
    "eps is added outside the square root, sqrt(var) + eps; it belongs inside: sqrt(var + eps)",
)
def eps_outside_the_square_root(x, gamma, beta, mean=None, var=None, eps=1e-5):
    axes, _ = _channels(x)
    batch = mean is None
    if batch:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    return _normalise(x, gamma, beta, mean, var, eps, batch, eps_outside=True)


@mutant(
    "batchnorm_forward",
    "the variance is computed as E[x^2] - E[x]^2, which cancels catastrophically when a channel's "
    "mean is large next to its spread; subtract the mean first, then square",
)
def one_pass_variance(x, gamma, beta, mean=None, var=None, eps=1e-5):
    if mean is not None:
        return ref.batchnorm_forward(x, gamma, beta, mean, var, eps)
    axes, _ = _channels(x)
    mean = x.mean(axis=axes)
    var = (x * x).mean(axis=axes) - mean**2
    return _normalise(x, gamma, beta, mean, var, eps, True)


@mutant(
    "batchnorm_forward",
    "images are normalised per position (over N only); a channel's statistics pool N, H and W",
)
def statistics_per_position(x, gamma, beta, mean=None, var=None, eps=1e-5):
    if mean is not None:
        return ref.batchnorm_forward(x, gamma, beta, mean, var, eps)
    mean, var = x.mean(axis=0), x.var(axis=0)
    return _normalise(x, gamma, beta, mean, var, eps, True, stat_shape=(1, *x.shape[1:]))


# -- the backward pass --------------------------------------------------------------------------


def _backward(dy, cache, *, shift_path=True, scale_path=True, always_batch=False):
    xhat, inv_std, gamma, batch = cache
    axes, _ = _channels(dy)
    dbeta, dgamma = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    dxhat = dy * gamma
    if batch or always_batch:
        correction = 0.0
        if shift_path:
            correction = correction + dxhat.mean(axis=axes, keepdims=True)
        if scale_path:
            correction = correction + xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
        dxhat = dxhat - correction
    return dxhat * inv_std, dgamma, dbeta


@mutant(
    "batchnorm_backward",
    "in training, dx ignores that x moved the batch's mean and variance: it lacks the two terms "
    "that subtract the mean of dxhat and of dxhat * xhat",
)
def backward_drops_the_mean_terms(dy, cache):
    return _backward(dy, cache, shift_path=False, scale_path=False)


@mutant(
    "batchnorm_backward",
    "in training, dx follows the path through the batch mean but not the one through the batch "
    "variance (the xhat * mean(dxhat * xhat) term is missing)",
)
def backward_drops_the_variance_term(dy, cache):
    return _backward(dy, cache, scale_path=False)


@mutant(
    "batchnorm_backward",
    "with given statistics (evaluation) mean and var are constants, yet dx subtracts the "
    "batch-statistics terms as in training",
)
def backward_treats_given_statistics_as_the_batch(dy, cache):
    return _backward(dy, cache, always_batch=True)


# -- the layer ----------------------------------------------------------------------------------


def _update(self, x, *, ddof=1, weight_old=False):
    axes, _ = _channels(x)
    m = 1 - self.momentum if weight_old else self.momentum
    self.running_mean = (1 - m) * self.running_mean + m * x.mean(axis=axes)
    self.running_var = (1 - m) * self.running_var + m * x.var(axis=axes, ddof=ddof)


@mutant(
    "BatchNorm.forward",
    "evaluation still normalises with the batch's statistics (and updates the running ones); "
    "after eval() use running_mean and running_var and change nothing",
)
def evaluation_uses_batch_statistics(self, x):
    y, self._cache = ref.batchnorm_forward(x, self.gamma, self.beta, eps=self.eps)
    _update(self, x)
    return y


@mutant(
    "BatchNorm.forward",
    "running_var is updated with the biased batch variance (/ n); PyTorch uses the unbiased one "
    "(/ (n - 1)) for it",
)
def running_variance_is_biased(self, x):
    if not self.training:
        return ref.BatchNorm.forward(self, x)
    y, self._cache = ref.batchnorm_forward(x, self.gamma, self.beta, eps=self.eps)
    _update(self, x, ddof=0)
    return y


@mutant(
    "BatchNorm.forward",
    "momentum weights the old running statistics (Keras's convention); in PyTorch it is the "
    "weight of the new batch: running = (1 - momentum) * running + momentum * batch",
)
def momentum_weights_the_old_statistics(self, x):
    if not self.training:
        return ref.BatchNorm.forward(self, x)
    y, self._cache = ref.batchnorm_forward(x, self.gamma, self.beta, eps=self.eps)
    _update(self, x, weight_old=True)
    return y
