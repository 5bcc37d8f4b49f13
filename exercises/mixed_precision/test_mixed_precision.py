"""Public specs for `mixed_precision`: `pytest exercises/mixed_precision` (`--impl=solutions`: the
reference).

Oracles: torch's x.to(torch.bfloat16) for the rounding; torch.amp.GradScaler (on the CPU) driving
plain SGD for the loss scaler and the step; the definition of "nearest, ties to even" checked
bit by bit; and float16's and float32's own arithmetic for the paper's two demonstrations (small
gradients vanish without loss scaling, small updates vanish without float32 master weights).
Every spec runs on numpy arrays and on torch tensors, on the CPU and on CUDA when present. No spec
is statistical: every input comes from a fixed seed or is written out, and every check is exact or
within a stated rounding tolerance.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, describe, fail

F16_SMALLEST = 2.0**-24  # float16's smallest positive (subnormal) value, about 6e-8
seeds = st.integers(0, 2**16)


class Kind:
    """Numpy arrays, or torch tensors on a device: what the specs hand to the learner's code."""

    def __init__(self, name, device):
        self.name, self.device = name, device

    def __call__(self, a):
        a = np.array(a, copy=True)
        return a if self.name == "numpy" else torch.from_numpy(a).to(self.device)

    def __str__(self):
        return "numpy" if self.name == "numpy" else f"torch on {self.device}"


@pytest.fixture(scope="module", params=["numpy", "torch"])
def kind(request, device):
    if request.param == "numpy" and device != "cpu":
        pytest.skip("numpy arrays live on the CPU; the CPU run covers them")
    return Kind(request.param, device)


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def hex32(v):
    return f"0x{int(np.float32(v).view(np.uint32)):08X}"


def show(v):
    """A float32 with its bit pattern: 1.00391 (0x3F808000)."""
    return f"{float(v):.9g} ({hex32(v)})"


def check_like(actual, x, what):
    """actual is of x's kind, shape and device, and float32."""
    if isinstance(x, torch.Tensor) != isinstance(actual, torch.Tensor):
        want, got = (type(v).__module__.split(".")[0] for v in (x, actual))
        fail(f"{what} returned a {type(actual).__name__} ({got}); for {want} input return {want}")
    if tuple(actual.shape) != tuple(x.shape):
        fail(f"{what} returned shape {tuple(actual.shape)}; expected x's {tuple(x.shape)}")
    if str(actual.dtype).removeprefix("torch.") != "float32":
        fail(f"{what} returned dtype {actual.dtype}; expected float32, like x")
    if isinstance(x, torch.Tensor) and actual.device != x.device:
        fail(f"{what} returned a tensor on {actual.device}; expected it on {x.device}, like x")


def check_bits(actual, x, expected, what, why=""):
    """actual equals expected bit for bit (any NaN matches any NaN)."""
    check_like(actual, x, what)
    a, e, xs = (to_numpy(v).ravel() for v in (actual, expected, x))
    wrong = (a.view(np.uint32) != e.view(np.uint32)) & ~(np.isnan(a) & np.isnan(e))
    if wrong.any():
        i = int(np.argmax(wrong))
        fail(
            f"{what}: {int(wrong.sum())} of {a.size} values differ; x = {show(xs[i])} should "
            f"round to {show(e[i])}, got {show(a[i])}" + (f"; {why}" if why else "")
        )


def torch_bfloat16(x):
    """The oracle: torch's own conversion, back in float32 (for numpy input, on the CPU)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
    out = t.to(torch.bfloat16).to(torch.float32)
    return out if isinstance(x, torch.Tensor) else out.numpy()


def float32_values(seed, shape):
    """Half random bit patterns (every exponent, NaNs and infinities too), half typical values
    between 1e-30 and 1e30 with random low bits."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    typical = (rng.normal(size=n) * np.exp(rng.uniform(-69, 69, n))).astype(np.float32)
    return np.where(rng.random(n) < 0.5, bits, typical).reshape(shape)


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


# -- round_to_bfloat16 ---------------------------------------------------------------------------


