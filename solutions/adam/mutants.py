"""Common mistakes with SGD, Adam and AdamW, each replacing one function of the reference.

The Adam mutants share one helper with a switch per mistake, so that each differs from the
reference (and from the others) in exactly the way its diagnosis says. The reference's adamw_step
calls the module's adam_step, so an Adam mutant carries its mistake into AdamW too, as a learner's
adamw_step built on their adam_step would.
"""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("adam")


# -- SGD with momentum --------------------------------------------------------------------------


def _sgd(
    param,
    grad,
    velocity,
    lr,
    momentum,
    weight_decay,
    nesterov,
    *,
    average=False,
    decay_outside=False,
    old_velocity=False,
):
    g = grad if decay_outside else grad + weight_decay * param
    new_velocity = momentum * velocity + (1 - momentum if average else 1) * g
    looked_ahead = velocity if old_velocity else new_velocity
    step = g + momentum * looked_ahead if nesterov else new_velocity
    if decay_outside:
        step = step + weight_decay * param
    return param - lr * step, new_velocity


@mutant(
    "sgd_momentum_step",
    "the velocity averages the gradients, momentum * velocity + (1 - momentum) * g; torch's "
    "velocity adds each whole gradient: momentum * velocity + g",
)
def sgd_velocity_is_an_average(
    param, grad, velocity, *, lr=1e-3, momentum=0.9, weight_decay=0.0, nesterov=False
):
    return _sgd(param, grad, velocity, lr, momentum, weight_decay, nesterov, average=True)


@mutant(
    "sgd_momentum_step",
    "weight decay is added to the step, outside the velocity; torch.optim.SGD adds "
    "weight_decay * param to the gradient before the velocity sees it",
)
def sgd_decay_outside_the_velocity(
    param, grad, velocity, *, lr=1e-3, momentum=0.9, weight_decay=0.0, nesterov=False
):
    return _sgd(param, grad, velocity, lr, momentum, weight_decay, nesterov, decay_outside=True)


@mutant(
    "sgd_momentum_step",
    "Nesterov's step uses the old velocity; it looks ahead with the new one: "
    "g + momentum * (momentum * velocity + g)",
)
def sgd_nesterov_with_the_old_velocity(
    param, grad, velocity, *, lr=1e-3, momentum=0.9, weight_decay=0.0, nesterov=False
):
    return _sgd(param, grad, velocity, lr, momentum, weight_decay, nesterov, old_velocity=True)


# -- Adam ---------------------------------------------------------------------------------------


def _adam(
    param,
    grad,
    m,
    v,
    t,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    *,
    correct_m=True,
    correct_v=True,
    t_shift=0,
    eps_inside=False,
    eps_before_correction=False,
    whole_array_v=False,
    decoupled=False,
    in_place=False,
):
    g = grad if decoupled else grad + weight_decay * param
    if in_place:
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
    else:
        m = beta1 * m + (1 - beta1) * g
        square = np.full_like(g, np.mean(g * g)) if whole_array_v else g * g
        v = beta2 * v + (1 - beta2) * square
    t = t + t_shift
    bc1 = 1 - beta1**t if correct_m else 1.0
    bc2 = 1 - beta2**t if correct_v else 1.0
    if eps_inside:
        denom = np.sqrt(v / bc2 + eps)
    elif eps_before_correction:
        denom = (np.sqrt(v) + eps) / bc2**0.5
    else:
        denom = np.sqrt(v / bc2) + eps
    start = param * (1 - lr * weight_decay) if decoupled else param
    return start - lr * (m / bc1) / denom, m, v


def _adam_mutant(name, diagnosis, **mistake):
    def step(param, grad, m, v, t, *, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        return _adam(param, grad, m, v, t, lr, beta1, beta2, eps, weight_decay, **mistake)

    step.__name__ = step.__qualname__ = name
    return mutant("adam_step", diagnosis)(step)


adam_without_bias_correction = _adam_mutant(
    "adam_without_bias_correction",
    "m and v are not bias-corrected, so the first steps are about 3x too long; divide them by "
    "1 - beta1**t and 1 - beta2**t",
    correct_m=False,
    correct_v=False,
)
adam_corrects_m_but_not_v = _adam_mutant(
    "adam_corrects_m_but_not_v",
    "m is bias-corrected but v is not, so the first steps are about 30x too long; "
    "v_hat = v / (1 - beta2**t)",
    correct_v=False,
)
adam_bias_correction_off_by_one = _adam_mutant(
    "adam_bias_correction_off_by_one",
    "the bias correction uses beta**(t + 1); t is the number of this step, 1 on the first, "
    "so 1 - beta1**t",
    t_shift=1,
)
adam_eps_inside_the_square_root = _adam_mutant(
    "adam_eps_inside_the_square_root",
    "eps is added inside the square root, sqrt(v_hat + eps); it goes outside: sqrt(v_hat) + eps",
    eps_inside=True,
)
adam_eps_before_bias_correction = _adam_mutant(
    "adam_eps_before_bias_correction",
    "eps is added to sqrt(v) before the bias correction (the paper's 'efficient' form); torch "
    "adds it after: sqrt(v / (1 - beta2**t)) + eps",
    eps_before_correction=True,
)
adam_second_moment_of_the_whole_array = _adam_mutant(
    "adam_second_moment_of_the_whole_array",
    "v averages the squared gradient over the whole array; Adam keeps one v per element, "
    "updated with g * g elementwise",
    whole_array_v=True,
)
adam_decay_is_decoupled = _adam_mutant(
    "adam_decay_is_decoupled",
    "adam_step decays the weights directly (that is AdamW); Adam's weight_decay is L2: add "
    "weight_decay * param to the gradient, before m and v",
    decoupled=True,
)
adam_updates_its_state_in_place = _adam_mutant(
    "adam_updates_its_state_in_place",
    "m and v are updated in place (m *= beta1 ...), which rewrites the caller's arrays; "
    "compute new ones: m = beta1 * m + (1 - beta1) * g",
    in_place=True,
)


# -- AdamW --------------------------------------------------------------------------------------


@mutant(
    "adamw_step",
    "the decay is added to the gradient, which is Adam with L2; AdamW shrinks the weights "
    "directly, param * (1 - lr * weight_decay), and keeps the decay out of m and v",
)
def adamw_decay_in_the_gradient(
    param, grad, m, v, t, *, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2
):
    return ref.adam_step(
        param, grad, m, v, t, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
    )


@mutant(
    "adamw_step",
    "the decay is not multiplied by the learning rate, param * (1 - weight_decay); torch's "
    "AdamW shrinks by lr * weight_decay",
)
def adamw_decay_not_scaled_by_lr(
    param, grad, m, v, t, *, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2
):
    return ref.adam_step(
        param * (1 - weight_decay), grad, m, v, t, lr=lr, beta1=beta1, beta2=beta2, eps=eps
    )


@mutant(
    "adamw_step",
    "the decay shrinks the weights after Adam's step; it shrinks the old weights: "
    "param * (1 - lr * weight_decay) - lr * m_hat / (sqrt(v_hat) + eps)",
)
def adamw_decays_the_updated_weights(
    param, grad, m, v, t, *, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2
):
    new, m, v = ref.adam_step(param, grad, m, v, t, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    return new * (1 - lr * weight_decay), m, v
