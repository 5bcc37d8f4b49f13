"""Common mistakes in mixed-precision training, each replacing one function or method of the
reference. Like the reference, each works on numpy arrays and on torch tensors alike.

The order matters for diagnosis (the first mutant whose output matches a learner's is named): the
step's mistakes come before the scaler's, so that a step that forgets to unscale is named as such
rather than as an unscale_ that returns copies, which gives the step the same numbers.
"""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("mixed_precision")
namespace_of = ref.namespace_of


def _round(x, *, bias=None, keep_nan=True):
    """The reference's bit rounding with one piece changed: a fixed bias (0: chop, 0x8000: ties
    away from zero) instead of 0x7FFF + the last kept bit, or NaN not set aside."""
    xp = namespace_of(x)
    if keep_nan:
        x = xp.where(xp.isnan(x), xp.nan, x)
    bits = x.view(xp.int32)
    if bias is None:
        bias = 0x7FFF + ((bits >> 16) & 1)
    return ((bits + bias) & -0x10000).view(xp.float32)


# -- round_to_bfloat16 ---------------------------------------------------------------------------


@mutant(
    "round_to_bfloat16",
    "the low 16 bits are chopped off, which rounds toward zero; round to nearest: add 0x7FFF plus "
    "the last kept bit before clearing them",
)
def chops_the_low_bits(x):
    return _round(x, bias=0)


@mutant(
    "round_to_bfloat16",
    "exact ties are rounded away from zero (adding 0x8000); a tie goes to the neighbour whose last "
    "kept bit is 0: add 0x7FFF plus that bit",
)
def ties_away_from_zero(x):
    return _round(x, bias=0x8000)


@mutant(
    "round_to_bfloat16",
    "NaN is rounded like a number: a NaN whose payload lies in the low 16 bits carries into "
    "infinity (or wraps to -0); set NaNs aside before rounding",
)
def nan_rounded_like_a_number(x):
    return _round(x, keep_nan=False)


@mutant(
    "round_to_bfloat16",
    "the values are rounded to float16 (5 exponent bits, 10 fraction bits) instead of bfloat16 "
    "(8 and 7): small ones flush to 0, large ones overflow past 65504",
)
def rounds_to_float16(x):
    xp = namespace_of(x)
    with np.errstate(over="ignore"):  # numpy warns as it casts 1e30 to inf
        return xp.asarray(xp.asarray(x, dtype=xp.float16), dtype=xp.float32)


@mutant(
    "round_to_bfloat16",
    "the input was overwritten: x.view(int32) shares x's memory, so in-place bit operations "
    "rewrite the caller's array; compute new arrays instead",
)
def rounds_in_place(x):
    x[...] = ref.round_to_bfloat16(x)
    return x


# -- mixed_precision_step ------------------------------------------------------------------------


def _float32(grads):
    return [namespace_of(g).asarray(g, dtype=namespace_of(g).float32) for g in grads]


def _overflowed(grads):
    return any(not bool(namespace_of(g).isfinite(g).all()) for g in grads)


@mutant(
    "mixed_precision_step",
    "the update used the gradients still multiplied by the loss scale: divide them by it "
    "(scaler.unscale_, in place) before p -= lr * g",
)
def forgets_to_unscale(master_params, fp16_grads, scaler, lr):
    grads = _float32(fp16_grads)
    found_inf = _overflowed(grads)
    if not found_inf:
        for p, g in zip(master_params, grads, strict=True):
            p -= lr * g
    scaler.update(found_inf)
    return found_inf


@mutant(
    "mixed_precision_step",
    "the step was taken although the gradients overflowed, spreading inf and NaN into the master "
    "weights; skip the update when found_inf (and still call scaler.update)",
)
def steps_despite_overflow(master_params, fp16_grads, scaler, lr):
    grads = _float32(fp16_grads)
    found_inf = scaler.unscale_(grads)
    for p, g in zip(master_params, grads, strict=True):
        p -= lr * g
    scaler.update(found_inf)
    return bool(found_inf)


