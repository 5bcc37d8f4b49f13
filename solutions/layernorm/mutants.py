"""Common mistakes in layer norm and RMSNorm, each replacing one function of the reference.

A forward mutant returns the reference's kind of cache, (x_hat, inv_std, gamma), so that the
reference's backward can follow it.
"""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("layernorm")


def _finish(x_hat, inv_std, gamma, beta=None):
    y = gamma * x_hat if beta is None else gamma * x_hat + beta
    return y, (x_hat, inv_std, gamma)


# -- layernorm_forward --------------------------------------------------------------------------


@mutant(
    "layernorm_forward",
    "the statistics are taken over the batch axis (axis 0), which is batch norm: layer norm "
    "standardises each row over its own features, the last axis",
)
def statistics_over_the_batch(x, gamma, beta, eps=1e-5):
    inv_std = 1.0 / np.sqrt(x.var(axis=0, keepdims=True) + eps)
    return _finish((x - x.mean(axis=0, keepdims=True)) * inv_std, inv_std, gamma, beta)


@mutant(
    "layernorm_forward",
    "the variance divides by D - 1 (ddof=1, or torch's default x.std()); layer norm divides by D",
)
def unbiased_variance(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # D = 1 divides by zero, as x.std() does
        var = np.sum(centred * centred, axis=-1, keepdims=True) / (x.shape[-1] - 1)
        inv_std = 1.0 / np.sqrt(var + eps)
        return _finish(centred * inv_std, inv_std, gamma, beta)


@mutant(
    "layernorm_forward",
    "eps is added to the standard deviation, outside the square root: divide by sqrt(var + eps)",
)
def eps_outside_the_root(x, gamma, beta, eps=1e-5):
    inv_std = 1.0 / (x.std(axis=-1, keepdims=True) + eps)
    return _finish((x - x.mean(axis=-1, keepdims=True)) * inv_std, inv_std, gamma, beta)


@mutant(
    "layernorm_forward",
    "the variance is computed as mean(x^2) - mean(x)^2, whose digits cancel when the mean is "
    "large next to the spread; subtract the mean first, then average the squares",
)
def one_pass_variance(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) - mean**2 + eps)
    return _finish((x - mean) * inv_std, inv_std, gamma, beta)


@mutant(
    "layernorm_forward",
    "the input is changed in place (x -= mean), so the caller's array is no longer its input; "
    "write x - mean into a new array",
)
def centres_the_input_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return _finish(x * inv_std, inv_std, gamma, beta)


# -- rmsnorm_forward ----------------------------------------------------------------------------


@mutant(
    "rmsnorm_forward",
    "RMSNorm subtracts the mean, which makes it layer norm; RMSNorm divides x itself by its root "
    "mean square",
)
def rms_subtracts_the_mean(x, gamma, eps=1e-6):
    centred = x - x.mean(axis=-1, keepdims=True)
    inv_rms = 1.0 / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + eps)
    return _finish(centred * inv_rms, inv_rms, gamma)


@mutant(
    "rmsnorm_forward",
    "RMSNorm adds eps to the root mean square, outside the square root: divide by "
    "sqrt(mean(x^2) + eps)",
)
def rms_eps_outside_the_root(x, gamma, eps=1e-6):
    inv_rms = 1.0 / (np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) + eps)
    return _finish(x * inv_rms, inv_rms, gamma)


# -- layernorm_backward -------------------------------------------------------------------------


@mutant(
    "layernorm_backward",
    "the mean and the variance are treated as constants in the backward pass (dx = dy * gamma / "
    "std); both depend on every x of the row",
)
def statistics_treated_as_constants(dy, cache):
    _, inv_std, gamma = cache
    _, dgamma, dbeta = ref.layernorm_backward(dy, cache)
    return dy * gamma * inv_std, dgamma, dbeta


@mutant(
    "layernorm_backward",
    "the backward pass follows the mean but not the variance: dx lacks the term "
    "- x_hat * mean(dx_hat * x_hat)",
)
def variance_path_forgotten(dy, cache):
    _, inv_std, gamma = cache
    _, dgamma, dbeta = ref.layernorm_backward(dy, cache)
    g = dy * gamma
    return inv_std * (g - g.mean(axis=-1, keepdims=True)), dgamma, dbeta


@mutant(
    "layernorm_backward",
    "the gradient reaching x_hat is dy, not dy * gamma: y = gamma * x_hat + beta",
)
def gamma_left_out_of_dx(dy, cache):
    x_hat, inv_std, gamma = cache
    _, dgamma, dbeta = ref.layernorm_backward(dy, cache)
    dx, _, _ = ref.layernorm_backward(dy, (x_hat, inv_std, np.ones_like(gamma)))
    return dx, dgamma, dbeta


@mutant(
    "layernorm_backward",
    "dgamma and dbeta are summed over axis 0 only; every row shares the parameters, so sum over "
    "all the leading axes",
)
def parameter_grads_summed_over_axis_0(dy, cache):
    x_hat, _, _ = cache
    dx, _, _ = ref.layernorm_backward(dy, cache)
    return dx, np.sum(dy * x_hat, axis=0), np.sum(dy, axis=0)


# -- rmsnorm_backward ---------------------------------------------------------------------------


@mutant(
    "rmsnorm_backward",
    "the root mean square is treated as a constant in the backward pass; it depends on every x of "
    "the row, which adds - x_hat * mean(dx_hat * x_hat)",
)
def rms_treated_as_constant(dy, cache):
    _, inv_rms, gamma = cache
    _, dgamma = ref.rmsnorm_backward(dy, cache)
    return dy * gamma * inv_rms, dgamma
