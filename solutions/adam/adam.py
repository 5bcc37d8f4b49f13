"""SGD with momentum, Adam and AdamW, as pure functions over numpy arrays.

Kingma and Ba (2015) gave every parameter its own step size: Adam keeps a running average of the
gradient (the first moment, m) and of its square (the second moment, v), and moves each parameter
by about lr * m / sqrt(v), a step whose size no longer depends on the gradient's scale. Both
averages start at zero, so early on they are too small; dividing by 1 - beta**t undoes that bias.
Loshchilov and Hutter (2019) showed that weight decay written as an L2 term in the gradient gets
divided by sqrt(v) too, so well-trodden weights are hardly decayed, and proposed AdamW: shrink
the weights directly, outside the adaptive step.

Each function takes a parameter array, its gradient and the optimiser's state, and returns the
new parameter and the new state, leaving its inputs untouched. The conventions, and so every
number, are those of torch.optim.SGD, Adam and AdamW.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adam_step", "adamw_step", "sgd_momentum_step"]


def _check(name: str, param: np.ndarray, **state: np.ndarray) -> None:
    for key, array in state.items():
        if np.shape(array) != np.shape(param):
            raise ValueError(
                f"{name}: {key} must have param's shape {np.shape(param)}; got {np.shape(array)}"
            )


def _check_step(name: str, t: int) -> None:
    if t < 1:
        raise ValueError(f"{name}: t is the number of this step, counted from 1; got t={t}")


def sgd_momentum_step(
    param: np.ndarray,
    grad: np.ndarray,
    velocity: np.ndarray,
    *,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of stochastic gradient descent with momentum, as torch.optim.SGD takes it.

    Shapes: param, grad and velocity all alike (any shape) -> (new param, new velocity), alike.
    velocity is torch's momentum buffer: start it at zeros. With g = grad + weight_decay * param,
        velocity = momentum * velocity + g
        param    = param - lr * velocity                      (nesterov=False)
        param    = param - lr * (g + momentum * velocity)     (nesterov=True, the new velocity)
    Returns new arrays (float32 stays float32) and leaves its inputs unchanged.
    """
    _check("sgd_momentum_step", param, grad=grad, velocity=velocity)
    ### BEGIN SOLUTION
    # L2 weight decay: the gradient of (weight_decay / 2) * |param|^2 joins the loss's gradient.
    g = grad + weight_decay * param
    # The velocity sums past gradients with geometrically fading weights, so a direction the
    # gradients agree on builds up speed (up to 1 / (1 - momentum) times a single step) while
    # directions where they flip sign cancel out.
    velocity = momentum * velocity + g
    # Nesterov looks ahead: it steps along the gradient plus where the velocity is about to go.
    step = g + momentum * velocity if nesterov else velocity
    return param - lr * step, velocity
    ### END SOLUTION


def adam_step(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of Adam (Kingma and Ba, Algorithm 1), as torch.optim.Adam takes it.

    Shapes: param, grad, m and v all alike (any shape) -> (new param, new m, new v), alike.
    m and v are the moving averages of the gradient and of its square: start both at zeros.
    t is the number of this step, counted from 1. weight_decay is an L2 penalty, added to the
    gradient (g = grad + weight_decay * param) before anything else. Then, elementwise,
        m = beta1 * m + (1 - beta1) * g            v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)                 v_hat = v / (1 - beta2**t)
        param = param - lr * m_hat / (sqrt(v_hat) + eps)
    Returns new arrays (float32 stays float32) and leaves its inputs unchanged.
    """
    _check("adam_step", param, grad=grad, m=m, v=v)
    _check_step("adam_step", t)
    ### BEGIN SOLUTION
    g = grad + weight_decay * param  # L2 decay: part of the gradient, so it is normalised below
    # Moving averages of the gradient and of its elementwise square: estimates of E[g] and E[g^2].
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    # Both averages start at zero, so after t steps they hold only 1 - beta**t of the weight they
    # should (0.1 of it for m and 0.001 for v on the first step). Dividing by that removes the bias.
    # Python floats (not numpy scalars) keep float32 arrays in float32.
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    # Each parameter moves by lr times a signal-to-noise ratio: about lr when the gradients agree,
    # less when they are noisy, whatever their scale. eps only guards against division by zero.
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
    ### END SOLUTION


def adamw_step(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of AdamW (Loshchilov and Hutter), as torch.optim.AdamW takes it.

    Shapes and state as adam_step. The decay is decoupled from the gradient: the weights shrink
    by lr * weight_decay of themselves, then Adam steps with the raw gradient (no decay in m or v):
        param = param * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps)
    Returns new arrays (float32 stays float32) and leaves its inputs unchanged.
    """
    _check("adamw_step", param, grad=grad, m=m, v=v)
    _check_step("adamw_step", t)
    ### BEGIN SOLUTION
    # Decay the weights themselves, with the same factor for every weight, and keep the decay out
    # of the moments: with L2 in the gradient, a weight whose gradients are large would see its
    # decay divided by a large sqrt(v) and hardly shrink. Adam's step does not depend on param
    # (without L2), so shrinking first and then stepping is exactly torch's order.
    decayed = param * (1 - lr * weight_decay)
    return adam_step(
        decayed, grad, m, v, t, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=0.0
    )
    ### END SOLUTION