@mutant(
    "mixed_precision_step",
    "the gradients were divided by the scale in float16, where the small ones flush to zero; "
    "convert them to float32 first, then unscale",
)
def unscales_in_float16(master_params, fp16_grads, scaler, lr):
    grads = _float32([g * (1.0 / scaler.get_scale()) for g in fp16_grads])
    found_inf = _overflowed(grads)
    if not found_inf:
        for p, g in zip(master_params, grads, strict=True):
            p -= lr * g
    scaler.update(found_inf)
    return found_inf


@mutant(
    "mixed_precision_step",
    "scaler.update ran only after steps that went through, so an overflow never shrinks the scale "
    "and every later step overflows too; call it on every step",
)
def updates_the_scale_only_after_good_steps(master_params, fp16_grads, scaler, lr):
    grads = _float32(fp16_grads)
    found_inf = scaler.unscale_(grads)
    if not found_inf:
        for p, g in zip(master_params, grads, strict=True):
            p -= lr * g
        scaler.update(found_inf)
    return bool(found_inf)


@mutant(
    "mixed_precision_step",
    "the weights were stored back in float16, which rounds away any update below about 2**-11 of "
    "the weight; keep the master weights, and the update, in float32",
)
def master_weights_in_float16(master_params, fp16_grads, scaler, lr):
    grads = _float32(fp16_grads)
    found_inf = scaler.unscale_(grads)
    if not found_inf:
        for p, g in zip(master_params, grads, strict=True):
            xp = namespace_of(p)
            p[...] = xp.asarray(p - lr * g, dtype=xp.float16)
    scaler.update(found_inf)
    return bool(found_inf)


# -- DynamicLossScaler ---------------------------------------------------------------------------


@mutant(
    "DynamicLossScaler.unscale_",
    "found_inf only looked for inf, but an overflow also shows as NaN (inf - inf, 0 * inf); test "
    "with isfinite, which is False for both",
)
def found_inf_misses_nan(self, grads):
    found_inf = False
    for g in grads:
        found_inf = found_inf or bool(namespace_of(g).isinf(g).any())
        g *= 1.0 / self.get_scale()
    return found_inf


@mutant(
    "DynamicLossScaler.unscale_",
    "unscale_ left the gradients as they were: g = g / scale makes a new array the caller never "
    "sees; divide in place (g *= 1 / scale)",
)
def unscale_makes_new_arrays(self, grads):
    found_inf = _overflowed(grads)
    for g in grads:
        g = g / self.get_scale()  # the mistake: a new array, lost at once
    return found_inf


@mutant(
    "DynamicLossScaler.update",
    "on overflow the scale grew: multiply by backoff_factor (0.5 halves it), don't divide by it",
)
def backoff_divides(self, found_inf):
    if found_inf:
        self._scale /= self.backoff_factor
        self._clean_steps = 0
    else:
        ref.DynamicLossScaler.update(self, found_inf)


@mutant(
    "DynamicLossScaler.update",
    "an overflow did not restart the count of clean steps: the scale grows only after "
    "growth_interval clean steps in a row",
)
def overflow_keeps_the_count(self, found_inf):
    if found_inf:
        self._scale *= self.backoff_factor
    else:
        ref.DynamicLossScaler.update(self, found_inf)


@mutant(
    "DynamicLossScaler.update",
    "the scale grew one step late, after growth_interval + 1 clean steps; it grows on the "
    "growth_interval-th",
)
def grows_one_step_late(self, found_inf):
    if found_inf:
        self._scale *= self.backoff_factor
        self._clean_steps = 0
        return
    self._clean_steps += 1
    if self._clean_steps > self.growth_interval:
        self._scale *= self.growth_factor
        self._clean_steps = 0


@mutant(
    "DynamicLossScaler.update",
    "after growing, the count of clean steps was not restarted, so the scale grew again on every "
    "clean step; restart the count at 0 after each growth",
)
def growth_keeps_the_count(self, found_inf):
    if found_inf:
        self._scale *= self.backoff_factor
        self._clean_steps = 0
        return
    self._clean_steps += 1
    if self._clean_steps >= self.growth_interval:
        self._scale *= self.growth_factor
