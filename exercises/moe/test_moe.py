"""Specs for moe: `pytest exercises/moe` (`--impl=solutions`: the reference)."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, chernoff_gap, describe, fail

DTYPES = [torch.float32, torch.float64]
# A few dozen products and one softmax per value: float32 keeps about 6 digits of them.
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}
DELTA = 1e-7  # the chance of a false failure that the statistical spec allows itself


def randn(*shape, seed=0, dtype=torch.float64, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


def top_k_softmax(logits, k):
    """The oracle: softmax over each row's k largest logits, exact zeros elsewhere."""
    top, index = logits.topk(k, dim=-1)
    gates = torch.zeros_like(logits)
    return gates.scatter(-1, index, torch.softmax(top, dim=-1))


# -- noisy_top_k_gating ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    N=st.integers(1, 12),
    d=st.integers(1, 8),
    E=st.integers(1, 9),
    k=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_gating_eval_is_top_k_softmax(impl, device, dtype, N, d, E, k, seed):
    k = min(k, E)
    x, w_gate, w_noise = (
        randn(*s, seed=seed + i, dtype=dtype, device=device)
        for i, s in enumerate([(N, d), (d, E), (d, E)])
    )
    what = (
        f"noisy_top_k_gating({describe(x=x, w_gate=w_gate, w_noise=w_noise)}, k={k}, train=False)"
    )
    gates = impl.noisy_top_k_gating(x, w_gate, w_noise, k, False)
    rtol, atol = TOL[dtype]
    assert_close(
        gates,
        top_k_softmax(x @ w_gate, k),
        what=what + " (no noise: softmax over the k largest of x @ w_gate, 0 elsewhere)",
        rtol=rtol,
        atol=atol,
    )


def test_gating_eval_draws_no_noise(impl, device):
    x, w_gate, w_noise = randn(64, 6, seed=1), randn(6, 5, seed=2), randn(6, 5, seed=3)
    x, w_gate, w_noise = x.to(device), w_gate.to(device), 3.0 + w_noise.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    state = g.get_state()
    gates = impl.noisy_top_k_gating(x, w_gate, w_noise, 2, False, g)
    if not torch.equal(g.get_state(), state):
        fail(
            "noisy_top_k_gating(..., train=False, generator): the generator was used; at "
            "evaluation H(x) = x @ w_gate, with no noise and nothing drawn"
        )
    assert_close(
        gates,
        top_k_softmax(x @ w_gate, 2),
        what="noisy_top_k_gating(x (64, 6), k=2, train=False) with a large noise scale "
        "(softplus(x @ w_noise) near 3): evaluation adds no noise",
        rtol=1e-10,
        atol=1e-10,
    )


@given(N=st.integers(1, 20), E=st.integers(2, 8), k=st.integers(1, 8), seed=st.integers(0, 999))
def test_gating_train_keeps_k_experts(impl, device, N, E, k, seed):
    k = min(k, E)
    x, w_gate = randn(N, 5, seed=seed, device=device), randn(5, E, seed=seed + 1, device=device)
    w_noise = randn(5, E, seed=seed + 2, device=device) + 1.0
    what = f"noisy_top_k_gating(x ({N}, 5), E={E}, k={k}, train=True)"
    gates = impl.noisy_top_k_gating(
        x, w_gate, w_noise, k, True, torch.Generator(device=device).manual_seed(seed)
    )
    if gates.shape != (N, E):
        fail(f"{what} returned shape {tuple(gates.shape)}; expected {(N, E)}")
    nonzero = (gates != 0).sum(-1)
    if (nonzero != k).any():
        t = int((nonzero != k).nonzero()[0])
        fail(
            f"{what}: token {t} has {int(nonzero[t])} nonzero gates; expected exactly k={k} "
            "(the others are -inf before the softmax, so exactly 0 after it)"
        )
    if (gates < 0).any() or not torch.allclose(gates.sum(-1), torch.ones_like(gates[:, 0])):
        fail(f"{what}: each row of gates must be non-negative and sum to 1 (a softmax over k)")
    again = impl.noisy_top_k_gating(
        x, w_gate, w_noise, k, True, torch.Generator(device=device).manual_seed(seed)
    )
    assert_close(
        again,
        gates,
        what=what + " twice, each time with a generator seeded alike (draw from `generator`)",
        rtol=0,
        atol=0,
    )