@given(shape=shapes, seed=seeds, strided=st.booleans())
def test_bfloat16_matches_torch(impl, kind, shape, seed, strided):
    x = kind(float32_values(seed, shape))
    if strided:  # a transposed view: x.view(int32) must work on it too
        x = x.T if kind.name == "numpy" else x.mT if x.ndim > 1 else x
    what = f"round_to_bfloat16(x {tuple(x.shape)} float32, {kind})"
    check_bits(impl.round_to_bfloat16(x), x, torch_bfloat16(x), what + " vs x.to(torch.bfloat16)")


@given(seed=seeds, n=st.integers(1, 40))
def test_bfloat16_ties_round_to_even(impl, kind, seed, n):
    rng = np.random.default_rng(seed)
    # Upper halves of finite floats (exponent below 0xFF), both signs; low half exactly 0x8000:
    # every x lies exactly halfway between two bfloat16 values.
    upper = rng.integers(0, 0x7F7F, n) | (rng.integers(0, 2, n) << 15)
    fixed = [0x3F80, 0x3F81, 0xBF80, 0xBF81, 0x0000, 0x0001]  # 1 + 2**-8, 1 + 3 * 2**-8, ...
    upper = np.concatenate([fixed, upper]).astype(np.uint32)
    x = ((upper << 16) | 0x8000).view(np.float32)
    even = ((upper + (upper & 1)) << 16).view(np.float32)  # the neighbour with an even last bit
    x_k = kind(x)
    check_bits(
        impl.round_to_bfloat16(x_k),
        x_k,
        kind(even),
        f"round_to_bfloat16(x ({x.size},) float32 of exact ties, {kind})",
        "x is exactly halfway, and a tie goes to the neighbour whose last kept bit is 0 "
        "(1 + 2**-8 rounds down to 1, 1 + 3 * 2**-8 up to 1 + 2**-6)",
    )


def test_bfloat16_keeps_nan_and_infinity(impl, kind):
    special = [
        (0x7F800001, "a NaN with payload 1 (its low bits must not carry it into infinity)"),
        (0x7F80FFFF, "a NaN whose payload fills the low half"),
        (0x7FBF8000, "a NaN that sits on a tie"),
        (0x7FC00000, "the quiet NaN"),
        (0x7FFFFFFF, "a NaN with every payload bit set (it must not wrap around to -0)"),
        (0xFF800001, "a negative NaN with payload 1"),
        (0xFFFFFFFF, "a negative NaN with every payload bit set"),
        (0x7F800000, "+inf"),
        (0xFF800000, "-inf"),
        (0x7F7FFFFF, "the largest float32, beyond bfloat16's largest: infinity"),
        (0x7F7F8000, "a tie between bfloat16's largest value and infinity: to even, infinity"),
        (0x7F7F7FFF, "just below that tie: bfloat16's largest value, 3.3895e38"),
        (0xFF7F8001, "just past the tie below bfloat16's most negative value: -infinity"),
    ]
    bits = np.array([b for b, _ in special], dtype=np.uint32)
    x = kind(bits.view(np.float32))
    out = impl.round_to_bfloat16(x)
    what = f"round_to_bfloat16(x ({bits.size},) float32 of NaNs, infinities and extremes, {kind})"
    check_like(out, x, what)
    a, e = to_numpy(out), to_numpy(torch_bfloat16(x))
    for i, (_, name) in enumerate(special):
        same = (np.isnan(a[i]) and np.isnan(e[i])) or a[i].view(np.uint32) == e[i].view(np.uint32)
        if not same:
            fail(
                f"{what}: x = {hex32(bits.view(np.float32)[i])} ({name}) should give "
                f"{float(e[i]):.6g}; got {show(a[i])}"
            )


