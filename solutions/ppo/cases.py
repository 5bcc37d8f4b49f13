"""Hidden grading cases for ppo: shapes, dtypes, seeds and settings unlike the public specs'.

Every case is deterministic. The training case trains the learner's loop with other seeds and a
larger budget than the public spec, then measures the greedy policy on cart-poles simulated by the
case itself (the classic dynamics written out below), so a changed environment earns nothing.
"""

import math

import torch

from graders.cases import Case

# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def advantages_and_returns(m, rewards, values, dones, last_value, gamma, lam):
    advantages, returns = m.gae(rewards, values, dones, last_value, gamma, lam)
    return {"advantages": advantages, "returns": returns}


def both_lambda_ends(m, rewards, values, dones, last_value, gamma):
    return {
        "lam_1": list(m.gae(rewards, values, dones, last_value, gamma, 1.0)),
        "lam_0": list(m.gae(rewards, values, dones, last_value, gamma, 0.0)),
    }


def gae_speed(m, rewards, values, dones, last_value, gamma, lam):
    advantages, returns = m.gae(rewards, values, dones, last_value, gamma, lam)
    return {"advantages": advantages[::16, ::256], "returns": returns[::16, ::256]}


def policy_loss_and_gradient(m, logp_new, logp_old, advantages, clip_eps):
    logp_new = logp_new.clone().requires_grad_()
    loss = m.ppo_policy_loss(logp_new, logp_old, advantages, clip_eps)
    loss.backward()
    return {"loss": loss.detach(), "grad": logp_new.grad}


def value_losses_and_gradients(m, values, returns, old_values, clip_eps):
    out = {}
    for name, extra in (("plain", ()), ("clipped", (old_values, clip_eps))):
        v = values.clone().requires_grad_()
        loss = m.ppo_value_loss(v, returns, *extra)
        loss.backward()
        out[name], out[f"{name}_grad"] = loss.detach(), v.grad
    return out


def entropy_and_gradient(m, logits):
    logits = logits.clone().requires_grad_()
    h = m.entropy(logits)
    h.sum().backward()
    return {"entropy": h.detach(), "grad": logits.grad}


def train_and_balance(m, seed, n_envs, total_steps, eval_envs):
    """Train the learner's loop from a seeded ActorCritic; then the greedy policy's mean return on
    the case's own cart-poles (Barto, Sutton and Anderson's dynamics with Gym's constants)."""
    import math

    import numpy as np
    import torch

    torch.manual_seed(seed)
    policy = m.ActorCritic()
    env = m.CartPole(n_envs, seed=seed)
    returns = m.train_ppo(policy, env, total_steps, torch.Generator().manual_seed(seed))
    s = np.random.default_rng(seed + 1).uniform(-0.05, 0.05, size=(eval_envs, 4))
    alive, lasted = np.ones(eval_envs, dtype=bool), np.zeros(eval_envs)
    for _ in range(500):
        with torch.no_grad():
            logits = policy(torch.from_numpy(s.astype(np.float32)))[0]
        force = np.where(logits.argmax(-1).numpy() == 1, 10.0, -10.0)
        x, x_dot, th, th_dot = s.T
        cos, sin = np.cos(th), np.sin(th)
        temp = (force + 0.05 * th_dot**2 * sin) / 1.1
        th_acc = (9.8 * sin - cos * temp) / (0.5 * (4 / 3 - 0.1 * cos**2 / 1.1))
        x_acc = temp - 0.05 * th_acc * cos / 1.1
        s = np.stack(
            [x + 0.02 * x_dot, x_dot + 0.02 * x_acc, th + 0.02 * th_dot, th_dot + 0.02 * th_acc], 1
        )
        lasted += alive  # the step that ends an episode earns its reward too
        alive &= (np.abs(s[:, 0]) <= 2.4) & (np.abs(s[:, 2]) <= 12 * 2 * math.pi / 360)
        if not alive.any():
            break
    return {"episodes": len(returns), "greedy_return": float(lasted.mean())}


# -- inputs: built on the trusted side from a seed ---------------------------------------------


def _rollout(seed, T, N, dtype, p_done, float_dones=False):
    g = torch.Generator().manual_seed(seed)
    shape = (T, N) if N else (T,)
    rewards = torch.randn(shape, generator=g, dtype=dtype)
    values = 3 * torch.randn(shape, generator=g, dtype=dtype)
    dones = torch.rand(shape, generator=g) < p_done
    last_value = 3 * torch.randn(shape[1:], generator=g, dtype=dtype)
    return {
        "rewards": rewards,
        "values": values,
        "dones": dones.to(dtype) if float_dones else dones,
        "last_value": last_value,
    }


