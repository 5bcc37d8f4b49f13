"""Hidden cases of checkpoint 2: the learner's pieces, together, on stories they have not seen.

Each call gets the folder of the learner's pieces and the public spec file's source, whose glue
(the parts, the layer norm as a torch operation, the training loop) it runs, so the checkpoint is
defined once. The stories come from the corpus's own grammar (`data/corpus/make_corpus.py`) with
seeds the public specs never use. The held-out stories never leave the trusted side: the sandbox
returns its tokenizer and its trained weights, and the trusted side scores them on those stories
with the reference tokenizer and GPT built from torch's own attention, RoPE and layer norm.
"""

import functools
import math

import torch

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import execute, reference

SPEC = kit_root() / "exercises" / "checkpoint_2" / "test_checkpoint_2.py"
glue = execute(SPEC, "ladder.checkpoint_2.glue")  # the trusted side's copy of the same glue
grammar = execute(kit_root() / "data" / "corpus" / "make_corpus.py", "ladder.checkpoint_2.grammar")
HELD_OUT_SEED = 2**41 + 29  # too large to find by trying seeds against the stories sent
HELD_OUT_BYTES = 40_000  # about 65 stories, 17,000 tokens: the first VAL_WINDOWS windows count


@functools.cache
def stories(seed: int, n_bytes: int) -> str:
    return grammar.make(seed, n_bytes)


# ------------------------------------------------------------------- calls (run in the sandbox)


def logits_and_gradients(folder, spec, config, weights, idx, chunks):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_2.py")
    model = ns["small_gpt"](own, ns["your_parts"](own), weights, config)
    return ns["outputs"](own, model, idx, tuple(chunks))


def tokenizer_on_new_stories(folder, spec, text, held_out):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_2.py")
    tokenizer, _, merges = ns["learn_tokenizer"](own, text)
    return {
        "merges": [[bytes(a), bytes(b)] for a, b in merges],
        "ids": [int(i) for i in ns["encode"](tokenizer, held_out)],
        "text": tokenizer.decode(tokenizer.encode(held_out)),
    }


def written_tokens(folder, spec, config, weights, prompt, seed):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_2.py")
    model = ns["small_gpt"](own, ns["your_parts"](own), weights, config)
    out = {
        "cached": ns["write"](own, model, prompt, True, seed),
        "plain": ns["write"](own, model, prompt, False, seed),
    }
    n = config["block_size"] - prompt.shape[1]
    out["greedy"] = own.gpt.generate(model, prompt, n, lambda z, g: own.decoding.sample(z, 0.0))
    return out


def trained_weights(folder, spec, text, seed):
    from graders.cases import spec_glue

    ns, own = spec_glue(spec, folder, "test_checkpoint_2.py")
    train_text, tokenizer_text, _ = ns["split"](text)
    tokenizer, vocab, merges = ns["learn_tokenizer"](own, tokenizer_text)
    model, _ = ns["train"](own, ns["encode"](tokenizer, train_text), max(vocab) + 1, seed)
    return {
        "vocab": [bytes(vocab[i]) for i in range(max(vocab) + 1)],
        "merges": [[bytes(a), bytes(b)] for a, b in merges],
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


# ------------------------------------------------------------------- inputs (the trusted side)

CONFIG = dict(vocab_size=29, block_size=24, n_layers=3, n_heads=6, n_kv_heads=3, d_model=48)


def gradient_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "spec": SPEC.read_text(),
        "config": CONFIG,
        "weights": glue.random_weights(CONFIG, seed + 1),
        "idx": torch.randint(CONFIG["vocab_size"], (3, 19), generator=g),
        "chunks": [9, 1, 1, 5, 3],
    }


def tokenizer_inputs(seed):
    return {
        "spec": SPEC.read_text(),
        "text": stories(seed, 150_000),
        "held_out": stories(seed + 1, 20_000) + "Zoë's naïve café: 🦊!",
    }


