"""Group relative policy optimisation, verifiable rewards (Shao et al., 2024; DeepSeek-AI, 2025).

PPO needs a value network as large as the policy to tell a good answer from a lucky one. GRPO drops
it: for each question it samples a *group* of answers, scores each with a reward that a program can
check (is the final answer right, is it in the required format?), and uses the answer's reward
relative to its group, (r - mean) / std, as the advantage of every one of its tokens. The update is
PPO's clipped ratio, plus a penalty that keeps the policy near a frozen reference model, estimated
per token with the unbiased, always non-negative "k3" estimator.

The module also holds, as given code, everything around those three pieces: a tokenizer for small
sums ("3+4=" -> "<answer>7</answer>"), a tiny causal language model, sampling, a short supervised
warm-up and the training loop that calls your functions.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import Tensor, nn

__all__ = [
    "TinyPolicy",
    "arithmetic_problems",
    "detokenize",
    "expected_accuracy",
    "group_advantages",
    "grpo_loss",
    "sample_completions",
    "supervised_warmup",
    "token_logprobs",
    "tokenize",
    "train_grpo",
    "verifiable_reward",
]

CORRECT_REWARD = 1.0  # a well-formed completion with the right answer
FORMAT_REWARD = 0.1  # a well-formed completion with a wrong answer; anything else earns 0

VOCAB = ("<eos>", *"0123456789", "+", "=", "<answer>", "</answer>")
EOS = 0
MAX_NEW_TOKENS = 5  # <answer>, up to two digits, </answer>, <eos>
CONTEXT = 8  # a 4-token prompt and the first 4 tokens of its completion
_TOKEN = re.compile(r"</?answer>|.", re.S)


# -- your three functions --------------------------------------------------------------------


def verifiable_reward(completion: str, answer: int) -> float:
    """The reward of one completion, checked by a program: no reward model involved.

    A completion is well formed when it is exactly one `<answer>N</answer>` block, N an integer
    (an optional minus sign and digits), with optional whitespace around the block and around N;
    any other text before, after or inside makes it malformed. Returns CORRECT_REWARD (1.0) when it
    is well formed and int(N) == answer, FORMAT_REWARD (0.1) when it is well formed with another
    number, and 0.0 when it is malformed.
    """
    ### BEGIN SOLUTION
    # DeepSeek-R1's two rule-based rewards: accuracy (is the final answer right?) and format (is
    # the answer where a program can find it?). Matching the whole string, not searching inside
    # it, is what stops a policy from earning the reward by listing several answers.
    match = re.fullmatch(r"\s*<answer>\s*(-?\d+)\s*</answer>\s*", completion)
    if match is None:
        return 0.0
    return CORRECT_REWARD if int(match.group(1)) == answer else FORMAT_REWARD
    ### END SOLUTION


def group_advantages(
    rewards: Tensor, group_size: int, normalize_std: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO's advantages: each reward relative to the other answers to the same question.

    rewards (N,) float, laid out group after group: rewards[g * group_size : (g + 1) * group_size]
    are the answers to question g, N a multiple of group_size -> advantages (N,), same dtype and
    device: (r - mean of its group) / (std of its group + eps), with the unbiased standard
    deviation (torch.std's default); r - mean of its group when normalize_std is False.
    """
    if rewards.dim() != 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"rewards must be (N,) with N a multiple of group_size={group_size}; "
            f"got shape {tuple(rewards.shape)}"
        )
    if group_size < 2:
        raise ValueError("a group needs at least two answers to have a baseline")
    ### BEGIN SOLUTION
    groups = rewards.view(-1, group_size)  # one row per question
    # The group's mean reward replaces PPO's learned value function as the baseline.
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if normalize_std:
        # eps keeps a group whose answers all scored the same at advantage 0 instead of 0 / 0.
        advantages = advantages / (groups.std(dim=1, keepdim=True) + eps)
    return advantages.view(-1)
    ### END SOLUTION


