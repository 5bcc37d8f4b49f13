"""Common mistakes in decoding, each replacing one function of the reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("decoding")


@mutant("apply_temperature", "the logits are multiplied by the temperature instead of divided")
def temperature_multiplies(logits, temperature):
    return logits * temperature


@mutant(
    "top_k_filter",
    "the filtered logits are set to 0, not -inf: exp(0) still gives them probability",
)
def top_k_fills_zero(logits, k):
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


@mutant("top_k_filter", "off by one: the threshold is the (k+1)-th largest logit, so k+1 survive")
def top_k_keeps_k_plus_one(logits, k):
    return ref.top_k_filter(logits, k + 1)


@mutant(
    "top_p_filter",
    "the token whose probability carries the running total across p is dropped from the nucleus",
)
def top_p_drops_the_crossing_token(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    remove = sorted_probs.cumsum(dim=-1) >= p  # should test the mass *before* each token
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


@mutant(
    "top_p_filter",
    "the nucleus mask is built in sorted order but applied in vocabulary order: scatter it back",
)
def top_p_mask_in_sorted_order(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs = probs.sort(dim=-1, descending=True).values
    remove = sorted_probs.cumsum(dim=-1) - sorted_probs >= p
    return logits.masked_fill(remove, float("-inf"))


@mutant(
    "sample",
    "top-k and top-p are applied before the temperature: the nucleus is cut from the wrong law",
)
def filters_before_temperature(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return ref.greedy(logits)
    if top_k is not None:
        logits = ref.top_k_filter(logits, top_k)
    if top_p is not None:
        logits = ref.top_p_filter(logits, top_p)
    return ref.sample(logits, temperature, generator=generator)


@mutant(
    "sample",
    "one uniform number is drawn for the whole batch: the rows are not sampled independently",
)
def one_uniform_for_the_batch(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return ref.greedy(logits)
    logits = ref.apply_temperature(logits, temperature)
    if top_k is not None:
        logits = ref.top_k_filter(logits, top_k)
    if top_p is not None:
        logits = ref.top_p_filter(logits, top_p)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    u = torch.rand(1, generator=generator, device=logits.device, dtype=cdf.dtype)
    u = u * cdf[..., -1:]  # inverse-CDF sampling, but with the same u for every row
    return (
        torch.searchsorted(cdf, u.expand(*cdf.shape[:-1], 1))
        .squeeze(-1)
        .clamp(max=cdf.shape[-1] - 1)
    )


@mutant("sample", "the draw ignores `generator` and uses torch's global random generator")
def global_generator(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    return ref.sample(logits, temperature, top_k, top_p, generator=None)


def _beam(
    step_fn,
    bos,
    eos,
    beam_width,
    max_len,
    length_penalty=0.0,
    device="cpu",
    *,
    normalise=True,
    lp=lambda length, alpha: ((5 + length) / 6) ** alpha,
    compete=True,
    stop_after=None,
):
    """The reference's beam search with one of the mistakes below switched on."""
    beams = torch.full((1, 1), bos, dtype=torch.long, device=device)
    log_p = torch.zeros(1, device=device)
    best_tokens, best_score, n_finished = None, float("-inf"), 0
    stop_after = beam_width if stop_after is None else stop_after
    for step in range(max_len):
        scores = step_fn(beams)
        log_probs = torch.log_softmax(scores, dim=-1) if normalise else scores
        V = log_probs.shape[-1]
        candidates = log_p[:, None] + log_probs
        if compete or step == 0:
            top, index = candidates.flatten().topk(min(beam_width, candidates.numel()))
        else:  # each beam keeps its own best extension
            top, token = candidates.max(dim=-1)
            top, order = top.sort(descending=True)
            index = order * V + token[order]
        parent, token = index // V, index % V
        extended = torch.cat([beams[parent], token[:, None]], dim=1)
        ended = token == eos
        if ended.any():
            first = int(ended.nonzero()[0])
            score = top[first].item() / lp(len(extended[first]) - 1, length_penalty)
            if score > best_score:
                best_tokens, best_score = extended[first, 1:], score
            n_finished += int(ended.sum())
        beams, log_p = extended[~ended], top[~ended]
        if n_finished >= stop_after or len(beams) == 0:
            break
    else:
        score = log_p[0].item() / lp(max_len, length_penalty)
        if score > best_score:
            best_tokens, best_score = beams[0, 1:], score
    return best_tokens, best_score


@mutant(
    "beam_search",
    "scores add up raw logits: take log_softmax of step_fn's output to get log-probabilities",
)
def beam_adds_raw_logits(step_fn, bos, eos, beam_width, max_len, length_penalty=0.0, device="cpu"):
    return _beam(step_fn, bos, eos, beam_width, max_len, length_penalty, device, normalise=False)


@mutant("beam_search", "the length penalty is never applied: finished outputs compare by log P")
def beam_without_length_penalty(
    step_fn, bos, eos, beam_width, max_len, length_penalty=0.0, device="cpu"
):
    return _beam(step_fn, bos, eos, beam_width, max_len, 0.0, device)


@mutant(
    "beam_search",
    "the length penalty is |y| ** alpha (Hugging Face's), not Wu et al.'s ((5 + |y|) / 6) ** alpha",
)
def length_penalty_without_the_five(
    step_fn, bos, eos, beam_width, max_len, length_penalty=0.0, device="cpu"
):
    return _beam(
        step_fn,
        bos,
        eos,
        beam_width,
        max_len,
        length_penalty,
        device,
        lp=lambda length, alpha: length**alpha,
    )


@mutant(
    "beam_search",
    "each beam keeps its own best extension; the beams must compete for the beam_width slots",
)
def beams_do_not_compete(step_fn, bos, eos, beam_width, max_len, length_penalty=0.0, device="cpu"):
    return _beam(step_fn, bos, eos, beam_width, max_len, length_penalty, device, compete=False)


@mutant(
    "beam_search",
    "the search stops at the first finished hypothesis, not after beam_width have finished",
)
def beam_stops_at_the_first_finished(
    step_fn, bos, eos, beam_width, max_len, length_penalty=0.0, device="cpu"
):
    return _beam(step_fn, bos, eos, beam_width, max_len, length_penalty, device, stop_after=1)
