"""Hidden cases of checkpoint 7: the learner's pieces serve and adapt GPTs they have not seen.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(the paged forward pass, the speculative runs, the QLoRA fine-tuning) it runs, so the checkpoint is
defined once. The models are new: a GPT of other sizes with weights drawn from seeds the public
specs never use, and a base model trained on the trusted side on stories from the corpus's grammar.
What judges stays on the trusted side: the target's exact law of two tokens, and the held-out
stories that score the learner's adapters.
"""

import functools
import math

import torch

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute, reference

SPEC = kit_root() / "exercises" / "checkpoint_7" / "test_checkpoint_7.py"
glue = execute(SPEC, "ladder.checkpoint_7.glue")
grammar = execute(kit_root() / "data" / "corpus" / "make_corpus.py", "ladder.checkpoint_7.grammar")
HELD_OUT_SEED = 2**43 + 17  # the stories that score the adapters never leave the trusted side
CONFIG = dict(vocab_size=23, block_size=48, n_layers=3, n_heads=6, n_kv_heads=3, d_model=48)


def pieces():
    from types import SimpleNamespace

    return SimpleNamespace(**{p: reference(p) for p in glue.PIECES})


# ------------------------------------------------------------------- calls (run in the sandbox)


def parallel_samples(folder, spec, config, weights, prompt, seeds, n_new, page):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_7.py")
    model = ns["gpt_with"](own, weights, config)
    tokens, _, state = ns["parallel_samples"](own, model, prompt, n_new, seeds, page)
    contiguous = ns["contiguous_samples"](own, model, prompt, n_new, seeds)
    return {"tokens": tokens, "contiguous": contiguous, "state": state}


def speculative_counts(folder, spec, config, weights, prompt, runs, seed, long):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_7.py")
    target = ns["gpt_with"](own, weights, config)
    draft = ns["truncated_draft"](own, target, config["n_layers"] - 1)
    return {
        "counts": ns["speculative_runs"](own, target, draft, prompt, runs, seed),
        "identical": list(ns["target_calls"](own, target, target, prompt, long, seed + 1)),
        "drafted": list(ns["target_calls"](own, target, draft, prompt, long, seed + 2)),
    }


def qlora_adapters(folder, spec, weights, chars, train, probe, seed):
    import torch

    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_7.py")
    config = ns["MODEL"] | {"vocab_size": len(chars)}
    model = ns["gpt_with"](own, weights, config, torch.float32)
    with torch.no_grad():
        probe_logits = ns["to_qlora"](own, model)(probe)
    adapted, _ = ns["fine_tune"](own, model, train, seed)
    big = []
    for name, layer in adapted.named_modules():
        if isinstance(layer, own.qlora.QLoRALinear):
            size = layer.in_features * layer.out_features
            tensors = list(layer.named_parameters()) + list(layer.named_buffers())
            big += [
                f"{name}.{n}" for n, t in tensors if t.is_floating_point() and t.numel() >= size
            ]
    return {"adapters": ns["adapters"](adapted), "probe": probe_logits, "full_size": big}


# ------------------------------------------------------------------- inputs (the trusted side)


def paged_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "spec": SPEC.read_text(),
        "config": CONFIG,
        "weights": glue.random_weights(CONFIG, seed + 1),
        "prompt": torch.randint(CONFIG["vocab_size"], (7,), generator=g),
        "seeds": [seed + 10 + i for i in range(5)],
        "n_new": 22,
        "page": 3,
    }


def speculative_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "spec": SPEC.read_text(),
        "config": CONFIG,
        "weights": glue.random_weights(CONFIG, seed + 1, scale=2.0),
        "prompt": torch.randint(CONFIG["vocab_size"], (5,), generator=g),
        "runs": 3000,
        "seed": seed + 2,
        "long": 36,
    }


