"""Hidden grading cases for conv: shapes, strides and paddings unlike the public specs'.

Every case is deterministic (inputs from a fixed seed, outputs compared within a tolerance), so
none can fail by chance. The speed cases are large and shallow (few channels, many pixels), where
a Python loop over output pixels pays its overhead tens of thousands of times per call.
"""

import numpy as np
import torch

from graders.cases import Case

# float64: im2col and col2im copy or add a handful of values, and a convolution here sums at most
# 150 products, so a sound answer agrees with the reference to about 1e-13; every mistake in
# mutants.py is off by 1e-2 or more.
TIGHT = {"rtol": 1e-9, "atol": 1e-10}
# float32 (torch): sums of up to 150 products of N(0, 1) numbers, each rounded to 6e-8 relative.
LOOSE = {"rtol": 1e-4, "atol": 1e-4}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def columns(m, x, kernel_size, stride, padding):
    return m.im2col(x, kernel_size, stride, padding)


def add_back(m, cols, x_shape, kernel_size, stride, padding):
    return m.col2im(cols, tuple(x_shape), kernel_size, stride, padding)


def conv_forward(m, x, w, b, stride, padding):
    return m.conv2d_forward(x, w, b, stride, padding)[0]


def conv_step(m, x, w, b, dout, stride, padding):
    out, cache = m.conv2d_forward(x, w, b, stride, padding)
    dx, dw, db = m.conv2d_backward(dout, cache)
    return {"out": out, "dx": dx, "dw": dw, "db": db}


def conv_step_sampled(m, x, w, b, dout, stride, padding):
    """As conv_step, returning every 16th row and column of out and dx: the timing is the
    computation's, not that of writing megabytes of output."""
    out, cache = m.conv2d_forward(x, w, b, stride, padding)
    dx, dw, db = m.conv2d_backward(dout, cache)
    return {"out": out[:, :, ::16, ::16], "dx": dx[:, :, ::16, ::16], "dw": dw, "db": db}


def pool_step(m, x, dout, kernel_size, stride):
    out, cache = m.max_pool2d_forward(x, kernel_size, stride)
    return {"out": out, "dx": m.max_pool2d_backward(dout, cache)}


def pool_default_stride(m, x, kernel_size):
    import numpy as np

    out, cache = m.max_pool2d_forward(x, kernel_size)
    return {"out": out, "dx": m.max_pool2d_backward(np.ones_like(out), cache)}


def pool_step_sampled(m, x, dout, kernel_size, stride):
    out, cache = m.max_pool2d_forward(x, kernel_size, stride)
    dx = m.max_pool2d_backward(dout, cache)
    return {"out": out[:, :, ::8, ::8], "dx": dx[:, :, ::8, ::8]}


def small_convnet(m, x, w1, b1, w2, b2, g):
    """conv (stride 2, padding 2) -> ReLU -> overlapping pool (3, 2) -> conv: forward, backward."""
    import numpy as np

    a, conv1 = m.conv2d_forward(x, w1, b1, 2, 2)
    r = np.maximum(a, 0)
    p, pool = m.max_pool2d_forward(r, 3, 2)
    out, conv2 = m.conv2d_forward(p, w2, b2, 1, 0)
    dp, dw2, db2 = m.conv2d_backward(g, conv2)
    dx, dw1, db1 = m.conv2d_backward(m.max_pool2d_backward(dp, pool) * (a > 0), conv1)
    return {"out": out, "dx": dx, "dw1": dw1, "db1": db1, "dw2": dw2, "db2": db2}


