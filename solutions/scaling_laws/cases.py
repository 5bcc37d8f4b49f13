"""Hidden grading cases for scaling_laws: shapes, laws and noise unlike the public specs'.

Every case is deterministic (inputs from a fixed seed). Counts are compared exactly, FLOPs and fits
to 1e-8 relative (two sound least-squares solutions agree to about 1e-13), and the plot by the
geometry of its pixels, since its layout (margins, ticks, marker size) is the learner's choice.
No case is timed: everything here is a closed form or one pass over at most 200 points.
"""

import struct
import zlib

import numpy as np

from graders.cases import Case

FIT = {"rtol": 1e-8, "atol": 1e-12}

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def param_counts(m, shapes):
    return [m.count_params(*shape) for shape in shapes]


def flop_counts(m, shapes):
    return [m.forward_flops_per_token(*shape) for shape in shapes]


def training_compute(m, n_params, n_tokens, n_single, d_single):
    import numpy as np

    return {
        "sweep": np.asarray(m.training_flops(n_params, n_tokens)),
        "single": float(m.training_flops(n_single, d_single)),
    }


def power_law_fit(m, x, y):
    return [float(v) for v in m.fit_power_law(x, y)]


def plot_to_png(m, x, y, coefficient, exponent, size):
    """The returned image and the bytes of the file the learner wrote, for the trusted side."""
    import os
    import tempfile

    import numpy as np

    path = os.path.join(tempfile.mkdtemp(), "fit.png")
    image = m.plot_fit(x, y, coefficient, exponent, path, tuple(size))
    with open(path, "rb") as f:
        png = np.frombuffer(f.read(), dtype=np.uint8).copy()
    return {"image": np.asarray(image), "png": png}


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def shapes_for_params(seed):
    # GPT-2 small and XL, GPT-3 175B and 6.7B, and shapes whose d_attn or d_ff are not the defaults
    # (n_layer, d_model, d_attn, d_ff).
    rng = np.random.default_rng(seed)
    odd = [
        (int(rng.integers(2, 30)), int(rng.integers(1, 40)) * 32, a, f)
        for a, f in [(96, 1000), (640, 2048), (17, 5)]
    ]
    return {
        "shapes": [
            (12, 768, None, None),
            (48, 1600, None, None),
            (96, 12288, None, None),
            (32, 4096, 4096, 16384),
            *odd,
        ]
    }


def shapes_for_flops(seed):
    # (n_layer, d_model, n_ctx, d_attn, d_ff): long contexts, where the attention term dominates.
    rng = np.random.default_rng(seed)
    return {
        "shapes": [
            (12, 768, 1024, None, None),
            (2, 64, 65536, None, None),
            (int(rng.integers(3, 40)), 256, 8192, 128, 1024),
            (24, 2048, 2048, 1024, 5461),
            (1, 1, 1, None, None),
        ]
    }


def compute_sweep(seed):
    rng = np.random.default_rng(seed)
    return {
        "n_params": 10 ** rng.uniform(5, 11, (8, 1)),
        "n_tokens": 10 ** rng.uniform(8, 12, (1, 5)),
        "n_single": 70e9,  # Chinchilla: 70B parameters, 1.4T tokens, about 5.9e23 FLOPs
        "d_single": 1.4e12,
    }


def kaplan_data_law(seed):
    # L(D) = (D_c / D)^alpha_D with D_c = 5.4e13 tokens and alpha_D = 0.095, 1% noise.
    rng = np.random.default_rng(seed)
    d = np.geomspace(2e7, 2.3e10, 25)
    return {"x": d, "y": (5.4e13 / d) ** 0.095 * np.exp(rng.normal(0, 0.01, d.size))}


def rising_law(seed):
    # Kaplan's compute-efficient model size, N_opt = 1.3e9 * C^0.73 (C in PF-days), against C in
    # FLOPs (up to 1e23), unsorted and with 3% noise.
    rng = np.random.default_rng(seed)
    c = 10 ** rng.uniform(17, 23, 16)
    n = 1.3e9 * (c / 8.64e19) ** 0.73 * np.exp(rng.normal(0, 0.03, c.size))
    return {"x": c, "y": n}


def two_points(seed):
    return {"x": np.array([3e8, 2e6]), "y": np.array([2.1, 3.4])}


def heavy_noise(seed):
    rng = np.random.default_rng(seed)
    x = 10 ** rng.uniform(0, 4, 200)
    return {"x": x, "y": 40 * x**-0.5 * np.exp(rng.normal(0, 0.4, x.size))}


def plot_inputs(seed):
    rng = np.random.default_rng(seed)
    x = np.sort(10 ** rng.uniform(4, 10, 14))
    y = 4.0 * x**-0.12
    y[6] *= 3  # one point a factor 3 above the law
    return {"x": x, "y": y, "coefficient": 4.0, "exponent": -0.12, "size": [180, 420]}


# -- the plot, judged by its geometry -----------------------------------------------------------

