"""Public specs for `backprop`: `pytest exercises/backprop` (`--impl=solutions` for the reference).

Oracles: torch.autograd on the same float64 numbers, finite differences of your own forward pass,
and gradients known in closed form.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, fail

# float64 throughout. One operation agrees with torch to about 1e-15 relative; a small graph of a
# dozen operations to about 1e-13. Any real mistake is off by far more (see the README's table).
RTOL, ATOL = 1e-10, 1e-12
GRAPH_RTOL, GRAPH_ATOL = 1e-9, 1e-10

seeds = st.integers(0, 2**16)
shapes = st.lists(st.integers(1, 4), max_size=3).map(tuple)


def rng(seed):
    return np.random.default_rng(seed)


@st.composite
def broadcast_shapes(draw, n):
    """n shapes that broadcast together: some leading axes dropped, some sizes set to 1."""
    base = draw(shapes)
    return [
        tuple(
            1 if draw(st.booleans()) else size for size in base[draw(st.integers(0, len(base))) :]
        )
        for _ in range(n)
    ]


def run_both(impl, fn, inputs, seed, what, torch_fn=None, rtol=RTOL, atol=ATOL):
    """Run fn on Tensors and on torch tensors, backward a random upstream gradient, compare."""
    ours = [impl.Tensor(x.copy(), requires_grad=True) for x in inputs.values()]
    theirs = [torch.tensor(x, requires_grad=True) for x in inputs.values()]
    out, expected = fn(*ours), (torch_fn or fn)(*theirs)
    check_value(impl, out, expected, what, rtol, atol)
    upstream = rng(seed + 1).normal(size=tuple(expected.shape))
    expected.backward(torch.tensor(upstream))
    out.backward(upstream.copy())
    what = f"{what}, then backward(grad of shape {upstream.shape})"
    check_grads(list(zip(inputs, ours, theirs, strict=True)), what, rtol, atol)


def check_value(impl, out, expected, what, rtol=RTOL, atol=ATOL):
    if not isinstance(out, impl.Tensor):
        fail(f"{what} returned a {type(out).__name__}; an operation on Tensors returns a Tensor")
    assert_close(
        np.asarray(out.data),
        expected.detach().numpy(),
        what=f"{what}: the value (.data)",
        rtol=rtol,
        atol=atol,
    )


def check_grads(named, what, rtol=RTOL, atol=ATOL):
    """named: (name, our tensor, expected gradient as a torch leaf or an array)."""
    for name, ours, theirs in named:
        expected = theirs.grad.numpy() if isinstance(theirs, torch.Tensor) else theirs
        grad = ours.grad
        if grad is None:
            fail(
                f"{what}: {name}.grad is still None after backward(); every tensor with "
                f"requires_grad=True that the output depends on must receive its gradient"
            )
        if np.shape(grad) != expected.shape:
            fail(
                f"{what}: {name}.grad has shape {np.shape(grad)}, but {name} has shape "
                f"{expected.shape}; a gradient has its tensor's shape (sum it over the axes that "
                "broadcasting added or stretched)"
            )
        assert_close(
            np.asarray(grad, dtype=np.float64),
            expected,
            what=f"{what}: {name}.grad",
            rtol=rtol,
            atol=atol,
        )


# -- broadcasting --------------------------------------------------------------------------


@given(shapes=broadcast_shapes(2), seed=seeds)
def test_unbroadcast_sums_over_broadcast_axes(impl, shapes, seed):
    target, small = np.broadcast_shapes(*shapes), shapes[1]
    grad = rng(seed).normal(size=target)
    expected = torch.tensor(grad).sum_to_size(small).numpy()
    actual = impl.unbroadcast(grad.copy(), small)
    what = f"unbroadcast(grad of shape {target}, {small})"
    if np.shape(actual) != small:
        fail(
            f"{what} returned shape {np.shape(actual)}; expected {small}: sum over the leading "
            f"axes that {small} lacks, then over its axes of size 1 keeping them (keepdims=True)"
        )
    assert_close(np.asarray(actual, dtype=np.float64), expected, what=what, rtol=RTOL, atol=ATOL)


# -- one operation at a time, against torch.autograd ---------------------------------------

BINARY = {
    "a + b": lambda a, b: a + b,
    "a - b": lambda a, b: a - b,
    "a * b": lambda a, b: a * b,
    "a / b": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", list(BINARY))
@given(shapes=broadcast_shapes(2), seed=seeds)
def test_binary_ops_match_torch(impl, op, shapes, seed):
    r = rng(seed)
    a, b = r.normal(size=shapes[0]), r.normal(size=shapes[1])
    if op == "a / b":
        b = np.sign(b) * (0.5 + np.abs(b))  # keep the divisor away from 0
    what = f"{op} with a {shapes[0]}, b {shapes[1]}"
    run_both(impl, BINARY[op], {"a": a, "b": b}, seed, what)


UNARY = {  # expression: (function, the inputs it is defined on)
    "-x": (lambda x: -x, "any"),
    "x.exp()": (lambda x: x.exp(), "any"),
    "x.log()": (lambda x: x.log(), "positive"),
    "x.tanh()": (lambda x: x.tanh(), "any"),
    "x.relu()": (lambda x: x.relu(), "any"),
    "x ** 2": (lambda x: x**2, "any"),
    "x ** 3": (lambda x: x**3, "any"),
    "x ** -1": (lambda x: x**-1, "nonzero"),
    "x ** 0.5": (lambda x: x**0.5, "positive"),
}


@pytest.mark.parametrize("op", list(UNARY))
@given(shape=shapes, seed=seeds)
def test_unary_ops_match_torch(impl, op, shape, seed):
    fn, domain = UNARY[op]
    x = rng(seed).normal(size=shape)
    if domain == "positive":
        x = 0.1 + np.abs(x)
    elif domain == "nonzero":
        x = np.sign(x) * (0.5 + np.abs(x))
    run_both(impl, fn, {"x": x}, seed, f"{op} with x {shape}")


def test_relu_gradient_at_and_below_zero(impl):
    x = np.array([[-2.0, -0.5, 0.0], [0.0, 0.5, 2.0]])
    t = impl.Tensor(x.copy(), requires_grad=True)
    out = t.relu()
    check_value(impl, out, torch.tensor(x).relu(), "x.relu() with x [[-2, -0.5, 0], [0, 0.5, 2]]")
    out.backward(np.full(x.shape, 3.0))
    expected = 3.0 * (x > 0)  # torch's convention: the gradient at exactly 0 is 0
    check_grads(
        [("x", t, expected)],
        "x.relu() with x [[-2, -0.5, 0], [0, 0.5, 2]], then backward(grad of 3s): x.grad is "
        "3 where x > 0 and 0 where x <= 0, at 0 too",
    )


@given(n=st.integers(1, 5), k=st.integers(1, 5), m=st.integers(1, 5), seed=seeds)
def test_matmul_matches_torch(impl, n, k, m, seed):
    r = rng(seed)
    a, b = r.normal(size=(n, k)), r.normal(size=(k, m))
    run_both(
        impl, lambda a, b: a @ b, {"a": a, "b": b}, seed, f"a @ b with a {a.shape}, b {b.shape}"
    )


@st.composite
def reductions(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    kind = draw(st.sampled_from(["all", "one", "several"]))
    if kind == "all":
        axis = None
    elif kind == "one":
        axis = draw(st.integers(-len(shape), len(shape) - 1))
    else:
        axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
        axis = tuple(a - len(shape) if draw(st.booleans()) else a for a in axes)
    return shape, axis, draw(st.booleans())


@pytest.mark.parametrize("method", ["sum", "mean"])
@given(reduction=reductions(), seed=seeds)
def test_sum_and_mean_match_torch(impl, method, reduction, seed):
    shape, axis, keepdims = reduction
    x = rng(seed).normal(size=shape)
    what = f"x.{method}(axis={axis}, keepdims={keepdims}) with x {shape}"
    run_both(impl, lambda x: getattr(x, method)(axis=axis, keepdims=keepdims), {"x": x}, seed, what)


@st.composite
def new_shapes(draw):
    shape = draw(shapes)
    size = int(np.prod(shape))
    return shape, draw(st.sampled_from([(-1,), (size, 1), (1, *shape), tuple(reversed(shape))]))


@given(shapes=new_shapes(), seed=seeds)
def test_reshape_and_transpose_match_torch(impl, shapes, seed):
    shape, new = shapes
    x = rng(seed).normal(size=shape)
    run_both(impl, lambda x: x.reshape(new), {"x": x}, seed, f"x.reshape({new}) with x {shape}")
    run_both(
        impl,
        lambda x: x.T,
        {"x": x},
        seed,
        f"x.T with x {shape}",
        torch_fn=lambda x: x.permute(tuple(reversed(range(x.ndim)))),
    )


def test_numbers_and_arrays_as_operands(impl):
    r = rng(7)
    c, w, m = r.normal(size=(2, 3)), r.normal(size=(3,)), r.normal(size=(3, 2))
    cases = {  # what a training loop writes: constants on either side of an operator
        "2.5 * x": lambda x, k: 2.5 * x,
        "x * 2.5": lambda x, k: x * 2.5,
        "1 - x": lambda x, k: 1 - x,
        "x - 1": lambda x, k: x - 1,
        "2 / x": lambda x, k: 2 / x,
        "x / 4": lambda x, k: x / 4,
        "w + x (w an array of shape (3,))": lambda x, k: k(w) + x,
        "x * w": lambda x, k: x * k(w),
        "w - x": lambda x, k: k(w) - x,
        "w / x": lambda x, k: k(w) / x,
        "x @ m (m an array of shape (3, 2))": lambda x, k: x @ k(m),
        "m.T @ x.T": lambda x, k: k(m.T.copy()) @ x.T,
    }
    for expr, fn in cases.items():
        x = impl.Tensor(c.copy(), requires_grad=True)
        out = fn(x, lambda a: a)  # numpy arrays go in as they are
        tx = torch.tensor(c, requires_grad=True)
        expected = fn(tx, torch.tensor)
        what = f"{expr} with x a Tensor of shape {c.shape}"
        check_value(impl, out, expected, what)
        upstream = r.normal(size=tuple(expected.shape))
        expected.backward(torch.tensor(upstream))
        out.backward(upstream.copy())
        check_grads([("x", x, tx)], what + ", then backward(grad)")


# -- whole graphs ----------------------------------------------------------------------------

GRAPH_OPS = [  # (template, arity, function of (a, b, axis))
    ("{a} + {b}", 2, lambda a, b, axis: a + b),
    ("{a} - {b}", 2, lambda a, b, axis: a - b),
    ("{a} * {b}", 2, lambda a, b, axis: a * b),
    ("{a} / ({b} ** 2 + 1)", 2, lambda a, b, axis: a / (b**2 + 1)),
    ("2.5 * {a}", 1, lambda a, b, axis: 2.5 * a),
    ("1 - {a}", 1, lambda a, b, axis: 1 - a),
    ("-{a}", 1, lambda a, b, axis: -a),
    ("{a} ** 2", 1, lambda a, b, axis: a**2),
    ("{a}.tanh()", 1, lambda a, b, axis: a.tanh()),
    ("{a}.relu()", 1, lambda a, b, axis: a.relu()),
    ("{a}.tanh().exp()", 1, lambda a, b, axis: a.tanh().exp()),
    ("({a} ** 2 + 1).log()", 1, lambda a, b, axis: (a**2 + 1).log()),
    ("{a}.sum(axis={axis}, keepdims=True)", 1, lambda a, b, axis: a.sum(axis=axis, keepdims=True)),
    (
        "{a}.mean(axis={axis}, keepdims=True)",
        1,
        lambda a, b, axis: a.mean(axis=axis, keepdims=True),
    ),
]


@st.composite
def graphs(draw):
    """Inputs of broadcastable shapes and a short program over them; values are reused freely."""
    leaves = draw(broadcast_shapes(draw(st.integers(1, 3))))
    node_shapes, program = list(leaves), []
    for _ in range(draw(st.integers(1, 7))):
        op = draw(st.integers(0, len(GRAPH_OPS) - 1))
        a, b = (draw(st.integers(0, len(node_shapes) - 1)) for _ in range(2))
        ndim = len(node_shapes[a])
        axis = draw(st.integers(0, ndim - 1)) if ndim else None
        program.append((op, a, b, axis))
        if GRAPH_OPS[op][1] == 2:
            node_shapes.append(np.broadcast_shapes(node_shapes[a], node_shapes[b]))
        else:
            node_shapes.append(
                node_shapes[a]
                if "keepdims" not in GRAPH_OPS[op][0]
                else tuple(1 if i == axis else n for i, n in enumerate(node_shapes[a]))
            )
    return leaves, node_shapes, program, draw(seeds)


def run_graph(program, leaves, weights):
    """Every node v_i of the program, and the loss sum_i (v_i * w_i).sum()."""
    nodes = list(leaves)
    for op, a, b, axis in program:
        nodes.append(GRAPH_OPS[op][2](nodes[a], nodes[b], axis))
    return sum((v * w).sum() for v, w in zip(nodes, weights, strict=True))


def describe_graph(leaves, program):
    lines = [f"v{i} {shape}" for i, shape in enumerate(leaves)]
    lines = ["inputs " + ", ".join(lines)]
    for i, (op, a, b, axis) in enumerate(program, start=len(leaves)):
        lines.append(f"v{i} = " + GRAPH_OPS[op][0].format(a=f"v{a}", b=f"v{b}", axis=axis))
    lines.append("loss = sum over i of (v_i * w_i).sum(), w_i fixed random arrays")
    return "the graph\n    " + "\n    ".join(lines) + "\n"


def graph_data(leaves, node_shapes, seed):
    r = rng(seed)
    return [r.normal(size=s) for s in leaves], [r.normal(size=s) for s in node_shapes]


@given(graph=graphs())
def test_random_graphs_match_torch(impl, graph):
    leaves, node_shapes, program, seed = graph
    values, weights = graph_data(leaves, node_shapes, seed)
    ours = [impl.Tensor(v.copy(), requires_grad=True) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    loss = run_graph(program, ours, weights)
    expected = run_graph(program, theirs, [torch.tensor(w) for w in weights])
    what = describe_graph(leaves, program)
    check_value(impl, loss, expected, what, GRAPH_RTOL, GRAPH_ATOL)
    expected.backward()
    loss.backward()
    names = [f"v{i}" for i in range(len(leaves))]
    check_grads(
        list(zip(names, ours, theirs, strict=True)),
        what + "after loss.backward()",
        GRAPH_RTOL,
        GRAPH_ATOL,
    )


def central_differences(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (f(up) - f(down)) / (2 * eps)
    return grad


@given(graph=graphs())
def test_random_graphs_match_finite_differences(impl, graph):
    leaves, node_shapes, program, seed = graph
    values, weights = graph_data(leaves, node_shapes, seed)
    ours = [impl.Tensor(v.copy(), requires_grad=True) for v in values]
    loss = run_graph(program, ours, weights)
    loss.backward()
    what = describe_graph(leaves, program) + "after loss.backward(), against central differences"
    for i, value in enumerate(values):

        def f(x, i=i):
            inputs = [impl.Tensor(x if j == i else v) for j, v in enumerate(values)]
            return float(np.asarray(run_graph(program, inputs, weights).data))

        expected = central_differences(f, value)
        # eps = 1e-6 costs about 1e-10 |loss| in rounding and 1e-12 in truncation.
        atol = 1e-6 * max(1.0, abs(f(value)))
        check_grads([(f"v{i}", ours[i], expected)], what, rtol=1e-5, atol=atol)


def _shared_hidden(x, w):
    h = x.tanh()  # one node, used three times
    return (3 * h + h**2 + h).sum()


def test_node_used_twice(impl):
    r = rng(3)
    x, w = r.normal(size=(2, 3)), r.normal(size=(3, 3))
    cases = {  # expression: (function of x and w, the inputs it uses)
        "(x * x).sum() (one tensor as both operands)": (lambda x, w: (x * x).sum(), "x"),
        "h = x.tanh(); (3 * h + h ** 2 + h).sum()": (_shared_hidden, "x"),
        "((x @ w).tanh() @ w).sum() (w shared by two layers)": (
            lambda x, w: ((x @ w).tanh() @ w).sum(),
            "xw",
        ),
    }
    for expr, (fn, used) in cases.items():
        ours = [
            impl.Tensor(x.copy(), requires_grad=True),
            impl.Tensor(w.copy(), requires_grad=True),
        ]
        theirs = [torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)]
        what = f"{expr} with x (2, 3)" + (", w (3, 3)" if "w" in used else "")
        out, expected = fn(*ours), fn(*theirs)
        check_value(impl, out, expected, what)
        out.backward()
        expected.backward()
        named = [(k, o, t) for k, o, t in zip("xw", ours, theirs, strict=True) if k in used]
        check_grads(
            named, what + ", then backward() (a tensor used twice gets the sum of both gradients)"
        )


def test_backward_follows_topological_order(impl):
    # a feeds the loss directly and through a longer path (b, then c). A walk that handles a before
    # c has sent its share passes on an incomplete gradient.
    x = np.array([0.3, -0.7, 1.1])
    ours, theirs = impl.Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)

    def loss(x):
        a = x * 2
        b = (a * 3).tanh()
        c = (b * a).exp()
        return (a + c * b).sum()

    what = (
        "a = x * 2; b = (a * 3).tanh(); c = (b * a).exp(); (a + c * b).sum(), then backward() "
        "(each tensor must be handled after every tensor that uses it)"
    )
    out, expected = loss(ours), loss(theirs)
    check_value(impl, out, expected, what)
    out.backward()
    expected.backward()
    check_grads([("x", ours, theirs)], what)


def test_deep_chain_does_not_hit_the_recursion_limit(impl):
    n = 5000
    x = impl.Tensor(np.array([0.5, -0.3]), requires_grad=True)
    y = x
    for _ in range(n):
        y = y * 1.0001
    try:
        y.sum().backward()
    except RecursionError:
        fail(
            f"backward() on a chain of {n} multiplications raised RecursionError: a recursive "
            "topological sort goes one Python call deeper per node; use a loop and a stack"
        )
    check_grads(
        [("x", x, np.full(2, 1.0001**n))],
        f"y = x * 1.0001, {n} times over, then y.sum().backward()",
        rtol=1e-9,
        atol=0,
    )


def test_backward_seeds_one_or_takes_a_grad(impl):
    x = rng(5).normal(size=(3, 2))
    single = {  # outputs with one element: shape () and shape (1,)
        "(x ** 2).sum()": lambda t: (t**2).sum(),
        "(x ** 2).sum(axis=0, keepdims=True).mean(axis=1)": lambda t: (
            (t**2).sum(axis=0, keepdims=True).mean(axis=1)
        ),
    }
    for label, fn in single.items():
        ours, theirs = (
            impl.Tensor(x.copy(), requires_grad=True),
            torch.tensor(x, requires_grad=True),
        )
        out, expected = fn(ours), fn(theirs)
        out.backward()  # a single element: the seed d out / d out is 1
        expected.backward(torch.ones_like(expected))
        check_grads([("x", ours, theirs)], f"{label} with x (3, 2), then backward() (seed 1)")
    ours, theirs = impl.Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
    g = rng(6).normal(size=(3, 2))
    ours.tanh().backward(g.copy())
    theirs.tanh().backward(torch.tensor(g))
    check_grads([("x", ours, theirs)], "x.tanh() with x (3, 2), then backward(g) with g (3, 2)")


def test_grad_is_none_before_backward_and_for_constants(impl):
    x = impl.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    c = impl.Tensor(np.array([0.5, 0.5, 2.0]))  # requires_grad=False: a constant, like the data
    if x.grad is not None:
        fail(f"a new Tensor's .grad should be None before any backward(); got {x.grad!r}")
    out = (x * c).sum()
    if not getattr(out, "requires_grad", False):
        fail("(x * c).sum() with x requiring grad should itself require grad (requires_grad=True)")
    out.backward()
    if not isinstance(x.grad, np.ndarray | np.generic) or np.shape(x.grad) != (3,):
        fail(f"after backward(), x.grad should be a numpy array of x's shape (3,); got {x.grad!r}")
    assert_close(
        np.asarray(x.grad, dtype=np.float64),
        c.data,
        what="(x * c).sum(): x.grad",
        rtol=RTOL,
        atol=ATOL,
    )
    if c.grad is not None:
        fail(
            f"c was made with requires_grad=False, so backward() must leave c.grad None; "
            f"got {c.grad!r}"
        )


def test_gradients_accumulate_across_backward_calls(impl):
    x = impl.Tensor(np.array([[0.2, -0.4], [1.5, 0.7]]), requires_grad=True)

    def step():  # a fresh graph each time, as in a training loop
        ((x * x).tanh() * 3).sum().backward()

    expected = 3 * (1 - np.tanh(x.data**2) ** 2) * 2 * x.data
    step()
    check_grads([("x", x, expected)], "((x * x).tanh() * 3).sum().backward() once")
    step()
    check_grads(
        [("x", x, 2 * expected)],
        "a second backward() on a new graph of the same x: .grad adds up (like torch), "
        "so that gradients of several batches can be summed",
    )
    x.grad = None
    step()
    check_grads([("x", x, expected)], "x.grad = None (what zero_grad does), then backward() again")


def test_numerical_gradient_uses_central_differences(impl):
    x = rng(8).normal(size=(2, 3))
    # For f = sum(x^3), (f(x+h) - f(x-h)) / 2h is exactly 3x^2 + h^2: it shows the formula and eps.
    actual = impl.numerical_gradient(lambda v: np.sum(v**3), x.copy(), eps=1e-3)
    if np.shape(actual) != x.shape:
        fail(f"numerical_gradient(f, x of shape {x.shape}) returned shape {np.shape(actual)}")
    assert_close(
        np.asarray(actual, dtype=np.float64),
        3 * x**2 + 1e-6,
        rtol=0,
        atol=1e-9,
        what="numerical_gradient(sum(x ** 3), x (2, 3), eps=1e-3): the central difference "
        "(f(x + eps) - f(x - eps)) / (2 eps) is 3x^2 + eps^2",
    )
    actual = impl.numerical_gradient(lambda v: np.sum(np.sin(v) * v), x.copy())
    assert_close(
        np.asarray(actual, dtype=np.float64),
        np.cos(x) * x + np.sin(x),
        rtol=1e-7,
        atol=1e-8,
        what="numerical_gradient(sum(sin(x) * x), x (2, 3)) with eps=1e-6",
    )


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@given(
    batch=st.integers(1, 6),
    d_in=st.integers(1, 5),
    d_hidden=st.integers(1, 6),
    classes=st.integers(2, 4),
    seed=seeds,
)
def test_mlp_loss_matches_torch(impl, activation, batch, d_in, d_hidden, classes, seed):
    r = rng(seed)
    x = r.normal(size=(batch, d_in))
    onehot = np.eye(classes)[r.integers(0, classes, size=batch)]
    params = {
        "W1": r.normal(size=(d_in, d_hidden)),
        "b1": r.normal(size=(d_hidden,)),
        "W2": r.normal(size=(d_hidden, classes)),
        "b2": r.normal(size=(classes,)),
    }

    def loss(W1, b1, W2, b2):  # cross-entropy of a two-layer MLP, from the Tensor's operations
        h = getattr(x @ W1 + b1, activation)()
        logits = h @ W2 + b2
        log_probs = logits - logits.exp().sum(axis=1, keepdims=True).log()
        return -(log_probs * onehot).sum(axis=1).mean()

    def torch_loss(*ps):
        h = getattr(torch.tensor(x) @ ps[0] + ps[1], activation)()
        logits = h @ ps[2] + ps[3]
        log_probs = logits - logits.exp().sum(axis=1, keepdims=True).log()
        return -(log_probs * torch.tensor(onehot)).sum(axis=1).mean()

    what = (
        f"cross-entropy of an MLP ({activation}) with x ({batch}, {d_in}), W1 ({d_in}, "
        f"{d_hidden}), b1 ({d_hidden},), W2 ({d_hidden}, {classes}), b2 ({classes},)"
    )
    run_both(impl, loss, params, seed, what, torch_fn=torch_loss, rtol=GRAPH_RTOL, atol=GRAPH_ATOL)