@given(shape=shapes, seed=seeds)
def test_bfloat16_is_the_nearest_bfloat16(impl, kind, shape, seed):
    x = float32_values(seed, shape)
    x = x[np.isfinite(x) & (np.abs(x) < 3e38)]  # far from overflow: both neighbours are finite
    if x.size == 0:
        return
    x_k = kind(x)
    out = impl.round_to_bfloat16(x_k)
    what = f"round_to_bfloat16(x ({x.size},) float32 of finite values, {kind})"
    check_like(out, x_k, what)
    out = to_numpy(out)
    low = out.view(np.uint32) & 0xFFFF
    if low.any():
        i = int(np.argmax(low != 0))
        fail(
            f"{what}: x = {show(x[i])} gave {show(out[i])}, which is no bfloat16 value: a "
            "bfloat16 is the upper 16 bits of a float32, so the low 16 bits must be 0"
        )
    # The two bfloat16 values around x: x with its low half cut off, and the next one away from 0.
    down = (x.view(np.uint32) & 0xFFFF0000).view(np.float32)
    up = ((x.view(np.uint32) & 0xFFFF0000) + 0x10000).view(np.float32)
    x64, d64, u64, o64 = (v.astype(np.float64) for v in (x, down, up, out))
    nearest = np.where(np.abs(x64 - d64) <= np.abs(x64 - u64), down, up)
    best = np.minimum(np.abs(x64 - d64), np.abs(x64 - u64))
    wrong = ((o64 != d64) & (o64 != u64)) | (np.abs(x64 - o64) > best)
    if wrong.any():
        i = int(np.argmax(wrong))
        fail(
            f"{what}: x = {show(x[i])} lies between the bfloat16 values {show(down[i])} and "
            f"{show(up[i])}; the nearest is {show(nearest[i])}, got {show(out[i])}"
        )


def test_bfloat16_keeps_small_gradients_without_scaling(impl, kind):
    # bfloat16 has float32's 8 exponent bits: gradients of 1e-30 and activations of 1e30 keep
    # about 3 significant digits, where float16 gives 0 and inf. So bfloat16 needs no loss scale.
    values = np.array([1e-10, -3e-20, 1e-30, 2e-38, 5e-8, 7e4, -1e30, 1e38], dtype=np.float32)
    with np.errstate(over="ignore"):
        as_float16 = values.astype(np.float16)  # 0, -0, 0, 0, 5.96e-8, inf, -inf, inf
    assert (as_float16[[0, 1, 2, 3]] == 0).all() and np.isinf(as_float16[[5, 6, 7]]).all()
    out = impl.round_to_bfloat16(kind(values))
    what = f"round_to_bfloat16(x ({values.size},) float32 from 2e-38 to 1e38, {kind})"
    check_like(out, kind(values), what)
    a = to_numpy(out).astype(np.float64)
    error = np.abs(a - values) / np.abs(values)
    if not (error <= 2.0**-8).all():
        i = int(np.argmax(~(error <= 2.0**-8)))
        fail(
            f"{what}: x = {values[i]:.6g} gave {a[i]:.6g}; bfloat16 keeps every float32 magnitude "
            "within 2**-8 relative (float16 would give 0 or inf here: did you round to float16, "
            "5 exponent bits, instead of bfloat16, 8?)"
        )


def test_bfloat16_leaves_its_input_alone(impl, kind):
    x_np = float32_values(7, (5, 9))
    x = kind(x_np)
    impl.round_to_bfloat16(x)
    after = to_numpy(x)
    same = (after.view(np.uint32) == x_np.view(np.uint32)).all()
    if not same:
        fail(
            f"round_to_bfloat16(x (5, 9) float32, {kind}) changed x itself: x.view(int32) "
            "shares x's memory, so `bits += ...` or `bits &= ...` rewrites the caller's array; "
            "compute new arrays (bits + ...) instead"
        )


# -- DynamicLossScaler ---------------------------------------------------------------------------


def scale_of(scaler, what):
    s = scaler.get_scale()
    if not isinstance(s, float | int) or isinstance(s, bool):
        fail(f"{what}.get_scale() should return a Python float; got {type(s).__name__} {s!r}")
    return float(s)


def found_of(found, what):
    if isinstance(found, torch.Tensor) and found.numel() == 1:
        found = found.item()
    if not isinstance(found, bool | np.bool_):
        fail(f"{what} should return found_inf, a bool; got {type(found).__name__} {found!r}")
    return bool(found)


