"""Public specs for `conv`: `pytest exercises/conv` (`--impl=solutions`: the reference).

Oracles: torch's F.unfold, F.fold, F.conv2d, F.max_pool2d and autograd on the same float64
numbers; the adjoint property of im2col and col2im; finite differences of your own forward pass;
small cases worked out by hand. No spec is statistical: every input comes from a fixed seed.
"""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

# float64: a convolution sums at most a few dozen products here, so a sound answer agrees with
# torch to about 1e-14; every mistake the specs look for is off by far more. See the README.
RTOL, ATOL = 1e-10, 1e-10
# float32 (torch half only): the oracle runs in float64 and is rounded once; a float32 sum of up to
# 48 products of N(0, 1) numbers strays by a few 1e-6 from it.
TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (RTOL, ATOL)}

seeds = st.integers(0, 2**16)


@st.composite
def geometry(draw, max_kernel=4, square=False):
    """(N, C, H, W), (kh, kw), stride and padding such that at least one patch fits."""
    kh = draw(st.integers(1, max_kernel))
    kw = kh if square else draw(st.integers(1, max_kernel))
    padding = draw(st.integers(0, 2))
    stride = draw(st.integers(1, 3))
    H = draw(st.integers(max(1, kh - 2 * padding), 9))
    W = draw(st.integers(max(1, kw - 2 * padding), 9))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, H, W), (kh, kw), stride, padding


def out_size(n, k, stride, padding):
    return (n + 2 * padding - k) // stride + 1


def arrays(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in shapes]


def check_shape(actual, expected_shape, what, why):
    shape = tuple(np.shape(actual))
    if shape != tuple(expected_shape):
        fail(f"{what} returned shape {shape}; expected {tuple(expected_shape)}: {why}")


def pair(what, out, names):
    if not isinstance(out, tuple) or len(out) != len(names):
        got = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, tuple) else "")
        fail(f"{what} should return a tuple ({', '.join(names)}); got a {got}")
    return out


def conv_forward(impl, x, w, b, stride, padding):
    what = f"conv2d_forward({describe(x=x, w=w, b=b)}, stride={stride}, padding={padding})"
    return pair(what, impl.conv2d_forward(x, w, b, stride, padding), ("out", "cache")), what


def pool_forward(impl, x, k, stride):
    what = f"max_pool2d_forward(x {x.shape}, kernel_size={k}, stride={stride})"
    return pair(what, impl.max_pool2d_forward(x, k, stride), ("out", "cache")), what


def torch_conv(x, w, b, dout, stride, padding):
    """torch's out and (dx, dw, db) as numpy arrays."""
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), (xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy())


def torch_pool(x, k, stride, dout=None):
    xt = torch.tensor(x, requires_grad=True)
    out = F.max_pool2d(xt, k, stride)
    if dout is None:
        return out.detach().numpy()
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy()


def check_grads(grads, expected, what, names=("dx", "dw", "db"), rtol=RTOL, atol=ATOL):
    pair(what, grads, names)
    for name, actual, wanted in zip(names, grads, expected, strict=True):
        assert_close(actual, wanted, what=f"{what}: {name}", rtol=rtol, atol=atol)


# -- im2col and col2im --------------------------------------------------------------------------


@given(geo=geometry(), seed=seeds)
def test_im2col_matches_unfold(impl, geo, seed):
    shape, (kh, kw), stride, padding = geo
    (x,) = arrays(seed, shape)
    kernel = kh if kh == kw else (kh, kw)  # an int for square kernels, as F.unfold allows
    cols = impl.im2col(x, kernel, stride, padding)
    what = f"im2col(x {shape}, kernel_size={kernel}, stride={stride}, padding={padding})"
    N, C, H, W = shape
    L = out_size(H, kh, stride, padding) * out_size(W, kw, stride, padding)
    check_shape(
        cols,
        (N, C * kh * kw, L),
        what,
        "(N, C * kh * kw, OH * OW) with OH = (H + 2 * padding - kh) // stride + 1, OW likewise; "
        "pad only H and W",
    )
    expected = F.unfold(torch.tensor(x), (kh, kw), padding=padding, stride=stride).numpy()
    assert_close(
        cols,
        expected,
        what=f"{what} against F.unfold (rows in the order channel, kernel row, kernel column)",
        rtol=0,
        atol=0,
    )


