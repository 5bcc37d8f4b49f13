"""Reinforcement learning from human feedback with a KL penalty (Ziegler et al., 2019; Ouyang et
al., 2022).

A reward model, trained on people's comparisons, scores a whole completion; PPO then tunes the
language model to raise that score. Left alone, the policy finds completions the reward model
loves and people do not (reward hacking) and drifts into text the pretrained model would never
write. The fix that made RLHF work: pay the policy, at every token, minus beta times the log-ratio
log pi(token) / pi_ref(token) between itself and the frozen supervised model. Summed over a
completion, those penalties estimate beta times KL(pi || pi_ref), so PPO maximises the score minus
a price for every nat of drift. Ziegler et al. also adapt beta so that the KL tracks a target.

The module also holds, as given code, everything around those pieces: a tiny word-level language
model pretrained on short film reviews, a programmatic "sentiment" score that stands in for the
reward model, sampling, and a PPO loop (value network, GAE, clipped losses) that calls your
functions.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = [
    "AdaptiveKLController",
    "TinyLM",
    "detokenize",
    "gae",
    "kl_shaped_rewards",
    "pretrain",
    "review_corpus",
    "sample_completions",
    "sentiment_score",
    "sequence_kl",
    "token_logprobs",
    "tokenize",
    "train_rlhf",
]

VOCAB = (
    "<eos>", "the", "film", "plot", "cast", "was", "very", "and",
    "good", "great", "fun", "bad", "dull", "sad", ".",
)  # fmt: skip
EOS = 0
POSITIVE = ("good", "great", "fun")
NEGATIVE = ("bad", "dull", "sad")
PROMPTS = ("the film", "the plot", "the cast")
MAX_NEW_TOKENS = 7  # "was very good and great . <eos>"
CONTEXT = 8  # a 2-word prompt and the first 6 words of its completion


# -- your functions --------------------------------------------------------------------------


def kl_shaped_rewards(
    scores: Tensor, logp_policy: Tensor, logp_ref: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """The per-token rewards PPO maximises in RLHF: a KL penalty on every token, the score at
    the end.

    scores (B,): the reward model's score of each completion; logp_policy, logp_ref (B, T): the
    log-probability of each sampled token under the policy that sampled it and under the frozen
    reference; mask (B, T) bool or 0/1: True on the completion's tokens (at least one per row),
    False on padding -> rewards (B, T), logp_policy's dtype: -beta * (logp_policy - logp_ref) on
    every token of the completion, plus scores[i] on its last token (the last True of row i), and
    0 on padding. Data, not a graph: the result carries no gradient.
    """
    ### BEGIN SOLUTION
    mask = mask.to(logp_policy.dtype)
    # The penalty on each token is beta times the log-ratio: its sum over a completion is a
    # one-sample estimate of beta * KL(pi || pi_ref) for that prompt.
    rewards = -beta * (logp_policy - logp_ref).detach() * mask
    # The reward model scores the whole completion, so its score arrives with the last token:
    # the last position where the mask is True (padding may come first or last).
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask * (positions + 1)).argmax(dim=1)
    rewards[torch.arange(len(last), device=mask.device), last] += scores.to(rewards.dtype)
    return rewards
    ### END SOLUTION


def sequence_kl(logp_policy: Tensor, logp_ref: Tensor, mask: Tensor) -> Tensor:
    """log pi(y | x) - log pi_ref(y | x) for each sampled completion y.

    logp_policy, logp_ref (B, T), mask (B, T) as in kl_shaped_rewards -> (B,): the sum over each
    completion's tokens of logp_policy - logp_ref. Its mean over completions sampled from pi is an
    unbiased estimate of KL(pi || pi_ref) per prompt, in nats.
    """
    ### BEGIN SOLUTION
    # log pi(y) = sum_t log pi(y_t | y_<t): the log-ratio of whole sequences is the sum of the
    # tokens' log-ratios, and E_y~pi[log pi(y) / pi_ref(y)] is the KL by definition.
    return ((logp_policy - logp_ref) * mask.to(logp_policy.dtype)).sum(dim=1)
    ### END SOLUTION


class AdaptiveKLController:
    """Ziegler et al.'s controller: raise beta when the KL runs above its target, lower it below.

    AdaptiveKLController(init_beta, target, horizon); .value is the current beta. update(kl,
    n_steps) with the KL measured on the last batch (nats per completion) and the number of
    completions in it sets error = clip(kl / target - 1, -0.2, 0.2) and multiplies .value by
    1 + error * n_steps / horizon; it returns the new .value.
    """

    def __init__(self, init_beta: float, target: float, horizon: float) -> None:
        ### BEGIN SOLUTION
        self.value, self.target, self.horizon = init_beta, target, horizon
        ### END SOLUTION

    def update(self, kl: float, n_steps: int) -> float:
        ### BEGIN SOLUTION
        # A proportional controller on log(beta): the error is clipped to +-20% so one noisy
        # batch cannot swing beta, and n_steps / horizon sets how fast beta reacts.
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value
        ### END SOLUTION


# -- given: the reviews, the tiny model, the score and the PPO loop ------------------------------


def tokenize(text: str) -> list[int]:
    """Token ids of space-separated words."""
    try:
        return [VOCAB.index(word) for word in text.split()]
    except ValueError:
        raise ValueError(f"{text!r} holds a word outside the vocabulary {VOCAB}") from None


def detokenize(ids: list[int] | Tensor) -> str:
    """The words of token ids, up to (without) the first <eos>."""
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    if EOS in ids:
        ids = ids[: ids.index(EOS)]
    return " ".join(VOCAB[i] for i in ids)


def review_corpus(n: int, generator: torch.Generator) -> list[str]:
    """n reviews "the NOUN was [very] ADJ [and ADJ] ." in which every choice is a fair coin or
    uniform: half the adjectives are positive, so the average review is neutral."""

    def pick(options: tuple[str, ...]) -> str:
        return options[int(torch.randint(len(options), (), generator=generator))]

    reviews = []
    for _ in range(n):
        words = [pick(PROMPTS), "was"]
        words += ["very"] if pick((True, False)) else []
        words.append(pick(POSITIVE + NEGATIVE))
        words += ["and", pick(POSITIVE + NEGATIVE)] if pick((True, False)) else []
        reviews.append(" ".join([*words, "."]))
    return reviews


def sentiment_score(completion: str) -> float:
    """The programmatic reward: positive words minus negative words (the reward model's stand-in).

    It knows nothing of grammar: "good good good good good good good" scores 7.
    """
    words = completion.split()
    return float(sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words))


class TinyLM(nn.Module):
    """A tiny causal language model: position t reads tokens 0..t through one MLP.

    The embeddings of tokens 0..t sit side by side in a window of CONTEXT slots (zeros after t),
    and a one-hidden-layer MLP maps the window to n_out numbers: the logits of token t + 1, or
    (n_out = 1) the value of the prefix, for the critic. Shapes: tokens (B, T) long, T <= CONTEXT
    -> (B, T, n_out).
    """

    def __init__(self, n_out: int = len(VOCAB), d_embed: int = 16, d_hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), d_embed)
        self.hidden = nn.Linear(CONTEXT * d_embed, d_hidden)  # one (d_hidden, d_embed) block a slot
        self.out = nn.Linear(d_hidden, n_out)

    def forward(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[1]
        e = self.embed(tokens)  # (B, T, d_embed)
        blocks = self.hidden.weight.view(self.hidden.out_features, CONTEXT, -1)[:, :T]
        # The hidden layer applied to position t's window is the sum over slots s <= t of block s
        # times token s: a running sum over positions, with no window ever built.
        h = torch.einsum("btd,htd->bth", e, blocks).cumsum(dim=1) + self.hidden.bias
        return self.out(torch.relu(h))


def token_logprobs(model: nn.Module, prompts: Tensor, completions: Tensor) -> Tensor:
    """log pi(completion token t | prompt, completion tokens < t) for every t.

    prompts (B, P) long, completions (B, T) long -> (B, T) float, differentiable in the model.
    """
    tokens = torch.cat([prompts, completions], dim=1)[:, :-1]
    logits = model(tokens)[:, prompts.shape[1] - 1 :]  # the rows that predict the completion
    return logits.log_softmax(-1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sample_completions(
    model: nn.Module, prompts: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Up to MAX_NEW_TOKENS tokens after each prompt, sampled at temperature 1.

    prompts (B, P) long -> (completions (B, T) long, mask (B, T) bool), T <= MAX_NEW_TOKENS. After
    a completion's first <eos> it is padded with <eos> and its mask is False; the mask is True on
    every token up to and including that <eos>. generator: a CPU torch.Generator; one uniform per
    row and step is drawn from it and turned into a token by the inverse of the CDF, so a run gives
    the same tokens on every device up to rounding.
    """
    tokens, done, masks = prompts, torch.zeros_like(prompts[:, 0], dtype=torch.bool), []
    for _ in range(MAX_NEW_TOKENS):
        probs = model(tokens)[:, -1].softmax(-1)
        u = torch.rand(len(prompts), 1, generator=generator).to(probs)
        nxt = (probs.cumsum(-1) < u).sum(-1).clamp(max=len(VOCAB) - 1).masked_fill(done, EOS)
        masks.append(~done)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done = done | (nxt == EOS)
        if done.all():
            break
    return tokens[:, prompts.shape[1] :], torch.stack(masks, dim=1)


def pretrain(model: nn.Module, reviews: list[str], steps: int, lr: float = 2e-2) -> None:
    """Full-batch Adam steps of next-token cross-entropy on the reviews' completions (the words
    after the 2-word prompt, and <eos>): the supervised model that RLHF starts from."""
    device = next(model.parameters()).device
    ids = [tokenize(r) for r in reviews]
    T = max(len(i) for i in ids) - 1  # completion tokens, <eos> included
    prompts = torch.tensor([i[:2] for i in ids], device=device)
    completions = torch.tensor([i[2:] + [EOS] * (T - len(i) + 2) for i in ids], device=device)
    mask = torch.tensor([[t <= len(i) - 2 for t in range(T)] for i in ids], device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = -(token_logprobs(model, prompts, completions) * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation along each completion (as in the ppo exercise).

    rewards, values (B, T), mask (B, T) bool: token t is the action taken in the state "prompt and
    tokens < t"; a completion ends at its last True. Returns (advantages, returns), (B, T), zero
    on padding: delta_t = r_t + gamma V_{t+1} - V_t (V after the end = 0),
    A_t = delta_t + gamma lam A_{t+1}, returns = A + V.
    """
    mask = mask.to(rewards.dtype)
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], 1)
    deltas = (rewards + gamma * next_values - values) * mask
    advantages, running = torch.zeros_like(deltas), torch.zeros_like(deltas[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = deltas[:, t] + gamma * lam * running * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum()


def train_rlhf(
    seed: int = 0,
    iterations: int = 15,
    batch_size: int = 128,
    ppo_epochs: int = 4,
    lr: float = 3e-3,
    clip_eps: float = 0.2,
    init_beta: float = 0.2,
    target_kl: float | None = None,
    horizon: float = 200.0,
    pretrain_steps: int = 60,
    device: str = "cpu",
) -> dict:
    """Pretrain a TinyLM on reviews, then tune it with PPO against sentiment_score, KL-penalised.

    Each iteration samples batch_size completions of random prompts, turns their scores into
    kl_shaped_rewards with the current beta, computes advantages with a critic (a second TinyLM
    with one output) and gae, and takes ppo_epochs Adam steps on the clipped policy and value
    losses. With target_kl, an AdaptiveKLController(init_beta, target_kl, horizon) then updates
    beta from the batch's mean sequence_kl; with target_kl=None, beta stays at init_beta.
    Deterministic given seed. Returns {"score": [...], "kl": [...], "beta": [...]} per iteration
    (mean score and mean sequence_kl of the batch, beta used), and "score_before", "score_after",
    "kl_after": the mean score and KL of 1024 completions from the reference and the tuned policy.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    policy, critic = TinyLM().to(device), TinyLM(n_out=1).to(device)
    pretrain(policy, review_corpus(256, generator), pretrain_steps)
    reference = copy.deepcopy(policy).requires_grad_(False)
    controller = AdaptiveKLController(init_beta, target_kl, horizon) if target_kl else None
    optimizer = torch.optim.Adam([*policy.parameters(), *critic.parameters()], lr=lr)
    all_prompts = torch.tensor([tokenize(p) for p in PROMPTS])

    def rollout(model: nn.Module, n: int) -> tuple[Tensor, ...]:
        prompts = all_prompts[torch.randint(len(PROMPTS), (n,), generator=generator)].to(device)
        completions, mask = sample_completions(model, prompts, generator)
        scores = [sentiment_score(detokenize(c)) for c in completions.tolist()]
        return prompts, completions, mask, torch.tensor(scores, device=device)

    def evaluate(model: nn.Module) -> tuple[float, float]:
        prompts, completions, mask, scores = rollout(model, 1024)
        with torch.no_grad():
            logp = token_logprobs(model, prompts, completions)
            kl = sequence_kl(logp, token_logprobs(reference, prompts, completions), mask)
        return scores.mean().item(), kl.mean().item()

    score_before, _ = evaluate(reference)
    history = {"score": [], "kl": [], "beta": []}
    for _ in range(iterations):
        prompts, completions, mask, scores = rollout(policy, batch_size)
        with torch.no_grad():
            logp_old = token_logprobs(policy, prompts, completions)
            logp_ref = token_logprobs(reference, prompts, completions)
            tokens = torch.cat([prompts, completions], dim=1)[:, :-1]
            values_old = critic(tokens)[:, prompts.shape[1] - 1 :, 0]
        beta = controller.value if controller else init_beta
        rewards = kl_shaped_rewards(scores, logp_old, logp_ref, mask, beta)
        advantages, returns = gae(rewards, values_old, mask)
        m = mask.to(advantages.dtype)
        mean = _masked_mean(advantages, m)  # whitened over the batch's tokens, as Ziegler et al.
        advantages = (advantages - mean) / (_masked_mean((advantages - mean) ** 2, m).sqrt() + 1e-8)
        for _ in range(ppo_epochs):
            ratio = torch.exp(token_logprobs(policy, prompts, completions) - logp_old)
            clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
            policy_loss = -_masked_mean(torch.minimum(ratio * advantages, clipped * advantages), m)
            values = critic(tokens)[:, prompts.shape[1] - 1 :, 0]
            value_loss = _masked_mean((values - returns) ** 2, m)
            optimizer.zero_grad()
            (policy_loss + 0.5 * value_loss).backward()
            optimizer.step()
        kl = sequence_kl(logp_old, logp_ref, mask).mean().item()
        if controller:
            controller.update(kl, batch_size)
        history["score"].append(scores.mean().item())
        history["kl"].append(kl)
        history["beta"].append(beta)
    score_after, kl_after = evaluate(policy)
    return {
        **history,
        "score_before": score_before,
        "score_after": score_after,
        "kl_after": kl_after,
    }