WHITE, BLACK, RED, BLUE = (255, 255, 255), (0, 0, 0), (220, 30, 30), (30, 60, 220)


def _decode(png: bytes) -> np.ndarray | str:
    """An 8-bit RGB PNG with unfiltered rows as (H, W, 3), or what is wrong with it."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        return "the file does not start with the PNG signature"
    chunks, i = [], 8
    while i + 12 <= len(png):
        (length,) = struct.unpack(">I", png[i : i + 4])
        kind, body = png[i + 4 : i + 8], png[i + 8 : i + 8 + length]
        if png[i + 8 + length : i + 12 + length] != struct.pack(">I", zlib.crc32(kind + body)):
            return f"the {kind!r} chunk has a wrong CRC"
        chunks.append((kind, body))
        i += 12 + length
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        return "the file should start with an IHDR chunk and end with IEND"
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    if (depth, colour) != (8, 2):
        return f"IHDR says bit depth {depth}, colour type {colour}; expected 8-bit RGB (8, 2)"
    rows = np.frombuffer(
        zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT")), dtype=np.uint8
    ).reshape(height, 1 + 3 * width)
    if rows[:, 0].any():
        return "the rows are filtered; write them unfiltered, as the given write_png does"
    return rows[:, 1:].reshape(height, width, 3)


def _pixels(image, colour):
    return np.argwhere((image == np.array(colour, np.uint8)).all(axis=-1)).astype(np.float64)


def judge_plot(actual, expected, inputs):
    """None when the plot shows the points and the fitted line rightly, else what is wrong."""
    height, width = inputs["size"]
    image = actual.get("image") if isinstance(actual, dict) else None
    if not isinstance(image, np.ndarray) or image.shape != (height, width, 3):
        return f"plot_fit should return an ({height}, {width}, 3) uint8 image"
    if image.dtype != np.uint8:
        return f"plot_fit returned dtype {image.dtype}; expected uint8"
    decoded = _decode(bytes(np.asarray(actual["png"], dtype=np.uint8)))
    if isinstance(decoded, str):
        return f"plot_fit wrote a file that is not a valid PNG: {decoded}"
    if decoded.shape != image.shape or not np.array_equal(decoded, image):
        return "the PNG file's pixels differ from the image plot_fit returned"
    blue, red = _pixels(image, BLUE), _pixels(image, RED)
    if len(blue) < width // 4 or not len(red) or not len(_pixels(image, BLACK)):
        return "the image should show BLACK axes, RED points and a BLUE fitted line"
    centre = blue.mean(axis=0)
    _, _, vt = np.linalg.svd(blue - centre)
    up = -vt[1] if vt[1][0] > 0 else vt[1]  # rows count downwards
    if np.abs((blue - centre) @ up).max() > 1.5:
        return "the fitted line is not straight; on log-log axes a power law is a straight line"
    if vt[0][0] / vt[0][1] <= 0:
        return "the line rises from left to right, but y = 4 x^-0.12 falls: larger y, smaller row"
    height_above = (red - centre) @ up
    far = np.abs(height_above) > 6
    if not far.any() or (height_above[far] < 0).any():
        return (
            "the points on the law should sit on the line and the seventh, 3 times higher, above "
            "it; place points and line with the same log-log mapping, larger y up"
        )
    line_cols = np.concatenate([blue[:, 1], red[np.abs(height_above) <= 1.0][:, 1]])
    if line_cols.min() > red[:, 1].min() + 4 or line_cols.max() < red[:, 1].max() - 4:
        return "the fitted line should run across the whole range of x"
    return None


CASES = [
    Case(
        "parameter counts: GPT-2, GPT-3 and shapes with other d_attn and d_ff",
        call=param_counts,
        inputs=shapes_for_params,
        points=2,
        seed=11,
    ),
    Case(
        "forward FLOPs per token, contexts from 1 to 65536 tokens",
        call=flop_counts,
        inputs=shapes_for_flops,
        points=2,
        seed=22,
    ),
    Case(
        "training compute of an 8 x 5 sweep, and of Chinchilla",
        call=training_compute,
        inputs=compute_sweep,
        points=1,
        seed=33,
        rtol=1e-12,
    ),
    Case(
        "fit of Kaplan's L(D) on 25 points with 1% noise",
        call=power_law_fit,
        inputs=kaplan_data_law,
        points=2,
        seed=44,
        **FIT,
    ),
    Case(
        "fit of a rising law over six decades of FLOPs, unsorted",
        call=power_law_fit,
        inputs=rising_law,
        points=1,
        seed=55,
        **FIT,
    ),
    Case("fit through two points", call=power_law_fit, inputs=two_points, points=1, **FIT),
    Case(
        "fit of 200 points with 40% noise",
        call=power_law_fit,
        inputs=heavy_noise,
        points=1,
        seed=66,
        **FIT,
    ),
    Case(
        "plot of 14 points and the fit, 180 x 420 pixels",
        call=plot_to_png,
        inputs=plot_inputs,
        points=2,
        seed=77,
        compare=judge_plot,
    ),
]