def test_gating_train_adds_noise(impl, device):
    x, w_gate = randn(200, 4, seed=5, device=device), randn(4, 6, seed=6, device=device)
    w_noise = randn(4, 6, seed=7, device=device)
    g = torch.Generator(device=device).manual_seed(3)
    first = impl.noisy_top_k_gating(x, w_gate, w_noise, 6, True, g)
    second = impl.noisy_top_k_gating(x, w_gate, w_noise, 6, True, g)
    clean = torch.softmax(x @ w_gate, -1)
    if torch.allclose(first, clean, atol=1e-6):
        fail(
            "noisy_top_k_gating(x (200, 4), E=6, k=6, train=True) equals the noiseless softmax; "
            "in training H(x) = x @ w_gate + eps * softplus(x @ w_noise)"
        )
    if torch.allclose(first, second, atol=1e-6):
        fail(
            "noisy_top_k_gating(..., train=True, generator) gave the same gates on two calls "
            "with one generator: each call must draw fresh noise"
        )


def test_gating_noise_std_is_softplus(impl, device):
    """With k = E, log(g_i / g_0) = H_i - H_0; expert 0's noise scale is softplus(-60) ~ 1e-26,
    so z_i = (log(g_i / g_0) - (c_i - c_0)) / softplus((x @ w_noise)_i), c = x @ w_gate, must be
    independent standard normals. Chance of a false failure: below DELTA = 1e-7 (Chernoff bound
    per count, union bound over the counts), well under 1e-6."""
    N, E = 5000, 4
    x = randn(N, E, seed=11, dtype=torch.float64, device=device).clamp(-3, 3) * 0.6
    x[:, 0] = 1.0  # a constant feature, which drives expert 0's noise scale to softplus(-60)
    w_noise = torch.zeros(E, E, dtype=torch.float64, device=device)
    w_noise[0, 0] = -60.0
    w_noise[1:, 1:] = 2.0 * torch.eye(E - 1, dtype=torch.float64, device=device)
    w_gate = randn(E, E, seed=12, device=device) * 0.5
    g = torch.Generator(device=device).manual_seed(2024)
    gates = impl.noisy_top_k_gating(x, w_gate, w_noise, E, True, g)
    if gates.shape != (N, E) or not (gates > 0).all():
        fail(
            f"noisy_top_k_gating(x ({N}, {E}), k=E={E}, train=True): expected ({N}, {E}) "
            "gates, all > 0"
        )
    clean = x @ w_gate
    scale = torch.nn.functional.softplus(x @ w_noise)
    log_ratio = gates.log() - gates[:, :1].log()
    z = ((log_ratio - (clean - clean[:, :1])) / scale)[:, 1:].cpu()
    edges = [-math.inf, -1.5, -0.5, 0.0, 0.5, 1.5, math.inf]
    Phi = [
        0.5 * (1 + math.erf(e / math.sqrt(2))) if math.isfinite(e) else float(e > 0) for e in edges
    ]
    bins = list(itertools.pairwise(edges))
    counts = [int(((z > lo) & (z <= hi)).sum()) for lo, hi in bins]
    cells = len(counts) + 1
    for (lo, hi), k, p_lo, p_hi in zip(bins, counts, Phi, Phi[1:], strict=False):
        p = p_hi - p_lo
        if chernoff_gap(k, z.numel(), p, cells, DELTA):
            fail(
                "noisy_top_k_gating(train=True): the noise of expert i, divided by "
                f"softplus((x @ w_noise)_i), should be standard normal; {k} of {z.numel()} values "
                f"fell in ({lo}, {hi}], where a fraction {p:.4f} ({p * z.numel():.0f}) "
                "were expected (is the noise scaled by softplus(x @ w_noise), one draw per token "
                "and expert?)"
            )
    same_sign = int(((z[:, 0] > 0) == (z[:, 1] > 0)).sum())
    if chernoff_gap(same_sign, N, 0.5, cells, DELTA):
        fail(
            f"noisy_top_k_gating(train=True): experts 1 and 2 got noise of the same sign for "
            f"{same_sign} of {N} tokens; independent draws agree about half the time (one draw "
            "per token and per expert, not shared between experts)"
        )


