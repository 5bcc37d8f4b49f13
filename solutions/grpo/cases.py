"""Hidden grading cases for grpo: completions, shapes, dtypes and seeds unlike the public specs'.

Every case is deterministic. The training case runs the learner's three functions inside the given
loop for 45 iterations on a seed the specs never use, and asks for the README's stated margin.
"""

import torch

from graders.cases import Case

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def rewards(m, completions, answers):
    return [float(m.verifiable_reward(c, a)) for c, a in zip(completions, answers, strict=True)]


def advantages(m, rewards, group_size, normalize_std, eps):
    return m.group_advantages(rewards, group_size, normalize_std=normalize_std, eps=eps)


def advantages_summary(m, rewards, group_size):
    a = m.group_advantages(rewards, group_size)
    return {"head": a[:300], "tail": a[-300:], "sum_of_squares": a.double().square().sum()}


def loss_and_gradient(m, logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta):
    x = logp_new.clone().requires_grad_(True)
    loss = m.grpo_loss(x, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    loss.backward()
    return {"loss": loss.detach(), "grad": x.grad}


def loss_speed(m, logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta):
    x = logp_new.clone().requires_grad_(True)
    loss = m.grpo_loss(x, logp_old, logp_ref, advantages, mask, clip_eps, beta)
    loss.backward()
    return {"loss": loss.detach(), "grad": x.grad[::97, ::31] * x.shape[0]}


def train(m, seed, iterations):
    result = m.train_grpo(seed=seed, iterations=iterations, device="cpu")
    return {
        "accuracy_before": float(result["accuracy_before"]),
        "accuracy_after": float(result["accuracy_after"]),
        "iterations": len(result["mean_reward"]),
    }


# -- inputs: built on the trusted side from a seed ---------------------------------------------

COMPLETIONS = [
    ("\t<answer>\n42\n</answer>  ", 42),  # whitespace of every kind around the block and N
    ("<answer>-0</answer>", 0),
    ("<answer>0012</answer>", 12),
    ("<answer>18</answer>", 81),
    ("<answer>-18</answer>", 18),
    ("<answer>123456789012</answer>", 123456789012),
    ("<answer>1 8</answer>", 18),
    ("Answer: <answer>5</answer>", 5),
    ("<answer>5</answer>\n<answer>5</answer>", 5),
    ("<answer>5</answer>.", 5),
    ("<ANSWER>5</ANSWER>", 5),
    ("<answer>5<answer>", 5),
    ("<answer>0x1F</answer>", 31),
]


def completions(seed):
    return {"completions": [c for c, _ in COMPLETIONS], "answers": [a for _, a in COMPLETIONS]}


def _rewards(seed, n_groups, group_size, dtype, constant=()):
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 3, (n_groups, group_size), generator=g).to(dtype) * 0.45 + 0.1
    r[:, 0], r[:, 1] = 1.0, 0.0  # no group is constant by chance...
    for i in constant:  # ...only these ones, on purpose
        r[i] = r[i, 0]
    return r.flatten()


def mixed_groups(seed):
    rewards = _rewards(seed, 7, 5, torch.float64, constant=(2, 5))
    return {"rewards": rewards, "group_size": 5, "normalize_std": True, "eps": 1e-6}


def large_eps(seed):
    rewards = _rewards(seed, 4, 6, torch.float32)
    return {"rewards": rewards, "group_size": 6, "normalize_std": True, "eps": 0.5}


def centred_only(seed):
    rewards = _rewards(seed, 9, 3, torch.float32, constant=(4,))
    return {"rewards": rewards, "group_size": 3, "normalize_std": False, "eps": 1e-6}


def many_groups(seed):
    rewards = torch.rand(2**21, generator=torch.Generator().manual_seed(seed))
    return {"rewards": rewards, "group_size": 128}


