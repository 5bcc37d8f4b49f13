"""Common mistakes in relu, relu_backward and the initialisations, each replacing one function."""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("relu")


@mutant("relu", "relu overwrote its input in place: the backward pass needs the original x")
def relu_in_place(x):
    return np.maximum(x, 0, out=x)


@mutant("relu_backward", "the slope at x == 0 is taken as 1 (x >= 0); the convention is 0 (x > 0)")
def slope_one_at_zero(grad_out, x):
    return grad_out * (x >= 0)


@mutant("relu_backward", "the gradient is masked where grad_out > 0; the mask comes from x > 0")
def mask_from_grad_out(grad_out, x):
    return grad_out * (grad_out > 0)


@mutant("relu_backward", "returns relu's slope alone; the chain rule multiplies it by grad_out")
def slope_without_grad_out(grad_out, x):
    return (x > 0).astype(grad_out.dtype)


@mutant(
    "kaiming_normal", "std sqrt(1 / fan_in) misses He's factor 2: ReLU halves the signal per layer"
)
def kaiming_without_the_two(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(1.0 / fan_in)


@mutant("kaiming_normal", "the variance is 2 / fan_out; He's forward rule divides by fan_in")
def kaiming_with_fan_out(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_out)


@mutant("kaiming_normal", "2 / fan_in is the variance; the standard deviation is its square root")
def kaiming_variance_as_std(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * (2.0 / fan_in)


@mutant("kaiming_normal", "draws with rng.random (uniform on [0, 1)), not rng.standard_normal")
def kaiming_rand_not_randn(fan_in, fan_out, rng):
    return rng.random((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)


@mutant(
    "kaiming_normal",
    "the weights are (fan_out, fan_in), torch's nn.Linear layout; here x @ W "
    "needs (fan_in, fan_out)",
)
def kaiming_transposed(fan_in, fan_out, rng):
    return rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)


@mutant("kaiming_normal", "draws from np.random's global state instead of the rng argument")
def kaiming_global_rng(fan_in, fan_out, rng):
    return np.random.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)


@mutant("xavier_normal", "std sqrt(1 / (fan_in + fan_out)) misses Glorot's factor 2")
def xavier_without_the_two(fan_in, fan_out, rng):
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(1.0 / (fan_in + fan_out))


@mutant("xavier_normal", "std sqrt(2 / fan_in) is He's rule; Glorot averages both fans")
def xavier_is_he(fan_in, fan_out, rng):
    return ref.kaiming_normal(fan_in, fan_out, rng)