def test_gating_gradients_reach_the_noise_weights(impl, device):
    x = randn(16, 5, seed=21, device=device)
    w_gate = randn(5, 4, seed=22, device=device).requires_grad_()
    w_noise = randn(5, 4, seed=23, device=device).requires_grad_()
    g = torch.Generator(device=device).manual_seed(0)
    gates = impl.noisy_top_k_gating(x, w_gate, w_noise, 2, True, g)
    (gates * randn(16, 4, seed=24, device=device)).sum().backward()
    for name, w in [("w_gate", w_gate), ("w_noise", w_noise)]:
        if w.grad is None or not torch.isfinite(w.grad).all() or not w.grad.abs().sum() > 0:
            fail(
                f"noisy_top_k_gating(train=True): the gradient of {name} is missing, zero or not "
                "finite; the noise scale softplus(x @ w_noise) is learned, so keep it in torch ops"
            )


# -- switch_route ----------------------------------------------------------------------------


def switch_oracle(logits, capacity_factor):
    """Switch routing written as the paper describes it: one token at a time, in order."""
    N, E = logits.shape
    capacity = math.ceil(capacity_factor * N / E)
    probs = torch.softmax(logits, -1)
    counts = [0] * E
    index, position, keep, gate = [], [], [], []
    for t in range(N):
        e = int(probs[t].argmax())
        index.append(e)
        position.append(counts[e])
        keep.append(counts[e] < capacity)
        gate.append(float(probs[t, e]) if keep[-1] else 0.0)
        counts[e] += 1
    d = logits.device
    return {
        "expert_index": torch.tensor(index, device=d),
        "position": torch.tensor(position, device=d),
        "keep": torch.tensor(keep, device=d),
        "gate": torch.tensor(gate, dtype=logits.dtype, device=d),
        "capacity": capacity,
    }


def unpack_route(route, what):
    names = ["expert_index", "position", "keep", "gate", "capacity"]
    try:
        return {n: getattr(route, n) for n in names}
    except AttributeError:
        fail(f"{what} should return a SwitchRoute{tuple(names)}; got {type(route).__name__}")


factors = st.sampled_from([0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0])


@given(N=st.integers(1, 60), E=st.integers(1, 16), factor=factors)
def test_switch_capacity_is_ceil(impl, device, N, E, factor):
    logits = randn(N, E, seed=N * 31 + E, device=device)
    what = f"switch_route(logits ({N}, {E}), capacity_factor={factor})"
    route = unpack_route(impl.switch_route(logits, factor), what)
    expected = math.ceil(factor * N / E)
    if int(route["capacity"]) != expected:
        fail(
            f"{what}.capacity is {route['capacity']}; expected ceil({factor} * {N} / {E}) = "
            f"{expected} (rounded up, so that capacity_factor = 1 leaves room for N tokens)"
        )


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    N=st.integers(1, 40),
    E=st.integers(1, 8),
    factor=factors,
    skew=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_switch_route_matches_the_definition(impl, device, dtype, N, E, factor, skew, seed):
    # A skew towards the low experts makes some of them overflow.
    logits = randn(N, E, seed=seed, device=device) - skew * torch.arange(E, device=device)
    logits = logits.to(dtype)
    what = f"switch_route(logits ({N}, {E}) {str(dtype)[6:]}, capacity_factor={factor})"
    route = unpack_route(impl.switch_route(logits, factor), what)
    expected = switch_oracle(logits, factor)
    for name in ["expert_index", "position", "keep"]:
        assert_close(route[name], expected[name], what=f"{what}.{name}", rtol=0, atol=0)
    rtol, atol = TOL[dtype]
    assert_close(route["gate"], expected["gate"], what=f"{what}.gate", rtol=rtol, atol=atol)


