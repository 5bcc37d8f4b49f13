"""Hidden grading cases for mixed_precision: sizes, settings and histories unlike the public specs'.

Every case is deterministic (inputs from a fixed seed, outputs compared exactly or within a
rounding tolerance), so none can fail by chance. Rounding to bfloat16 is compared bit for bit;
gradients and weights in float32 within rtol 1e-6, which covers dividing by the scale rather than
multiplying by its reciprocal (one rounding apart); the scale exactly, as every setting here is a
power of two.
"""

import numpy as np
import torch

from graders.cases import Case

EXACT = {"rtol": 0.0, "atol": 0.0}
FLOAT32 = {"rtol": 1e-6, "atol": 0.0}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def round_values(m, x):
    return m.round_to_bfloat16(x)


def round_and_keep_input(m, x):
    """The rounded values, and x as the call left it."""
    out = m.round_to_bfloat16(x)
    return {"rounded": out, "x_afterwards": x}


def round_sample(m, x):
    """Every 4096th rounded value: the timing is the rounding's, not that of writing the output."""
    return m.round_to_bfloat16(x)[::4096]


def unscale(m, grads, init_scale):
    scaler = m.DynamicLossScaler(init_scale=init_scale)
    found = scaler.unscale_(grads)
    if hasattr(found, "item"):
        found = found.item()
    return {"found_inf": bool(found), "grads": list(grads), "scale": float(scaler.get_scale())}


def schedule(m, overflows, settings):
    """The scale after each update(found_inf) of a history of overflows."""
    import numpy as np

    scaler = m.DynamicLossScaler(**settings)
    scales = []
    for overflow in overflows:
        scaler.update(bool(overflow))
        scales.append(float(scaler.get_scale()))
    return np.array(scales)


def training(m, master, fp16_grads, settings, lr):
    """mixed_precision_step over a history of float16 gradients; the master weights, the returned
    flags and the scale after every step."""
    import numpy as np

    scaler = m.DynamicLossScaler(**settings)
    weights, skipped, scales = [], [], []
    for grads in fp16_grads:
        found = m.mixed_precision_step(master, grads, scaler, lr)
        if hasattr(found, "item"):
            found = found.item()
        skipped.append(bool(found))
        weights.append([p.clone() if hasattr(p, "clone") else p.copy() for p in master])
        scales.append(float(scaler.get_scale()))
    return {"weights": weights, "skipped": skipped, "scales": np.array(scales)}


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def _bits(rng, n):
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)


def _edge_values(rng):
    """Ties, NaNs with payloads, infinities, subnormals and the overflow boundary."""
    upper = rng.integers(0, 0x10000, 400).astype(np.uint32)
    ties = (upper << 16) | 0x8000
    near_ties = (upper << 16) | rng.choice([0x7FFF, 0x8001, 0xFFFF, 0x0001], 400).astype(np.uint32)
    # NaNs with payloads anywhere, and half of them only in the low 16 bits (rounding those
    # like numbers carries them into infinity).
    payload = np.where(
        rng.random(100) < 0.5, rng.integers(1, 0x10000, 100), rng.integers(1, 0x800000, 100)
    )
    nans = (rng.choice([0x7F80, 0xFF80], 100).astype(np.uint32) << 16) | payload.astype(np.uint32)
    subnormals = rng.integers(0, 0x800000, 100).astype(np.uint32) | (
        rng.integers(0, 2, 100).astype(np.uint32) << 31
    )
    fixed = np.array(
        [
            *(0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0xFF7F8000),
            *(0x00000000, 0x80000000, 0x7F800001, 0x7F80FFFF, 0xFF808000, 0x7FFFFFFF, 0xFFFFFFFF),
        ],
        dtype=np.uint32,
    )
    return np.concatenate([ties, near_ties, nans, subnormals, fixed])


def whole_range(seed):
    rng = np.random.default_rng(seed)
    bits = np.concatenate([_bits(rng, 6000), _edge_values(rng)])
    rng.shuffle(bits)
    return {"x": bits[:7000].view(np.float32).reshape(1000, 7)}