def writing_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "spec": SPEC.read_text(),
        "config": CONFIG,
        "weights": {k: v / 2 for k, v in glue.random_weights(CONFIG, seed + 1).items()},
        "prompt": torch.randint(CONFIG["vocab_size"], (3, 5), generator=g),
        "seed": seed + 2,
    }


def training_inputs(seed):
    # 1,030 or so stories: split() keeps the first 1,000 for training, as on the public corpus.
    return {"spec": SPEC.read_text(), "text": stories(seed, 620_000), "seed": seed + 1}


# ------------------------------------------------------------------- comparisons (trusted)


def same_story_with_and_without_cache(actual, expected, inputs):
    if not isinstance(actual, dict) or set(actual) != {"cached", "plain", "greedy"}:
        return "expected a dict of the tokens written with the cache, without it, and greedily"
    shape = tuple(expected["cached"].shape)
    for name in ("cached", "plain", "greedy"):
        out = actual[name]
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            return f"generate ({name}) should return a tensor of shape {shape}"
        if not torch.equal(out[:, :5].to(torch.int64), inputs["prompt"]):
            return f"generate ({name}) should return the prompt first"
    if not torch.equal(actual["cached"], actual["plain"]):
        return (
            "your sampler wrote different tokens with the KV cache than without it, under the "
            "same seed: run `pytest exercises/checkpoint_2`"
        )
    if not torch.equal(actual["greedy"].to(torch.int64), expected["greedy"]):
        return (
            "with temperature 0 (greedy), your GPT writes other tokens than the reference: its "
            "logits are wrong somewhere; run `pytest exercises/checkpoint_2`"
        )
    return None


def scored_on_held_out_stories(actual, expected, inputs):
    """The learner's tokenizer and weights, in the reference's tokenizer and a GPT built from
    torch's parts, on stories that never left the trusted side."""
    if not isinstance(actual, dict) or not {"vocab", "merges", "weights"} <= set(actual):
        return "expected a dict with the tokenizer's vocab and merges and the model's weights"
    try:
        tok, gpt = reference("tokenization"), reference("gpt")
        vocab = dict(enumerate(actual["vocab"]))
        merges = [(bytes(a), bytes(b)) for a, b in actual["merges"]]
        tokenizer = tok.Tokenizer(vocab, merges, [glue.SPECIAL])
        ids = torch.tensor(tokenizer.encode(stories(HELD_OUT_SEED, HELD_OUT_BYTES)))
        parts = gpt.Parts(
            attention=glue.torch_attention, rope=glue.torch_rope, norm=glue.torch_norm
        )
        model = gpt.GPT(gpt.GPTConfig(vocab_size=len(vocab), **glue.MODEL), parts)
        model.load_state_dict({k: v.float() for k, v in actual["weights"].items()})
        loss = glue.validation_loss(model, ids)
    except Exception as error:  # a malformed vocabulary or state_dict
        return f"your tokenizer and weights could not be scored: {type(error).__name__}: {error}"
    if not (math.isfinite(loss) and loss < glue.TARGET_LOSS):
        return (
            f"your trained GPT's loss on unseen stories is {loss:.3f} nats per token; the bar is "
            f"{glue.TARGET_LOSS}: run `pytest exercises/checkpoint_2` and the pieces' own specs"
        )
    return None


CASES = [
    Case(
        "your pieces give the reference's logits and gradients on a new GPT",
        call=logits_and_gradients,
        inputs=gradient_inputs,
        points=2,
        seed=301,
        rtol=1e-7,
        atol=1e-9,
    ),
    Case(
        "your tokenizer learns the reference's merges from new stories",
        call=tokenizer_on_new_stories,
        inputs=tokenizer_inputs,
        points=1,
        seed=401,
    ),
    Case(
        "your KV cache and sampler write the same tokens as without the cache",
        call=written_tokens,
        inputs=writing_inputs,
        points=1,
        seed=503,
        compare=same_story_with_and_without_cache,
    ),
    Case(
        "your pieces train a GPT that predicts unseen stories below the bar",
        call=trained_weights,
        inputs=training_inputs,
        points=3,
        seed=601,
        compare=scored_on_held_out_stories,
        timeout=600,
    ),
]
