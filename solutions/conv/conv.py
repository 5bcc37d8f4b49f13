"""Convolution as one matrix product, in numpy and in torch: im2col (Chellapilla, Puri and Simard,
2006) and the convolution and overlapping max-pooling layers of AlexNet (Krizhevsky, Sutskever and
Hinton, 2012).

A convolution slides small kernels over an image and takes a dot product at every position. Done
pixel by pixel that is millions of tiny dot products. im2col copies every patch a kernel visits into
one column of a matrix; all kernels against all patches is then a single matrix product, the one
operation that BLAS libraries and GPUs run near their peak speed. The backward pass is two more
matrix products and col2im, which adds each column back onto the patch it came from.

Layout, as in PyTorch: images x (N, C, H, W), kernels w (C_out, C, kh, kw), biases b (C_out,).
Like F.conv2d, the layer computes a cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_unfold",
    "im2col",
    "max_pool2d_backward",
    "max_pool2d_forward",
]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """3 -> (3, 3); (2, 5) -> (2, 5)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check(shape: tuple[int, ...], kh: int, kw: int, stride: int, padding: int, who: str) -> None:
    """Refuse what no output can come from, with a message that names the call."""
    if len(shape) != 4:
        raise ValueError(f"{who} takes an image batch (N, C, H, W); got shape {tuple(shape)}")
    if stride < 1 or padding < 0 or kh < 1 or kw < 1:
        raise ValueError(f"{who}: kernel ({kh}, {kw}), stride {stride}, padding {padding}")
    if shape[2] + 2 * padding < kh or shape[3] + 2 * padding < kw:
        raise ValueError(
            f"{who}: a ({kh}, {kw}) kernel does not fit in {tuple(shape[2:])} padded by {padding}"
        )


# -- numpy: im2col and col2im -------------------------------------------------------------------


def im2col(
    x: np.ndarray, kernel_size: int | tuple[int, int], stride: int = 1, padding: int = 0
) -> np.ndarray:
    """Every kh x kw patch of x as one column, in the layout of torch's F.unfold.

    Shapes: x (N, C, H, W) -> cols (N, C * kh * kw, OH * OW), with
        OH = (H + 2 * padding - kh) // stride + 1,   OW = (W + 2 * padding - kw) // stride + 1.
    x is first padded with `padding` zeros on both sides of H and W (and of no other axis).
    Column p = oh * OW + ow is the patch whose top-left corner sits at (oh * stride, ow * stride)
    of the padded image; its row r = c * kh * kw + i * kw + j holds x_padded[n, c, oh * stride + i,
    ow * stride + j] (channel first, then kernel row, then kernel column, as w.reshape(C_out, -1)).
    kernel_size: an int k for (k, k), or a pair (kh, kw). Returns a new array of x's dtype.
    """
    kh, kw = _pair(kernel_size)
    _check(x.shape, kh, kw, stride, padding, "im2col")
    ### BEGIN SOLUTION
    N, C, H, W = x.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # Chellapilla et al.'s unrolling. The loop runs over the kh * kw kernel offsets, never over the
    # OH * OW output pixels: offset (i, j) meets, at every output position at once, one pixel of
    # the padded image, and those pixels form a strided slice of it.
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride]
    return cols.reshape(N, C * kh * kw, OH * OW)
    ### END SOLUTION


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int = 0,
) -> np.ndarray:
    """The adjoint of im2col, in the layout of torch's F.fold: each column added back to its patch.

    Shapes: cols (N, C * kh * kw, OH * OW), x_shape = (N, C, H, W) -> (N, C, H, W).
    Where patches overlap (stride < kernel size) their contributions add up; what fell on the
    padding is dropped. So col2im(im2col(x)) counts each pixel of x once per patch it lies in, and
    col2im turns the gradient of the columns into the gradient of x.
    """
    kh, kw = _pair(kernel_size)
    _check(x_shape, kh, kw, stride, padding, "col2im")
    ### BEGIN SOLUTION
    N, C, H, W = x_shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = cols.reshape(N, C, kh, kw, OH, OW)
    xp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            # +=, not =: a pixel that lies in several patches was copied into several columns, and
            # its gradient is the sum of theirs.
            xp[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride] += cols[:, :, i, j]
    return xp[:, :, padding : padding + H, padding : padding + W]
    ### END SOLUTION


# -- numpy: the convolution layer ---------------------------------------------------------------


def conv2d_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, padding: int = 0
) -> tuple[np.ndarray, Any]:
    """out[n, o] = b[o] + sum over c, i, j of w[o, c, i, j] * x_padded[n, c, s*oh + i, s*ow + j].

    Shapes: x (N, C, H, W), w (C_out, C, kh, kw), b (C_out,) -> out (N, C_out, OH, OW), OH and OW
    as in im2col. A cross-correlation, as F.conv2d: the kernel is not flipped.
    Returns (out, cache): cache holds whatever conv2d_backward needs; only your backward reads it.
    Use im2col and one matrix product; no Python loop over output pixels.
    """
    if w.ndim != 4 or x.ndim != 4 or w.shape[1] != x.shape[1] or b.shape != (w.shape[0],):
        raise ValueError(
            "conv2d_forward takes x (N, C, H, W), w (C_out, C, kh, kw) and b (C_out,); got "
            f"x {x.shape}, w {w.shape}, b {b.shape}"
        )
    ### BEGIN SOLUTION
    N, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = im2col(x, (kh, kw), stride, padding)  # (N, C * kh * kw, OH * OW)
    # Every kernel against every patch: (C_out, C*kh*kw) @ (N, C*kh*kw, OH*OW) -> (N, C_out, OH*OW).
    out = w.reshape(C_out, -1) @ cols + b.reshape(C_out, 1)
    return out.reshape(N, C_out, OH, OW), (x.shape, cols, w, stride, padding)
    ### END SOLUTION


