"""Common mistakes in dropout, each replacing one function or method of the reference.

The order matters for diagnosis (the first mutant whose output matches a learner's is named):
where two mistakes give the same output on some case, the one that only that case can reveal comes
first (the layer's evaluation mistake before the function's, which has a case of its own).
"""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("dropout")


def _drop(x, p, keep, scale):
    """y and mask from a boolean keep pattern and the scale of the kept elements."""
    mask = keep.astype(x.dtype) * x.dtype.type(scale)
    return x * mask, mask


# -- the forward pass ---------------------------------------------------------------------------


@mutant(
    "dropout_forward",
    "p is taken as the probability of keeping an element (the paper's convention); here, as in "
    "PyTorch, p is the probability of dropping it, and kept elements are scaled by 1 / (1 - p)",
)
def keep_probability_as_p(x, p, rng, training=True):
    if not training or p in (0, 1):
        return ref.dropout_forward(x, p, rng, training)
    return _drop(x, p, rng.random(x.shape) < p, 1 / p)


@mutant(
    "dropout_forward",
    "kept elements are not scaled by 1 / (1 - p), so E[y] = (1 - p) x in training while "
    "evaluation returns x: inverted dropout divides the kept elements by 1 - p",
)
def no_rescaling(x, p, rng, training=True):
    if not training or p in (0, 1):
        return ref.dropout_forward(x, p, rng, training)
    return _drop(x, p, rng.random(x.shape) >= p, 1.0)


@mutant(
    "dropout_forward",
    "evaluation multiplies by 1 - p (the paper's original, non-inverted dropout); with inverted "
    "dropout training scales kept elements by 1 / (1 - p) and evaluation is the identity",
)
def scales_at_test_time(x, p, rng, training=True):
    if not training:
        return x * (1 - p), np.full_like(x, 1 - p)
    return no_rescaling(x, p, rng, training)


@mutant(
    "dropout_forward",
    "for float32 x the mask (and so y) came back float64: a bool array divided by a float is "
    "float64; build the mask in x's dtype, keep.astype(x.dtype) / (1 - p)",
)
def float64_mask_upcasts_y(x, p, rng, training=True):
    if not training or p in (0, 1):
        return ref.dropout_forward(x, p, rng, training)
    mask = (rng.random(x.shape) >= p) / (1 - p)
    return x * mask, mask


@mutant(
    "dropout_forward",
    "p = 1 gives NaN: the mask was computed as keep / (1 - p), which is 0 / 0 when everything is "
    "dropped; return zeros for p = 1",
)
def p_one_gives_nan(x, p, rng, training=True):
    if not training or p == 0:
        return ref.dropout_forward(x, p, rng, training)
    keep = (rng.random(x.shape) >= p).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        mask = keep / x.dtype.type(1 - p)
    return x * mask, mask


@mutant(
    "dropout_forward",
    "one mask is drawn for a single example and shared by the whole batch (axis 0); every "
    "element needs its own draw: rng.random(x.shape)",
)
def mask_shared_across_the_batch(x, p, rng, training=True):
    if not training or p in (0, 1):
        return ref.dropout_forward(x, p, rng, training)
    keep = np.broadcast_to(rng.random(x.shape[1:]) >= p, x.shape)
    return _drop(x, p, keep, 1 / (1 - p))


@mutant(
    "dropout_forward",
    "the mask comes from numpy's global random state (np.random.*), not from the rng argument, "
    "so the same seed does not give the same mask",
)
def global_numpy_random(x, p, rng, training=True):
    if not training or p in (0, 1):
        return ref.dropout_forward(x, p, rng, training)
    return _drop(x, p, np.random.random(x.shape) >= p, 1 / (1 - p))


# -- the layer, in evaluation (before the function's mistake: see the module's docstring) --------


@mutant(
    "Dropout.forward",
    "the layer still drops in evaluation: after eval(), forward must return x unchanged (pass "
    "self.training on to dropout_forward)",
)
def layer_drops_in_evaluation(self, x):
    y, self._mask = ref.dropout_forward(x, self.p, self.rng, True)
    return y


@mutant(
    "dropout_forward",
    "dropout_forward(..., training=False) still drops elements; evaluation is the identity "
    "(y = x, mask all ones)",
)
def drops_in_evaluation(x, p, rng, training=True):
    return ref.dropout_forward(x, p, rng, True)


# -- the backward pass --------------------------------------------------------------------------


@mutant(
    "dropout_backward",
    "the gradient ignores the mask (dx = dy): dropped elements did not reach y, so they get no "
    "gradient, and kept ones get dy / (1 - p): dx = dy * mask",
)
def backward_ignores_the_mask(dy, mask):
    return dy.copy()


@mutant(
    "dropout_backward",
    "the gradient of a kept element is dy, not dy / (1 - p): the forward scaled it by 1 / (1 - p), "
    "so the backward must too (dx = dy * mask)",
)
def backward_drops_the_scale(dy, mask):
    return dy * (mask != 0)


# -- the layer ----------------------------------------------------------------------------------


@mutant(
    "Dropout.backward",
    "backward draws a new mask instead of using the last forward's: the gradient must flow "
    "through exactly the elements that forward kept",
)
def layer_backward_draws_a_new_mask(self, dy):
    _, mask = ref.dropout_forward(np.ones_like(dy), self.p, self.rng, self.training)
    return dy * mask


@mutant(
    "Dropout.forward",
    "the layer draws its mask once and reuses it on every call; each training step must drop a "
    "fresh random set of elements",
)
def layer_reuses_its_first_mask(self, x):
    if not self.training:
        return ref.Dropout.forward(self, x)
    first = getattr(self, "_first_mask", None)
    if first is None or first.shape != x.shape:
        _, first = ref.dropout_forward(np.ones_like(x), self.p, self.rng)
        self._first_mask = first
    self._mask = first
    return x * first