def unfold_conv(m, x, w, b, stride, padding, every=1):
    """conv2d_unfold's output (every `every`-th row and column of it, so that a speed case times
    the computation, not the writing of its output), and whether a convolution routine ran."""
    import re

    from torch.overrides import TorchFunctionMode

    class Recorder(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    with Recorder() as ops:
        out = m.conv2d_unfold(x, w, b, stride, padding)
    convolution = any(re.search(r"conv(?!ert)", n) for n in ops.names)
    return {"out": out[:, :, ::every, ::every], "convolution": convolution}


def unfold_grads(m, x, w, b, g, stride, padding):
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    out = m.conv2d_unfold(x, w, b, stride, padding)
    out.backward(g)
    return {"out": out.detach(), "dx": x.grad, "dw": w.grad, "db": b.grad}


def without_convolution(actual, expected, inputs):
    """unfold_conv's verdict: no convolution routine ran, and the output is within tolerance."""
    from graders.checks import SpecFailure, assert_close, describe

    if actual.get("convolution") is not False:
        return (
            "conv2d_unfold called a convolution routine (F.conv2d, torch.conv2d or the like); "
            "the exercise is to build it from F.unfold and one matrix product"
        )
    tolerance = LOOSE if expected["out"].dtype == torch.float32 else TIGHT
    rtol, atol = tolerance["rtol"], tolerance["atol"]
    what = f"conv2d_unfold({describe(x=inputs['x'], w=inputs['w'])}, ...)"
    try:
        assert_close(actual["out"], expected["out"], what=what, rtol=rtol, atol=atol)
    except SpecFailure as failure:
        return str(failure)
    return None


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def _normal(rng, *shapes):
    return [rng.normal(size=s) for s in shapes]


def _out(n, k, stride, padding):
    return (n + 2 * padding - k) // stride + 1


def im2col_rectangular(seed):
    rng = np.random.default_rng(seed)
    (x,) = _normal(rng, (3, 5, 11, 14))
    return {"x": x, "kernel_size": (2, 4), "stride": 3, "padding": 2}


def im2col_wide_padding(seed):
    rng = np.random.default_rng(seed)
    (x,) = _normal(rng, (2, 2, 4, 3))
    return {"x": x, "kernel_size": 5, "stride": 1, "padding": 3}  # padding wider than x


def col2im_overlapping(seed):
    rng = np.random.default_rng(seed)
    shape, k, stride, padding = (2, 3, 10, 12), (4, 3), 2, 1
    L = _out(10, 4, stride, padding) * _out(12, 3, stride, padding)
    (cols,) = _normal(rng, (2, 3 * 4 * 3, L))
    return {"cols": cols, "x_shape": shape, "kernel_size": k, "stride": stride, "padding": padding}


def _conv(seed, shape, c_out, kernel, stride, padding, with_dout=True):
    rng = np.random.default_rng(seed)
    x, w, b = _normal(rng, shape, (c_out, shape[1], *kernel), (c_out,))
    inputs = {"x": x, "w": w, "b": b, "stride": stride, "padding": padding}
    if with_dout:
        out_shape = (
            shape[0],
            c_out,
            _out(shape[2], kernel[0], stride, padding),
            _out(shape[3], kernel[1], stride, padding),
        )
        (inputs["dout"],) = _normal(rng, out_shape)
    return inputs


def conv_strided(seed):
    # AlexNet's first layer in miniature: a large kernel, stride 4, and a rectangular image whose
    # size the stride does not divide.
    return _conv(seed, (2, 3, 27, 31), 6, (7, 5), 4, 1, with_dout=False)


def conv_overlapping(seed):
    return _conv(seed, (3, 4, 9, 10), 5, (3, 3), 1, 1)


def conv_pointwise(seed):
    return _conv(seed, (2, 6, 7, 5), 4, (1, 1), 2, 0)  # a 1x1 kernel mixes channels only


def conv_whole_image(seed):
    return _conv(seed, (5, 3, 6, 6), 7, (6, 6), 1, 0)  # one output pixel: a fully connected layer


def conv_big(seed):
    return _conv(seed, (2, 4, 160, 160), 16, (3, 3), 1, 1)


def _pool(seed, shape, kernel_size, stride, relu=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    if relu:  # rounded and rectified, as after a ReLU: windows full of tied zeros
        x = np.maximum(np.round(x * 2), 0)
    s = kernel_size if stride is None else stride
    out = (shape[0], shape[1], (shape[2] - kernel_size) // s + 1, (shape[3] - kernel_size) // s + 1)
    return {"x": x, "dout": rng.normal(size=out), "kernel_size": kernel_size, "stride": stride}


def pool_overlapping(seed):
    return _pool(seed, (2, 3, 13, 14), 3, 2)  # AlexNet's overlapping pooling


def pool_ties(seed):
    return _pool(seed, (3, 4, 8, 9), 2, 2, relu=True)


def pool_tall_windows(seed):
    return _pool(seed, (1, 5, 11, 7), 4, 1)  # windows overlap by three rows and columns


def pool_default(seed):
    inputs = _pool(seed, (2, 2, 9, 8), 3, None)
    del inputs["dout"], inputs["stride"]
    return inputs


def pool_big(seed):
    return _pool(seed, (4, 4, 160, 160), 3, 2)


def convnet(seed):
    rng = np.random.default_rng(seed)
    x, w1, b1, w2, b2 = _normal(rng, (3, 2, 17, 13), (6, 2, 5, 5), (6,), (4, 6, 2, 2), (4,))
    # conv1: (3, 6, 9, 7); pool: (3, 6, 4, 3); conv2: (3, 4, 3, 2)
    (g,) = _normal(rng, (3, 4, 3, 2))
    return {"x": x, "w1": w1, "b1": b1, "w2": w2, "b2": b2, "g": g}


def _tensors(seed, dtype, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]


def unfold_float32(seed):
    x, w, b = _tensors(seed, torch.float32, (3, 5, 12, 10), (6, 5, 5, 3), (6,))
    return {"x": x, "w": w, "b": b, "stride": 2, "padding": 2}


def unfold_no_bias(seed):
    x, w = _tensors(seed, torch.float64, (2, 3, 7, 9), (4, 3, 2, 2))
    return {"x": x, "w": w, "b": None, "stride": 1, "padding": 0}


def unfold_backward(seed):
    x, w, b, g = _tensors(seed, torch.float64, (2, 4, 8, 9), (3, 4, 3, 3), (3,), (2, 3, 4, 5))
    return {"x": x, "w": w, "b": b, "g": g, "stride": 2, "padding": 1}


def unfold_big(seed):
    x, w, b = _tensors(seed, torch.float32, (4, 8, 96, 96), (16, 8, 3, 3), (16,))
    return {"x": x, "w": w, "b": b, "stride": 1, "padding": 1, "every": 8}


CASES = [
    Case(
        "im2col, (2, 4) kernel, stride 3, padding 2",
        call=columns,
        inputs=im2col_rectangular,
        points=2,
        seed=101,
        rtol=0,
        atol=0,
    ),
    Case(
        "im2col, 5x5 kernel on a 4x3 image padded by 3",
        call=columns,
        inputs=im2col_wide_padding,
        points=1,
        seed=102,
        rtol=0,
        atol=0,
    ),
    Case(
        "col2im, overlapping (4, 3) patches, stride 2, padding 1",
        call=add_back,
        inputs=col2im_overlapping,
        points=2,
        seed=201,
        **TIGHT,
    ),
    Case(
        "conv2d forward, (7, 5) kernel, stride 4",
        call=conv_forward,
        inputs=conv_strided,
        points=2,
        seed=301,
        **TIGHT,
    ),
    Case(
        "conv2d forward and backward, 3x3 kernel, padding 1",
        call=conv_step,
        inputs=conv_overlapping,
        points=3,
        seed=302,
        **TIGHT,
    ),
    Case(
        "conv2d forward and backward, 1x1 kernel, stride 2",
        call=conv_step,
        inputs=conv_pointwise,
        points=1,
        seed=303,
        **TIGHT,
    ),
    Case(
        "conv2d forward and backward, kernel as large as the image",
        call=conv_step,
        inputs=conv_whole_image,
        points=1,
        seed=304,
        **TIGHT,
    ),
    Case(
        "max pooling 3x3, stride 2 (overlapping), forward and backward",
        call=pool_step,
        inputs=pool_overlapping,
        points=2,
        seed=401,
        **TIGHT,
    ),
    Case(
        "max pooling 2x2 after a ReLU (tied maxima), forward and backward",
        call=pool_step,
        inputs=pool_ties,
        points=2,
        seed=402,
        **TIGHT,
    ),
    Case(
        "max pooling 4x4, stride 1, forward and backward",
        call=pool_step,
        inputs=pool_tall_windows,
        points=1,
        seed=403,
        **TIGHT,
    ),
    Case(
        "max pooling 3x3 with the default stride",
        call=pool_default_stride,
        inputs=pool_default,
        points=1,
        seed=404,
        **TIGHT,
    ),
    Case(
        "conv -> ReLU -> overlapping pool -> conv, forward and backward",
        call=small_convnet,
        inputs=convnet,
        points=3,
        seed=501,
        **TIGHT,
    ),
    Case(
        "conv2d_unfold, float32, (5, 3) kernel, stride 2, padding 2, no convolution kernel",
        call=unfold_conv,
        inputs=unfold_float32,
        points=2,
        seed=601,
        compare=without_convolution,
    ),
    Case(
        "conv2d_unfold without a bias, float64",
        call=unfold_conv,
        inputs=unfold_no_bias,
        points=1,
        seed=602,
        compare=without_convolution,
    ),
    Case(
        "conv2d_unfold: gradients through autograd, float64",
        call=unfold_grads,
        inputs=unfold_backward,
        points=2,
        seed=603,
        **TIGHT,
    ),
    Case(
        "conv2d forward and backward on (2, 4, 160, 160) (speed)",
        call=conv_step_sampled,
        inputs=conv_big,
        points=1,
        seed=701,
        # CS231n's fancy-indexing im2col with np.add.at takes 3 to 5 times the reference's time;
        # a loop over the 25600 output pixels 15 to 30 times.
        speed_ratio=8.0,
        speed_points=2,
        **TIGHT,
    ),
    Case(
        "max pooling 3x3, stride 2 on (4, 4, 160, 160) (speed)",
        call=pool_step_sampled,
        inputs=pool_big,
        points=1,
        seed=702,
        speed_ratio=5.0,
        speed_points=1,
        **TIGHT,
    ),
    Case(
        "conv2d_unfold on (4, 8, 96, 96), float32 (speed)",
        call=unfold_conv,
        inputs=unfold_big,
        points=1,
        seed=703,
        compare=without_convolution,
        speed_ratio=5.0,
        speed_points=1,
    ),
]
