"""Common mistakes in span corruption, each replacing one function of the reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("t5")


def _mask(length, num_noise, num_spans, generator, *, noise_lengths=None, empty_ok=False):
    """The reference's layout (clean, noise, clean, ..., noise) with the given counts. noise_lengths
    replaces the random cut of the noise tokens; empty_ok draws the cuts with replacement, so that
    spans can be empty (and neighbours merge)."""
    device = generator.device if generator is not None else torch.device("cpu")
    span_lengths = []
    for n in (num_noise, length - num_noise):
        if n == num_noise and noise_lengths is not None:
            span_lengths.append(noise_lengths.to(device))
            continue
        if empty_ok:
            cuts = torch.randint(0, n + 1, (num_spans - 1,), generator=generator, device=device)
        else:
            cuts = torch.randperm(n - 1, generator=generator, device=device)[: num_spans - 1] + 1
        ends = torch.cat([cuts.sort().values, torch.tensor([n], device=device)])
        span_lengths.append(ends.diff(prepend=torch.zeros(1, dtype=ends.dtype, device=device)))
    noise_lengths, clean_lengths = span_lengths
    lengths = torch.stack([clean_lengths, noise_lengths], dim=1).flatten()
    is_noise = torch.arange(2 * num_spans, device=device) % 2 == 1
    return torch.repeat_interleave(is_noise, lengths)


def _counts(length, noise_density, mean_noise_span_length):
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = min(max(round(num_noise / mean_noise_span_length), 1), length - num_noise)
    return num_noise, num_spans


@mutant(
    "random_spans_noise_mask",
    "the number of noise tokens is truncated (int) where T5 rounds: round(length * density)",
)
def truncated_noise_count(length, noise_density=0.15, mean_noise_span_length=3.0, generator=None):
    num_noise = min(max(int(length * noise_density), 1), length - 1)
    num_spans = min(max(round(num_noise / mean_noise_span_length), 1), length - num_noise)
    return _mask(length, num_noise, num_spans, generator)


@mutant(
    "random_spans_noise_mask",
    "the noise count is not clipped to [1, length - 1]: short or dense sequences lose a span kind",
)
def noise_count_not_clipped(length, noise_density=0.15, mean_noise_span_length=3.0, generator=None):
    num_noise = round(length * noise_density)
    if num_noise in (0, length):
        device = generator.device if generator is not None else "cpu"
        return torch.full((length,), num_noise == length, dtype=torch.bool, device=device)
    return ref.random_spans_noise_mask(length, noise_density, mean_noise_span_length, generator)


@mutant(
    "random_spans_noise_mask",
    "the cuts are drawn with replacement: spans can come out empty and fewer spans remain",
)
def cuts_with_replacement(length, noise_density=0.15, mean_noise_span_length=3.0, generator=None):
    num_noise, num_spans = _counts(length, noise_density, mean_noise_span_length)
    return _mask(length, num_noise, num_spans, generator, empty_ok=True)


@mutant(
    "random_spans_noise_mask",
    "the spans start with noise: T5's mask starts with a clean span and ends with a noise span",
)
def noise_span_first(length, noise_density=0.15, mean_noise_span_length=3.0, generator=None):
    return ref.random_spans_noise_mask(
        length, noise_density, mean_noise_span_length, generator
    ).flip(0)


@mutant(
    "random_spans_noise_mask",
    "each token is noised independently with chance noise_density: no spans and no fixed count",
)
def independent_tokens(length, noise_density=0.15, mean_noise_span_length=3.0, generator=None):
    device = generator.device if generator is not None else "cpu"
    return torch.rand(length, generator=generator, device=device) < noise_density


@mutant(
    "random_spans_noise_mask",
    "every noise span has the same length: the lengths come from a uniformly random cut",
)
def equal_noise_spans(length, noise_density=0.15, mean_noise_span_length=3.0, generator=None):
    num_noise, num_spans = _counts(length, noise_density, mean_noise_span_length)
    equal = torch.full((num_spans,), num_noise // num_spans)
    equal[: num_noise % num_spans] += 1
    return _mask(length, num_noise, num_spans, generator, noise_lengths=equal)


def _corrupt(ids, noise_mask, sentinel):
    """The reference's span_corrupt with sentinel(k) as the k-th sentinel (k a tensor)."""

    def spans_to_sentinels(mask):
        previous = torch.cat([mask.new_zeros(1), mask[:-1]])
        first = mask & ~previous
        out = torch.where(first, sentinel(torch.cumsum(first.long(), dim=0) - 1), ids)
        return out[~(mask & previous)]

    return spans_to_sentinels(noise_mask), spans_to_sentinels(~noise_mask)


def _mask_for(ids, noise_density, mean_noise_span_length, generator, noise_mask):
    if noise_mask is not None:
        return noise_mask
    length = len(ids)
    return ref.random_spans_noise_mask(length, noise_density, mean_noise_span_length, generator).to(
        ids.device
    )


@mutant(
    "span_corrupt",
    "the sentinels are off by one: the first is vocab_size - 1 (the last id), not vocab_size",
)
def sentinels_off_by_one(
    ids, vocab_size, noise_density=0.15, mean_noise_span_length=3.0, generator=None, noise_mask=None
):
    mask = _mask_for(ids, noise_density, mean_noise_span_length, generator, noise_mask)
    return _corrupt(ids, mask, lambda k: vocab_size - k)


@mutant(
    "span_corrupt",
    "one sentinel for every span: each span needs its own, vocab_size - 1 - k for the k-th",
)
def one_sentinel_for_all(
    ids, vocab_size, noise_density=0.15, mean_noise_span_length=3.0, generator=None, noise_mask=None
):
    mask = _mask_for(ids, noise_density, mean_noise_span_length, generator, noise_mask)
    return _corrupt(ids, mask, lambda k: torch.full_like(k, vocab_size - 1))


@mutant(
    "span_corrupt",
    "every noise token gets its own sentinel: a whole span becomes one sentinel",
)
def sentinel_per_token(
    ids, vocab_size, noise_density=0.15, mean_noise_span_length=3.0, generator=None, noise_mask=None
):
    mask = _mask_for(ids, noise_density, mean_noise_span_length, generator, noise_mask)
    sentinels = vocab_size - torch.cumsum(mask.long(), dim=0)  # one per noise token
    inputs = torch.where(mask, sentinels, ids)
    return inputs, torch.stack([sentinels[mask], ids[mask]], dim=1).flatten()


@mutant(
    "span_corrupt",
    "the targets hold the hidden tokens without sentinels: nothing says which span they fill",
)
def targets_without_sentinels(
    ids, vocab_size, noise_density=0.15, mean_noise_span_length=3.0, generator=None, noise_mask=None
):
    mask = _mask_for(ids, noise_density, mean_noise_span_length, generator, noise_mask)
    inputs, _ = _corrupt(ids, mask, lambda k: vocab_size - 1 - k)
    return inputs, ids[mask]
