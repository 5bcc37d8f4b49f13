"""Scaling laws for neural language models, in numpy (Kaplan et al., 2020).

A Transformer's test loss falls as a power law in its number of non-embedding parameters N, in the
tokens it trains on D and in the compute C it spends, each over many orders of magnitude. To use
those laws you count N and C from a model's shape, fit a straight line to the points in log-log
space, and look at the fit on log-log axes. This module does the three, with numpy alone: the plot
is drawn into an array of pixels and written as a PNG by a small given encoder.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "count_params",
    "fit_power_law",
    "forward_flops_per_token",
    "plot_fit",
    "training_flops",
    "write_png",
]

# The plot's colours, as (R, G, B) bytes (given).
WHITE, BLACK, RED, BLUE = (255, 255, 255), (0, 0, 0), (220, 30, 30), (30, 60, 220)


def count_params(
    n_layer: int, d_model: int, d_attn: int | None = None, d_ff: int | None = None
) -> int:
    """The non-embedding parameter count N of a decoder-only Transformer (Kaplan's Table 1).

    Per layer: the query, key and value projections (d_model -> 3 d_attn), the attention output
    projection (d_attn -> d_model) and the two feed-forward matrices (d_model -> d_ff -> d_model).
    Biases, layer norms and the token and position embeddings are left out, as in the paper.
    d_attn defaults to d_model and d_ff to 4 d_model, which gives N = 12 n_layer d_model^2.
    Ints in, an int out (exact).
    """
    d_attn = d_model if d_attn is None else d_attn
    d_ff = 4 * d_model if d_ff is None else d_ff
    # YOUR CODE HERE
    raise NotImplementedError(
        "count_params: not implemented yet; see exercises/scaling_laws/README.md"
    )


def forward_flops_per_token(
    n_layer: int, d_model: int, n_ctx: int, d_attn: int | None = None, d_ff: int | None = None
) -> int:
    """Floating-point operations of one forward pass, per token: 2 N + 2 n_layer n_ctx d_attn.

    N is count_params(n_layer, d_model, d_attn, d_ff). A multiply-add is two operations, so each
    weight costs 2 per token; attending over a context of n_ctx tokens adds the scores q.k and the
    weighted sum of the values, 2 n_ctx d_attn per layer (Kaplan's Table 1; embeddings left out).
    Ints in, an int out (exact).
    """
    d_attn = d_model if d_attn is None else d_attn
    # YOUR CODE HERE
    raise NotImplementedError(
        "forward_flops_per_token: not implemented yet; see exercises/scaling_laws/README.md"
    )


def training_flops(
    n_params: float | np.ndarray, n_tokens: float | np.ndarray
) -> float | np.ndarray:
    """The compute of training N parameters on D tokens: C = 6 N D floating-point operations.

    Numbers or float64 arrays that broadcast together; a float (or an array of the broadcast shape)
    out. Kaplan's rule: the forward pass costs 2 N per token and the backward pass twice that.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "training_flops: not implemented yet; see exercises/scaling_laws/README.md"
    )


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fit y = coefficient * x ** exponent by least squares on (log x, log y).

    x, y: (n,) positive numbers, n >= 2, with at least two distinct x. Returns the pair of floats
    (coefficient, exponent), the exponent negative when y falls as x grows. In Kaplan's notation
    L(N) = (N_c / N) ** alpha_N, so alpha_N = -exponent and N_c = coefficient ** (1 / alpha_N).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(np.unique(x)) < 2:
        raise ValueError(
            f"fit_power_law takes x and y of the same shape (n,) with two distinct x at least; got "
            f"x {x.shape}, y {y.shape}"
        )
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("fit_power_law takes positive x and y (it fits their logarithms)")
    # YOUR CODE HERE
    raise NotImplementedError(
        "fit_power_law: not implemented yet; see exercises/scaling_laws/README.md"
    )


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as a PNG file (given: you need not change it).

    A PNG is an 8-byte signature and chunks (length, type, data, CRC-32): IHDR gives the size and
    the pixel format (8 bits per channel, RGB), IDAT the zlib-compressed rows, each row preceded by
    its filter type (0: none), and IEND closes the file.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, _ = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def plot_fit(
    x: np.ndarray,
    y: np.ndarray,
    coefficient: float,
    exponent: float,
    path: str | Path,
    size: tuple[int, int] = (240, 320),
) -> np.ndarray:
    """Plot the points (x, y) and the line coefficient * x ** exponent on log-log axes, as a PNG.

    x, y: (n,) positive; size = (height, width) in pixels, each at least 64. Draws on a WHITE
    (H, W, 3) uint8 image: BLACK axes along the left and the bottom of the plotting area, each
    point as a RED square of at most 7 by 7 pixels, and the fitted line in BLUE, one pixel wide,
    across the range of x (the colours are this module's constants). Both axes are logarithmic
    and span the points and the line with a margin, larger values up and to the right, so a power
    law is a straight line. Writes the image to path with write_png and returns it.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    height, width = size
    if x.ndim != 1 or x.shape != y.shape or (x <= 0).any() or (y <= 0).any() or coefficient <= 0:
        raise ValueError("plot_fit takes positive x and y of the same shape (n,), coefficient > 0")
    if min(size) < 64:
        raise ValueError(f"plot_fit draws at least 64 by 64 pixels; got size {size}")
    image = np.full((height, width, 3), WHITE, dtype=np.uint8)
    # YOUR CODE HERE
    raise NotImplementedError("plot_fit: not implemented yet; see exercises/scaling_laws/README.md")
    write_png(path, image)
    return image