@given(geo=geometry(), seed=seeds)
def test_col2im_matches_fold(impl, geo, seed):
    shape, (kh, kw), stride, padding = geo
    N, C, H, W = shape
    L = out_size(H, kh, stride, padding) * out_size(W, kw, stride, padding)
    (cols,) = arrays(seed, (N, C * kh * kw, L))
    x = impl.col2im(cols, shape, (kh, kw), stride, padding)
    what = (
        f"col2im(cols {cols.shape}, x_shape={shape}, kernel_size={(kh, kw)}, stride={stride}, "
        f"padding={padding})"
    )
    check_shape(x, shape, what, "x_shape, with the padding cut off again")
    expected = F.fold(torch.tensor(cols), (H, W), (kh, kw), padding=padding, stride=stride).numpy()
    overlap = " (where patches overlap, add their values up)" if stride < max(kh, kw) else ""
    assert_close(x, expected, what=f"{what} against F.fold{overlap}", rtol=RTOL, atol=ATOL)


@given(geo=geometry(), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(impl, geo, seed):
    shape, kernel, stride, padding = geo
    (x,) = arrays(seed, shape)
    cols = impl.im2col(x, kernel, stride, padding)
    N, C, H, W = shape
    L = out_size(H, kernel[0], stride, padding) * out_size(W, kernel[1], stride, padding)
    what = f"im2col(x {shape}, kernel_size={kernel}, stride={stride}, padding={padding})"
    check_shape(cols, (N, C * kernel[0] * kernel[1], L), what, "(N, C * kh * kw, OH * OW)")
    (c,) = arrays(seed + 1, np.shape(cols))
    # <im2col(x), c> = <x, col2im(c)> for every x and c: col2im sends a gradient back exactly the
    # way im2col copied the values forward. This is why conv2d_backward may use it for dx.
    left = float(np.sum(np.asarray(cols) * c))
    right = float(np.sum(x * np.asarray(impl.col2im(c, shape, kernel, stride, padding))))
    if abs(left - right) > 1e-9 * (1 + abs(left)):
        fail(
            f"im2col and col2im (x {shape}, kernel_size={kernel}, stride={stride}, padding="
            f"{padding}) are not adjoint: sum(im2col(x) * c) = {left:.10g} but sum(x * "
            f"col2im(c)) = {right:.10g}; col2im must add each column back onto the very pixels "
            "im2col copied it from"
        )


# -- the convolution layer ----------------------------------------------------------------------


@given(geo=geometry(), c_out=st.integers(1, 4), seed=seeds)
def test_conv2d_forward_matches_torch(impl, geo, c_out, seed):
    shape, (kh, kw), stride, padding = geo
    x, w, b = arrays(seed, shape, (c_out, shape[1], kh, kw), (c_out,))
    (out, _), what = conv_forward(impl, x, w, b, stride, padding)
    N, _, H, W = shape
    check_shape(
        out,
        (N, c_out, out_size(H, kh, stride, padding), out_size(W, kw, stride, padding)),
        what,
        "(N, C_out, OH, OW) with OH = (H + 2 * padding - kh) // stride + 1",
    )
    expected = F.conv2d(
        torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=stride, padding=padding
    ).numpy()
    assert_close(out, expected, what=f"{what} against F.conv2d", rtol=RTOL, atol=ATOL)


def test_conv2d_is_a_cross_correlation(impl):
    # A 2x2 kernel with a single 1 in its top-left corner copies the top-left pixel of each patch.
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, 0.0]]]])
    (out, _), what = conv_forward(impl, x, w, np.zeros(1), 1, 0)
    expected = x[:, :, :3, :3]
    if np.shape(out) == expected.shape and np.allclose(out, x[:, :, 1:, 1:]):
        fail(
            f"{what} with w = [[1, 0], [0, 0]] and x = arange(16) as 4x4 returned the bottom-right "
            "pixel of each patch: the kernel was flipped. F.conv2d does not flip it: out[oh, ow] "
            "= sum of w[i, j] * x[oh + i, ow + j]"
        )
    assert_close(
        out,
        expected,
        what=f"{what} with w = [[1, 0], [0, 0]], x = arange(16) as 4x4 (top-left of each patch)",
        rtol=0,
        atol=0,
    )