def test_switch_overflow_dropped_in_position_order(impl, device):
    # Every token prefers expert 0, the later tokens more strongly; capacity ceil(1.0 * 12 / 3) = 4.
    N, E = 12, 3
    logits = torch.zeros(N, E, dtype=torch.float64, device=device)
    logits[:, 0] = torch.linspace(1.0, 4.0, N, dtype=torch.float64, device=device)
    route = unpack_route(impl.switch_route(logits, 1.0), "switch_route")
    expected = torch.arange(N, device=device) < 4
    assert_close(
        route["keep"],
        expected,
        what="switch_route(12 tokens all choosing expert 0, capacity 4).keep: the first 4 tokens "
        "(lowest index) are kept whatever their probabilities, the later ones dropped",
        rtol=0,
        atol=0,
    )


def test_switch_gate_is_the_router_probability(impl, device):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]], dtype=torch.float64, device=device)
    route = unpack_route(impl.switch_route(logits, 2.0), "switch_route")
    expected = torch.softmax(logits, -1).max(-1).values
    assert_close(
        route["gate"],
        expected,
        what="switch_route(logits [[2, 0, -1], [0, 1, 0.5]], capacity_factor=2).gate: Switch "
        "scales the expert's output by the router probability p_i(x), not by 1",
        rtol=1e-12,
        atol=1e-12,
    )


# -- load_balancing_loss ---------------------------------------------------------------------


@pytest.mark.parametrize("E", [2, 5, 8])
def test_loss_is_one_when_uniform(impl, device, E):
    N = 4 * E
    probs = torch.full((N, E), 1.0 / E, dtype=torch.float64, device=device)
    index = torch.arange(N, device=device) % E
    loss = impl.load_balancing_loss(probs, index)
    assert_close(
        loss,
        torch.tensor(1.0, dtype=torch.float64, device=device),
        what=f"load_balancing_loss(uniform router_probs ({N}, {E}), each expert {N // E} tokens)",
        rtol=1e-12,
        atol=1e-12,
    )
    one_hot = torch.nn.functional.one_hot(torch.zeros(N, dtype=torch.long, device=device), E)
    assert_close(
        impl.load_balancing_loss(one_hot.double(), torch.zeros(N, dtype=torch.long, device=device)),
        torch.tensor(float(E), dtype=torch.float64, device=device),
        what=f"load_balancing_loss(every token sent to expert 0 with probability 1, E={E})",
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@given(N=st.integers(1, 50), E=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_loss_matches_the_formula(impl, device, dtype, N, E, seed):
    probs = torch.softmax(randn(N, E, seed=seed, scale=2.0), -1)
    # Routed to a sample from probs, not always the argmax, so f and P differ.
    index = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))[:, 0]
    f = torch.bincount(index, minlength=E).double() / N
    expected = (E * (f * probs.mean(0)).sum()).to(dtype).to(device)
    probs, index = probs.to(dtype).to(device), index.to(device)
    rtol, atol = TOL[dtype]
    assert_close(
        impl.load_balancing_loss(probs, index),
        expected,
        what=f"load_balancing_loss({describe(router_probs=probs, expert_index=index)}) "
        "(E * sum_i f_i P_i)",
        rtol=rtol,
        atol=atol,
    )


def test_loss_gradient_flows_through_the_probabilities(impl, device):
    N, E = 10, 4
    probs = torch.softmax(randn(N, E, seed=3), -1).to(device).requires_grad_()
    index = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 3, 0], device=device)
    impl.load_balancing_loss(probs, index).backward()
    f = torch.bincount(index, minlength=E).double() / N
    expected = (E * f / N).expand(N, E)
    if probs.grad is None:
        fail("load_balancing_loss: no gradient reached router_probs; P_i must stay differentiable")
    assert_close(
        probs.grad,
        expected,
        what="d load_balancing_loss / d router_probs[t, i] (= E f_i / N: the counts f carry no "
        "gradient, P_i = mean_t router_probs[t, i] does)",
        rtol=1e-12,
        atol=1e-12,
    )


# -- MoELayer --------------------------------------------------------------------------------


