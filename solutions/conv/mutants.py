"""Common mistakes in convolution and pooling, each replacing one function of the reference.

The reference's conv2d_forward calls im2col and its conv2d_backward calls col2im through the module,
so a mistake in either carries on into the layer, as it would in a learner's code.
"""

import numpy as np
import torch.nn.functional as F

from graders.impl import reference
from graders.mutants import mutant

ref = reference("conv")


def _size(n, k, stride, padding):
    return (n + 2 * padding - k) // stride + 1


# -- im2col and col2im --------------------------------------------------------------------------


@mutant(
    "im2col",
    "np.pad(x, padding) pads every axis, the batch and the channels too; pad only H and W: "
    "np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))",
)
def pads_every_axis(x, kernel_size, stride=1, padding=0):
    return ref.im2col(np.pad(x, padding), kernel_size, stride, 0)


@mutant(
    "im2col",
    "a patch's rows are ordered (kernel row, kernel column, channel); F.unfold and "
    "w.reshape(C_out, -1) order them (channel, kernel row, kernel column)",
)
def patch_rows_channel_last(x, kernel_size, stride=1, padding=0):
    kh, kw = ref._pair(kernel_size)
    cols = ref.im2col(x, kernel_size, stride, padding)
    N, C = x.shape[:2]
    return cols.reshape(N, C, kh * kw, -1).transpose(0, 2, 1, 3).reshape(N, C * kh * kw, -1)


@mutant(
    "col2im",
    "where patches overlap, col2im overwrites (=) instead of adding up (+=): a pixel in several "
    "patches must collect the sum of their gradients",
)
def col2im_overwrites_overlaps(cols, x_shape, kernel_size, stride=1, padding=0):
    kh, kw = ref._pair(kernel_size)
    N, C, H, W = x_shape
    OH, OW = _size(H, kh, stride, padding), _size(W, kw, stride, padding)
    cols = cols.reshape(N, C, kh, kw, OH, OW)
    xp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride] = cols[:, :, i, j]
    return xp[:, :, padding : padding + H, padding : padding + W]


# -- the convolution layer ----------------------------------------------------------------------


@mutant(
    "conv2d_forward",
    "the kernel is flipped (the convolution of signal processing); deep learning's convolution, "
    "F.conv2d's, is a cross-correlation: w[o, c, i, j] meets x[.., s*oh + i, s*ow + j]",
)
def kernel_flipped(x, w, b, stride=1, padding=0):
    return ref.conv2d_forward(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, stride, padding)


@mutant(
    "conv2d_backward",
    "dw and db are averaged over the batch; the backward of the layer adds up every sample's "
    "contribution (any averaging belongs to the loss, and is already in dout)",
)
def weight_grads_averaged_over_batch(dout, cache):
    dx, dw, db = ref.conv2d_backward(dout, cache)
    return dx, dw / dout.shape[0], db / dout.shape[0]


# -- max pooling --------------------------------------------------------------------------------


@mutant(
    "max_pool2d_forward",
    "stride=None is taken as stride 1; like F.max_pool2d, it means stride = kernel_size",
)
def pool_stride_defaults_to_one(x, kernel_size, stride=None):
    return ref.max_pool2d_forward(x, kernel_size, 1 if stride is None else stride)


@mutant(
    "max_pool2d_backward",
    "a window's gradient goes to every input equal to its maximum; when inputs tie (zeros after "
    "a ReLU do), only the first, in row-major order, receives it",
)
def pool_grad_to_every_tied_max(dout, cache):
    x, arg, k, stride = cache
    OH, OW = arg.shape[2:]
    out = np.full(dout.shape, -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(
                out, x[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride]
            )
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            v = x[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride]
            dx[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride] += np.where(
                v == out, dout, 0
            )
    return dx


@mutant(
    "max_pool2d_backward",
    "where windows overlap (stride < kernel_size), dx is overwritten (=) instead of added to "
    "(+=): an input that is the maximum of two windows gets the sum of both gradients",
)
def pool_overlaps_overwrite(dout, cache):
    x, arg, k, stride = cache
    OH, OW = arg.shape[2:]
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            window = dx[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride]
            hit = arg == i * k + j
            window[hit] = dout[hit]  # the earlier windows' gradient at this input is lost
    return dx


@mutant(
    "max_pool2d_backward",
    "the gradient is spread evenly over the window (average pooling's backward); max pooling "
    "sends all of it to the window's maximum",
)
def pool_grad_spread_over_window(dout, cache):
    x, arg, k, stride = cache
    OH, OW = arg.shape[2:]
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride] += dout / (k * k)
    return dx


# -- torch --------------------------------------------------------------------------------------


@mutant(
    "conv2d_unfold",
    "F.unfold's (N, C*kh*kw, L) columns are reshaped to (N*L, C*kh*kw) without a transpose, which "
    "scrambles the patches; multiply w.reshape(C_out, -1) @ cols instead",
)
def unfold_reshaped_without_transpose(x, w, b=None, stride=1, padding=0):
    N, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    OH, OW = _size(H, kh, stride, padding), _size(W, kw, stride, padding)
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)
    out = cols.reshape(N * OH * OW, -1) @ w.reshape(C_out, -1).T  # (N*L, C_out), scrambled
    if b is not None:
        out = out + b
    return out.reshape(N, OH, OW, C_out).permute(0, 3, 1, 2)
