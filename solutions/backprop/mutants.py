"""Common mistakes in backprop, each replacing one function or method of the reference."""

from collections import deque

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("backprop")


def _seed(t, grad):
    """The reference's argument checks, then the seed gradient."""
    if grad is None:
        grad = np.ones_like(t.data)
    return np.asarray(grad, dtype=np.float64)


def _depth_first(root):
    """The reference's order: inputs before the tensors computed from them, without recursion."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad)
    return order


def _propagate(root, grad, visit, *, accumulate=True, keep_leaves=True, reduce=ref.unbroadcast):
    """Backpropagation from `root`, visiting its graph in the order `visit`, with knobs to break."""
    for node in visit:
        if node._parents or node.grad is None or not keep_leaves:
            node.grad = np.zeros_like(node.data)
    root.grad += grad
    for node in visit:
        if node._backward is None:
            continue
        for parent, g in zip(node._parents, node._backward(node.grad), strict=True):
            if parent.requires_grad:
                g = reduce(g, parent.shape)
                parent.grad = parent.grad + g if accumulate else np.array(g, dtype=np.float64)


@mutant(
    "Tensor.backward",
    "a tensor used twice keeps only the last gradient it receives: add into .grad, don't assign",
)
def overwrites_gradients(self, grad=None):
    _propagate(self, _seed(self, grad), _depth_first(self)[::-1], accumulate=False)


@mutant(
    "Tensor.backward",
    "the graph is walked breadth-first, not in reverse topological order: a tensor passes its "
    "gradient on before every use of it has sent its share",
)
def breadth_first_order(self, grad=None):
    order, seen, queue = [], {self}, deque([self])
    while queue:
        node = queue.popleft()
        order.append(node)
        for p in node._parents:
            if p.requires_grad and p not in seen:
                seen.add(p)
                queue.append(p)
    _propagate(self, _seed(self, grad), order)


@mutant(
    "Tensor.backward",
    "the topological sort recurses once per node, so a long chain exceeds Python's recursion "
    "limit: use an explicit stack",
)
def recursive_topological_sort(self, grad=None):
    order, seen = [], set()

    def visit(node):
        if node not in seen:
            seen.add(node)
            for p in node._parents:
                if p.requires_grad:
                    visit(p)
            order.append(node)

    visit(self)
    _propagate(self, _seed(self, grad), order[::-1])


@mutant(
    "Tensor.backward",
    "backward() resets the leaves' .grad: gradients must add up over calls until the caller sets "
    ".grad = None",
)
def resets_leaf_gradients(self, grad=None):
    _propagate(self, _seed(self, grad), _depth_first(self)[::-1], keep_leaves=False)


@mutant(
    "unbroadcast",
    "gradients are not summed over broadcast axes, so a broadcast tensor's .grad has the result's "
    "shape, not its own",
)
def no_unbroadcast(grad, shape):
    return grad


@mutant(
    "unbroadcast",
    "gradients are summed over the new leading axes only, not over the axes where the tensor had "
    "size 1",
)
def unbroadcast_leading_axes_only(grad, shape):
    return np.sum(grad, axis=tuple(range(np.ndim(grad) - len(shape))))


@mutant("Tensor.relu", "relu's gradient at exactly 0 must be 0 (use x > 0, as torch does), not 1")
def relu_gradient_at_zero(self):
    return self._make(np.maximum(self.data, 0.0), (self,), lambda g: (g * (self.data >= 0),))


@mutant(
    "Tensor.__matmul__", "the gradient of b in a @ b is a^T g, of b's shape; g^T a is its transpose"
)
def matmul_gradient_transposed(self, other):
    other = self._lift(other)
    a, b = self.data, other.data
    return self._make(a @ b, (self, other), lambda g: (g @ b.T, g.T @ a))


@mutant(
    "Tensor.sum",
    "sum(axis) without keepdims must put the reduced axis back (np.expand_dims) before "
    "broadcasting g",
)
def sum_gradient_without_expand_dims(self, axis=None, keepdims=False):
    shape = self.shape
    return self._make(
        self.data.sum(axis=axis, keepdims=keepdims), (self,), lambda g: (np.broadcast_to(g, shape),)
    )


@mutant("Tensor.tanh", "tanh's derivative is 1 - tanh(x)^2, from the output, not 1 - x^2")
def tanh_gradient_from_input(self):
    x = self.data
    return self._make(np.tanh(x), (self,), lambda g: (g * (1 - x**2),))


@mutant("Tensor.__pow__", "the derivative of x^p is p x^(p-1), not p x^p")
def pow_gradient_exponent_not_lowered(self, exponent):
    x = self.data
    return self._make(x**exponent, (self,), lambda g: (g * exponent * x**exponent,))


@mutant(
    "numerical_gradient",
    "a one-sided difference (f(x + eps) - f(x)) / eps errs by O(eps); the central difference errs "
    "by O(eps^2)",
)
def forward_difference(f, x, eps=1e-6):
    x = np.array(x, dtype=np.float64)
    grad, f0 = np.zeros_like(x), f(x)
    for i in np.ndindex(x.shape):
        x[i] += eps
        grad[i] = (f(x) - f0) / eps
        x[i] -= eps
    return grad