def grpo_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.04,
) -> Tensor:
    """The GRPO loss: minus DeepSeekMath's objective, to be minimised.

    logp_new (B, T): log-probabilities of the sampled tokens under the policy being trained (with
    gradients); logp_old (B, T): under the policy that sampled them; logp_ref (B, T): under the
    frozen reference; advantages (B,): one per completion, shared by all its tokens; mask (B, T)
    bool or 0/1: True on the completion's tokens, False on padding. Per token,
    ratio = exp(logp_new - logp_old), surrogate = min(ratio * A, clip(ratio, 1 - clip_eps,
    1 + clip_eps) * A), kl = exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1 (k3), and the
    objective of a token is surrogate - beta * kl. Averaged over each completion's own tokens,
    then over the B completions, and negated -> a 0-dim tensor, differentiable in logp_new.
    """
    ### BEGIN SOLUTION
    # PPO's clipped surrogate, per token: once the ratio has moved clip_eps away from 1 in the
    # direction the advantage favours, the min picks the flat, clipped branch and its gradient is 0.
    ratio = torch.exp(logp_new - logp_old)
    a = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    # k3 = r - log r - 1 with r = pi_ref / pi_theta: an unbiased estimate of KL(pi_theta || pi_ref)
    # on tokens sampled from pi_theta, and never negative, since log r <= r - 1.
    log_r = logp_ref - logp_new
    kl = torch.exp(log_r) - log_r - 1
    per_token = surrogate - beta * kl
    # 1/|o_i| sum over t, then 1/G sum over i: each completion weighs the same whatever its length.
    mask = mask.to(per_token.dtype)
    per_completion = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return -per_completion.mean()
    ### END SOLUTION


# -- given: the task, the tiny policy and the training loop --------------------------------------


def tokenize(text: str) -> list[int]:
    """Token ids of text: one per character, "<answer>" and "</answer>" one token each."""
    try:
        return [VOCAB.index(piece) for piece in _TOKEN.findall(text)]
    except ValueError:
        raise ValueError(f"{text!r} holds a character outside the vocabulary {VOCAB}") from None


def detokenize(ids: list[int] | Tensor) -> str:
    """The text of token ids, up to (without) the first <eos>."""
    ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
    if EOS in ids:
        ids = ids[: ids.index(EOS)]
    return "".join(VOCAB[i] for i in ids)


def arithmetic_problems() -> list[tuple[str, int]]:
    """The 100 prompts "a+b=" for single digits a and b, with their answers a + b."""
    return [(f"{a}+{b}=", a + b) for a in range(10) for b in range(10)]


