"""Proximal policy optimisation (Schulman et al., 2017) with generalised advantage estimation
(Schulman et al., 2016), on a vectorised cart-pole.

A policy-gradient step pushes up the log-probability of actions that went better than expected.
PPO reuses each batch of experience for several epochs of minibatch steps, and keeps those steps
from going too far by clipping the probability ratio between the new and the old policy: once an
action's probability has moved more than clip_eps, its term stops pulling. GAE says how much better
than expected an action went: an exponentially weighted sum of one-step TD errors, where lambda
trades the critic's bias (lambda = 0) against the rollout's variance (lambda = 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "ActorCritic",
    "CartPole",
    "entropy",
    "evaluate",
    "gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "train_ppo",
]


class CartPole:
    """n_envs cart-poles stepped together (given): Barto, Sutton and Anderson's (1983) classic
    dynamics with the constants and rules of Gym's CartPole-v1, in numpy like Gym's.

    Observation (n_envs, 4) float32: cart position, cart velocity, pole angle (radians), pole
    angular velocity. Action (n_envs,) integers: 0 pushes the cart left, 1 right, with 10 N for
    one 0.02 s Euler step. Reward 1.0 for every step, the last one included. An episode ends when
    the pole leans more than 12 degrees, the cart leaves [-2.4, 2.4], or after max_steps steps;
    that environment then starts a new episode at once (the observation step returns is the new
    episode's first). Start states are uniform in [-0.05, 0.05]^4, drawn from a numpy generator
    seeded with `seed`. Tensors come back on `device`. finished_returns lists the return of every
    episode that ended, in order.
    """

    GRAVITY, CART_MASS, POLE_MASS, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    X_LIMIT, ANGLE_LIMIT = 2.4, 12 * 2 * math.pi / 360

    def __init__(
        self, n_envs: int, seed: int = 0, max_steps: int = 500, device: str | torch.device = "cpu"
    ) -> None:
        self.n_envs, self.max_steps, self.device = n_envs, max_steps, torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.finished_returns: list[float] = []
        self.reset()

    def _observe(self) -> Tensor:
        return torch.from_numpy(self.state.astype(np.float32)).to(self.device)

    def reset(self) -> Tensor:
        """Start a new episode in every environment; returns the observations (n_envs, 4)."""
        self.state = self.rng.uniform(-0.05, 0.05, size=(self.n_envs, 4))
        self.steps = np.zeros(self.n_envs, dtype=np.int64)
        return self._observe()

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step of every environment: actions (n_envs,) in {0, 1} -> (observations (n_envs,
        4) float32, rewards (n_envs,) float32, dones (n_envs,) bool), all on `device`."""
        x, x_dot, theta, theta_dot = self.state.T
        force = np.where(actions.cpu().numpy() == 1, self.FORCE, -self.FORCE)
        cos, sin = np.cos(theta), np.sin(theta)
        total_mass = self.CART_MASS + self.POLE_MASS
        pole_moment = self.POLE_MASS * self.HALF_LENGTH
        temp = (force + pole_moment * theta_dot**2 * sin) / total_mass
        theta_acc = (self.GRAVITY * sin - cos * temp) / (
            self.HALF_LENGTH * (4.0 / 3.0 - self.POLE_MASS * cos**2 / total_mass)
        )
        x_acc = temp - pole_moment * theta_acc * cos / total_mass
        self.state = np.stack(
            [
                x + self.TAU * x_dot,
                x_dot + self.TAU * x_acc,
                theta + self.TAU * theta_dot,
                theta_dot + self.TAU * theta_acc,
            ],
            axis=1,
        )
        self.steps += 1
        x, theta = self.state[:, 0], self.state[:, 2]
        dones = (np.abs(x) > self.X_LIMIT) | (np.abs(theta) > self.ANGLE_LIMIT)
        dones |= self.steps >= self.max_steps
        if dones.any():  # every step earned 1, so an episode's return is its length
            self.finished_returns += self.steps[dones].astype(float).tolist()
            self.state[dones] = self.rng.uniform(-0.05, 0.05, size=(int(dones.sum()), 4))
            self.steps[dones] = 0
        rewards = torch.ones(self.n_envs, device=self.device)
        return self._observe(), rewards, torch.from_numpy(dones).to(self.device)


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """The policy and its critic (given): two separate tanh MLPs, initialised as in OpenAI's
    baselines (orthogonal weights, zero biases, a policy head scaled to 0.01 so that the first
    policy is nearly uniform).

    ActorCritic(obs_dim, n_actions, hidden). forward(obs (B, obs_dim)) -> (logits (B, n_actions),
    values (B,)): the policy's action logits and the critic's estimate of each state's value.
    """

    def __init__(self, obs_dim: int = 4, n_actions: int = 2, hidden: int = 64) -> None:
        super().__init__()
        g = math.sqrt(2)
        self.actor = nn.Sequential(
            _layer(obs_dim, hidden, g), nn.Tanh(), _layer(hidden, hidden, g), nn.Tanh()
        )
        self.actor.append(_layer(hidden, n_actions, 0.01))
        self.critic = nn.Sequential(
            _layer(obs_dim, hidden, g), nn.Tanh(), _layer(hidden, hidden, g), nn.Tanh()
        )
        self.critic.append(_layer(hidden, 1, 1.0))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.actor(obs), self.critic(obs).squeeze(-1)


@torch.no_grad()
def evaluate(
    policy: ActorCritic, n_envs: int = 16, seed: int = 12345, max_steps: int = 500
) -> float:
    """The mean return of one greedy episode (the most likely action at every step) in each of
    n_envs fresh cart-poles on the policy's device (given). Returns a Python float <= max_steps."""
    device = next(policy.parameters()).device
    env = CartPole(n_envs, seed=seed, max_steps=max_steps, device=device)
    obs = env.reset()
    total = torch.zeros(n_envs, device=device)
    running = torch.ones(n_envs, dtype=torch.bool, device=device)
    while running.any():
        obs, rewards, dones = env.step(policy(obs)[0].argmax(-1))
        total += rewards * running  # count each environment's first episode only
        running &= ~dones
    return total.mean().item()


def gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_value: Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over a rollout of T steps in N environments.

    Shapes: rewards, values (T, N) floating; dones (T, N) bool or 0/1, where dones[t] means the
    episode ended with step t (so values[t + 1] belongs to a new episode and must not be used);
    last_value (N,), the critic's value of the state after the last step. Trailing shapes other
    than (N,) work the same: rewards (T, *S), last_value (*S).

    Returns (advantages, returns), both shaped and typed like rewards:
    delta_t = r_t + gamma * V_{t+1} * (1 - done_t) - V_t,
    A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1} (A_T = 0), returns = advantages + values.
    """
    ### BEGIN SOLUTION
    not_done = 1.0 - dones.to(rewards.dtype)
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
    # The TD error: how much better step t went than the critic expected. When the episode ended
    # at step t there is no next state to bootstrap from.
    deltas = rewards + gamma * next_values * not_done - values
    # A_t = sum_l (gamma lam)^l delta_{t+l} within the episode, accumulated backwards in time and
    # in parallel over the environments.
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    # The lambda-return: the target the critic regresses on.
    return advantages, advantages + values
    ### END SOLUTION


def ppo_policy_loss(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip_eps: float = 0.2
) -> Tensor:
    """PPO's clipped surrogate loss, to be minimised: -mean(min(rho * A, clip(rho, 1 - eps,
    1 + eps) * A)) with rho = exp(logp_new - logp_old).

    Shapes: logp_new, logp_old, advantages (B,): the log-probability of each sampled action under
    the policy being trained and under the policy that collected it, and its advantage. Returns a
    0-dim tensor of their dtype, differentiable in logp_new; logp_old and advantages are data.
    """
    ### BEGIN SOLUTION
    # The probability ratio between the new and the old policy, from log-probabilities.
    ratio = torch.exp(logp_new - logp_old)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    # The minimum makes the objective a pessimistic bound: a change that helps stops counting
    # once the ratio leaves [1 - eps, 1 + eps], while a change that hurts always counts in full.
    return -torch.minimum(ratio * advantages, clipped * advantages).mean()
    ### END SOLUTION


def ppo_value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_eps: float | None = None,
) -> Tensor:
    """The critic's loss: mean((values - returns)^2), to be minimised.

    Shapes: values (B,) the critic's new estimates, returns (B,) the targets, old_values (B,) the
    estimates made during the rollout. With clip_eps (which needs old_values), the clipped form of
    OpenAI's baselines: mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)).
    Returns a 0-dim tensor of their dtype, differentiable in values.
    """
    if clip_eps is not None and old_values is None:
        raise ValueError("ppo_value_loss: clip_eps needs old_values")
    ### BEGIN SOLUTION
    loss = (values - returns) ** 2
    if clip_eps is not None:
        # Like the policy's clip: the new estimate may move only eps away from the old one, and
        # the larger (more pessimistic) of the two errors counts.
        clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return loss.mean()
    ### END SOLUTION


def entropy(logits: Tensor) -> Tensor:
    """The entropy -sum_a p(a) log p(a) of the categorical distributions softmax(logits).

    Shapes: logits (..., A) -> (...), same dtype, differentiable. A logit of -inf is an action of
    probability 0 and adds nothing (0 log 0 = 0); the result and its gradient stay finite for any
    logits with at least one finite entry per row.
    """
    ### BEGIN SOLUTION
    # log_softmax is exact where softmax(...).log() underflows to log 0 = -inf; clamping the
    # -inf of impossible actions to the lowest finite number turns 0 * -inf into 0.
    logp = torch.log_softmax(logits, dim=-1).clamp_min(torch.finfo(logits.dtype).min)
    return -(logp.exp() * logp).sum(-1)
    ### END SOLUTION


def train_ppo(
    policy: ActorCritic,
    env: CartPole,
    total_steps: int,
    generator: torch.Generator,
    n_steps: int = 32,
    epochs: int = 4,
    minibatches: int = 2,
    lr: float = 3e-3,
    gamma: float = 0.99,
    lam: float = 0.95,
    clip_eps: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    max_grad_norm: float = 0.5,
) -> list[float]:
    """Train `policy` in place on `env` with PPO for total_steps environment steps in all.

    Each of the total_steps // (n_steps * env.n_envs) iterations: roll the policy out for n_steps
    steps in every environment, sampling actions (torch.multinomial with `generator`, a
    torch.Generator on the policy's device); compute advantages and returns with gae (gamma, lam;
    the critic's value of the state after the last step bootstraps the tail); then `epochs`
    passes over the n_steps * n_envs samples in `minibatches` random minibatches (torch.randperm
    with `generator`), each one Adam step (eps=1e-5) on
        ppo_policy_loss + vf_coef * ppo_value_loss - ent_coef * mean entropy,
    with each minibatch's advantages normalised to mean 0 and standard deviation 1, and the
    gradient's norm clipped to max_grad_norm. Adam's learning rate falls linearly from lr at the
    first iteration towards 0 at the last. The environment carries on across iterations.
    Returns the return of every episode that ended during training, in order (the env's
    finished_returns), as Python floats.
    """
    ### BEGIN SOLUTION
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr, eps=1e-5)
    obs = env.reset()
    iterations = total_steps // (n_steps * env.n_envs)
    for i in range(iterations):
        # The learning rate falls linearly to zero, so the last updates only fine-tune.
        optimizer.param_groups[0]["lr"] = lr * (1 - i / iterations)
        # 1. Experience from the current policy, which becomes the "old" policy of this update.
        steps = []
        with torch.no_grad():
            for _ in range(n_steps):
                logits, value = policy(obs)
                action = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
                logp = logits.log_softmax(-1).gather(-1, action[:, None]).squeeze(-1)
                next_obs, reward, done = env.step(action)
                steps.append((obs, action, logp, value, reward, done))
                obs = next_obs
            last_value = policy(obs)[1]
        # Each (n_steps, n_envs, ...); the critic's guess for the state after the rollout
        # bootstraps the episodes it cuts short.
        observations, actions, logp_old, values, rewards, dones = map(
            torch.stack, zip(*steps, strict=True)
        )
        advantages, returns = gae(rewards, values, dones, last_value, gamma, lam)
        observations, actions, logp_old, advantages, returns = (
            x.flatten(0, 1) for x in (observations, actions, logp_old, advantages, returns)
        )

        # 2. Several epochs of minibatch steps on the same samples: the clip keeps them honest.
        size = advantages.shape[0]
        for _ in range(epochs):
            order = torch.randperm(size, generator=generator, device=generator.device)
            for idx in order.to(advantages.device).chunk(minibatches):
                logits, values = policy(observations[idx])
                logp = logits.log_softmax(-1).gather(-1, actions[idx, None]).squeeze(-1)
                adv = advantages[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                loss = (
                    ppo_policy_loss(logp, logp_old[idx], adv, clip_eps)
                    + vf_coef * ppo_value_loss(values, returns[idx])
                    - ent_coef * entropy(logits).mean()
                )
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
                optimizer.step()
    return list(env.finished_returns)
    ### END SOLUTION
