"""Common mistakes in toolformer, each replacing one function of the reference."""

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("toolformer")


@mutant("format_api_call", "without a result the call still gets an arrow: '[name(args) -> None]'")
def arrow_without_result(name, args, result=None):
    return f"[{name}({args}) -> {result}]"


@mutant("format_api_call", "the arrow is written without spaces: '[name(args)->result]'")
def arrow_without_spaces(name, args, result=None):
    return f"[{name}({args})]" if result is None else f"[{name}({args})->{result}]"


@mutant("weighted_loss", "the weights are not normalised: 1, 0.8, ... sum to 3, not to 1")
def unnormalised_weights(token_losses, start):
    return ref.weighted_loss(token_losses, start) * 3


@mutant("weighted_loss", "t counts from 1: the first token after the call gets 0.8, not 1")
def weights_start_at_one(token_losses, start):
    t = torch.arange(1, 6, dtype=token_losses.dtype, device=token_losses.device)
    w = (1 - 0.2 * t).clamp(min=0)
    window = token_losses[..., start : start + 4]
    return (window * (w / w.sum())[: window.shape[-1]]).sum(-1)


@mutant("weighted_loss", "near the text's end the weights are renormalised over the tokens left")
def renormalised_at_the_end(token_losses, start):
    w = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2], dtype=token_losses.dtype)
    window = token_losses[..., start : start + 5]
    w = w[: window.shape[-1]].to(token_losses.device)
    return (window * w / w.sum()).sum(-1)


@mutant("keep_api_call", "L- ignores the call without its result: only 'no call' is compared")
def minus_is_plain_only(loss_plain, loss_call_no_result, loss_call_with_result, tau):
    plain, with_result = torch.as_tensor(loss_plain), torch.as_tensor(loss_call_with_result)
    return plain - with_result >= tau


@mutant("keep_api_call", "L- is the max of the two losses, not the min")
def minus_is_max(loss_plain, loss_call_no_result, loss_call_with_result, tau):
    plain, no_result, with_result = (
        torch.as_tensor(x) for x in (loss_plain, loss_call_no_result, loss_call_with_result)
    )
    return torch.maximum(plain, no_result) - with_result >= tau


@mutant("keep_api_call", "the threshold is strict (>): a gain equal to tau must be kept")
def strict_threshold(loss_plain, loss_call_no_result, loss_call_with_result, tau):
    plain, no_result, with_result = (
        torch.as_tensor(x) for x in (loss_plain, loss_call_no_result, loss_call_with_result)
    )
    return torch.minimum(plain, no_result) - with_result > tau


def _augment(text, positions, lm, tools, tau, *, start_of=lambda i: i, every=False, back=True):
    x = lm.tokenize(text)

    def loss(i, prefix):
        z = lm.tokenize(prefix)
        return ref.weighted_loss(lm(z + x)[len(z) :], start_of(i))

    kept = {}
    for i, name, args in positions:
        result = tools[name](args)
        plus = loss(i, ref.format_api_call(name, args, result))
        plain, no_result = loss(i, ""), loss(i, ref.format_api_call(name, args))
        if ref.keep_api_call(plain, no_result, plus, tau):
            gain = (torch.minimum(plain, no_result) - plus).item()
            call = ref.format_api_call(name, args, result)
            if every:
                kept.setdefault(i, []).append((gain, call))
            elif i not in kept or gain > kept[i][0][0]:
                kept[i] = [(gain, call)]
    words = text.split()
    for i in sorted(kept, reverse=back):
        for _, call in kept[i]:
            words.insert(i, call)
    return " ".join(words)


@mutant("augment", "calls are inserted front to back, so each insertion shifts the later ones")
def inserted_front_to_back(text, positions, lm, tools, tau):
    return _augment(text, positions, lm, tools, tau, back=False)


@mutant("augment", "every kept call is inserted, not only the best one at each position")
def every_kept_call(text, positions, lm, tools, tau):
    return _augment(text, positions, lm, tools, tau, every=True)


@mutant("augment", "L_i weighs the text's first words, not the words from position i on")
def losses_from_the_start(text, positions, lm, tools, tau):
    return _augment(text, positions, lm, tools, tau, start_of=lambda i: 0)


@mutant("augment", "L_i starts one word late: the word right after the call is not weighted")
def losses_one_word_late(text, positions, lm, tools, tau):
    return _augment(text, positions, lm, tools, tau, start_of=lambda i: i + 1)
