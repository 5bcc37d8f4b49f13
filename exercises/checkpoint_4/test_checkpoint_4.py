"""Checkpoint 4, "aligned to a preference": your Bradley-Terry labeller and reward model turn a
hidden taste into labels, your sequence log-probabilities and DPO loss tune a tiny language model
on them, and the tuned policy prefers what the hidden taste prefers on pairs it never saw, while
staying close to where it started.

Run `pytest exercises/checkpoint_4`. Every piece comes from your own exercises (`load_impl`), so
this passes once they all work together; the first specs referee the pieces on the checkpoint's
own model and data, the last one runs the whole task.
"""

import contextlib
import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from graders.checks import assert_close, fail

PIECES = ("reward_model", "dpo")
WORDS, LENGTH = 8, 4  # a response is LENGTH words out of WORDS: 8**4 = 4096 responses per prompt
PROMPTS = ((0, 1), (2, 3), (4, 5), (6, 7))  # four two-word prompts
HIDDEN, MODEL_SEED, TASTE_SEED = 32, 0, 1
HUMAN_PAIRS, POOL_PAIRS, HELD_OUT_PAIRS = 1024, 2048, 1024
RM_STEPS, RM_LR, RM_BATCH = 300, 1e-2, 128
DPO_STEPS, DPO_LR, DPO_BATCH, BETA = 100, 1e-2, 128, 0.5
RM_BAR, POLICY_BAR, KL_BOUND = 0.70, 0.75, 8.0  # held-out accuracies; KL in nats, per prompt


@pytest.fixture(scope="module")
def own(load_impl):
    return SimpleNamespace(**{name: load_impl(name) for name in PIECES})


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: these tensors are small, and on a busy machine a second thread
    spends more time waiting than working."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# The world: a tiny language model, a hidden taste, and pairs of responses drawn from the model.


class TinyLM(torch.nn.Module):
    """A causal language model over WORDS tokens: embedding, one GRU layer, a linear head.
    input_ids (B, T) -> logits (B, T, WORDS); row t is the distribution of token t + 1."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(WORDS, HIDDEN)
        self.gru = torch.nn.GRU(HIDDEN, HIDDEN, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, WORDS)

    def forward(self, input_ids):
        return self.head(self.gru(self.embed(input_ids))[0])


def reference_model(seed=MODEL_SEED):
    """The model every run starts from, built from `seed` without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyLM()
        # Sharper than a fresh initialisation, so that the reference has tastes of its own.
        with torch.no_grad():
            model.head.weight.mul_(4.0)
    return model.eval()


def taste(seed=TASTE_SEED):
    """The hidden true reward: a value per (prompt, word); a response's reward is its words' sum."""
    return torch.randn(len(PROMPTS), WORDS, generator=torch.Generator().manual_seed(seed))


def true_reward(values, prompt, response):
    """prompt (N,) prompt indices, response (N, LENGTH) words -> (N,) true rewards."""
    return values[prompt.unsqueeze(1), response].sum(1)


def input_ids(prompt, response):
    """prompt (N,), response (N, LENGTH) -> (N, 2 + LENGTH): the prompt's two words, then the
    response."""
    return torch.cat([torch.tensor(PROMPTS)[prompt], response], dim=1)


@torch.no_grad()
def sample_responses(model, prompt, generator):
    """One response (N, LENGTH) per prompt index, drawn word by word from the model."""
    ids = torch.tensor(PROMPTS)[prompt]
    for _ in range(LENGTH):
        probs = torch.softmax(model(ids)[:, -1], dim=-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
    return ids[:, 2:]


def draw_pairs(model, n, seed):
    """n prompts and two responses to each, drawn from the model: (prompt, a, b)."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(len(PROMPTS), (n,), generator=g)
    return prompt, sample_responses(model, prompt, g), sample_responses(model, prompt, g)


def features(prompt, response):
    """The reward model's view: the response's word counts in the row of its prompt (N, 4 * 8)."""
    counts = F.one_hot(response, WORDS).sum(1).float()
    return (F.one_hot(prompt, len(PROMPTS)).float().unsqueeze(2) * counts.unsqueeze(1)).flatten(1)


# The glue: your pieces, one call each.


def response_logprobs(own, model, prompt, response):
    """log pi(response | prompt) (N,) through your sequence_logprobs: the logits are shifted so
    that row t scores token t + 1, and the mask keeps the response's tokens only."""
    ids = input_ids(prompt, response)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 2:] = True
    labels = ids.masked_fill(~mask, -100)  # the prompt's tokens must never be read
    return own.dpo.sequence_logprobs(model(ids)[:, :-1], labels[:, 1:], mask[:, 1:])


