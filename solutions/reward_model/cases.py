"""Hidden grading cases for reward_model: shapes, dtypes, seeds and data unlike the public specs'.

Every case is deterministic except `sample_preferences`'s, whose two-sample test fails a correct
sampler with chance below 1e-6 (see compare_frequencies).
"""

import math

import numpy as np
import torch

from graders.cases import Case

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def probability(m, r_a, r_b):
    return m.preference_probability(r_a, r_b)


def loss_and_gradients(m, r_chosen, r_rejected):
    r_c, r_r = r_chosen.clone().requires_grad_(), r_rejected.clone().requires_grad_()
    loss = m.bradley_terry_loss(r_c, r_r)
    loss.backward()
    return {"loss": loss.detach(), "grad_chosen": r_c.grad, "grad_rejected": r_r.grad}


def loss_speed(m, r_chosen, r_rejected):
    r_c, r_r = r_chosen.clone().requires_grad_(), r_rejected.clone().requires_grad_()
    loss = m.bradley_terry_loss(r_c, r_r)
    loss.backward()
    return {"loss": loss.detach(), "grad_chosen": r_c.grad[::100_000]}


def label_frequencies(m, r_a, r_b, cells, seed):
    import torch

    g = torch.Generator(device=r_a.device).manual_seed(int(seed))
    labels = m.sample_preferences(r_a, r_b, g)
    ok = isinstance(labels, torch.Tensor) and labels.dtype == torch.bool
    ok = ok and labels.shape == r_a.shape
    freq = labels.reshape(int(cells), -1).double().mean(1) if ok else torch.zeros(int(cells))
    return {"well_formed": bool(ok), "frequencies": freq}


def bayes(m, r_a, r_b):
    return m.bayes_optimal_accuracy(r_a, r_b)


def reward_shape(m, x):
    import torch

    torch.manual_seed(0)
    return list(m.RewardModel(x.shape[-1], 8).to(x.device)(x).shape)


def train_and_evaluate(m, chosen, rejected, x_a, x_b, p_a, seed):
    """Train the learner's RewardModel with the learner's loop; the chance that a fresh label on
    the held-out pairs agrees with the trained model."""
    import torch

    torch.manual_seed(int(seed))
    model = m.RewardModel(chosen.shape[-1], 32).to(chosen.device)
    steps = 150
    g = torch.Generator().manual_seed(int(seed))
    losses = m.train_reward_model(model, chosen, rejected, g, steps=steps, lr=1e-2, batch_size=128)
    with torch.no_grad():
        a_higher = model(x_a).reshape(-1) > model(x_b).reshape(-1)
    accuracy = torch.where(a_higher, p_a, 1 - p_a).mean().item()
    return {"steps": len(losses), "accuracy": accuracy}


# -- inputs: built on the trusted side from a seed ---------------------------------------------


