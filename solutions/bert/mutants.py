"""Common mistakes in masked language modelling, each replacing one function of the reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("bert")
IGNORE = -100


def _corrupt(ids, mask_id, vocab_size, chosen, generator, random_share=0.1, high=None):
    """The reference's 80/10/10 step on a given choice; `random_share` of the chosen get a random
    id drawn from 0 .. high - 1 (high defaults to vocab_size)."""
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    high = vocab_size if high is None else high
    random_ids = torch.randint(high, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(chosen & (u < 0.8), mask_id, ids)
    return torch.where(chosen & (u >= 0.8) & (u < 0.8 + random_share), random_ids, inputs)


def _choose(ids, special_mask, p, generator):
    return (torch.rand(ids.shape, generator=generator, device=ids.device) < p) & ~special_mask


@mutant("mask_tokens", "labels keep every original token: put -100 where nothing was chosen")
def labels_not_ignored(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    inputs, _ = ref.mask_tokens(ids, mask_id, vocab_size, special_mask, p, generator)
    return inputs, ids.clone()


@mutant(
    "mask_tokens",
    "special tokens are chosen too: never choose where special_mask is True",
)
def specials_can_be_chosen(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    return ref.mask_tokens(ids, mask_id, vocab_size, torch.zeros_like(special_mask), p, generator)


@mutant(
    "mask_tokens",
    "the labels are the corrupted inputs: a chosen position's label is its original token",
)
def labels_are_corrupted_inputs(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    inputs, labels = ref.mask_tokens(ids, mask_id, vocab_size, special_mask, p, generator)
    return inputs, torch.where(labels != IGNORE, inputs, IGNORE)


@mutant(
    "mask_tokens",
    "every chosen token becomes [MASK]: 10% should get a random token and 10% stay unchanged",
)
def always_mask(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    chosen = _choose(ids, special_mask, p, generator)
    return torch.where(chosen, mask_id, ids), torch.where(chosen, ids, IGNORE)


@mutant(
    "mask_tokens",
    "only the [MASK]ed tokens are labelled (12%): the random and kept 10% + 10% need labels too",
)
def labels_only_at_mask_tokens(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    inputs, labels = ref.mask_tokens(ids, mask_id, vocab_size, special_mask, p, generator)
    return inputs, torch.where(inputs == mask_id, labels, IGNORE)


@mutant(
    "mask_tokens",
    "a random token replaces 10% of the remaining 20%, i.e. 2% of the chosen, not 10%",
)
def random_share_of_the_rest(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    chosen = _choose(ids, special_mask, p, generator)
    inputs = _corrupt(ids, mask_id, vocab_size, chosen, generator, random_share=0.02)
    return inputs, torch.where(chosen, ids, IGNORE)


@mutant(
    "mask_tokens",
    "random ids never reach vocab_size - 1: torch.randint's upper bound is already exclusive",
)
def randint_high_off_by_one(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    chosen = _choose(ids, special_mask, p, generator)
    inputs = _corrupt(ids, mask_id, vocab_size, chosen, generator, high=vocab_size - 1)
    return inputs, torch.where(chosen, ids, IGNORE)


@mutant("mask_tokens", "ids is corrupted in place: clone it before writing the [MASK]s")
def corrupts_ids_in_place(ids, mask_id, vocab_size, special_mask, p=0.15, generator=None):
    inputs, labels = ref.mask_tokens(ids, mask_id, vocab_size, special_mask, p, generator)
    ids.copy_(inputs)
    return ids, labels


@mutant(
    "mlm_loss",
    "the summed loss is divided by every position, not by the number of labelled ones",
)
def divided_by_all_positions(logits, labels):
    return ref.mlm_loss(logits, labels) * (labels != IGNORE).sum() / labels.numel()


@mutant(
    "mlm_loss",
    "the mean is taken per sequence and then over sequences: each labelled token should count once",
)
def mean_of_sequence_means(logits, labels):
    rows = logits.reshape(-1, logits.shape[-2], logits.shape[-1])
    rows_labels = labels.reshape(-1, labels.shape[-1])
    return torch.stack([ref.mlm_loss(x, y) for x, y in zip(rows, rows_labels, strict=True)]).mean()


@mutant(
    "mlm_loss",
    "ignored labels are scored as token 0: positions labelled -100 must not enter the loss",
)
def ignored_scored_as_token_zero(logits, labels):
    return ref.mlm_loss(logits, labels.clamp(min=0))


@mutant(
    "mlm_loss",
    "log(softmax) without subtracting the row maximum: exp overflows on large logits",
)
def softmax_without_max_shift(logits, labels):
    e = logits.exp()
    log_probs = (e / e.sum(-1, keepdim=True)).log()
    labelled = labels != IGNORE
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(labelled, -picked, 0.0).sum() / labelled.sum().clamp(min=1)
