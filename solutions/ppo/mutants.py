"""Common mistakes in PPO and GAE, each replacing one function of the reference."""

import inspect

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("ppo")


def _deltas(rewards, values, dones, last_value, gamma, mask_bootstrap=True):
    not_done = 1.0 - dones.to(rewards.dtype)
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
    return rewards + gamma * next_values * (not_done if mask_bootstrap else 1.0) - values, not_done


@mutant("gae", "lambda is missing from the recursion: A_t = delta_t + gamma A_(t+1)")
def gae_without_lambda(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    return ref.gae(rewards, values, dones, last_value, gamma, 1.0)


@mutant(
    "gae",
    "the advantage flows back across episode ends: (1 - done_t) must also cut the recursion",
)
def gae_leaks_across_episodes(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    deltas, _ = _deltas(rewards, values, dones, last_value, gamma)
    advantages, running = torch.empty_like(deltas), torch.zeros_like(deltas[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * running
        advantages[t] = running
    return advantages, advantages + values


@mutant(
    "gae",
    "a done step still bootstraps from the next value, which belongs to a new episode",
)
def gae_bootstraps_through_dones(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    deltas, not_done = _deltas(rewards, values, dones, last_value, gamma, mask_bootstrap=False)
    advantages, running = torch.empty_like(deltas), torch.zeros_like(deltas[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


@mutant(
    "gae",
    "the done flags are off by one: step t must be cut by dones[t], not dones[t + 1]",
)
def gae_done_off_by_one(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    shifted = torch.cat([dones[1:], torch.zeros_like(dones[:1])])
    return ref.gae(rewards, values, shifted, last_value, gamma, lam)


@mutant(
    "gae",
    "the returns are the discounted rewards-to-go; the critic's target is advantages + values",
)
def gae_returns_are_monte_carlo(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    advantages, _ = ref.gae(rewards, values, dones, last_value, gamma, lam)
    returns, _ = ref.gae(rewards, torch.zeros_like(values), dones, last_value, gamma, 1.0)
    return advantages, returns


@mutant(
    "gae",
    "a loop over environments and steps in Python: right, but hundreds of times slower than one "
    "vector operation per step",
    slow=True,
)
def gae_python_loops(rewards, values, dones, last_value, gamma=0.99, lam=0.95):
    T = rewards.shape[0]
    r, v, d = (x.reshape(T, -1).T.tolist() for x in (rewards, values, dones.to(rewards.dtype)))
    last = last_value.reshape(-1).tolist()
    advantages = []
    for n in range(len(r)):
        running, column = 0.0, [0.0] * T
        for t in reversed(range(T)):
            next_value = v[n][t + 1] if t + 1 < T else last[n]
            delta = r[n][t] + gamma * next_value * (1 - d[n][t]) - v[n][t]
            running = delta + gamma * lam * (1 - d[n][t]) * running
            column[t] = running
        advantages.append(column)
    advantages = torch.tensor(advantages, dtype=rewards.dtype, device=rewards.device)
    advantages = advantages.T.reshape(rewards.shape)
    return advantages, advantages + values


@mutant("ppo_policy_loss", "the ratio is logp_new / logp_old; it is exp(logp_new - logp_old)")
def policy_ratio_of_logs(logp_new, logp_old, advantages, clip_eps=0.2):
    ratio = logp_new / logp_old
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return -torch.minimum(ratio * advantages, clipped * advantages).mean()


@mutant(
    "ppo_policy_loss",
    "the maximum of the clipped and unclipped terms: PPO takes the minimum, a pessimistic bound",
)
def policy_max_not_min(logp_new, logp_old, advantages, clip_eps=0.2):
    ratio = torch.exp(logp_new - logp_old)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return -torch.maximum(ratio * advantages, clipped * advantages).mean()


@mutant(
    "ppo_policy_loss",
    "only the clipped term: without the min, a ratio pushed the wrong way beyond the clip gets no "
    "gradient",
)
def policy_clipped_term_only(logp_new, logp_old, advantages, clip_eps=0.2):
    ratio = torch.exp(logp_new - logp_old)
    return -(ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages).mean()


@mutant(
    "ppo_policy_loss",
    "the objective is returned, not the loss: minimising it makes good actions less likely",
)
def policy_loss_not_negated(logp_new, logp_old, advantages, clip_eps=0.2):
    return -ref.ppo_policy_loss(logp_new, logp_old, advantages, clip_eps)


@mutant(
    "ppo_value_loss",
    "the clipped value loss takes the smaller of the two errors; it takes the larger",
)
def value_min_not_max(values, returns, old_values=None, clip_eps=None):
    loss = (values - returns) ** 2
    if clip_eps is not None:
        clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
        loss = torch.minimum(loss, (clipped - returns) ** 2)
    return loss.mean()


@mutant(
    "entropy",
    "softmax(...).log() gives log 0 = -inf for impossible actions, and 0 * -inf = NaN",
)
def entropy_log_of_softmax(logits):
    p = torch.softmax(logits, dim=-1)
    return -(p * p.log()).sum(-1)


@mutant("entropy", "the minus sign is missing: entropy is -sum p log p, never negative")
def entropy_not_negated(logits):
    return -ref.entropy(logits)


def _train(policy, env, total_steps, generator, settings):
    """The reference's loop, with the old log-probabilities recomputed at every step."""
    given = inspect.signature(ref.train_ppo).bind(policy, env, total_steps, generator, **settings)
    given.apply_defaults()
    s = given.arguments
    n_steps, epochs, minibatches, lr = s["n_steps"], s["epochs"], s["minibatches"], s["lr"]
    gamma, lam, clip_eps = s["gamma"], s["lam"], s["clip_eps"]
    vf_coef, ent_coef, max_norm = s["vf_coef"], s["ent_coef"], s["max_grad_norm"]
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr, eps=1e-5)
    obs = env.reset()
    iterations = total_steps // (n_steps * env.n_envs)
    for i in range(iterations):
        optimizer.param_groups[0]["lr"] = lr * (1 - i / iterations)
        steps = []
        with torch.no_grad():
            for _ in range(n_steps):
                logits, value = policy(obs)
                action = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
                next_obs, reward, done = env.step(action)
                steps.append((obs, action, value, reward, done))
                obs = next_obs
            last_value = policy(obs)[1]
        observations, actions, values, rewards, dones = map(torch.stack, zip(*steps, strict=True))
        advantages, returns = ref.gae(rewards, values, dones, last_value, gamma, lam)
        observations, actions, advantages, returns = (
            x.flatten(0, 1) for x in (observations, actions, advantages, returns)
        )
        for _ in range(epochs):
            order = torch.randperm(len(advantages), generator=generator, device=generator.device)
            for idx in order.to(advantages.device).chunk(minibatches):
                logits, values = policy(observations[idx])
                logp = logits.log_softmax(-1).gather(-1, actions[idx, None]).squeeze(-1)
                adv = advantages[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                loss = (
                    ref.ppo_policy_loss(logp, logp.detach(), adv, clip_eps)
                    + vf_coef * ref.ppo_value_loss(values, returns[idx])
                    - ent_coef * ref.entropy(logits).mean()
                )
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
                optimizer.step()
    return list(env.finished_returns)


@mutant(
    "train_ppo",
    "the old log-probabilities are recomputed at every step, so the ratio is always 1 and "
    "nothing is ever clipped",
)
def train_recomputes_old_logp(policy, env, total_steps, generator, **settings):
    return _train(policy, env, total_steps, generator, settings)