@given(geo=geometry(), c_out=st.integers(1, 4), seed=seeds)
def test_conv2d_backward_matches_autograd(impl, geo, c_out, seed):
    shape, (kh, kw), stride, padding = geo
    x, w, b = arrays(seed, shape, (c_out, shape[1], kh, kw), (c_out,))
    N, _, H, W = shape
    out_shape = (N, c_out, out_size(H, kh, stride, padding), out_size(W, kw, stride, padding))
    (dout,) = arrays(seed + 1, out_shape)
    _, expected = torch_conv(x, w, b, dout, stride, padding)
    (_, cache), what = conv_forward(impl, x, w, b, stride, padding)
    grads = impl.conv2d_backward(dout, cache)
    what = f"conv2d_backward(dout {dout.shape}, cache) after {what}"
    check_grads(grads, expected, what)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding"),
    [((2, 2, 5, 4), (3, 2), 1, 1), ((1, 3, 6, 6), (3, 3), 2, 0), ((2, 1, 4, 5), (2, 3), 2, 2)],
)
def test_conv2d_backward_matches_finite_differences(impl, shape, kernel, stride, padding):
    x, w, b = arrays(3, shape, (2, shape[1], *kernel), (2,))
    (out, cache), what = conv_forward(impl, x, w, b, stride, padding)
    (dout,) = arrays(4, np.shape(out))
    grads = impl.conv2d_backward(dout, cache)

    def loss(x, w, b):  # L = sum(out * dout), so dL/dout = dout
        return float(np.sum(impl.conv2d_forward(x, w, b, stride, padding)[0] * dout))

    # L is linear in each argument, so a central difference is exact up to rounding.
    h, numeric, args = 1e-5, [], [x, w, b]
    for i, arg in enumerate(args):
        g = np.zeros_like(arg)
        for j in np.ndindex(arg.shape):
            moved = [a.copy() for a in args]
            moved[i][j] += h
            up = loss(*moved)
            moved[i][j] -= 2 * h
            g[j] = (up - loss(*moved)) / (2 * h)
        numeric.append(g)
    what = (
        f"conv2d_backward(dout {dout.shape}, cache) after {what}, against central differences "
        "(h = 1e-5) of your own conv2d_forward"
    )
    check_grads(grads, numeric, what, rtol=1e-6, atol=1e-7)


# -- max pooling --------------------------------------------------------------------------------


@st.composite
def pooling(draw):
    """(N, C, H, W), kernel_size and stride (None: the default) such that a window fits."""
    k = draw(st.integers(1, 3))
    stride = draw(st.sampled_from([None, 1, 2, 3]))
    H, W = draw(st.integers(k, 9)), draw(st.integers(k, 9))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), H, W), k, stride


@given(geo=pooling(), seed=seeds)
def test_max_pool2d_forward_matches_torch(impl, geo, seed):
    shape, k, stride = geo
    (x,) = arrays(seed, shape)
    (out, _), what = pool_forward(impl, x, k, stride)
    assert_close(out, torch_pool(x, k, stride), what=f"{what} against F.max_pool2d", rtol=0, atol=0)


def test_max_pool2d_stride_defaults_to_kernel_size(impl):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    (out, _), what = pool_forward(impl, x, 2, None)
    check_shape(
        out,
        (1, 1, 2, 2),
        what,
        "stride=None means stride = kernel_size (side-by-side windows), as in F.max_pool2d",
    )
    assert_close(out, np.array([[[[5.0, 7.0], [13.0, 15.0]]]]), what=what, rtol=0, atol=0)


@given(geo=pooling(), seed=seeds)
def test_max_pool2d_backward_matches_autograd(impl, geo, seed):
    shape, k, stride = geo
    (x,) = arrays(seed, shape)  # continuous values: no ties
    (out, cache), what = pool_forward(impl, x, k, stride)
    (dout,) = arrays(seed + 1, np.shape(out))
    _, expected = torch_pool(x, k, stride, dout)
    overlap = (
        " (windows overlap: an input may collect several gradients)"
        if (stride is not None and stride < k)
        else ""
    )
    dx = impl.max_pool2d_backward(dout, cache)
    assert_close(
        dx,
        expected,
        what=f"max_pool2d_backward(dout {dout.shape}, cache) after {what}{overlap}",
        rtol=RTOL,
        atol=ATOL,
    )


