"""Hidden grading cases for moe: shapes, capacity factors and seeds unlike the public specs'.

The noisy gate's training case is statistical: it recovers each draw of noise from the gates and
compares the histogram of the learner's standardised noise with the reference's (a two-sample
Chernoff test per bin, union bound over the bins: a correct gate fails with chance below 1e-7,
whatever order it draws its noise in).
"""

import itertools
import math

import numpy as np
import torch

from graders.cases import Case
from graders.checks import chernoff_gap

DELTA = 1e-7


def _randn(g, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- noisy_top_k_gating


def gate(m, x, w_gate, w_noise, k, train, seed):
    import torch

    g = torch.Generator(device=x.device).manual_seed(int(seed))
    return m.noisy_top_k_gating(x, w_gate, w_noise, int(k), bool(train), g)


def gate_eval_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": _randn(g, 37, 10),
        "w_gate": _randn(g, 10, 12) * 0.7,
        "w_noise": _randn(g, 10, 12) + 2.0,
        "k": 3,
        "train": False,
        "seed": seed,
    }


def gate_train_k2_inputs(seed):
    return {**gate_eval_inputs(seed), "k": 2, "train": True}


def compare_top_k_structure(actual, expected, inputs):
    a = torch.as_tensor(np.asarray(actual))
    N, E, k = inputs["x"].shape[0], inputs["w_gate"].shape[1], int(inputs["k"])
    if tuple(a.shape) != (N, E):
        return f"noisy_top_k_gating returned shape {tuple(a.shape)}; expected {(N, E)}"
    nonzero = (a != 0).sum(-1)
    if (nonzero != k).any():
        return (
            f"noisy_top_k_gating(k={k}, train=True): a row has {int(nonzero.max())} nonzero gates"
        )
    if (a < 0).any() or not torch.allclose(a.sum(-1), torch.ones(N, dtype=a.dtype), atol=1e-9):
        return "noisy_top_k_gating(train=True): each row must be non-negative and sum to 1"
    return None


def gate_noise_inputs(seed):
    """k = E; expert 0's noise scale is softplus(-60), so log(g_i / g_0) reveals H_i - H_0."""
    g = torch.Generator().manual_seed(seed)
    N, E = 6000, 5
    x = _randn(g, N, E).clamp(-3, 3) * 0.5
    x[:, 0] = 1.0
    w_noise = torch.zeros(E, E, dtype=torch.float64)
    w_noise[0, 0] = -60.0
    w_noise[1:, 1:] = torch.diag(torch.tensor([2.5, -2.0, 1.5, 3.0], dtype=torch.float64))
    w_noise[0, 1:] = torch.tensor([0.5, 0.0, -0.5, 0.2], dtype=torch.float64)
    return {
        "x": x,
        "w_gate": _randn(g, E, E) * 0.4,
        "w_noise": w_noise,
        "k": E,
        "train": True,
        "seed": seed,
    }


EDGES = [-math.inf, -1.5, -0.75, 0.0, 0.75, 1.5, math.inf]


def _noise_histogram(gates, inputs):
    x, w_gate, w_noise = (
        torch.as_tensor(np.asarray(inputs[n])) for n in ("x", "w_gate", "w_noise")
    )
    gates = torch.as_tensor(np.asarray(gates), dtype=torch.float64)
    clean = x @ w_gate
    log_ratio = gates.log() - gates[:, :1].log()
    z = ((log_ratio - (clean - clean[:, :1])) / torch.nn.functional.softplus(x @ w_noise))[:, 1:]
    z = z.nan_to_num(nan=1e9)
    return [int(((z > lo) & (z <= hi)).sum()) for lo, hi in itertools.pairwise(EDGES)]


def compare_noise_law(actual, expected, inputs):
    a = np.asarray(actual)
    shape = tuple(np.asarray(inputs["x"]).shape[:1]) + tuple(np.asarray(inputs["w_gate"]).shape[1:])
    if a.shape != shape or not (a > 0).all():
        return f"noisy_top_k_gating(k=E, train=True) should return {shape} gates, all > 0"
    ka, ke = _noise_histogram(actual, inputs), _noise_histogram(expected, inputs)
    n = sum(ke)
    for (lo, hi), x, y in zip(itertools.pairwise(EDGES), ka, ke, strict=True):
        pooled = (x + y) / (2 * n)
        if 0 < pooled < 1 and chernoff_gap(x, n, pooled, len(ka), DELTA):
            return (
                "noisy_top_k_gating(train=True): the noise divided by softplus(x @ w_noise) "
                f"should be standard normal; {x} of {n} values fell in ({lo}, {hi}] where the "
                f"reference's gate put {y}"
            )
    return None


# ---------------------------------------------------------------- switch_route


def route(m, logits, capacity_factor):
    r = m.switch_route(logits, float(capacity_factor))
    return {
        "expert_index": r.expert_index,
        "position": r.position,
        "keep": r.keep,
        "gate": r.gate,
        "capacity": int(r.capacity),
    }


def route_inputs(N, E, factor, skew, dtype):
    def inputs(seed):
        g = torch.Generator().manual_seed(seed)
        logits = _randn(g, N, E) * 1.5 - skew * torch.arange(E, dtype=torch.float64).sqrt()
        return {"logits": logits.to(dtype), "capacity_factor": factor}

    return inputs