def test_scaler_starts_at_init_scale_and_scales_the_loss(impl, kind):
    scaler = impl.DynamicLossScaler()
    if scale_of(scaler, "DynamicLossScaler()") != 65536.0:
        fail(f"DynamicLossScaler() should start at 2**16 = 65536; got {scaler.get_scale()!r}")
    custom = impl.DynamicLossScaler(init_scale=3.0, growth_interval=7)
    if scale_of(custom, "DynamicLossScaler(init_scale=3.0)") != 3.0:
        fail(f"DynamicLossScaler(init_scale=3.0) should start at 3.0; got {custom.get_scale()!r}")
    got = scaler.scale(2.5)
    if not isinstance(got, float) or got != 2.5 * 65536:
        fail(f"DynamicLossScaler().scale(2.5) should be 2.5 * 65536 = 163840.0; got {got!r}")
    loss = kind(np.array([0.5, -3.25, 1e-3], dtype=np.float32))
    expected = kind(np.array([0.5, -3.25, 1e-3], dtype=np.float32) * np.float32(3.0))
    assert_close(
        custom.scale(loss),
        expected,
        what=f"DynamicLossScaler(init_scale=3.0).scale(loss (3,) float32, {kind})",
        rtol=0,
        atol=0,
    )


class PlainSGD:
    """What torch.optim.SGD does without momentum (p -= lr * p.grad), as the optimiser that
    torch.amp.GradScaler drives; torch.optim itself would cost seconds of imports."""

    def __init__(self, params, lr):
        self.param_groups, self.lr = [{"params": list(params)}], lr

    def step(self):
        with torch.no_grad():
            for p in self.param_groups[0]["params"]:
                p.add_(p.grad, alpha=-self.lr)


def torch_unscale(grads, init_scale):
    """torch.amp.GradScaler.unscale_ on CPU copies: (unscaled grads as numpy, found_inf)."""
    params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.from_numpy(g.copy())
    opt = PlainSGD(params, lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    scaler.scale(torch.ones(()))  # the scaler makes its scale on first use
    scaler.unscale_(opt)
    found = sum(v.item() for v in scaler._found_inf_per_device(opt).values()) > 0
    return [p.grad.numpy() for p in params], found


@st.composite
def gradient_lists(draw):
    """1 to 4 float32 gradients of different shapes and sizes, sometimes with inf or NaN."""
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    grads = []
    for _ in range(draw(st.integers(1, 4))):
        shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
        g = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 5)
        grads.append(g.astype(np.float32))
    bad = draw(st.sampled_from([None, np.inf, -np.inf, np.nan]))
    if bad is not None:
        g = grads[draw(st.integers(0, len(grads) - 1))]
        g.flat[draw(st.integers(0, g.size - 1))] = bad
    return grads


@given(grads=gradient_lists(), init_scale=st.sampled_from([1.0, 2.0**10, 2.0**16, 3.0, 1e4]))
def test_unscale_matches_grad_scaler(impl, kind, grads, init_scale):
    expected, expected_found = torch_unscale(grads, init_scale)
    mine = [kind(g) for g in grads]
    scaler = impl.DynamicLossScaler(init_scale=init_scale)
    what = (
        f"DynamicLossScaler(init_scale={init_scale:g}).unscale_(grads: "
        f"{', '.join(str(tuple(g.shape)) for g in grads)} float32, {kind})"
    )
    found = found_of(scaler.unscale_(mine), what)
    if found != expected_found:
        fail(f"{what} returned found_inf={found}; torch.amp.GradScaler finds {expected_found}")
    for i, (g, e) in enumerate(zip(mine, expected, strict=True)):
        # Dividing by the scale or multiplying by its float32 reciprocal: at most 1 ulp apart.
        assert_close(to_numpy(g), e, what=f"{what}: grads[{i}] afterwards", rtol=1e-6, atol=0)


