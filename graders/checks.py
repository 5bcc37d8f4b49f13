"""Comparisons that teach: shape, dtype, device and values, with messages that say what broke.

The public specs and the grader share these, so a learner sees the same words in both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# (rtol, atol) per dtype name, as torch.testing chooses them; exercises may pass looser ones and
# say why in their README. On CUDA, reductions run in another order, so float32 gets 10x slack.
TOLERANCES = {
    "float64": (1e-7, 1e-7),
    "float32": (1.3e-6, 1e-5),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
}


class SpecFailure(AssertionError):
    """A spec's verdict; its message is the whole report (no traceback needed)."""


def fail(message: str) -> None:
    raise SpecFailure(message)


def bernoulli_kl(a: float, p: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(p)) in nats, for 0 <= a <= 1 and 0 < p < 1."""
    return (a * math.log(a / p) if a > 0 else 0.0) + (
        (1 - a) * math.log((1 - a) / (1 - p)) if a < 1 else 0.0
    )


def chernoff_gap(k: int, n: int, p: float, cells: int, delta: float) -> bool:
    """Whether k successes in n draws lie too far from the probability p (0 < p < 1) for chance.

    Chernoff: P(n KL(k/n || p) >= c) <= 2 exp(-c), both tails together. With c = log(2 cells /
    delta), a union bound over `cells` such counts keeps the chance of any false alarm below
    delta. The bound holds for a hypergeometric count too (Hoeffding 1963), so comparing k of n
    with a reference's count passes their pooled rate as p.
    """
    return n * bernoulli_kl(k / n, p) > math.log(2 * cells / delta)


def tolerance(dtype: Any, device: Any = "cpu") -> tuple[float, float]:
    name = str(dtype).removeprefix("torch.")
    rtol, atol = TOLERANCES.get(name, (0.0, 0.0))
    if str(device).startswith("cuda") and name == "float32":
        rtol, atol = rtol * 10, atol * 10
    return rtol, atol


def describe(**arrays: Any) -> str:
    """'q (2, 4, 8) float32, k (2, 6, 8) float32': the inputs of a call, for messages."""
    return ", ".join(
        f"{k} {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for k, v in arrays.items()
    )


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _kind(x: Any) -> str:
    return (
        "torch.Tensor"
        if _is_tensor(x)
        else "numpy.ndarray"
        if isinstance(x, np.ndarray)
        else type(x).__name__
    )


def assert_close(
    actual: Any, expected: Any, *, what: str, rtol: float | None = None, atol: float | None = None
) -> None:
    """Check `actual` against `expected` (tensor or array): kind, shape, dtype, device, then values.

    `what` names the call, e.g. "scaled_dot_product_attention(q (2, 5, 8) float32, ...)".
    """
    if _kind(actual) != _kind(expected):
        fail(f"{what} returned a {_kind(actual)}; expected a {_kind(expected)}")
    if tuple(actual.shape) != tuple(expected.shape):
        fail(f"{what} returned shape {tuple(actual.shape)}; expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        fail(f"{what} returned dtype {actual.dtype}; expected {expected.dtype}")
    device = getattr(expected, "device", "cpu")
    if _is_tensor(actual) and actual.device != device:
        fail(f"{what} returned a tensor on {actual.device}; expected it on {device}")
    default_rtol, default_atol = tolerance(expected.dtype, device)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    with np.errstate(invalid="ignore"):  # inf - inf where both have inf is fine: equal_nan below
        _compare_values(_numpy(actual), _numpy(expected), what, rtol, atol)


def _compare_values(a: np.ndarray, e: np.ndarray, what: str, rtol: float, atol: float) -> None:
    if e.dtype.kind == "b" or (e.dtype.kind in "iu" and rtol == atol == 0):
        differ = a != e  # booleans and integers compare exactly (no subtraction, no wrap-around)
        if differ.any():
            at = _index(differ)
            fail(
                f"{what}: {int(differ.sum())} of {differ.size} values differ; the first, at index "
                f"{at}, is {a[at].item()!r} where {e[at].item()!r} was expected (compared exactly)"
            )
        return
    if e.dtype.kind in "iu":  # a tolerance on integers: differences as floats, never wrapping
        a, e = a.astype(np.float64), e.astype(np.float64)
    bad_finite = np.isfinite(e) & ~np.isfinite(a)
    if bad_finite.any():
        fail(
            f"{what} returned {int(bad_finite.sum())} non-finite value(s) (inf or NaN) where "
            f"finite values were expected, first at index {_index(bad_finite)}"
        )
    close = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        worst = np.unravel_index(np.argmax(np.where(close, 0, np.abs(a - e))), e.shape)
        fail(
            f"{what}: {int((~close).sum())} of {close.size} values differ; the worst, at index "
            f"{tuple(int(i) for i in worst)}, is {a[worst]:.6g} where {e[worst]:.6g} was expected "
            f"(|diff| {abs(a[worst] - e[worst]):.3g}; rtol {rtol:g}, atol {atol:g})"
        )


def _numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        return x.resolve_conj().numpy()
    return np.asarray(x, dtype=np.float64) if np.asarray(x).dtype.kind == "f" else np.asarray(x)


def _index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])