def make_layer(impl, d_model, d_ff, E, factor, seed, device):
    torch.manual_seed(seed)
    layer = impl.MoELayer(d_model, d_ff, E, capacity_factor=factor)
    shapes = {
        "w1": (E, d_model, d_ff),
        "b1": (E, d_ff),
        "w2": (E, d_ff, d_model),
        "b2": (E, d_model),
    }
    router = getattr(layer, "router", None)
    if not isinstance(router, torch.nn.Linear) or router.weight.shape != (E, d_model):
        fail(
            f"MoELayer({d_model}, {d_ff}, {E}).router should be nn.Linear({d_model}, {E}, "
            f"bias=False); found {router!r}"
        )
    if router.bias is not None:
        fail("MoELayer.router should have no bias (bias=False)")
    for name, shape in shapes.items():
        p = getattr(layer, name, None)
        if not isinstance(p, torch.nn.Parameter) or tuple(p.shape) != shape:
            found = None if p is None else tuple(p.shape)
            fail(
                f"MoELayer({d_model}, {d_ff}, {E}).{name} should be an nn.Parameter of shape "
                f"{shape}; found {found}"
            )
    layer = layer.double().to(device)
    with torch.no_grad():  # random biases too, so that a bias left out shows
        for i, p in enumerate(layer.parameters()):
            p.copy_(randn(*p.shape, seed=seed * 7 + i, device=device) / math.sqrt(p.shape[-1]))
    return layer


