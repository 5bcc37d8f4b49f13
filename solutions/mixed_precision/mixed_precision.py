"""Mixed-precision training (Micikevicius et al., 2018) and bfloat16 (Kalamkar et al., 2019).

Half-precision numbers halve the memory of weights, activations and gradients and run several
times faster on tensor cores, but float16 covers only about 6e-8 to 65504. Micikevicius et al.
kept training accurate with three tricks, two of which are here: a float32 *master copy* of the
weights receives the updates (a float16 weight would round away any update smaller than about
1/2048 of itself), and *loss scaling* multiplies the loss before the backward pass so that small
gradients move up into float16's range instead of flushing to zero; the optimiser divides them
back in float32 and skips any step whose gradients overflowed. bfloat16 takes the other way out:
it keeps float32's 8 exponent bits (the same range) and gives up mantissa bits instead, so it is
the upper half of a float32 and converting is a rounding of the lower half away.

Every function takes numpy arrays or torch tensors (on any device) and returns the same kind.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["DynamicLossScaler", "mixed_precision_step", "namespace_of", "round_to_bfloat16"]

Array = Any  # a numpy array or a torch tensor


def namespace_of(x: Array) -> ModuleType:
    """numpy for a numpy array, torch for a torch tensor: the module whose functions fit x.

    Given, nothing to implement. With xp = namespace_of(x) one body serves both kinds, because
    numpy and torch spell these alike: xp.float32, xp.int32, x.view(xp.int32), xp.where,
    xp.isnan, xp.isfinite, xp.nan and xp.asarray(x, dtype=xp.float32).
    """
    if isinstance(x, np.ndarray | np.generic):
        return np
    if type(x).__module__.split(".")[0] == "torch":
        import torch

        return torch
    raise TypeError(f"expected a numpy array or a torch tensor; got {type(x).__name__}")


def _check_dtype(name: str, x: Array, dtype: str, hint: str = "") -> None:
    if x.dtype != getattr(namespace_of(x), dtype):
        raise TypeError(f"{name} takes {dtype} values; got {x.dtype}{hint}")


def round_to_bfloat16(x: Array) -> Array:
    """x rounded to the nearest bfloat16 value, ties to even, and returned as float32.

    Shapes: x (...) float32, a numpy array or a torch tensor -> the same shape, kind, device and
    dtype (float32: numpy has no bfloat16, and every bfloat16 value is a float32 value).
    A bfloat16 is the upper 16 bits of a float32 (sign, 8 exponent bits, 7 fraction bits), so the
    result is x's bit pattern with its low 16 bits rounded away: to the nearer of the two
    bfloat16 neighbours, and at an exact tie to the one whose last kept bit is 0.
    NaN stays NaN and +-inf stay +-inf; a finite x beyond bfloat16's largest value (about
    3.3895e38) rounds to infinity, exactly as x.to(torch.bfloat16) does. x is not modified.
    """
    _check_dtype("round_to_bfloat16", x, "float32", " (bfloat16 rounding starts from float32 bits)")
    ### BEGIN SOLUTION
    xp = namespace_of(x)
    # A NaN's low bits are its payload, not a fraction to round: carrying them up could turn it
    # into infinity. Replace NaNs by the quiet NaN 0x7FC00000, whose low half is already zero.
    x = xp.where(xp.isnan(x), xp.nan, x)  # a new array: the caller's x is never written to
    bits = x.view(xp.int32)  # the same 32 bits read as an integer: sign, exponent, fraction
    # Round to nearest on the integer. Adding 0x7FFF carries into bit 16 exactly when the low half
    # is above 0x8000; adding the last kept bit as well carries at a tie (0x8000) only when that
    # bit is odd, so ties go to the even neighbour. A carry out of the fraction moves up one
    # binade, which is right, and past the largest finite value it gives infinity.
    lowest_kept = (bits >> 16) & 1
    rounded = (bits + 0x7FFF + lowest_kept) & -0x10000  # -0x10000 is 0xFFFF0000 in int32
    return rounded.view(xp.float32)
    ### END SOLUTION


class DynamicLossScaler:
    """Dynamic loss scaling, with the rules and defaults of torch.amp.GradScaler.

    Each training step:
        scaled = scaler.scale(loss)        # backward from this: every gradient times the scale
        found_inf = scaler.unscale_(grads) # float32 gradients divided by the scale, in place
        if not found_inf: take the optimiser step on grads
        scaler.update(found_inf)           # then adjust the scale for the next step
    The scale starts at init_scale. An overflow multiplies it by backoff_factor (halves it, by
    default). Otherwise the step counts as clean, and after growth_interval clean steps in a row
    the scale is multiplied by growth_factor (doubled) and the count starts again from zero.
    get_scale() reads the current scale; the four settings are attributes of the same names.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        """A scaler that starts at init_scale; the settings are those of torch.amp.GradScaler."""
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1):
            raise ValueError(
                "DynamicLossScaler needs init_scale > 0, growth_factor > 1 and "
                f"0 < backoff_factor < 1; got {init_scale}, {growth_factor}, {backoff_factor}"
            )
        if int(growth_interval) != growth_interval or growth_interval < 1:
            raise ValueError(f"growth_interval is a whole number >= 1; got {growth_interval}")
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        ### BEGIN SOLUTION
        self._scale = float(init_scale)
        self._clean_steps = 0  # clean steps in a row since the scale last changed
        ### END SOLUTION

    def get_scale(self) -> float:
        """The current loss scale, a Python float."""
        ### BEGIN SOLUTION
        return self._scale
        ### END SOLUTION

    def scale(self, loss: Any) -> Any:
        """loss times the current scale: a number, array or tensor of the same kind (and dtype)."""
        ### BEGIN SOLUTION
        # Scaling the loss scales every gradient of the backward pass by the same factor (the
        # chain rule is linear), lifting small ones out of float16's flush-to-zero range.
        return loss * self._scale
        ### END SOLUTION

    def unscale_(self, grads: list[Array]) -> bool:
        """Divide every gradient by the scale, in place, and report whether any overflowed.

        grads: a list of float32 arrays or tensors (of any shapes), the gradients of the scaled
        loss; each is divided by the current scale where it lies (the trailing underscore).
        Returns found_inf, a bool: True when any value of any gradient is inf or NaN. Every
        gradient is divided, overflow or not, as torch does; the scale itself does not change.
        """
        for g in grads:
            _check_dtype(
                "DynamicLossScaler.unscale_",
                g,
                "float32",
                " (convert float16 gradients to float32 first: divided by the scale in float16, "
                "small ones would flush to zero)",
            )
        ### BEGIN SOLUTION
        inv_scale = 1.0 / self._scale  # multiplying by the reciprocal, as torch does
        found_inf = False
        for g in grads:
            xp = namespace_of(g)
            # An overflow anywhere in the backward pass leaves inf, or NaN (inf - inf, 0 * inf),
            # somewhere in the gradients; isfinite is False for both.
            found_inf = found_inf or not bool(xp.isfinite(g).all())
            g *= inv_scale
        return found_inf
        ### END SOLUTION

    def update(self, found_inf: bool) -> None:
        """Adjust the scale after a step: back off on overflow, grow after a clean run."""
        ### BEGIN SOLUTION
        if found_inf:
            # Too large: the step is lost, so shrink the scale and try again next step.
            self._scale *= self.backoff_factor
            self._clean_steps = 0
        else:
            # Probe upwards now and then: the largest scale that does not overflow keeps the most
            # small gradients alive, and the gradients' range drifts as training goes on.
            self._clean_steps += 1
            if self._clean_steps == self.growth_interval:
                self._scale *= self.growth_factor
                self._clean_steps = 0
        ### END SOLUTION