class TinyPolicy(nn.Module):
    """A tiny causal language model: position t reads tokens 0..t through one MLP.

    The embeddings of tokens 0..t are laid side by side in a window of CONTEXT slots, the slots
    after t are zeros, and a one-hidden-layer MLP maps the window to the logits of token t + 1
    (Bengio et al.'s neural language model, with the whole prefix as its context).
    Shapes: tokens (B, T) long, T <= CONTEXT -> logits (B, T, len(VOCAB)).
    """

    def __init__(self, d_embed: int = 16, d_hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), d_embed)
        self.hidden = nn.Linear(CONTEXT * d_embed, d_hidden)  # one (d_hidden, d_embed) block a slot
        self.out = nn.Linear(d_hidden, len(VOCAB))

    def forward(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[1]
        e = self.embed(tokens)  # (B, T, d_embed)
        blocks = self.hidden.weight.view(self.hidden.out_features, CONTEXT, -1)[:, :T]
        # The hidden layer applied to position t's window is the sum over slots s <= t of block s
        # times token s: a running sum over positions, with no window ever built.
        h = torch.einsum("btd,htd->bth", e, blocks).cumsum(dim=1) + self.hidden.bias
        return self.out(torch.relu(h))


def token_logprobs(policy: nn.Module, prompts: Tensor, completions: Tensor) -> Tensor:
    """log pi(completion token t | prompt, completion tokens < t) for every t.

    prompts (B, P) long, completions (B, T) long -> (B, T) float, differentiable in the policy.
    """
    tokens = torch.cat([prompts, completions], dim=1)[:, :-1]
    logits = policy(tokens)[:, prompts.shape[1] - 1 :]  # the rows that predict the completion
    return logits.log_softmax(-1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sample_completions(
    policy: nn.Module, prompts: Tensor, generator: torch.Generator, greedy: bool = False
) -> tuple[Tensor, Tensor]:
    """Up to MAX_NEW_TOKENS tokens after each prompt, at temperature 1 (or greedily).

    prompts (B, P) long -> (completions (B, T) long, mask (B, T) bool), T <= MAX_NEW_TOKENS. After
    a completion's first <eos> it is padded with <eos> and its mask is False; the mask is True on
    every token up to and including that <eos>. generator: a CPU torch.Generator; one uniform per
    row and step is drawn from it and turned into a token by the inverse of the CDF, so a run gives
    the same tokens on every device up to rounding.
    """
    tokens, done, masks = prompts, torch.zeros_like(prompts[:, 0], dtype=torch.bool), []
    for _ in range(MAX_NEW_TOKENS):
        probs = policy(tokens)[:, -1].softmax(-1)
        if greedy:
            nxt = probs.argmax(-1)
        else:
            u = torch.rand(len(prompts), 1, generator=generator).to(probs)
            nxt = (probs.cumsum(-1) < u).sum(-1).clamp(max=len(VOCAB) - 1)
        nxt = nxt.masked_fill(done, EOS)
        masks.append(~done)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done = done | (nxt == EOS)
        if done.all():
            break
    return tokens[:, prompts.shape[1] :], torch.stack(masks, dim=1)


def _answer_batch(problems: list[tuple[str, int]], device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Prompts (N, 4), the correct completions (N, T) padded with <eos>, and their masks."""
    prompts = torch.tensor([tokenize(p) for p, _ in problems], device=device)
    targets = [[*tokenize(f"<answer>{a}</answer>"), EOS] for _, a in problems]
    T = max(map(len, targets))
    completions = torch.tensor([t + [EOS] * (T - len(t)) for t in targets], device=device)
    mask = torch.tensor([[i < len(t) for i in range(T)] for t in targets], device=device)
    return prompts, completions, mask


@torch.no_grad()
def expected_accuracy(policy: nn.Module, problems: list[tuple[str, int]]) -> float:
    """The chance that a completion sampled at temperature 1 is exactly "<answer>{a}</answer>",
    averaged over the problems: computed exactly from the policy's probabilities, no sampling."""
    device = str(next(policy.parameters()).device)
    prompts, completions, mask = _answer_batch(problems, device)
    logp = token_logprobs(policy, prompts, completions).masked_fill(~mask, 0.0)
    return logp.sum(-1).exp().mean().item()


def supervised_warmup(
    policy: nn.Module, problems: list[tuple[str, int]], steps: int, lr: float = 1e-2
) -> None:
    """A few full-batch Adam steps of next-token cross-entropy on the correct completions: enough
    to teach the format and a rough idea of the sums, far from enough to get them all right."""
    device = str(next(policy.parameters()).device)
    prompts, completions, mask = _answer_batch(problems, device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(steps):
        logp = token_logprobs(policy, prompts, completions)
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train_grpo(
    seed: int = 0,
    iterations: int = 40,
    questions_per_step: int = 32,
    group_size: int = 8,
    inner_steps: int = 2,
    lr: float = 5e-3,
    clip_eps: float = 0.2,
    beta: float = 0.04,
    warmup_steps: int = 40,
    device: str = "cpu",
) -> dict:
    """Warm a TinyPolicy up on the sums, then improve it with GRPO, using your three functions.

    Each iteration draws questions_per_step problems, samples group_size completions for each with
    the current policy, scores them with verifiable_reward, turns the scores into group_advantages,
    and takes inner_steps Adam steps on grpo_loss against the log-probabilities of the policy that
    sampled them (logp_old) and of the frozen warmed-up policy (logp_ref). Deterministic given seed.
    Returns {"accuracy_before": float, "accuracy_after": float, "mean_reward": [float per
    iteration]}, the accuracies from expected_accuracy on all 100 problems.
    """
    problems = arithmetic_problems()
    torch.manual_seed(seed)
    policy = TinyPolicy().to(device)
    supervised_warmup(policy, problems, warmup_steps)
    reference = copy.deepcopy(policy).requires_grad_(False)
    before = expected_accuracy(policy, problems)

    generator = torch.Generator().manual_seed(seed)
    all_prompts = torch.tensor([tokenize(p) for p, _ in problems])
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    mean_reward = []
    for _ in range(iterations):
        questions = torch.randint(len(problems), (questions_per_step,), generator=generator)
        questions = questions.repeat_interleave(group_size)  # a group of answers per question
        prompts = all_prompts[questions].to(device)
        completions, mask = sample_completions(policy, prompts, generator)
        rewards = torch.tensor(
            [
                verifiable_reward(detokenize(c), problems[q][1])
                for c, q in zip(completions.tolist(), questions.tolist(), strict=True)
            ],
            device=device,
        )
        advantages = group_advantages(rewards, group_size)
        with torch.no_grad():
            logp_old = token_logprobs(policy, prompts, completions)
            logp_ref = token_logprobs(reference, prompts, completions)
        for _ in range(inner_steps):  # several steps on one batch: where the clipping matters
            logp_new = token_logprobs(policy, prompts, completions)
            loss = grpo_loss(logp_new, logp_old, logp_ref, advantages, mask, clip_eps, beta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        mean_reward.append(rewards.mean().item())
    after = expected_accuracy(policy, problems)
    return {"accuracy_before": before, "accuracy_after": after, "mean_reward": mean_reward}