@given(geo=pooling(), seed=seeds)
def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum(impl, geo, seed):
    shape, k, stride = geo
    rng = np.random.default_rng(seed)
    # After a ReLU many inputs are exactly 0, so windows often hold several equal maxima.
    x = np.maximum(rng.integers(-3, 3, size=shape), 0).astype(np.float64)
    (out, cache), what = pool_forward(impl, x, k, stride)
    (dout,) = arrays(seed + 1, np.shape(out))
    _, expected = torch_pool(x, k, stride, dout)
    dx = np.asarray(impl.max_pool2d_backward(dout, cache))
    if dx.shape == expected.shape and not np.allclose(np.sum(dx), np.sum(dout)):
        fail(
            f"max_pool2d_backward after {what}, x holding many equal values: the gradients add "
            f"up to {np.sum(dx):.6g}, but dout adds up to {np.sum(dout):.6g}. Each window must "
            "pass its gradient to exactly one input, even when several tie for its maximum"
        )
    assert_close(
        dx,
        expected,
        what=f"max_pool2d_backward(dout {dout.shape}, cache) after {what}, x with ties (each "
        "window's gradient goes to its first maximum in row-major order, as in torch)",
        rtol=RTOL,
        atol=ATOL,
    )


# -- the pieces together ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_a_small_convnet_matches_torch(impl, seed):
    # AlexNet's pattern in miniature: conv (stride 2) -> ReLU -> overlapping max pool (3, stride 2)
    # -> conv (padding 1), then the loss sum(out * g). Your forward and backward functions, chained.
    x, w1, b1, w2, b2 = arrays(seed, (2, 3, 15, 15), (4, 3, 3, 3), (4,), (5, 4, 3, 3), (5,))
    a, conv1 = impl.conv2d_forward(x, w1, b1, 2, 0)  # (2, 4, 7, 7)
    r = np.maximum(a, 0)
    p, pool = impl.max_pool2d_forward(r, 3, 2)  # (2, 4, 3, 3)
    out, conv2 = impl.conv2d_forward(p, w2, b2, 1, 1)  # (2, 5, 3, 3)
    (g,) = arrays(seed + 1, np.shape(out))
    dp, dw2, db2 = impl.conv2d_backward(g, conv2)
    dr = impl.max_pool2d_backward(dp, pool)
    dx, dw1, db1 = impl.conv2d_backward(dr * (a > 0), conv1)

    t = [torch.tensor(v, requires_grad=True) for v in (x, w1, b1, w2, b2)]
    mid = F.max_pool2d(torch.relu(F.conv2d(t[0], t[1], t[2], stride=2)), 3, 2)
    expected_out = F.conv2d(mid, t[3], t[4], padding=1)
    expected_out.backward(torch.tensor(g))
    what = (
        "x (2, 3, 15, 15) -> conv2d (w (4, 3, 3, 3), stride 2) -> ReLU -> max_pool2d (3, stride 2)"
        " -> conv2d (w (5, 4, 3, 3), padding 1)"
    )
    assert_close(out, expected_out.detach().numpy(), what=f"{what}: out", rtol=RTOL, atol=ATOL)
    for name, actual, tensor in zip(
        ("dx", "dw1", "db1", "dw2", "db2"), (dx, dw1, db1, dw2, db2), t, strict=True
    ):
        assert_close(actual, tensor.grad.numpy(), what=f"{what}: {name}", rtol=RTOL, atol=ATOL)


def test_inputs_are_not_modified(impl):
    x, w, b = arrays(5, (2, 3, 7, 6), (4, 3, 3, 3), (4,))
    copies = [a.copy() for a in (x, w, b)]
    out, cache = impl.conv2d_forward(x, w, b, 2, 1)
    (dout,) = arrays(6, np.shape(out))
    dout_copy = dout.copy()
    impl.conv2d_backward(dout, cache)
    pooled, pool_cache = impl.max_pool2d_forward(x, 3, 2)
    (dpool,) = arrays(7, np.shape(pooled))
    dpool_copy = dpool.copy()
    impl.max_pool2d_backward(dpool, pool_cache)
    cols = impl.im2col(x, 3, 2, 1)
    cols_copy = np.array(cols, copy=True)
    impl.col2im(cols, x.shape, 3, 2, 1)
    for name, array, copy in zip(
        ("x", "w", "b", "dout", "dout of max_pool2d_backward", "cols"),
        (x, w, b, dout, dpool, cols),
        (*copies, dout_copy, dpool_copy, cols_copy),
        strict=True,
    ):
        if not np.array_equal(array, copy):
            fail(
                f"im2col, col2im, conv2d_* or max_pool2d_* changed the caller's {name} in place; "
                "compute new arrays instead"
            )