def mixed_precision_step(
    master_params: list[Array], fp16_grads: list[Array], scaler: DynamicLossScaler, lr: float
) -> bool:
    """One SGD step of mixed-precision training: float32 master weights, float16 gradients.

    master_params: a list of float32 arrays or tensors, the master weights, updated in place.
    fp16_grads: a list of float16 arrays or tensors of the same kinds and shapes: the gradients
    of the *scaled* loss, as the half-precision backward pass produced them. They are not
    modified.
    In order: float32 copies of the gradients; scaler.unscale_ on the copies; unless that found
    an overflow, p -= lr * g for every master weight p and its gradient g; and, in both cases,
    scaler.update(found_inf). Returns found_inf, a bool: True when the step was skipped.
    The next forward pass then uses float16 copies of the master weights.
    """
    if len(master_params) != len(fp16_grads):
        raise ValueError(
            f"mixed_precision_step takes one gradient per master weight; got {len(master_params)} "
            f"weights and {len(fp16_grads)} gradients"
        )
    for p, g in zip(master_params, fp16_grads, strict=True):
        _check_dtype("mixed_precision_step: master_params", p, "float32")
        _check_dtype("mixed_precision_step: fp16_grads", g, "float16")
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(
                f"mixed_precision_step: a master weight {tuple(p.shape)} has a gradient "
                f"{tuple(g.shape)}"
            )
    ### BEGIN SOLUTION
    # Unscale in float32: a float16 gradient of 1e-3 divided by 2**16 would land below float16's
    # smallest value (6e-8) and flush to zero, the very loss that scaling was there to prevent.
    grads = [namespace_of(g).asarray(g, dtype=namespace_of(g).float32) for g in fp16_grads]
    found_inf = scaler.unscale_(grads)
    if not found_inf:
        for p, g in zip(master_params, grads, strict=True):
            # In float32 a weight notices an update 2**-24 of its size; float16 would round
            # anything below 2**-11 of it away, and many small updates would add up to nothing.
            p -= lr * g
    scaler.update(found_inf)  # on every step: a skipped one must shrink the scale
    return bool(found_inf)
    ### END SOLUTION