def human_labels(own, values, pairs, seed):
    """Noisy human judgements through your sample_preferences: (prompt, chosen, rejected)."""
    prompt, a, b = pairs
    g = torch.Generator().manual_seed(seed)
    a_wins = own.reward_model.sample_preferences(
        true_reward(values, prompt, a), true_reward(values, prompt, b), g
    )
    a_wins = torch.as_tensor(a_wins, dtype=torch.bool).unsqueeze(1)
    return prompt, torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def fit_reward_model(own, labelled, seed):
    """Your RewardModel, trained by your train_reward_model on the human pairs."""
    prompt, chosen, rejected = labelled
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rm = own.reward_model.RewardModel(len(PROMPTS) * WORDS, 64)
    g = torch.Generator().manual_seed(seed + 1)
    own.reward_model.train_reward_model(
        rm,
        features(prompt, chosen),
        features(prompt, rejected),
        g,
        steps=RM_STEPS,
        lr=RM_LR,
        batch_size=RM_BATCH,
    )
    return rm.eval()


@torch.no_grad()
def reward_model_labels(rm, pairs):
    """The reward model judges a pool of unlabelled pairs: (prompt, chosen, rejected)."""
    prompt, a, b = pairs
    a_wins = (rm(features(prompt, a)) >= rm(features(prompt, b))).unsqueeze(1)
    return prompt, torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def train_dpo(own, reference, labelled, seed):
    """DPO_STEPS steps of AdamW on your dpo_loss, from a copy of the reference; the tuned policy."""
    prompt, chosen, rejected = labelled
    policy = copy.deepcopy(reference).train()
    with torch.no_grad():
        ref_chosen = response_logprobs(own, reference, prompt, chosen)
        ref_rejected = response_logprobs(own, reference, prompt, rejected)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=DPO_LR)
    g = torch.Generator().manual_seed(seed)
    for _ in range(DPO_STEPS):
        i = torch.randint(len(prompt), (DPO_BATCH,), generator=g)
        loss, _, _ = own.dpo.dpo_loss(
            response_logprobs(own, policy, prompt[i], chosen[i]),
            response_logprobs(own, policy, prompt[i], rejected[i]),
            ref_chosen[i],
            ref_rejected[i],
            beta=BETA,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy.eval()


def all_responses():
    """Every response (WORDS**LENGTH, LENGTH), in lexicographic order."""
    return torch.cartesian_prod(*[torch.arange(WORDS)] * LENGTH)


@torch.no_grad()
def logprob_table(model):
    """log pi(y | prompt) for every prompt and every response: (len(PROMPTS), WORDS**LENGTH),
    computed directly (log_softmax and gather), not through your pieces."""
    ys = all_responses()
    rows = []
    with one_thread():
        for p in range(len(PROMPTS)):
            ids = input_ids(torch.full((len(ys),), p), ys)
            logp = torch.log_softmax(model(ids)[:, 1:-1], dim=-1)
            rows.append(logp.gather(-1, ys.unsqueeze(-1)).squeeze(-1).sum(1))
    return torch.stack(rows)


def index_of(response):
    """The column of logprob_table that holds each response (N, LENGTH) -> (N,)."""
    return (response * WORDS ** torch.arange(LENGTH - 1, -1, -1)).sum(1)


def kl_per_prompt(policy_table, reference_table):
    """KL(policy || reference) over whole responses, exactly, for each prompt (len(PROMPTS),)."""
    return (policy_table.exp() * (policy_table - reference_table)).sum(1)


def preference_accuracy(scores, values, pairs):
    """How often a score table (prompts, responses) ranks a pair as the hidden taste does, over
    the pairs whose true rewards differ; a tie counts as half right."""
    prompt, a, b = pairs
    truth = torch.sign(true_reward(values, prompt, a) - true_reward(values, prompt, b))
    guess = torch.sign(scores[prompt, index_of(a)] - scores[prompt, index_of(b)])
    kept = truth != 0
    return float(((guess[kept] == truth[kept]).double() + 0.5 * (guess[kept] == 0)).mean())


def align(own, data_seed):
    """The whole task: human labels on HUMAN_PAIRS pairs, a reward model fitted to them, which
    labels POOL_PAIRS more, and DPO on those. The reward model and the policy, trained."""
    reference, values = reference_model(), taste()
    with one_thread():
        pairs = draw_pairs(reference, HUMAN_PAIRS, data_seed)
        rm = fit_reward_model(own, human_labels(own, values, pairs, data_seed), data_seed + 1)
        pool = reward_model_labels(rm, draw_pairs(reference, POOL_PAIRS, data_seed + 2))
        return rm, train_dpo(own, reference, pool, data_seed + 3)


@torch.no_grad()
def reward_table(rm):
    """The reward model's reward for every prompt and response (len(PROMPTS), WORDS**LENGTH)."""
    ys = all_responses()
    return torch.stack([rm(features(torch.full((len(ys),), p), ys)) for p in range(len(PROMPTS))])


# The specs.


def test_your_sequence_logprobs_score_the_tiny_lm(own):
    model = reference_model()
    prompt, a, _ = draw_pairs(model, 64, seed=11)
    policy = copy.deepcopy(model)
    mine = response_logprobs(own, policy, prompt, a)
    if tuple(mine.shape) != (64,):
        fail(
            f"sequence_logprobs on logits (64, 5, 8) returned shape {tuple(mine.shape)}; "
            "expected (64,): one log-probability per sequence"
        )
    expected = logprob_table(model)[prompt, index_of(a)]
    assert_close(
        mine.detach(),
        expected,
        rtol=1e-5,
        atol=1e-5,
        what="sequence_logprobs(logits (64, 5, 8), labels (64, 5), loss_mask (64, 5)) on the "
        "tiny LM: log pi(response | prompt), the sum over the 4 response tokens only",
    )
    if not mine.requires_grad:
        fail("sequence_logprobs returned a tensor without a gradient: DPO cannot train through it")
    mine.sum().backward()
    if policy.head.weight.grad is None or not policy.head.weight.grad.abs().sum() > 0:
        fail("the gradient of sequence_logprobs did not reach the model's weights")


def test_your_dpo_loss_on_the_tiny_lm(own):
    model = reference_model()
    prompt, a, b = draw_pairs(model, 64, seed=12)
    table = logprob_table(model)
    ref_a, ref_b = table[prompt, index_of(a)], table[prompt, index_of(b)]
    loss, ra, rb = own.dpo.dpo_loss(ref_a, ref_b, ref_a, ref_b, beta=BETA)
    assert_close(
        loss.detach(),
        torch.tensor(math.log(2)),
        rtol=1e-6,
        atol=1e-6,
        what="dpo_loss when the policy is the reference (it must be log 2)",
    )
    # A policy that has moved: the reference's log-probabilities plus a shift per pair.
    shift = torch.randn(2, 64, generator=torch.Generator().manual_seed(13))
    pa = (ref_a + 3 * shift[0]).requires_grad_()
    pb = (ref_b + 3 * shift[1]).requires_grad_()
    loss, ra, rb = own.dpo.dpo_loss(pa, pb, ref_a, ref_b, beta=BETA)
    h = (pa - ref_a) - (pb - ref_b)
    expected = -F.logsigmoid(BETA * h).mean()
    what = "dpo_loss(policy_chosen (64,), policy_rejected, ref_chosen, ref_rejected, beta=0.1)"
    assert_close(loss.detach(), expected.detach(), rtol=1e-5, atol=1e-6, what=what)
    if ra.requires_grad or rb.requires_grad:
        fail(f"{what}: the implicit rewards must be detached")
    assert_close(
        ra,
        BETA * (pa - ref_a).detach(),
        rtol=1e-5,
        atol=1e-6,
        what=f"{what}: chosen_rewards, beta * (policy - ref)",
    )
    assert_close(
        rb,
        BETA * (pb - ref_b).detach(),
        rtol=1e-5,
        atol=1e-6,
        what=f"{what}: rejected_rewards, beta * (policy - ref)",
    )
    # A pair the policy has moved far the wrong way: the margin is -200 and the loss must stay
    # finite (about 100 per pair in float32), not log(0).
    far, _, _ = own.dpo.dpo_loss(ref_a[:1] - 200.0, ref_b[:1] + 200.0, ref_a[:1], ref_b[:1], 0.5)
    if not torch.isfinite(far):
        fail(f"dpo_loss on a pair with margin beta * h = -200 gave {float(far)}; it should be 200")
    (grad,) = torch.autograd.grad(loss, pa)
    (want,) = torch.autograd.grad(expected, pa)
    assert_close(grad, want, rtol=1e-5, atol=1e-7, what=f"d {what} / d policy_chosen")


def test_your_labels_follow_bradley_terry(own):
    # 200,000 pairs: each of the two rates below is an average of bounded independent draws and
    # lands within 0.01 of its expectation except with chance below 2 exp(-40) < 1e-17
    # (Hoeffding), so a correct labeller fails this spec with chance below 1e-16.
    g = torch.Generator().manual_seed(14)
    r_a, r_b = torch.randn(200_000, generator=g) * 2, torch.randn(200_000, generator=g) * 2
    wins = torch.as_tensor(
        own.reward_model.sample_preferences(r_a, r_b, torch.Generator().manual_seed(15)),
        dtype=torch.bool,
    )
    p = torch.sigmoid(r_a - r_b)
    agree = float((wins == (r_a > r_b)).double().mean())
    expected_agree = float(torch.sigmoid((r_a - r_b).abs()).mean())
    if abs(agree - expected_agree) > 0.01:
        fail(
            "sample_preferences(r_a, r_b, generator) on 200,000 pairs: the label should favour "
            f"the higher reward with chance sigmoid(|r_a - r_b|), {expected_agree:.3f} on "
            f"average; yours did {agree:.3f} of the time (True means a is preferred)"
        )
    mean_ra = float(wins[r_a - r_b > 1].double().mean())
    expected_ra = float(p[r_a - r_b > 1].mean())
    if abs(mean_ra - expected_ra) > 0.02:
        fail(
            "sample_preferences: where r_a - r_b > 1 the label should be True with chance "
            f"sigmoid(r_a - r_b), {expected_ra:.3f} on average; yours gave {mean_ra:.3f}"
        )


def test_your_reward_model_learns_the_hidden_taste(own):
    reference, values = reference_model(), taste()
    with one_thread():
        labelled = human_labels(own, values, draw_pairs(reference, HUMAN_PAIRS, 21), 21)
        rm = fit_reward_model(own, labelled, 22)
    table = reward_table(rm)
    if tuple(table.shape) != (len(PROMPTS), WORDS**LENGTH):
        fail(f"RewardModel on items (4096, 32) should give (4096,) rewards; got {table.shape}")
    held_out = draw_pairs(reference, HELD_OUT_PAIRS, 23)
    # Your Bradley-Terry loss on your model's rewards, and on a model 100 times as confident.
    prompt, a, b = held_out
    with torch.no_grad():
        r_a, r_b = rm(features(prompt, a)), rm(features(prompt, b))
    for scale in (1.0, 100.0):
        assert_close(
            own.reward_model.bradley_terry_loss(scale * r_a, scale * r_b),
            F.softplus(scale * (r_b - r_a)).mean(),
            rtol=1e-5,
            atol=1e-6,
            what=f"bradley_terry_loss on {scale:g} x your reward model's rewards (1024 pairs)",
        )
    accuracy = preference_accuracy(table, values, held_out)
    if not accuracy >= RM_BAR:
        fail(
            f"your RewardModel, trained by your train_reward_model on {HUMAN_PAIRS} noisy human "
            f"pairs, ranks {accuracy:.1%} of {HELD_OUT_PAIRS} held-out pairs as the hidden taste "
            f"does; the bar is {RM_BAR:.0%}"
        )


def test_the_policy_is_aligned_to_the_preference(own):
    reference, values = reference_model(), taste()
    _, policy = align(own, data_seed=31)
    policy_table, reference_table = logprob_table(policy), logprob_table(reference)
    held_out = draw_pairs(reference, HELD_OUT_PAIRS, 32)
    accuracy = preference_accuracy(policy_table - reference_table, values, held_out)
    kl = kl_per_prompt(policy_table, reference_table)
    if not accuracy >= POLICY_BAR:
        fail(
            f"after {DPO_STEPS} DPO steps the policy's implicit reward, beta * log(pi / pi_ref), "
            f"ranks {accuracy:.1%} of {HELD_OUT_PAIRS} held-out pairs as the hidden taste does; "
            f"the bar is {POLICY_BAR:.0%} (KL to the reference per prompt: "
            f"{[round(float(k), 2) for k in kl]})"
        )
    if not (torch.isfinite(kl).all() and kl.max() <= KL_BOUND):
        fail(
            f"the tuned policy drifted too far: KL(policy || reference) per prompt is "
            f"{[round(float(k), 2) for k in kl]} nats; the bound is {KL_BOUND}"
        )