def route_summary(m, logits, capacity_factor):
    r = m.switch_route(logits, float(capacity_factor))
    return {
        "kept": int(r.keep.sum()),
        "positions": r.position[::1021],
        "gate_sum": float(r.gate.double().sum()),
    }


# ---------------------------------------------------------------- load_balancing_loss


def balance(m, router_probs, expert_index):
    probs = router_probs.clone().requires_grad_()
    loss = m.load_balancing_loss(probs, expert_index)
    loss.backward()
    return {"loss": loss.detach(), "grad": probs.grad}


def balance_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(_randn(g, 100, 7) * 1.5, -1)
    return {"router_probs": probs, "expert_index": torch.multinomial(probs, 1, generator=g)[:, 0]}


# ---------------------------------------------------------------- MoELayer


def layer(m, x, weights, d_ff, n_experts, capacity_factor):
    import torch

    moe = m.MoELayer(x.shape[-1], int(d_ff), int(n_experts), capacity_factor=capacity_factor)
    moe = moe.to(dtype=x.dtype, device=x.device)
    moe.load_state_dict(weights)
    with torch.no_grad():
        y, aux = moe(x)
    return {"y": y, "aux_loss": aux}


def layer_inputs(shape, d_ff, E, factor, skew, dtype=torch.float64):
    def inputs(seed):
        g = torch.Generator().manual_seed(seed)
        d = shape[-1]
        router = _randn(g, E, d) / math.sqrt(d)
        router[:, 0] -= skew * torch.arange(E, dtype=torch.float64) / E
        weights = {
            "router.weight": router,
            "w1": _randn(g, E, d, d_ff) / math.sqrt(d),
            "b1": _randn(g, E, d_ff) * 0.1,
            "w2": _randn(g, E, d_ff, d) / math.sqrt(d_ff),
            "b2": _randn(g, E, d) * 0.1,
        }
        x = _randn(g, *shape)
        x[..., 0] = x[..., 0].abs() + 0.5
        return {
            "x": x.to(dtype),
            "weights": {k: v.to(dtype) for k, v in weights.items()},
            "d_ff": d_ff,
            "n_experts": E,
            "capacity_factor": factor,
        }

    return inputs


def layer_summary(m, x, weights, d_ff, n_experts, capacity_factor):
    import torch

    moe = m.MoELayer(x.shape[-1], int(d_ff), int(n_experts), capacity_factor=capacity_factor)
    moe = moe.to(dtype=x.dtype, device=x.device)
    moe.load_state_dict(weights)
    with torch.no_grad():
        y, aux = moe(x)
    return {"y": y.reshape(-1, x.shape[-1])[::97], "aux_loss": aux}


CASES = [
    Case(
        "noisy_top_k_gating at evaluation, 37 tokens, 12 experts, k=3",
        call=gate,
        inputs=gate_eval_inputs,
        points=2,
        seed=101,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "noisy_top_k_gating in training keeps k=2 of 12 experts",
        call=gate,
        inputs=gate_train_k2_inputs,
        compare=compare_top_k_structure,
        points=1,
        seed=102,
    ),
    Case(
        "noisy_top_k_gating in training: the noise scale is softplus(x W_noise)",
        call=gate,
        inputs=gate_noise_inputs,
        compare=compare_noise_law,
        points=2,
        seed=103,
    ),
    Case(
        "switch_route, 300 tokens over 8 experts, capacity factor 1.0, float32",
        call=route,
        inputs=route_inputs(300, 8, 1.0, 0.8, torch.float32),
        points=2,
        seed=201,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "switch_route, 61 tokens over 5 experts, capacity factor 0.7",
        call=route,
        inputs=route_inputs(61, 5, 0.7, 0.3, torch.float64),
        points=2,
        seed=202,
    ),
    Case(
        "load_balancing_loss and its gradient, 100 tokens, 7 experts",
        call=balance,
        inputs=balance_inputs,
        points=2,
        seed=301,
        rtol=1e-10,
        atol=1e-12,
    ),
    Case(
        "MoELayer without overflow (capacity factor 3, 6 experts) equals the dense mixture",
        call=layer,
        inputs=layer_inputs((2, 9, 8), 16, 6, 3.0, 0.0),
        points=2,
        seed=401,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "MoELayer with overflow (capacity factor 0.6, 5 experts, a skewed router)",
        call=layer,
        inputs=layer_inputs((3, 11, 6), 10, 5, 0.6, 6.0),
        points=3,
        seed=402,
        rtol=1e-9,
        atol=1e-9,
    ),
    Case(
        "speed: switch_route on 16384 tokens, 32 experts",
        call=route_summary,
        inputs=route_inputs(16384, 32, 1.25, 0.2, torch.float32),
        points=0.5,
        seed=501,
        rtol=1e-5,
        atol=1e-3,
        speed_ratio=4.0,
        speed_points=1,
    ),
    Case(
        "speed: MoELayer on 4096 tokens, 16 experts, float32",
        call=layer_summary,
        inputs=layer_inputs((4, 1024, 64), 128, 16, 1.25, 1.0, torch.float32),
        points=0.5,
        seed=502,
        rtol=1e-4,
        atol=1e-4,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
