"""Common mistakes in counting, fitting and plotting scaling laws, each replacing one function."""

import numpy as np

from graders.impl import reference
from graders.mutants import mutant

ref = reference("scaling_laws")

# -- counting parameters and FLOPs --------------------------------------------------------------


@mutant(
    "count_params",
    "the feed-forward block is counted as one matrix (d_model * d_ff); it has two, up to d_ff "
    "and back down: 2 * d_model * d_ff per layer",
)
def feedforward_counted_once(n_layer, d_model, d_attn=None, d_ff=None):
    d_attn = d_model if d_attn is None else d_attn
    d_ff = 4 * d_model if d_ff is None else d_ff
    return n_layer * (4 * d_model * d_attn + d_model * d_ff)


@mutant(
    "count_params",
    "the attention output projection (d_attn -> d_model) is missing; a layer's attention has "
    "four matrices, W_q, W_k, W_v and W_o",
)
def output_projection_missing(n_layer, d_model, d_attn=None, d_ff=None):
    d_attn = d_model if d_attn is None else d_attn
    d_ff = 4 * d_model if d_ff is None else d_ff
    return n_layer * (3 * d_model * d_attn + 2 * d_model * d_ff)


@mutant(
    "forward_flops_per_token",
    "the attention over the context is left out; each layer also spends 2 * n_ctx * d_attn "
    "operations per token on the scores and the weighted sum of the values",
)
def context_term_missing(n_layer, d_model, n_ctx, d_attn=None, d_ff=None):
    return 2 * ref.count_params(n_layer, d_model, d_attn, d_ff)


@mutant(
    "forward_flops_per_token",
    "a multiply-add is counted as one operation; it is two (a multiplication and an addition), "
    "so the forward pass costs 2 N, not N, per token",
)
def multiply_add_counted_once(n_layer, d_model, n_ctx, d_attn=None, d_ff=None):
    d_attn = d_model if d_attn is None else d_attn
    return ref.count_params(n_layer, d_model, d_attn, d_ff) + n_layer * n_ctx * d_attn


@mutant(
    "training_flops",
    "only the forward pass is counted (2 N D); the backward pass costs twice the forward, so "
    "training costs 6 N D",
)
def forward_pass_only(n_params, n_tokens):
    return 2.0 * np.asarray(n_params, dtype=np.float64) * n_tokens


# -- fitting ------------------------------------------------------------------------------------


@mutant(
    "fit_power_law",
    "the line was fitted to log10 values but its intercept undone with exp; undo a log10 with "
    "10 ** intercept (or use np.log throughout)",
)
def log10_intercept_undone_with_exp(x, y):
    exponent, intercept = np.polyfit(np.log10(x), np.log10(y), 1)
    return float(np.exp(intercept)), float(exponent)


@mutant(
    "fit_power_law",
    "the exponent's sign is flipped (Kaplan's alpha_N); return the slope of log y against log x, "
    "negative for a falling loss",
)
def exponent_sign_flipped(x, y):
    coefficient, exponent = ref.fit_power_law(x, y)
    return coefficient, -exponent


@mutant(
    "fit_power_law",
    "log x was regressed on log y and the line inverted; least squares must minimise the errors "
    "in log y (the loss is the noisy quantity), which gives another line when the points scatter",
)
def x_regressed_on_y(x, y):
    slope, intercept = np.polyfit(np.log(y), np.log(x), 1)
    return float(np.exp(-intercept / slope)), float(1 / slope)


@mutant(
    "fit_power_law",
    "the line was fitted to y itself against log x; a power law is straight only when both axes "
    "are logarithmic: fit log y",
)
def y_not_logged(x, y):
    exponent, intercept = np.polyfit(np.log(x), y, 1)
    return float(np.exp(intercept)), float(exponent)


# -- plotting -----------------------------------------------------------------------------------


def _plot(x, y, coefficient, exponent, path, size, *, log=True, flip=True):
    """The reference's layout, with linear axes (log=False) or rows counted upwards (flip=False)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    height, width = size
    image = np.full((height, width, 3), ref.WHITE, dtype=np.uint8)
    if log:
        px, py = np.log10(x), np.log10(y)
        line_px = np.linspace(px.min(), px.max(), 4 * width)
        line_py = np.log10(coefficient) + exponent * line_px
    else:
        px, py = x, y
        line_px = np.linspace(x.min(), x.max(), 4 * width)
        line_py = coefficient * line_px**exponent
    margin = 16
    x_lo, x_hi = px.min(), px.max()
    y_lo, y_hi = min(py.min(), line_py.min()), max(py.max(), line_py.max())

    def col(u):
        return np.rint(margin + (u - x_lo) / (x_hi - x_lo) * (width - 1 - 2 * margin)).astype(int)

    def row(v):
        t = (v - y_lo) / (y_hi - y_lo)
        t = t if not flip else 1 - t
        return np.rint(margin + t * (height - 1 - 2 * margin)).astype(int)

    image[height - 1 - margin // 2, margin // 2 :] = ref.BLACK
    image[: height - margin // 2, margin // 2] = ref.BLACK
    image[row(line_py), col(line_px)] = ref.BLUE
    offsets = np.arange(-2, 3)
    image[row(py)[:, None, None] + offsets[:, None], col(px)[:, None, None] + offsets] = ref.RED
    ref.write_png(path, image)
    return image


@mutant(
    "plot_fit",
    "the axes are linear; plot log10 x and log10 y (or place the pixels by them), so that the "
    "power law is a straight line",
)
def linear_axes(x, y, coefficient, exponent, path, size=(240, 320)):
    return _plot(x, y, coefficient, exponent, path, size, log=False)


@mutant(
    "plot_fit",
    "the plot is upside down: image rows count downwards, so larger y needs a smaller row "
    "(row = bottom - scaled value)",
)
def rows_not_flipped(x, y, coefficient, exponent, path, size=(240, 320)):
    return _plot(x, y, coefficient, exponent, path, size, flip=False)