def _loss_inputs(seed, B, T, dtype, spread, clip_eps, beta):
    g = torch.Generator().manual_seed(seed)
    logp_old = -torch.rand(B, T, generator=g, dtype=dtype) * 4
    logp_new = logp_old + spread * torch.randn(B, T, generator=g, dtype=dtype)
    logp_ref = logp_new + spread * torch.randn(B, T, generator=g, dtype=dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    return {
        "logp_new": logp_new,
        "logp_old": logp_old,
        "logp_ref": logp_ref,
        "advantages": torch.randn(B, generator=g, dtype=dtype) * 2,
        "mask": torch.arange(T)[None, :] < lengths[:, None],
        "clip_eps": clip_eps,
        "beta": beta,
    }


def loss_float64(seed):
    return _loss_inputs(seed, 6, 9, torch.float64, spread=0.4, clip_eps=0.25, beta=0.1)


def loss_float32(seed):
    inputs = _loss_inputs(seed, 11, 13, torch.float32, spread=0.8, clip_eps=0.1, beta=0.02)
    inputs["mask"] = inputs["mask"].float()  # a 0/1 float mask works as well as a boolean one
    return inputs


def loss_large(seed):
    return _loss_inputs(seed, 1024, 512, torch.float32, spread=0.3, clip_eps=0.2, beta=0.04)


def training(seed):
    return {"seed": seed, "iterations": 45}


# -- comparisons -------------------------------------------------------------------------------

MARGIN = 0.15  # over seeds 20..31 and 2024 the reference gains 0.22 to 0.42 (README)


def accuracy_rises(actual, expected, inputs):
    if not isinstance(actual, dict) or not {"accuracy_before", "accuracy_after"} <= set(actual):
        return f"train_grpo returned {actual!r}; expected a dict with the two accuracies"
    before, after = actual["accuracy_before"], actual["accuracy_after"]
    if not after >= before + MARGIN:
        return (
            f"train_grpo(seed={inputs['seed']}, iterations={inputs['iterations']}): the expected "
            f"accuracy went from {before:.3f} to {after:.3f}; GRPO should raise it by {MARGIN}"
        )
    if actual.get("iterations") != inputs["iterations"]:
        return f"train_grpo recorded {actual.get('iterations')} mean rewards, one per iteration"
    return None


CASES = [
    Case("verifiable_reward on 13 tricky completions", call=rewards, inputs=completions, points=2),
    Case(
        "group_advantages, float64, groups of 5, two constant groups",
        call=advantages,
        inputs=mixed_groups,
        points=2,
        seed=11,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "group_advantages with eps = 0.5",
        call=advantages,
        inputs=large_eps,
        points=1,
        seed=12,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "group_advantages without std normalisation, groups of 3",
        call=advantages,
        inputs=centred_only,
        points=1,
        seed=13,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "grpo_loss and its gradient, float64, 6 completions of up to 9 tokens",
        call=loss_and_gradient,
        inputs=loss_float64,
        points=3,
        seed=21,
        rtol=1e-10,
        atol=1e-12,
    ),
    Case(
        "grpo_loss and its gradient, float32, a 0/1 float mask",
        call=loss_and_gradient,
        inputs=loss_float32,
        points=2,
        seed=22,
        rtol=1e-4,
        atol=1e-6,
    ),
    Case(
        "group_advantages over 16384 groups of 128 (speed)",
        call=advantages_summary,
        inputs=many_groups,
        points=1,
        seed=31,
        rtol=1e-4,
        atol=1e-4,
        speed_ratio=4.0,
        speed_points=1,
    ),
    Case(
        "grpo_loss over 1024 completions of 512 tokens (speed)",
        call=loss_speed,
        inputs=loss_large,
        points=1,
        seed=32,
        rtol=1e-3,
        atol=1e-6,
        speed_ratio=4.0,
        speed_points=1,
    ),
    Case(
        "GRPO raises the expected accuracy by 0.15 in 45 iterations",
        call=train,
        inputs=training,
        points=3,
        seed=2024,
        compare=accuracy_rises,
        timeout=300,
    ),
]