def moe_oracle(layer, x, capacity):
    """GShard top-2 routing written one choice at a time: first choices, then second choices."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(flat @ layer.router.weight.T, -1)
    top_p, top_e = probs.topk(2, dim=-1)
    weights = top_p / top_p.sum(-1, keepdim=True)
    y = flat.clone()
    counts = [0] * layer.n_experts
    for choice in (0, 1):
        for t in range(flat.shape[0]):
            e = int(top_e[t, choice])
            if counts[e] < capacity:
                h = torch.relu(flat[t] @ layer.w1[e] + layer.b1[e])
                y[t] = y[t] + weights[t, choice] * (h @ layer.w2[e] + layer.b2[e])
            counts[e] += 1
    return y.view_as(x)


def call_layer(layer, x, what):
    out = layer(x)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"{what} should return (y, aux_loss); got {type(out).__name__}")
    return out


@given(
    B=st.integers(1, 3),
    T=st.integers(1, 7),
    d_model=st.integers(1, 6),
    d_ff=st.integers(1, 8),
    E=st.integers(2, 6),
    seed=st.integers(0, 999),
)
def test_layer_is_dense_when_capacity_is_unlimited(impl, device, B, T, d_model, d_ff, E, seed):
    # capacity_factor = E / 2 gives capacity N: no expert can overflow.
    layer = make_layer(impl, d_model, d_ff, E, E / 2, seed, device)
    x = randn(B, T, d_model, seed=seed + 1, device=device)
    what = (
        f"MoELayer({d_model}, {d_ff}, n_experts={E}, capacity_factor={E / 2})(x {(B, T, d_model)})"
    )
    with torch.no_grad():
        y, _ = call_layer(layer, x, what)
        flat = x.reshape(-1, d_model)
        probs = torch.softmax(flat @ layer.router.weight.T, -1)
        top_p, top_e = probs.topk(2, dim=-1)
        w = top_p / top_p.sum(-1, keepdim=True)
        h = torch.relu(torch.einsum("nd,nkdf->nkf", flat, layer.w1[top_e]) + layer.b1[top_e])
        out = torch.einsum("nkf,nkfd->nkd", h, layer.w2[top_e]) + layer.b2[top_e]
        dense = flat + (w[..., None] * out).sum(1)
    assert_close(
        y,
        dense.view_as(x),
        what=what + ": x + g1 FFN_e1(x) + g2 FFN_e2(x) per token, g renormalised over the two",
        rtol=1e-10,
        atol=1e-10,
    )


@given(
    N=st.integers(1, 30),
    E=st.integers(2, 6),
    factor=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    seed=st.integers(0, 999),
)
def test_layer_matches_the_definition_with_capacity(impl, device, N, E, factor, seed):
    layer = make_layer(impl, 4, 6, E, factor, seed, device)
    with torch.no_grad():  # a router that favours the low experts, so that they overflow
        layer.router.weight[:, 0] -= torch.arange(E, dtype=torch.float64, device=device)
    x = randn(N, 4, seed=seed + 1, device=device)
    x[:, 0] = x[:, 0].abs() + 1
    capacity = math.ceil(factor * 2 * N / E)
    what = (
        f"MoELayer(4, 6, n_experts={E}, capacity_factor={factor})(x ({N}, 4)), capacity {capacity}"
    )
    with torch.no_grad():
        y, _ = call_layer(layer, x, what)
        expected = moe_oracle(layer, x, capacity)
    assert_close(y, expected, what=what, rtol=1e-10, atol=1e-10)


def steered_layer(impl, device, first, second, N, factor):
    """A layer whose router sends token t to experts first[t] then second[t] (4 experts)."""
    layer = make_layer(impl, 4, 5, 4, factor, 3, device)
    x = torch.zeros(N, 4, dtype=torch.float64, device=device)
    x[torch.arange(N), first] = 2.0
    x[torch.arange(N), second] = 1.0
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(4, dtype=torch.float64, device=device))
    return layer, x


def test_layer_dropped_tokens_ride_the_residual(impl, device):
    # 12 tokens, all to experts 0 then 1; capacity ceil(0.5 * 2 * 12 / 4) = 3.
    first, second = torch.zeros(12, dtype=torch.long), torch.ones(12, dtype=torch.long)
    layer, x = steered_layer(impl, device, first, second, 12, 0.5)
    with torch.no_grad():
        y, _ = call_layer(layer, x, "MoELayer(4, 5, 4, capacity_factor=0.5)")
    assert_close(
        y[3:],
        x[3:],
        what="MoELayer(4, 5, 4, capacity_factor=0.5) on 12 tokens that all choose experts 0 "
        "then 1 (capacity 3): tokens 3..11 find both experts full; they must come out "
        "unchanged, carried by the residual (y = x), not zeroed",
        rtol=0,
        atol=1e-12,
    )
    if torch.allclose(y[:3], x[:3]):
        fail("MoELayer: tokens 0..2 fit in their experts, yet came out unchanged")


def test_layer_first_choices_before_second_choices(impl, device):
    # Tokens 0..3 choose experts 0 then 1, tokens 4..7 choose 1 then 0; capacity
    # ceil(0.5 * 2 * 8 / 4) = 2. Expert 1's places go to tokens 4 and 5 (first choices), not to
    # tokens 0 and 1, whose second choices come earlier in token order.
    first = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    layer, x = steered_layer(impl, device, first, 1 - first, 8, 0.5)
    with torch.no_grad():
        y, _ = call_layer(layer, x, "MoELayer(4, 5, 4, capacity_factor=0.5)")
        expected = moe_oracle(layer, x, 2)
    assert_close(
        y,
        expected,
        what="MoELayer(capacity 2) on tokens 0..3 choosing experts (0, 1) and 4..7 choosing "
        "(1, 0): all first choices claim places before any second choice",
        rtol=1e-10,
        atol=1e-10,
    )


def test_layer_aux_loss(impl, device):
    layer = make_layer(impl, 6, 8, 5, 1.0, 4, device)
    x = randn(3, 7, 6, seed=9, device=device)
    with torch.no_grad():
        _, aux = call_layer(layer, x, "MoELayer(6, 8, 5)")
        probs = torch.softmax(x.reshape(-1, 6) @ layer.router.weight.T, -1)
        f = torch.bincount(probs.argmax(-1), minlength=5).double() / 21
        expected = 5 * (f * probs.mean(0)).sum()
    assert_close(
        aux,
        expected,
        what="MoELayer(6, 8, n_experts=5)(x (3, 7, 6)) aux_loss: the load-balancing loss of the "
        "router probabilities and the first choices",
        rtol=1e-10,
        atol=1e-10,
    )


def test_layer_gradients_flow(impl, device):
    layer = make_layer(impl, 6, 8, 4, 1.0, 5, device)
    x = randn(2, 9, 6, seed=10, device=device).requires_grad_()
    y, aux = call_layer(layer, x, "MoELayer(6, 8, 4)")
    if y.shape != x.shape:
        fail(f"MoELayer(6, 8, 4)(x {tuple(x.shape)}) returned y of shape {tuple(y.shape)}")
    (y.square().sum() + aux).backward()
    for name, p in [("x", x), *layer.named_parameters()]:
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0:
            fail(
                f"MoELayer: the gradient of {name} is missing, zero or not finite; keep dispatch "
                "and combine in torch operations (indexing, scatter, einsum) so autograd follows"
            )