def test_unscale_divides_in_place(impl, kind):
    grads = [
        kind(np.array([[1024.0, -64.0], [8.0, 0.5]], np.float32)),
        kind(np.full(3, 96.0, np.float32)),
    ]
    objects = list(grads)
    scaler = impl.DynamicLossScaler(init_scale=32.0)
    what = f"DynamicLossScaler(init_scale=32.0).unscale_([(2, 2), (3,)] float32, {kind})"
    found = found_of(scaler.unscale_(grads), what)
    if found:
        fail(f"{what} returned found_inf=True; every value is finite, so found_inf is False")
    if any(a is not b for a, b in zip(grads, objects, strict=True)) or len(grads) != 2:
        fail(f"{what} replaced items of the list; divide each gradient where it lies")
    for i, expected in enumerate([np.array([[32.0, -2.0], [0.25, 1 / 64]]), np.full(3, 3.0)]):
        got = to_numpy(objects[i])
        if not np.array_equal(got, expected.astype(np.float32)):
            fail(
                f"{what}: grads[{i}] holds {got.tolist()} afterwards; it should hold "
                f"{expected.tolist()}, the gradient divided by 32 in place (the trailing "
                "underscore: g *= 1 / scale changes the array the caller holds; g = g / scale "
                "makes a new one that the caller never sees)"
            )
    if scale_of(scaler, what) != 32.0:
        fail(f"{what} changed the scale to {scaler.get_scale()}; only update() changes it")


def test_found_inf_sees_nan_and_inf(impl, kind):
    big = float(np.finfo(np.float32).max)
    situations = [
        ("all finite, up to float32's largest value", [[1.0, -2.0], [big, -big]], False),
        ("a NaN (an overflow that became inf - inf or 0 * inf)", [[1.0, np.nan], [3.0]], True),
        ("+inf", [[1.0, 2.0], [np.inf]], True),
        ("-inf in the last gradient", [[1.0], [2.0, 3.0, -np.inf]], True),
        ("NaN and inf together", [[np.nan, np.inf], [0.0]], True),
    ]
    for name, values, expected in situations:
        grads = [kind(np.array(v, dtype=np.float32)) for v in values]
        what = f"DynamicLossScaler().unscale_(grads with {name}, {kind})"
        found = found_of(impl.DynamicLossScaler().unscale_(grads), what)
        if found != expected:
            fail(
                f"{what} returned found_inf={found}; expected {expected}: found_inf is True when "
                "any value is inf or NaN (isfinite is False for both), else False"
            )


