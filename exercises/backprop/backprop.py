"""Backpropagation: reverse-mode automatic differentiation over numpy arrays.

Rumelhart, Hinton and Williams (1986) sent a network's error backwards through its layers with the
chain rule, so that every weight learns how to change for about the cost of one more forward pass.
This module does the same for any expression built from a handful of operations: each operation
remembers its inputs and how to pass a gradient back to them, and `backward()` visits the graph
from the output to the inputs in reverse topological order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["Tensor", "numerical_gradient", "unbroadcast"]


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`: the gradient with respect to x of np.broadcast_to(x, grad.shape).

    Shapes: grad (*grad.shape) -> (*shape), where `shape` broadcasts to `grad.shape`.
    Example: grad (4, 2, 3) and shape (2, 1): sum over axis 0, then over the last axis keeping it.
    """
    # YOUR CODE HERE
    raise NotImplementedError("unbroadcast: not implemented yet; see exercises/backprop/README.md")


class Tensor:
    """A float64 numpy array that records how it was computed, so that gradients can flow back.

    Operators: a + b, a - b, a * b and a / b broadcast like numpy; a @ b multiplies 2-D matrices;
    each takes a Tensor, a Python number or a numpy array on either side. Also a ** p for a number
    p, and -a. Every operation returns a new Tensor; a result requires grad when an input does.
    You write __add__, __mul__, __matmul__ and __pow__; -, /, unary minus and the reflected forms
    (2 * t, 1 - t, array @ t) are given, built from them.

    After out.backward(), every tensor that requires grad and that out depends on holds
    d out / d tensor in .grad: a float64 array of its data's shape. A leaf's .grad adds up over
    backward() calls until you reset it (t.grad = None), as in torch.
    """

    __array_ufunc__ = None  # so that `ndarray + Tensor` calls Tensor.__radd__, not numpy

    def __init__(self, data, requires_grad: bool = False) -> None:
        """data: anything np.asarray takes; kept as float64 in .data. .grad starts as None."""
        self.data = np.asarray(data, dtype=np.float64)
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        # Filled in by the operation that made this tensor (left empty for a leaf): its inputs, and
        # a function from the gradient of this tensor to one gradient per input.
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable | None = None

    # -- given: plumbing ----------------------------------------------------------------------

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{flag})"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        return self.data.item()

    def _lift(self, other) -> Tensor:
        """Numbers and numpy arrays become constant tensors (requires_grad=False)."""
        return other if isinstance(other, Tensor) else Tensor(other)

    def _make(self, data, parents: tuple[Tensor, ...], backward: Callable) -> Tensor:
        """The result of an operation on `parents`. `backward(g)` maps the gradient g of the result
        to a tuple of gradients, one per parent, each in the result's shape or its parent's
        (`backward()` sums broadcast axes away)."""
        out = Tensor(data, requires_grad=any(p.requires_grad for p in parents))
        if out.requires_grad:
            out._parents, out._backward = parents, backward
        return out

    # -- the operations: each computes its value and says how to send a gradient back -------

    def __add__(self, other) -> Tensor:
        other = self._lift(other)
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.__add__: not implemented yet; see exercises/backprop/README.md"
        )

    def __mul__(self, other) -> Tensor:
        other = self._lift(other)
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.__mul__: not implemented yet; see exercises/backprop/README.md"
        )

    def __matmul__(self, other) -> Tensor:
        """(n, k) @ (k, m) -> (n, m)."""
        other = self._lift(other)
        if self.ndim != 2 or other.ndim != 2:
            raise ValueError(f"@ takes 2-D operands; got shapes {self.shape} and {other.shape}")
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.__matmul__: not implemented yet; see exercises/backprop/README.md"
        )

    def __pow__(self, exponent: float) -> Tensor:
        if isinstance(exponent, Tensor) or not np.isscalar(exponent):
            raise TypeError(f"** takes a number as its exponent; got {type(exponent).__name__}")
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.__pow__: not implemented yet; see exercises/backprop/README.md"
        )

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Like np.sum: over all elements (axis=None), one axis or a tuple of axes."""

        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.sum: not implemented yet; see exercises/backprop/README.md"
        )

    def exp(self) -> Tensor:
        """e^x, element by element."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.exp: not implemented yet; see exercises/backprop/README.md"
        )

    def log(self) -> Tensor:
        """The natural logarithm, element by element."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.log: not implemented yet; see exercises/backprop/README.md"
        )

    def tanh(self) -> Tensor:
        """The hyperbolic tangent, element by element."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.tanh: not implemented yet; see exercises/backprop/README.md"
        )

    def relu(self) -> Tensor:
        """max(x, 0); its gradient is 1 where x > 0 and 0 elsewhere (at 0 too, as in torch)."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.relu: not implemented yet; see exercises/backprop/README.md"
        )

    def reshape(self, *shape) -> Tensor:
        """t.reshape(2, 3) or t.reshape((2, 3)); -1 infers one size, as in numpy."""
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.reshape: not implemented yet; see exercises/backprop/README.md"
        )

    @property
    def T(self) -> Tensor:
        """All axes reversed, as numpy's .T (the transpose of a matrix)."""
        # YOUR CODE HERE
        raise NotImplementedError("Tensor.T: not implemented yet; see exercises/backprop/README.md")

    # -- given: operations made of the ones above ---------------------------------------------

    def __neg__(self) -> Tensor:
        return self * -1.0

    def __sub__(self, other) -> Tensor:
        return self + -self._lift(other)

    def __truediv__(self, other) -> Tensor:
        return self * self._lift(other) ** -1.0

    def __radd__(self, other) -> Tensor:
        return self + other

    def __rmul__(self, other) -> Tensor:
        return self * other

    def __rsub__(self, other) -> Tensor:
        return self._lift(other) - self

    def __rtruediv__(self, other) -> Tensor:
        return self._lift(other) / self

    def __rmatmul__(self, other) -> Tensor:
        return self._lift(other) @ self

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Like np.mean: the sum divided by the number of elements summed."""
        total = self.sum(axis=axis, keepdims=keepdims)
        return total * (total.data.size / self.data.size)

    # -- backpropagation ----------------------------------------------------------------------

    def backward(self, grad=None) -> None:
        """Fill in .grad of every tensor that requires grad and that this one depends on.

        grad: d loss / d self, of this tensor's shape; by default 1, which needs a single element.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): no tensor that this one depends on requires grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() needs a grad for a tensor of shape {self.shape}")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != self.shape:
            raise ValueError(f"backward(grad): grad has shape {grad.shape}; expected {self.shape}")
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tensor.backward: not implemented yet; see exercises/backprop/README.md"
        )


def numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """d f / d x by central differences: (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for each i.

    f maps an array of x's shape to a number. x (*shape) -> gradient (*shape), float64.
    The error is O(eps^2) plus rounding of order 1e-16 |f| / eps.
    """
    x = np.array(x, dtype=np.float64)  # a private copy to probe: the caller's array is untouched
    # YOUR CODE HERE
    raise NotImplementedError(
        "numerical_gradient: not implemented yet; see exercises/backprop/README.md"
    )