@functools.cache
def trained_base(seed):
    """A base GPT trained by the reference pieces on new stories: (weights, chars, text)."""
    text = grammar.make(seed, glue.TRAIN_CHARS)
    model, chars, _ = glue.train_base(pieces(), text, seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, chars


@functools.cache
def held_out(seed, chars):
    text = grammar.make(HELD_OUT_SEED + seed, glue.VAL_CHARS)
    return "".join(c for c in text if c in chars)


def qlora_inputs(seed):
    weights, chars = trained_base(seed)
    text = grammar.make(seed + 1, glue.TRAIN_CHARS)
    text = "".join(c for c in text if c in chars)
    return {
        "spec": SPEC.read_text(),
        "weights": weights,
        "chars": chars,
        "train": glue.encode(text[::-1], chars),
        "probe": glue.encode(text[:40], chars)[None],
        "seed": seed + 3,
    }


# ------------------------------------------------------------------- comparisons (trusted)


def same_samples_sharing_the_prompt(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != {"tokens", "contiguous", "state"}:
        return "expected a dict of the paged tokens, the contiguous tokens and the caches' state"
    where = (
        f"{len(inputs['seeds'])} samples of {inputs['n_new']} tokens forked from a prompt of 7 "
        f"tokens, blocks of {inputs['page']}, a GPT of 3 layers, 6 query and 3 key/value heads"
    )
    if not torch.equal(actual["contiguous"], expected["contiguous"]):
        return f"{where}: your GPT's generate with its contiguous KVCache samples other tokens"
    if not torch.equal(actual["tokens"], expected["tokens"]):
        return (
            f"{where}: your paged cache samples other tokens than the contiguous cache: run "
            "`pytest exercises/checkpoint_7` and `ladder check paged_attention`"
        )
    for key in ("used", "refcounts", "same_prompt_blocks", "full_pool", "free_after"):
        if actual["state"].get(key) != expected["state"][key]:
            return (
                f"{where}: your caches' {key} is {actual['state'].get(key)}; expected "
                f"{expected['state'][key]} (forks share the prompt's full blocks, a block is "
                "taken only when a token does not fit, a full pool raises OutOfBlocks, free "
                "releases what no one holds)"
            )
    return None


def targets_law_with_fewer_calls(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != {"counts", "identical", "drafted"}:
        return "expected a dict of the pair counts and two (target calls, tokens) pairs"
    ref = pieces()
    target = glue.gpt_with(ref, inputs["weights"], inputs["config"])
    law = glue.two_token_law(target, inputs["prompt"])
    counts = actual["counts"]
    if not isinstance(counts, torch.Tensor) or tuple(counts.shape) != tuple(law.shape):
        return f"the pair counts should be a tensor of shape {tuple(law.shape)}"
    if int(counts.sum()) != inputs["runs"]:
        return f"{inputs['runs']} runs gave {int(counts.sum())} pairs"
    # Chernoff's bound with a union over the cells: a sound sampler fails below 1e-6.
    if glue.law_gaps(counts, law, glue.DELTA):
        return (
            f"speculative decoding on a new GPT (3 layers; the draft: its first 2): over "
            f"{inputs['runs']} runs the first two tokens do not follow the target's law: run "
            "`pytest exercises/checkpoint_7` and `ladder check speculative_decoding`"
        )
    long = inputs["long"]
    rounds = math.ceil(long / (glue.GAMMA + 1))
    if list(actual["identical"]) != [rounds, long]:
        return (
            f"with a draft identical to the target, {long} tokens should take {rounds} target "
            f"calls (gamma + 1 = {glue.GAMMA + 1} tokens each); (calls, tokens) = "
            f"{actual['identical']}"
        )
    calls, n = actual["drafted"]
    if n != long or calls >= n:
        return f"speculative decoding made {calls} target calls for {n} tokens: fewer than one each"
    return None


def adapters_learn_with_the_base_in_nf4(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != {"adapters", "probe", "full_size"}:
        return "expected a dict of the adapters, the probe's logits and any full-size tensor"
    if actual["full_size"]:
        return f"your QLoRA layers keep full-size floating tensors: {actual['full_size'][:3]}"
    if set(actual["adapters"]) != set(expected["adapters"]):
        return (
            f"the trainable tensors are {sorted(actual['adapters'])[:4]}...; expected the "
            "adapters' lora_A and lora_B of every linear layer but the head"
        )
    probe = actual["probe"]
    if not isinstance(probe, torch.Tensor) or probe.shape != expected["probe"].shape:
        return "the probe's logits have the wrong shape"
    if not torch.allclose(probe, expected["probe"], rtol=1e-4, atol=1e-4):
        return (
            "your QLoRA GPT (lora_B = 0) gives other logits than the base quantised to NF4 by "
            "the paper's recipe: run `ladder check qlora`"
        )
    ref, chars = pieces(), inputs["chars"]
    config = glue.MODEL | {"vocab_size": len(chars)}
    try:
        model = glue.to_qlora(ref, glue.gpt_with(ref, inputs["weights"], config, torch.float32))
        val = glue.encode(held_out(inputs["seed"] - 3, chars)[::-1], chars)
        before = glue.held_out_loss(model, val)
        state = model.state_dict()
        state.update({k: v.float() for k, v in actual["adapters"].items()})
        model.load_state_dict(state)
        after = glue.held_out_loss(model, val)
    except Exception as error:  # malformed adapters
        return f"your adapters could not be scored: {type(error).__name__}: {error}"
    if not (math.isfinite(after) and before - after >= glue.QLORA_GAIN):
        return (
            f"your adapters took the loss on unseen reversed stories from {before:.3f} to "
            f"{after:.3f} nats per character; they must remove {glue.QLORA_GAIN}"
        )
    return None


CASES = [
    Case(
        "your paged cache samples a new GPT's tokens as a contiguous cache does, sharing blocks",
        call=parallel_samples,
        inputs=paged_inputs,
        points=3,
        seed=701,
        compare=same_samples_sharing_the_prompt,
    ),
    Case(
        "your speculative decoding samples a new GPT's law with fewer target calls",
        call=speculative_counts,
        inputs=speculative_inputs,
        points=3,
        seed=801,
        compare=targets_law_with_fewer_calls,
        timeout=300,
    ),
    Case(
        "your QLoRA adapters learn a new task with the base in NF4, scored on unseen stories",
        call=qlora_adapters,
        inputs=qlora_inputs,
        points=3,
        seed=901,
        compare=adapters_learn_with_the_base_in_nf4,
        timeout=300,
    ),
]