def activations_torch(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, size=(8, 33, 5)) * 10.0 ** rng.uniform(-5, 3, (8, 1, 1))).astype(
        np.float32
    )
    flat = x.reshape(-1)
    edges = _edge_values(rng).view(np.float32)
    picks = rng.choice(flat.size, 300, replace=False)
    flat[picks] = edges[rng.choice(edges.size, 300, replace=False)]
    return {"x": torch.from_numpy(x)}


def weights_column(seed):
    """A (64, 48) float32 matrix sliced to every third column: a strided view."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(64, 48)) * 0.02).astype(np.float32)
    return {"x": w[:, ::3]}


def big_numpy(seed):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=2**21).astype(np.float32) * np.float32(3e-3)}


def _grads(rng, shapes, spread):
    return [(rng.normal(size=s) * 10.0 ** rng.uniform(*spread)).astype(np.float32) for s in shapes]


def unscale_nan_numpy(seed):
    rng = np.random.default_rng(seed)
    grads = _grads(rng, [(5, 4), (7,), (2, 3, 3), (1,), (6, 6)], (-1, 4))
    grads[2][1, 0, 2] = np.nan  # an overflow that shows only as NaN
    return {"grads": grads, "init_scale": 2.0**10}


def unscale_clean_torch(seed):
    rng = np.random.default_rng(seed)
    grads = _grads(rng, [(3, 9), (9,), (4, 2)], (0, 5))
    return {"grads": [torch.from_numpy(g) for g in grads], "init_scale": 2.0**13}


def unscale_inf_torch(seed):
    rng = np.random.default_rng(seed)
    grads = _grads(rng, [(10,), (2, 5), (3,)], (0, 3))
    grads[1][1, 3] = -np.inf
    return {"grads": [torch.from_numpy(g) for g in grads], "init_scale": 2.0**5}


def _history(rng, steps, p_overflow):
    return (rng.random(steps) < p_overflow).tolist()


def schedule_custom(seed):
    rng = np.random.default_rng(seed)
    overflows = _history(rng, 60, 0.15)
    settings = {
        "init_scale": 2.0**20,
        "growth_factor": 4.0,
        "backoff_factor": 0.25,
        "growth_interval": 4,
    }
    return {"overflows": overflows, "settings": settings}


def schedule_defaults(seed):
    """The defaults over 4500 steps: two overflows, then a long clean run that grows twice."""
    overflows = [False] * 4500
    overflows[150] = overflows[1100] = True
    return {"overflows": overflows, "settings": {}}


def _training(
    seed, kind, shapes, steps, settings, lr, spread, size=1.0, overflow_steps=(), nan_steps=()
):
    """A history of float16 gradients for mixed_precision_step, following the scale a correct
    scaler has (the reference's rules), so the later steps see the scale that the earlier set.
    The master weights are about `size` in magnitude."""
    rng = np.random.default_rng(seed)
    master = [(rng.normal(size=s) * size).astype(np.float32) for s in shapes]
    scale = settings.get("init_scale", 2.0**16)
    interval = settings.get("growth_interval", 2000)
    clean, history = 0, []
    for t in range(steps):
        true = [rng.normal(size=s) * 10.0 ** rng.uniform(*spread) for s in shapes]
        with np.errstate(over="ignore"):
            grads = [(g * scale).astype(np.float16) for g in true]
        if t in overflow_steps:
            grads[0].flat[0] = np.inf
        if t in nan_steps:
            grads[-1].flat[-1] = np.nan
        history.append(grads)
        if any(not np.isfinite(g).all() for g in grads):
            scale, clean = scale * settings.get("backoff_factor", 0.5), 0
        else:
            clean += 1
            if clean == interval:
                scale, clean = scale * settings.get("growth_factor", 2.0), 0
    if kind == "torch":
        master = [torch.from_numpy(p) for p in master]
        history = [[torch.from_numpy(g) for g in grads] for grads in history]
    return {"master": master, "fp16_grads": history, "settings": settings, "lr": lr}


def training_numpy(seed):
    # Weights near 1e-4 and gradients from 1e-9 to 1e-4: at a scale of 2**16 the smallest would
    # flush to zero if unscaled in float16. One step overflows with inf, one with NaN only.
    return _training(
        seed,
        "numpy",
        [(6, 5), (5,), (3, 2, 2)],
        steps=9,
        settings={"init_scale": 2.0**16, "growth_interval": 3},
        lr=0.5,
        spread=(-9, -4),
        size=1e-4,
        overflow_steps={2},
        nan_steps={5},
    )


def training_torch(seed):
    # Gradients up to 10: at a scale of 2**14 the largest overflow float16 by themselves.
    return _training(
        seed,
        "torch",
        [(4, 7), (7,)],
        steps=8,
        settings={"init_scale": 2.0**14, "growth_factor": 4.0, "growth_interval": 2},
        lr=0.1,
        spread=(-4, 1),
        nan_steps={6},
    )


def small_updates(seed):
    """Weights near 4 and updates near 2**-12 of them, for 40 steps: float16 loses them all."""
    rng = np.random.default_rng(seed)
    shape = (3, 5)
    master = (4.0 + rng.uniform(-0.5, 0.5, shape)).astype(np.float32)
    scale = 2.0**8
    history = [
        [(rng.uniform(0.5, 1.0, shape) * 2.0**-10 * scale).astype(np.float16)] for _ in range(40)
    ]
    return {
        "master": [master],
        "fp16_grads": history,
        "settings": {"init_scale": scale, "growth_interval": 10**6},
        "lr": 1.0,
    }


CASES = [
    Case(
        "bfloat16 rounding of 1000 float32 values across the whole range (numpy)",
        call=round_values,
        inputs=whole_range,
        points=3,
        seed=101,
        **EXACT,
    ),
    Case(
        "bfloat16 rounding of a torch tensor (8, 33, 5) with ties, NaNs and subnormals; the "
        "input is left as it was",
        call=round_and_keep_input,
        inputs=activations_torch,
        points=2,
        seed=202,
        **EXACT,
    ),
    Case(
        "bfloat16 rounding of a strided view (every third column of a weight matrix)",
        call=round_values,
        inputs=weights_column,
        points=1,
        seed=303,
        **EXACT,
    ),
    Case(
        "bfloat16 rounding of 2**21 values (speed)",
        call=round_sample,
        inputs=big_numpy,
        points=1,
        seed=404,
        speed_ratio=5.0,
        speed_points=2,
        **EXACT,
    ),
    Case(
        "unscale_ of 5 numpy gradients, one NaN and no inf",
        call=unscale,
        inputs=unscale_nan_numpy,
        points=2,
        seed=505,
        **FLOAT32,
    ),
    Case(
        "unscale_ of 3 finite torch gradients at a scale of 2**13",
        call=unscale,
        inputs=unscale_clean_torch,
        points=1,
        seed=606,
        **FLOAT32,
    ),
    Case(
        "unscale_ of 3 torch gradients, one -inf",
        call=unscale,
        inputs=unscale_inf_torch,
        points=1,
        seed=707,
        **FLOAT32,
    ),
    Case(
        "the scale over 60 steps: growth_interval 4, growth_factor 4, backoff_factor 1/4",
        call=schedule,
        inputs=schedule_custom,
        points=2,
        seed=808,
        **EXACT,
    ),
    Case(
        "the scale with the default settings over 4500 steps, two overflows",
        call=schedule,
        inputs=schedule_defaults,
        points=1,
        seed=909,
        **EXACT,
    ),
    Case(
        "mixed-precision SGD on numpy: 9 steps, 3 weights, gradients down to 1e-9, an inf and a "
        "NaN step",
        call=training,
        inputs=training_numpy,
        points=3,
        seed=1010,
        **FLOAT32,
    ),
    Case(
        "mixed-precision SGD on torch: 8 steps, gradients up to 10 that overflow float16",
        call=training,
        inputs=training_torch,
        points=2,
        seed=1111,
        **FLOAT32,
    ),
    Case(
        "40 updates of 2**-12 of the weight accumulate in the float32 master weights",
        call=training,
        inputs=small_updates,
        points=2,
        seed=1212,
        **FLOAT32,
    ),
]