def torch_schedule(overflows, init_scale, growth_factor, backoff_factor, growth_interval):
    """The scale after each step, by torch.amp.GradScaler, given which steps overflowed."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = PlainSGD([p], lr=0.0)
    scaler = torch.amp.GradScaler(
        "cpu",
        init_scale=init_scale,
        growth_factor=growth_factor,
        backoff_factor=backoff_factor,
        growth_interval=growth_interval,
    )
    scales = []
    for overflow in overflows:
        scaler.scale(torch.ones(()))
        p.grad = torch.tensor([np.inf if overflow else 1.0])
        scaler.step(opt)  # unscales, checks for inf and NaN, skips the step on an overflow
        scaler.update()
        scales.append(scaler.get_scale())
    return scales


def check_schedule(impl, settings, overflows, expected, rtol):
    scaler = impl.DynamicLossScaler(**settings)
    args = ", ".join(f"{k}={v:g}" for k, v in settings.items())
    what = f"DynamicLossScaler({args})"
    for step, overflow in enumerate(overflows):
        scaler.update(overflow)
        got = scale_of(scaler, what)
        if not math.isclose(got, expected[step], rel_tol=rtol):
            history = "".join("x" if o else "." for o in overflows[: step + 1])
            fail(
                f"{what}, update(found_inf) for the steps {history} ('x' an overflow, '.' a clean "
                f"step): after step {step + 1} the scale should be {expected[step]:g}, got "
                f"{got:g}. Each overflow multiplies the scale by backoff_factor and restarts the "
                "count of clean steps; the growth_interval-th clean step in a row multiplies it "
                "by growth_factor and restarts the count"
            )


@given(
    overflows=st.lists(st.booleans(), min_size=1, max_size=30),
    init_scale=st.sampled_from([1.0, 2.0**7, 2.0**16, 1000.0]),
    growth_factor=st.sampled_from([2.0, 4.0, 1.5]),
    backoff_factor=st.sampled_from([0.5, 0.25, 0.8]),
    growth_interval=st.integers(1, 5),
)
def test_scale_schedule_matches_grad_scaler(
    impl, overflows, init_scale, growth_factor, backoff_factor, growth_interval
):
    settings = {
        "init_scale": init_scale,
        "growth_factor": growth_factor,
        "backoff_factor": backoff_factor,
        "growth_interval": growth_interval,
    }
    expected = torch_schedule(overflows, **settings)
    # torch keeps the scale in float32: after 30 products by 1.5 or 0.8 it is off by up to 2e-6.
    check_schedule(impl, settings, overflows, expected, rtol=1e-5)


def test_scale_grows_after_growth_interval_clean_steps(impl):
    # growth_interval=3, from 8: three clean steps double it; an overflow halves it and restarts
    # the count, so two clean steps before an overflow and two after it do not add up to three.
    overflows = [False] * 3 + [False, False, True] + [False, False, False] + [False] * 3
    expected = [8, 8, 16, 16, 16, 8, 8, 8, 16, 16, 16, 32]
    settings = {"init_scale": 8.0, "growth_interval": 3}
    check_schedule(impl, settings, overflows, [float(e) for e in expected], rtol=0)


# -- mixed_precision_step ------------------------------------------------------------------------


def torch_sgd_steps(master, true_grads, lr, **settings):
    """torch's version: float32 parameters, GradScaler and SGD. Each step's float16 gradients are
    the true ones times the scale of the moment (an overflow gives inf). Returns, per step, the
    float16 gradients, the master weights after it, whether it was skipped, and the scale."""
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in master]
    opt = PlainSGD(params, lr=lr)
    scaler = torch.amp.GradScaler("cpu", **settings)
    fp16, weights, skipped, scales = [], [], [], []
    for step_grads in true_grads:
        with np.errstate(over="ignore"):  # the backward pass in float16, on the scaled loss
            fp16.append([(g * scaler.get_scale()).astype(np.float16) for g in step_grads])
        scaler.scale(torch.ones(()))
        for p, g in zip(params, fp16[-1], strict=True):
            p.grad = torch.from_numpy(g.astype(np.float32))
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        weights.append([p.detach().numpy().copy() for p in params])
        skipped.append(scaler.get_scale() < before)  # only an overflow lowers the scale
        scales.append(scaler.get_scale())
    return fp16, weights, skipped, scales


@given(
    seed=seeds,
    n_params=st.integers(1, 3),
    steps=st.integers(1, 4),
    init_scale=st.sampled_from([2.0**8, 2.0**12, 2.0**16]),
    lr=st.sampled_from([1.0, 0.1, 0.01]),
)
def test_step_matches_torch_sgd_with_grad_scaler(impl, kind, seed, n_params, steps, init_scale, lr):
    rng = np.random.default_rng(seed)
    shapes = [
        tuple(int(n) for n in rng.integers(1, 5, rng.integers(1, 3))) for _ in range(n_params)
    ]
    master = [rng.normal(size=s).astype(np.float32) for s in shapes]
    settings = {"init_scale": init_scale, "growth_interval": 2}
    # The true gradients span 1e-6 to 10: scaled by 2**16, the largest overflow float16 (65504)
    # and that step is skipped; the scale then backs off and later steps go through.
    true = [[rng.normal(size=s) * 10.0 ** rng.uniform(-6, 1) for s in shapes] for _ in range(steps)]
    fp16, weights, skipped, scales = torch_sgd_steps(master, true, lr, **settings)

    mine = [kind(p) for p in master]
    scaler = impl.DynamicLossScaler(**settings)
    for t in range(steps):
        grads = [kind(g) for g in fp16[t]]
        what = (
            f"mixed_precision_step(master_params: {', '.join(map(str, shapes))} float32, "
            f"fp16_grads of the same shapes float16, DynamicLossScaler(init_scale="
            f"{init_scale:g}, growth_interval=2), lr={lr:g}), {kind}, step {t + 1} of {steps}"
        )
        found = found_of(impl.mixed_precision_step(mine, grads, scaler, lr), what)
        if found != skipped[t]:
            fail(
                f"{what} returned {found}; expected {skipped[t]} (True exactly when a float16 "
                "gradient holds inf or NaN, and the step is then skipped)"
            )
        for i, (p, e) in enumerate(zip(mine, weights[t], strict=True)):
            # One rounding of p - lr * g in float32 more or less than torch's: 1e-6 of |p| + 1e-7.
            assert_close(
                to_numpy(p),
                e,
                what=f"{what}: master_params[{i}] afterwards (GradScaler with SGD)",
                rtol=1e-6,
                atol=1e-7,
            )
        for i, g in enumerate(grads):
            if not np.array_equal(to_numpy(g), fp16[t][i], equal_nan=True):
                fail(f"{what} changed fp16_grads[{i}]; work on float32 copies, leave them alone")
        got = scale_of(scaler, what)
        if got != scales[t]:
            fail(
                f"{what}: afterwards the scaler's scale should be {scales[t]:g}, got {got:g}; "
                "call scaler.update(found_inf) exactly once per step, skipped or not (the "
                "scaler's own rules are checked by the test_scale_* specs)"
            )


def test_step_skips_on_overflow(impl, kind):
    master_np = [np.array([0.5, -1.25, 2.0], np.float32), np.array([[3.0]], np.float32)]
    master = [kind(p) for p in master_np]
    scaler = impl.DynamicLossScaler(init_scale=1024.0)
    for name, bad in [("inf", np.inf), ("NaN", np.nan)]:
        grads = [kind(np.array([1.0, bad, -2.0], np.float16)), kind(np.array([[4.0]], np.float16))]
        before = scale_of(scaler, "DynamicLossScaler(init_scale=1024.0)")
        what = (
            f"mixed_precision_step(master_params (3,), (1, 1) float32, fp16_grads holding {name}, "
            f"scaler at scale {before:g}, lr=0.5), {kind}"
        )
        found = found_of(impl.mixed_precision_step(master, grads, scaler, 0.5), what)
        if found is not True:
            fail(f"{what} returned {found}; it should return True: the gradients overflowed")
        for i, (p, e) in enumerate(zip(master, master_np, strict=True)):
            if not np.array_equal(to_numpy(p), e):
                fail(
                    f"{what} changed master_params[{i}] to {to_numpy(p).tolist()}; an overflow "
                    f"must skip the update and leave every master weight at {e.tolist()}"
                )
        if scale_of(scaler, what) != before / 2:
            fail(
                f"{what}: the scale should back off to {before / 2:g}, got {scaler.get_scale():g}; "
                "call scaler.update(found_inf) on skipped steps too, or it never shrinks"
            )
    grads = [kind(np.array([256.0, 0.0, -512.0], np.float16)), kind(np.array([[64.0]], np.float16))]
    what = (
        f"mixed_precision_step(master_params (3,), (1, 1) float32, finite fp16_grads, scaler at "
        f"scale 256, lr=0.5), {kind}, after two skipped steps"
    )
    if found_of(impl.mixed_precision_step(master, grads, scaler, 0.5), what):
        fail(f"{what} returned True; the gradients are finite, so the step is taken: False")
    for i, e in enumerate([[0.0, -1.25, 3.0], [[2.875]]]):
        assert_close(
            to_numpy(master[i]),
            np.array(e, np.float32),
            what=f"{what}: master_params[{i}] (p - 0.5 * g / 256)",
            rtol=0,
            atol=0,
        )


def test_small_gradients_vanish_in_float16_without_scaling(impl, kind):
    # Gradients between 1e-9 and 2.9e-8, like many activation gradients in the paper's Figure 3:
    # all below half of float16's smallest value, 2**-24, so float16 rounds each of them to 0.
    rng = np.random.default_rng(3)
    true = np.exp(rng.uniform(np.log(1e-9), np.log(2.9e-8), 12)) * rng.choice([-1, 1], 12)
    assert (true.astype(np.float16) == 0).all()
    lr = 1.0

    # Without scaling (a scale of 1, never growing): the float16 gradients are all zero.
    master = [kind(np.zeros(12, np.float32))]
    scaler = impl.DynamicLossScaler(init_scale=1.0, growth_interval=10**6)
    impl.mixed_precision_step(master, [kind(true.astype(np.float16))], scaler, lr)
    if np.any(to_numpy(master[0]) != 0):
        fail(
            f"mixed_precision_step with a scale of 1 and float16 gradients that are all 0 "
            f"({kind}) moved the master weights to {to_numpy(master[0])[:3].tolist()}...; "
            "a zero gradient must not change them"
        )

    # With a scale of 2**16 the scaled gradients, 6.6e-5 to 1.9e-3, are normal float16 numbers
    # with 11 significant bits; unscaled in float32 they come back within 2**-11 relative.
    scale = 2.0**16
    fp16 = (true * scale).astype(np.float16)
    master = [kind(np.zeros(12, np.float32))]
    scaler = impl.DynamicLossScaler(init_scale=scale)
    impl.mixed_precision_step(master, [kind(fp16)], scaler, lr)
    what = (
        f"mixed_precision_step(master_params (12,) float32 zeros, fp16_grads (12,) float16 = "
        f"(gradients of 1e-9 to 2.9e-8) * 2**16, DynamicLossScaler(init_scale=2**16), lr=1), "
        f"{kind}: the master weights should be -g, the gradients recovered in float32"
    )
    got = to_numpy(master[0])
    if np.any(got == 0):
        fail(
            f"{what}; {int((got == 0).sum())} of 12 are still 0: the gradients were lost. Convert "
            "the float16 gradients to float32 *before* dividing by the scale: g / 2**16 in float16 "
            "is below float16's smallest value and flushes to 0"
        )
    assert_close(got, -(fp16.astype(np.float32) / np.float32(scale)), what=what, rtol=0, atol=0)
    assert_close(got.astype(np.float64), -true, what=what + " (vs the true g)", rtol=2**-11, atol=0)


def test_master_weights_keep_small_updates(impl, kind):
    # The update lr * g = 2**-13 is a quarter of the gap between float16 numbers just below 1
    # (2**-11): a float16 weight rounds 1 - 2**-13 back to 1 and never moves. A float32 master
    # weight takes each update exactly: 16 steps give 1 - 16 * 2**-13 = 1 - 2**-9.
    assert np.float16(1) - np.float16(2**-13) == np.float16(1)
    master = [kind(np.ones(4, np.float32))]
    scaler = impl.DynamicLossScaler(init_scale=2.0**10, growth_interval=1000)
    g = kind(np.full(4, 2**-13 * 2**10, np.float16))  # the gradient 2**-13, scaled by 2**10
    for _ in range(16):
        impl.mixed_precision_step(master, [g], scaler, 1.0)
    got = to_numpy(master[0])
    if not np.all(got == np.float32(1 - 2**-9)):
        fail(
            f"mixed_precision_step, 16 steps on master weights of 1.0 with lr * g = 2**-13 "
            f"({kind}): the master weights should be 1 - 2**-9 = {1 - 2**-9}, got "
            f"{float(got[0]):.9g}. "
            + (
                "They never moved: the update was rounded through float16, which cannot tell "
                "1 - 2**-13 from 1. Keep the master weights and the update in float32"
                if np.all(got == 1)
                else "Apply p -= lr * g / scale in float32 on each step"
            )
        )


def test_step_by_hand(impl, kind):
    # Lists of weights of different shapes, each with its own gradient, updated in place.
    shapes = [(2, 3), (3,), (1, 1, 2)]
    master = [kind(np.full(s, 1.0, np.float32)) for s in shapes]
    grads = [kind(np.full(s, 2.0**k, np.float16)) for k, s in enumerate(shapes)]
    scaler = impl.DynamicLossScaler(init_scale=4.0)
    what = f"mixed_precision_step({describe(**{f'p{i}': p for i, p in enumerate(master)})}, ...)"
    impl.mixed_precision_step(master, grads, scaler, 2.0)
    for k, p in enumerate(master):
        # p = 1 - 2 * 2**k / 4: 0.5, 0 and -1
        assert_close(
            to_numpy(p),
            np.full(shapes[k], 1 - 2.0**k / 2, np.float32),
            what=f"{what} ({kind}): master_params[{k}] after one step with g = 2**{k} / 4, lr = 2",
            rtol=0,
            atol=0,
        )
