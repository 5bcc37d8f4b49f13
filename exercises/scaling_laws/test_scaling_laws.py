"""Public specs for `scaling_laws`: `pytest exercises/scaling_laws` (`--impl=solutions`: the
reference).

Oracles: the sums of Kaplan et al.'s Table 1 worked out here, the published figures for GPT-3
(Brown et al., 2020), numpy's own least-squares line (np.polyfit) on the logarithms, exact power
laws, and the geometry of the pixels your plot draws (decoded from the PNG file you wrote).
One spec is statistical: it draws noisy points from Kaplan's L(N) with fixed seeds, and a correct
fit fails it with chance below 1e-7 (see the README).
"""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, fail

# GPT-3 175B (Brown et al., 2020, Table 2.1): 96 layers of width 12288, a context of 2048 tokens,
# GPT-2's vocabulary of 50257 tokens, trained on 300 billion tokens for 3.14e23 FLOPs.
GPT3 = {"n_layer": 96, "d_model": 12288, "n_ctx": 2048, "n_vocab": 50257, "tokens": 300e9}

seeds = st.integers(0, 2**16)
layers = st.integers(1, 96)
widths = st.integers(1, 64).map(lambda k: 64 * k)


def as_int(value, what):
    """The learner's count as a Python int; counts are exact, so a float fails."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        fail(f"{what} returned {value!r} ({type(value).__name__}); a count is an exact int")
    return int(value)


# -- counting parameters ------------------------------------------------------------------------


def check_count(impl, n_layer, d_model, d_attn=None, d_ff=None):
    kwargs = {k: v for k, v in (("d_attn", d_attn), ("d_ff", d_ff)) if v is not None}
    what = f"count_params({n_layer}, {d_model}" + "".join(f", {k}={v}" for k, v in kwargs.items())
    what += ")"
    got = as_int(impl.count_params(n_layer, d_model, **kwargs), what)
    a = d_model if d_attn is None else d_attn
    f = 4 * d_model if d_ff is None else d_ff
    parts = {"W_q, W_k, W_v": 3 * d_model * a, "W_o": a * d_model, "the MLP": 2 * d_model * f}
    want = n_layer * sum(parts.values())
    if got != want:
        per_layer = ", ".join(f"{k} {v}" for k, v in parts.items())
        off = (got - want) / n_layer
        known = {-parts["W_o"]: "W_o is missing", -d_model * f: "one MLP matrix is missing"}
        fail(
            f"{what} = {got}, expected {want}: per layer {per_layer} (biases, norms and "
            f"embeddings left out), times {n_layer} layer(s); you are off by {off:g} per layer"
            + (f": {known[off]}" if off in known else "")
        )


@given(n_layer=layers, d_model=widths)
def test_count_params_is_12_n_layer_d_model_squared(impl, n_layer, d_model):
    check_count(impl, n_layer, d_model)


@given(
    n_layer=layers,
    d_model=widths,
    d_attn=st.integers(1, 64).map(lambda k: 16 * k),
    d_ff=st.integers(1, 64).map(lambda k: 64 * k),
)
def test_count_params_by_component(impl, n_layer, d_model, d_attn, d_ff):
    check_count(impl, n_layer, d_model, d_attn, d_ff)


def test_gpt3_has_175_billion_parameters(impl):
    n_layer, d_model = GPT3["n_layer"], GPT3["d_model"]
    check_count(impl, n_layer, d_model)
    n = int(impl.count_params(n_layer, d_model))
    embeddings = (GPT3["n_vocab"] + GPT3["n_ctx"]) * d_model
    total = n + embeddings
    if abs(total / 175e9 - 1) > 0.005:
        fail(
            f"count_params(96, 12288) + the embeddings ({embeddings:,}) = {total:,}; GPT-3 has "
            "175 billion parameters (174.6e9 counted this way)"
        )


# -- counting FLOPs -----------------------------------------------------------------------------


@given(
    n_layer=layers,
    d_model=widths,
    n_ctx=st.sampled_from([128, 1024, 2048, 8192]),
    d_attn=st.none() | st.integers(1, 64).map(lambda k: 16 * k),
    d_ff=st.none() | st.integers(1, 64).map(lambda k: 64 * k),
)
def test_forward_flops_per_token_by_component(impl, n_layer, d_model, n_ctx, d_attn, d_ff):
    kwargs = {k: v for k, v in (("d_attn", d_attn), ("d_ff", d_ff)) if v is not None}
    what = f"forward_flops_per_token({n_layer}, {d_model}, n_ctx={n_ctx}" + "".join(
        f", {k}={v}" for k, v in kwargs.items()
    )
    what += ")"
    got = as_int(impl.forward_flops_per_token(n_layer, d_model, n_ctx, **kwargs), what)
    a = d_model if d_attn is None else d_attn
    f = 4 * d_model if d_ff is None else d_ff
    n = n_layer * (4 * d_model * a + 2 * d_model * f)
    context = 2 * n_layer * n_ctx * a
    want = 2 * n + context
    if got == want:
        return
    known = {
        2 * n: "that is 2 N alone: add the attention over the context, 2 n_layer n_ctx d_attn",
        n + context // 2: "that counts a multiply-add as one operation; it is two",
    }
    fail(
        f"{what} = {got}, expected 2 N + 2 n_layer n_ctx d_attn = 2 * {n} + {context} = {want}"
        + (f"; {known[got]}" if got in known else "")
    )


def test_forward_flops_of_gpt3(impl):
    n_layer, d_model, n_ctx = GPT3["n_layer"], GPT3["d_model"], GPT3["n_ctx"]
    what = f"forward_flops_per_token({n_layer}, {d_model}, n_ctx={n_ctx})"
    got = as_int(impl.forward_flops_per_token(n_layer, d_model, n_ctx), what)
    n = 12 * n_layer * d_model**2
    # The context adds 2 * 96 * 2048 * 12288 = 4.8e9, 1.4% of 2 N: Kaplan's C ~ 2N per token.
    if got != 2 * n + 2 * n_layer * n_ctx * d_model:
        fail(
            f"{what} = {got:,}; expected 2 N + 2 n_layer n_ctx d_model = {2 * n:,} + "
            f"{2 * n_layer * n_ctx * d_model:,} = {2 * n + 2 * n_layer * n_ctx * d_model:,}"
        )


@given(
    n=st.floats(1e3, 1e12),
    d=st.floats(1e6, 1e13),
    seed=seeds,
)
def test_training_flops_is_6_n_d(impl, n, d, seed):
    got = impl.training_flops(n, d)
    if not isinstance(got, float | np.floating):
        fail(f"training_flops({n:g}, {d:g}) returned {got!r}; expected a float")
    assert_close(
        np.float64(got), np.float64(6 * n * d), what=f"training_flops({n:g}, {d:g})", rtol=1e-12
    )
    # Arrays broadcast: a sweep of model sizes against a sweep of token counts.
    rng = np.random.default_rng(seed)
    sizes, tokens = 10 ** rng.uniform(3, 12, (3, 1)), 10 ** rng.uniform(6, 13, 4)
    assert_close(
        np.asarray(impl.training_flops(sizes, tokens)),
        6 * sizes * tokens,
        what="training_flops(n_params (3, 1), n_tokens (4,)), which broadcast to (3, 4)",
        rtol=1e-12,
    )


def test_training_flops_of_gpt3(impl):
    n = int(impl.count_params(GPT3["n_layer"], GPT3["d_model"]))
    n += (GPT3["n_vocab"] + GPT3["n_ctx"]) * GPT3["d_model"]
    got = float(impl.training_flops(n, GPT3["tokens"]))
    # Brown et al. (2020), Table D.1: 3.14e23 FLOPs (3.64e3 petaflop/s-days) for GPT-3 175B.
    if abs(got / 3.14e23 - 1) > 0.005:
        fail(
            f"training_flops({n:.4g}, 300e9) = {got:.4g}; GPT-3 cost 3.14e23 FLOPs "
            f"(6 N D: {got / 3.14e23:.3g} times that)"
        )


# -- fitting a power law ------------------------------------------------------------------------


def fit(impl, x, y, what):
    out = impl.fit_power_law(x, y)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"{what} should return a pair (coefficient, exponent); got {out!r}")
    return np.float64(out[0]), np.float64(out[1])


@given(
    log_coefficient=st.floats(-3, 3),
    exponent=st.floats(-1.5, 1.5),
    low=st.floats(-2, 8),
    decades=st.floats(0.5, 8),
    n=st.integers(2, 40),
    seed=seeds,
)
def test_fit_power_law_recovers_an_exact_law(
    impl, log_coefficient, exponent, low, decades, n, seed
):
    x = np.random.default_rng(seed).permutation(np.logspace(low, low + decades, n))
    y = 10**log_coefficient * x**exponent
    what = f"fit_power_law(x (n={n}) from 1e{low:.2f} to 1e{low + decades:.2f}, y = c x^k)"
    coefficient, k = fit(impl, x, y, what)
    assert_close(k, np.float64(exponent), what=f"{what}: the exponent", rtol=1e-8, atol=1e-9)
    assert_close(
        coefficient, np.float64(10**log_coefficient), what=f"{what}: the coefficient", rtol=1e-7
    )


@given(n=st.integers(3, 60), sigma=st.sampled_from([0.01, 0.1, 0.5]), seed=seeds)
def test_fit_power_law_is_least_squares_in_log_space(impl, n, sigma, seed):
    rng = np.random.default_rng(seed)
    x = 10 ** rng.uniform(2, 9, n)
    y = 3.0 * x**-0.3 * np.exp(rng.normal(0, sigma, n))
    exponent, intercept = np.polyfit(np.log(x), np.log(y), 1)  # minimises the errors in log y
    what = f"fit_power_law(x (n={n}), y with log-normal noise of {sigma}) against np.polyfit"
    coefficient, k = fit(impl, x, y, what)
    if np.isclose(k, -exponent, rtol=1e-6):
        fail(f"{what}: the exponent is {k:.6g}, minus the slope {exponent:.6g}: its sign is off")
    assert_close(k, np.float64(exponent), what=f"{what}: the exponent", rtol=1e-8, atol=1e-10)
    assert_close(
        coefficient, np.float64(np.exp(intercept)), what=f"{what}: the coefficient", rtol=1e-8
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_power_law_recovers_kaplans_law(impl, seed):
    # Kaplan's L(N) = (N_c / N)^alpha_N with N_c = 8.8e13 and alpha_N = 0.076, on 30 model sizes
    # over the paper's range (768 to 1.5e9 non-embedding parameters), with 0.5% log-normal noise.
    # A correct fit misses alpha_N by 2.1e-4 (one standard deviation) and log N_c by 0.052: N_c is
    # where the line reaches a loss of 1, 18 units of log N beyond the data. The tolerances are
    # 7.1 and 5.8 standard deviations: a false failure has chance below 1e-8 per seed.
    rng = np.random.default_rng(seed)
    n = np.geomspace(768, 1.5e9, 30)
    loss = (8.8e13 / n) ** 0.076 * np.exp(rng.normal(0, 0.005, n.size))
    what = f"fit_power_law on 30 noisy points of L(N) = (8.8e13 / N)^0.076 (seed {seed})"
    coefficient, k = fit(impl, n, loss, what)
    alpha = -k
    if not abs(alpha - 0.076) <= 1.5e-3:
        fail(f"{what}: alpha_N = -exponent = {alpha:.5g}; expected 0.076 +- 0.0015")
    n_c = coefficient ** (1 / alpha) if coefficient > 0 and alpha > 0 else np.nan
    if not abs(np.log(n_c / 8.8e13)) <= np.log(1.35):
        fail(
            f"{what}: N_c = coefficient^(1 / alpha_N) = {n_c:.4g}; expected 8.8e13 within a "
            "factor 1.35"
        )


# -- the plot -----------------------------------------------------------------------------------

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (220, 30, 30)}
COLOURS["blue"] = (30, 60, 220)


def read_png(path, what):
    """The (H, W, 3) pixels of an 8-bit RGB PNG with unfiltered rows, as write_png writes it."""
    if not path.is_file():
        fail(f"{what} wrote no file at {path}")
    data = path.read_bytes()
    if data[:8] != SIGNATURE:
        fail(f"{what}: {path.name} does not start with the PNG signature; got {data[:8]!r}")
    chunks, i = [], 8
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            fail(f"{what}: the {kind!r} chunk of {path.name} has a wrong CRC")
        chunks.append((kind, body))
        i += 12 + length
    kinds = [k for k, _ in chunks]
    if not kinds or kinds[0] != b"IHDR" or kinds[-1] != b"IEND" or b"IDAT" not in kinds:
        fail(f"{what}: {path.name} should hold IHDR, IDAT and IEND chunks; it has {kinds}")
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    if (depth, colour) != (8, 2):
        fail(f"{what}: IHDR says bit depth {depth}, colour type {colour}; expected 8 and 2 (RGB)")
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    if rows[:, 0].any():
        fail(f"{what}: this spec reads unfiltered rows (filter type 0), as write_png writes them")
    return rows[:, 1:].reshape(height, width, 3)


def pixels(image, colour):
    """(k, 2) rows and columns of the pixels of one colour."""
    return np.argwhere((image == np.array(COLOURS[colour], np.uint8)).all(axis=-1))


def blue_line(image, what):
    """The straight line through the blue pixels: (centre, unit direction, unit upward normal)."""
    blue = pixels(image, "blue").astype(np.float64)
    if len(blue) < image.shape[1] // 4:
        fail(f"{what}: found {len(blue)} blue pixels; the fitted line should cross the plot")
    centre = blue.mean(axis=0)
    _, _, vt = np.linalg.svd(blue - centre)
    direction, normal = vt[0], vt[1]
    if normal[0] > 0:  # point the normal up the image: rows count downwards
        normal = -normal
    distance = np.abs((blue - centre) @ normal)
    if distance.max() > 1.5:
        fail(
            f"{what}: the blue pixels are not a straight line (one lies {distance.max():.1f} "
            "pixels from their best line); on log-log axes a power law is straight"
        )
    return centre, direction, normal


def law(seed, n, exponent):
    rng = np.random.default_rng(seed)
    x = np.sort(10 ** rng.uniform(2, 7, n))
    return x, 2.0 * x**exponent


@pytest.mark.parametrize("size", [(240, 320), (100, 180)])
def test_plot_writes_a_png(impl, tmp_path, size):
    x, y = law(1, 12, -0.4)
    path = tmp_path / "fit.png"
    what = f"plot_fit(x (12,), y (12,), 2.0, -0.4, path, size={size})"
    image = impl.plot_fit(x, y, 2.0, -0.4, path, size)
    if not isinstance(image, np.ndarray) or image.shape != (*size, 3) or image.dtype != np.uint8:
        fail(f"{what} should return an {(*size, 3)} uint8 array; got {image!r:.80}")
    assert_close(
        read_png(path, what), image, what=f"{what}: the PNG's pixels vs the returned image"
    )
    if not len(pixels(image, "red")) or not len(pixels(image, "black")):
        fail(f"{what}: the image should show RED points and BLACK axes")


@given(exponent=st.floats(0.05, 2.0), sign=st.sampled_from([-1, 1]), seed=seeds)
def test_plot_draws_the_fit_as_a_straight_line(impl, tmp_path_factory, exponent, sign, seed):
    exponent *= sign
    rng = np.random.default_rng(seed)
    x = 10 ** rng.uniform(1, 9, 15)
    y = 5.0 * x**exponent * np.exp(rng.normal(0, 0.2, 15))
    path = tmp_path_factory.mktemp("plot") / "fit.png"
    what = f"plot_fit(15 noisy points from 1e1 to 1e9, coefficient 5, exponent {exponent:.3g})"
    image = np.asarray(impl.plot_fit(x, y, 5.0, exponent, path))
    centre, direction, up = blue_line(image, what)
    slope = direction[0] / direction[1]  # rows per column
    if np.sign(slope) != -sign:
        rising = "rises" if slope < 0 else "falls"
        fail(
            f"{what}: the line {rising} from left to right; with exponent {exponent:.3g} y should "
            f"{'fall' if sign < 0 else 'rise'} (image rows count downwards: larger y, smaller row)"
        )
    # The line runs under some points: its pixels are the blue ones and the red ones on it.
    red = pixels(image, "red")
    under = red[np.abs((red - centre) @ up) <= 1.0]
    line_cols = np.concatenate([pixels(image, "blue")[:, 1], under[:, 1]])
    if line_cols.min() > red[:, 1].min() + 4 or line_cols.max() < red[:, 1].max() - 4:
        fail(
            f"{what}: the line covers columns {line_cols.min()} to {line_cols.max()}, the points "
            f"{red[:, 1].min()} to {red[:, 1].max()}; draw the line across the range of x"
        )


@given(exponent=st.floats(-1.5, 1.5).filter(lambda k: abs(k) > 0.05), seed=seeds)
def test_plot_puts_the_points_where_they_belong(impl, tmp_path_factory, exponent, seed):
    x, y = law(seed, 10, exponent)
    y[4] *= 4  # one point a factor 4 above the law
    path = tmp_path_factory.mktemp("plot") / "fit.png"
    what = (
        f"plot_fit(10 points on y = 2 x^{exponent:.3g} from 1e2 to 1e7, the fifth 4 times higher, "
        f"coefficient 2, exponent {exponent:.3g})"
    )
    image = np.asarray(impl.plot_fit(x, y, 2.0, exponent, path))
    centre, _, up = blue_line(image, what)
    red = pixels(image, "red").astype(np.float64)
    # A point's square reaches at most 3 * sqrt(2) = 4.2 pixels from its centre; the centres of
    # the points on the law lie on the line, to within the rounding of a pixel.
    height = (red - centre) @ up
    far = np.abs(height) > 6
    if not far.any():
        fail(f"{what}: every red pixel lies on the line; the fifth point should lie above it")
    if (height[far] < 0).any():
        fail(
            f"{what}: red pixels lie {-height[far].min():.0f} pixels below the line; the points on "
            "the law should sit on it and the fifth one above it: place the points and the line "
            "with the same log-log mapping, larger y up"
        )