# -- torch: conv2d_unfold -----------------------------------------------------------------------


def tensors(seed, device, dtype, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype) for s in shapes]


def torch_reference(x, w, b, stride, padding):
    """F.conv2d in float64, rounded once to x's dtype (cuDNN may use TF32 for float32 otherwise)."""
    b64 = None if b is None else b.double()
    out = F.conv2d(x.double(), w.double(), b64, stride=stride, padding=padding)
    return out.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(geo=geometry(), c_out=st.integers(1, 4), bias=st.booleans(), seed=seeds)
def test_conv2d_unfold_matches_torch(impl, device, dtype, geo, c_out, bias, seed):
    shape, (kh, kw), stride, padding = geo
    x, w, b = tensors(seed, device, dtype, shape, (c_out, shape[1], kh, kw), (c_out,))
    b = b if bias else None
    out = impl.conv2d_unfold(x, w, b, stride, padding)
    what = (
        f"conv2d_unfold({describe(x=x, w=w)}, b={'None' if b is None else (c_out,)}, "
        f"stride={stride}, padding={padding}) on {device}"
    )
    rtol, atol = TOL[dtype]
    assert_close(out, torch_reference(x, w, b, stride, padding), what=what, rtol=rtol, atol=atol)


@given(geo=geometry(), c_out=st.integers(1, 3), seed=seeds)
def test_conv2d_unfold_gradients_match_torch(impl, device, geo, c_out, seed):
    shape, (kh, kw), stride, padding = geo
    shapes = (shape, (c_out, shape[1], kh, kw), (c_out,))
    ours = [t.requires_grad_() for t in tensors(seed, device, torch.float64, *shapes)]
    theirs = [t.detach().clone().requires_grad_() for t in ours]
    out = impl.conv2d_unfold(*ours, stride, padding)
    what = f"conv2d_unfold({describe(x=ours[0], w=ours[1])}, stride={stride}, padding={padding})"
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        fail(
            f"{what} on {device} returned no tensor that autograd can follow: keep the "
            "computation in torch operations (no .numpy(), no .detach())"
        )
    expected = F.conv2d(*theirs, stride=stride, padding=padding)
    if out.shape != expected.shape:
        fail(f"{what} returned shape {tuple(out.shape)}; expected {tuple(expected.shape)}")
    (g,) = tensors(seed + 1, device, torch.float64, tuple(expected.shape))
    out.backward(g)
    expected.backward(g)
    for name, a, e in zip(("x", "w", "b"), ours, theirs, strict=True):
        if a.grad is None:
            fail(f"{what}: backward left no gradient on {name}")
        assert_close(
            a.grad, e.grad, what=f"{what}: the gradient of {name} on {device}", rtol=RTOL, atol=ATOL
        )


def test_conv2d_unfold_calls_no_convolution_kernel(impl, device):
    from torch.overrides import TorchFunctionMode

    class Recorder(TorchFunctionMode):
        """The name of every torch function that conv2d_unfold calls."""

        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    x, w, b = tensors(0, device, torch.float32, (2, 3, 8, 8), (4, 3, 3, 3), (4,))
    with Recorder() as ops:
        out = impl.conv2d_unfold(x, w, b, 1, 1)
    used = sorted({n for n in ops.names if re.search(r"conv(?!ert)", n)})
    if used:
        fail(
            f"conv2d_unfold(x (2, 3, 8, 8), w (4, 3, 3, 3), b (4,), 1, 1) on {device} ran "
            f"{', '.join(used)}: the exercise is to do without a convolution kernel, with "
            "F.unfold and one matrix product"
        )
    assert_close(
        out,
        torch_reference(x, w, b, 1, 1),
        what=f"conv2d_unfold(x (2, 3, 8, 8), w (4, 3, 3, 3), b (4,), 1, 1) on {device}",
        rtol=TOL[torch.float32][0],
        atol=TOL[torch.float32][1],
    )