def conv2d_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of a loss L through conv2d_forward, given dout = dL/dout.

    Shapes: dout (N, C_out, OH, OW) -> (dx (N, C, H, W), dw (C_out, C, kh, kw), db (C_out,)),
    in the order of the forward's inputs (x, w, b). Each gradient sums the contributions of every
    sample and every output position.
    """
    ### BEGIN SOLUTION
    x_shape, cols, w, stride, padding = cache
    N, C_out = dout.shape[:2]
    dout = dout.reshape(N, C_out, -1)  # (N, C_out, OH * OW), the layout of the forward's product
    db = dout.sum(axis=(0, 2))
    # out = W cols + b for each sample, so dW is the sum over the samples of dout cols^T.
    dw = (dout @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    # d cols = W^T dout; col2im then sends each column's gradient back to the pixels it copied.
    dcols = w.reshape(C_out, -1).T @ dout  # (N, C * kh * kw, OH * OW)
    dx = col2im(dcols, x_shape, w.shape[2:], stride, padding)
    return dx, dw, db
    ### END SOLUTION


# -- numpy: max pooling -------------------------------------------------------------------------


def max_pool2d_forward(
    x: np.ndarray, kernel_size: int, stride: int | None = None
) -> tuple[np.ndarray, Any]:
    """The maximum of each kernel_size x kernel_size window, per channel, as F.max_pool2d.

    Shapes: x (N, C, H, W) -> out (N, C, OH, OW), OH = (H - kernel_size) // stride + 1 (and OW
    likewise). stride=None means stride = kernel_size (windows side by side); AlexNet's overlapping
    pooling is kernel_size=3, stride=2. No padding.
    Returns (out, cache) for max_pool2d_backward.
    """
    stride = kernel_size if stride is None else stride
    _check(x.shape, kernel_size, kernel_size, stride, 0, "max_pool2d_forward")
    ### BEGIN SOLUTION
    N, C, H, W = x.shape
    k = kernel_size
    OH, OW = (H - k) // stride + 1, (W - k) // stride + 1
    # As in im2col, the loop runs over the k * k offsets of a window, never over the output pixels:
    # offset (i, j) of every window at once is a strided slice of x. Keep the running maximum and
    # the offset it came from.
    out = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    arg = np.zeros((N, C, OH, OW), dtype=np.intp)
    for i in range(k):
        for j in range(k):
            v = x[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride]
            # A strict >: on a tie the earlier offset (in row-major order) keeps the window, as in
            # torch, so exactly one input per window will receive the gradient.
            better = v > out
            out = np.where(better, v, out)
            arg = np.where(better, i * k + j, arg)
    return out, (x, arg, k, stride)
    ### END SOLUTION


def max_pool2d_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    """The gradient of a loss L with respect to x, given dout = dL/dout of max_pool2d_forward.

    Shapes: dout (N, C, OH, OW) -> dx (N, C, H, W). Each window passes its gradient to the one
    input that was its maximum; when several inputs tie, to the first in row-major order, as torch
    does. An input that is the maximum of several overlapping windows gets the sum of their
    gradients; one that is no window's maximum gets 0.
    """
    ### BEGIN SOLUTION
    x, arg, k, stride = cache
    OH, OW = arg.shape[2:]
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for i in range(k):
        for j in range(k):
            # +=, not =: when windows overlap (stride < k), one input can be the maximum of
            # several windows, and its gradient is the sum of theirs.
            dx[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride] += np.where(
                arg == i * k + j, dout, 0
            )
    return dx
    ### END SOLUTION


# -- torch: the same convolution on any device ---------------------------------------------------


def conv2d_unfold(
    x: Tensor, w: Tensor, b: Tensor | None = None, stride: int = 1, padding: int = 0
) -> Tensor:
    """F.conv2d(x, w, b, stride, padding), computed as F.unfold and one matrix product.

    Shapes: x (N, C, H, W), w (C_out, C, kh, kw), b (C_out,) or None -> (N, C_out, OH, OW), OH
    and OW as in im2col. Works on any device and floating dtype (the output's are x's), and
    autograd differentiates it: use torch operations only, and no F.conv2d.
    """
    if w.ndim != 4 or x.ndim != 4 or w.shape[1] != x.shape[1]:
        raise ValueError(
            "conv2d_unfold takes x (N, C, H, W) and w (C_out, C, kh, kw); got "
            f"x {tuple(x.shape)}, w {tuple(w.shape)}"
        )
    ### BEGIN SOLUTION
    N, _, H, W = x.shape
    C_out, _, kh, kw = w.shape
    OH = (H + 2 * padding - kh) // stride + 1
    OW = (W + 2 * padding - kw) // stride + 1
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C * kh * kw, OH * OW)
    # One batched matrix product, which cuBLAS (or the CPU's BLAS) runs at full speed; autograd
    # differentiates F.unfold by F.fold, the col2im of the numpy half.
    out = w.reshape(C_out, -1) @ cols  # (N, C_out, OH * OW)
    if b is not None:
        out = out + b.reshape(C_out, 1)
    return out.reshape(N, C_out, OH, OW)
    ### END SOLUTION