def many_envs(seed):
    return {**_rollout(seed, 37, 6, torch.float64, 0.1), "gamma": 0.97, "lam": 0.9}


def one_trajectory(seed):
    inputs = _rollout(seed, 50, 0, torch.float32, 0.08, float_dones=True)
    return {**inputs, "gamma": 0.995, "lam": 0.5}


def lambda_ends(seed):
    return {**_rollout(seed, 23, 4, torch.float64, 0.15), "gamma": 0.9}


def long_rollout(seed):
    return {**_rollout(seed, 256, 4096, torch.float32, 0.01), "gamma": 0.99, "lam": 0.95}


def policy_batch(seed):
    g = torch.Generator().manual_seed(seed)
    logp_old = -0.1 - 4 * torch.rand(500, generator=g, dtype=torch.float64)
    return {
        "logp_new": logp_old + 0.3 * torch.randn(500, generator=g, dtype=torch.float64),
        "logp_old": logp_old,
        "advantages": 2 * torch.randn(500, generator=g, dtype=torch.float64),
        "clip_eps": 0.15,
    }


def value_batch(seed):
    g = torch.Generator().manual_seed(seed)
    old = 5 * torch.randn(300, generator=g)
    return {
        "values": old + torch.randn(300, generator=g),
        "returns": old + 2 * torch.randn(300, generator=g),
        "old_values": old,
        "clip_eps": 0.3,
    }


def masked_logits(seed):
    g = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(3, 5, 6, generator=g)
    logits[torch.rand(3, 5, 6, generator=g) < 0.3] = float("-inf")
    logits[..., 2] = 40 * torch.randn(3, 5, generator=g)  # every row keeps an action
    return {"logits": logits}


def wide_logits(seed):
    g = torch.Generator().manual_seed(seed)
    return {"logits": 2 * torch.randn(7, 11, generator=g, dtype=torch.float64)}


def cart_poles(seed):
    return {"seed": seed, "n_envs": 16, "total_steps": 16384, "eval_envs": 20}


# -- comparisons --------------------------------------------------------------------------------

BAR = 150.0  # the greedy return the hidden training case asks for, out of 500


def compare_training(actual, expected, inputs):
    got = actual.get("greedy_return") if isinstance(actual, dict) else None
    if not isinstance(got, float) or not math.isfinite(got) or got < BAR:
        return (
            f"after train_ppo(ActorCritic(), CartPole(16), total_steps={inputs['total_steps']}), "
            f"the greedy policy balanced the pole for {got} steps on average over "
            f"{inputs['eval_envs']} fresh cart-poles; the bar is {BAR:g} (the reference reached "
            f"{expected['greedy_return']:.1f})"
        )
    return None


TIGHT = {"rtol": 1e-10, "atol": 1e-10}

CASES = [
    Case(
        "gae on 37 steps of 6 environments, float64",
        call=advantages_and_returns,
        inputs=many_envs,
        points=2,
        seed=101,
        **TIGHT,
    ),
    Case(
        "gae on one trajectory (T,), float32 with 0/1 float dones",
        call=advantages_and_returns,
        inputs=one_trajectory,
        points=1,
        seed=202,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "gae with lambda 1 (returns minus values) and lambda 0 (TD errors)",
        call=both_lambda_ends,
        inputs=lambda_ends,
        points=1,
        seed=303,
        **TIGHT,
    ),
    Case(
        "ppo_policy_loss and its gradient, 500 samples, clip_eps 0.15, float64",
        call=policy_loss_and_gradient,
        inputs=policy_batch,
        points=2,
        seed=404,
        **TIGHT,
    ),
    Case(
        "ppo_value_loss, plain and clipped, and their gradients, float32",
        call=value_losses_and_gradients,
        inputs=value_batch,
        points=1,
        seed=505,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "entropy of (3, 5, 6) logits with masked actions, float32",
        call=entropy_and_gradient,
        inputs=masked_logits,
        points=1,
        seed=606,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "entropy of (7, 11) logits, float64",
        call=entropy_and_gradient,
        inputs=wide_logits,
        points=1,
        seed=707,
        **TIGHT,
    ),
    Case(
        "train_ppo from seed 808: a greedy return of at least 150 after 16384 steps",
        call=train_and_balance,
        inputs=cart_poles,
        compare=compare_training,
        points=3,
        seed=808,
        timeout=600,
    ),
    Case(
        "speed: gae on 256 steps of 4096 environments, float32",
        call=gae_speed,
        inputs=long_rollout,
        points=0.5,
        seed=909,
        rtol=1e-5,
        atol=1e-5,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