def _randn(seed, *shape, dtype=torch.float64, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def broadcast_rewards(seed):
    return {"r_a": _randn(seed, 5, 7, scale=3.0), "r_b": _randn(seed + 1, 7, scale=3.0)}


def float64_pairs(seed):
    r = _randn(seed, 2, 257, scale=2.5)
    return {"r_chosen": r[0], "r_rejected": r[1]}


def huge_margins(seed):
    r = _randn(seed, 2, 64, dtype=torch.float32, scale=150.0)
    return {"r_chosen": r[0], "r_rejected": r[1]}


def many_pairs(seed):
    r = _randn(seed, 2, 4_000_000, dtype=torch.float32)
    return {"r_chosen": r[0], "r_rejected": r[1]}


GAPS = [-6.0, -2.5, -1.0, -0.2, 0.0, 0.4, 1.5, 3.0]
PER_CELL = 50_000


def gap_cells(seed):
    base = _randn(seed, len(GAPS), PER_CELL, dtype=torch.float32, scale=4.0)
    gaps = torch.tensor(GAPS, dtype=torch.float32)[:, None]
    return {
        "r_a": base.flatten(),
        "r_b": (base - gaps).flatten(),
        "cells": len(GAPS),
        "seed": seed,
    }


def bayes_pairs(seed):
    r = _randn(seed, 2, 1000, scale=1.7)
    return {"r_a": r[0], "r_b": r[1]}


def items(seed):
    return {"x": _randn(seed, 3, 5, 6, dtype=torch.float32)}


def quadratic_task(seed):
    """Pairs in R^6, a hidden reward that is linear plus a quadratic bowl, Bradley-Terry labels."""
    g = torch.Generator().manual_seed(seed)
    d, n_train, n_test = 6, 3000, 3000
    w = torch.randn(d, generator=g)
    A = torch.randn(d, d, generator=g) / d

    def true_reward(x):
        return 0.8 * x @ w - ((x @ A) ** 2).sum(-1)

    n = n_train + n_test
    x_a, x_b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    p_a = torch.sigmoid(true_reward(x_a) - true_reward(x_b))
    a_wins = (torch.rand(n, generator=g) < p_a)[:, None]
    chosen, rejected = torch.where(a_wins, x_a, x_b), torch.where(a_wins, x_b, x_a)
    return {
        "chosen": chosen[:n_train],
        "rejected": rejected[:n_train],
        "x_a": x_a[n_train:],
        "x_b": x_b[n_train:],
        "p_a": p_a[n_train:],
        "seed": seed,
    }


# -- comparisons --------------------------------------------------------------------------------


def compare_frequencies(actual, expected, inputs):
    """Two-sample test between the learner's and the reference's label frequencies, cell by cell.

    Both are means of PER_CELL Bernoulli(p) draws, p = sigmoid(gap); their difference has standard
    deviation s = sqrt(2 p (1 - p) / PER_CELL). A gap beyond 6 s + 1e-4 has a chance below 2e-9 per
    cell, below 2e-8 over the 8 cells: a correct sampler fails with chance below 1e-6.
    """
    if not actual["well_formed"]:
        return "sample_preferences should return a bool tensor of the rewards' shape"
    a, e = np.asarray(actual["frequencies"]), np.asarray(expected["frequencies"])
    for gap, fa, fe in zip(GAPS, a, e, strict=True):
        p = 1 / (1 + math.exp(-gap))
        if abs(fa - fe) > 6 * math.sqrt(2 * p * (1 - p) / PER_CELL) + 1e-4:
            return (
                f"sample_preferences: at r_a - r_b = {gap}, a was preferred in {fa:.4f} of "
                f"{PER_CELL} pairs; the law sigmoid({gap}) = {p:.4f} gives {fe:.4f} in the "
                "reference's draws (a gap this large has a chance below 1e-6)"
            )
    return None


def compare_training(actual, expected, inputs):
    if actual["steps"] != expected["steps"]:
        return f"train_reward_model(steps=150) returned {actual['steps']} losses, expected 150"
    a, e = actual["accuracy"], expected["accuracy"]
    if not math.isfinite(a) or abs(a - e) > 0.03:
        return (
            f"after training, your RewardModel agrees with held-out labels with chance {a:.4f}; "
            f"the reference reaches {e:.4f} (the grader allows 0.03 either way)"
        )
    return None


TIGHT = {"rtol": 1e-12, "atol": 1e-12}

CASES = [
    Case(
        "preference_probability, (5, 7) against (7,), float64",
        call=probability,
        inputs=broadcast_rewards,
        points=1,
        seed=101,
        **TIGHT,
    ),
    Case(
        "bradley_terry_loss and its gradients, 257 pairs, float64",
        call=loss_and_gradients,
        inputs=float64_pairs,
        points=2,
        seed=202,
        **TIGHT,
    ),
    Case(
        "bradley_terry_loss and its gradients at margins of several hundred, float32",
        call=loss_and_gradients,
        inputs=huge_margins,
        points=1,
        seed=303,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "sample_preferences at 8 reward gaps, 50000 pairs each, float32",
        call=label_frequencies,
        inputs=gap_cells,
        compare=compare_frequencies,
        points=2,
        seed=404,
    ),
    Case(
        "bayes_optimal_accuracy on 1000 pairs, float64",
        call=bayes,
        inputs=bayes_pairs,
        points=1,
        seed=505,
        **TIGHT,
    ),
    Case(
        "RewardModel(6, 8) on items of shape (3, 5, 6)",
        call=reward_shape,
        inputs=items,
        points=1,
        seed=606,
    ),
    Case(
        "train a RewardModel on 3000 pairs of a hidden reward in R^6",
        call=train_and_evaluate,
        inputs=quadratic_task,
        compare=compare_training,
        points=3,
        seed=707,
    ),
    Case(
        "speed: bradley_terry_loss and its backward on 4 million pairs, float32",
        call=loss_speed,
        inputs=many_pairs,
        points=0.5,
        seed=808,
        rtol=1e-4,
        atol=1e-12,
        speed_ratio=5.0,
        speed_points=1,
    ),
]
