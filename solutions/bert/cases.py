"""Hidden grading cases for bert.

Inputs differ from the public specs': [CLS] ... [SEP] sequences with padding, other vocabulary
sizes, mask ids and probabilities, 1-D and 3-D batches. mask_tokens is random, so its cases do
not compare tokens: `mask_features` (run beside the learner's code) reduces an output to counts
(tokens chosen, turned into [MASK], kept, replaced, labelled wrongly, ...), and `compare_features`
tests the learner's counts against the reference's with a two-sample test. The learner's order
of random draws therefore does not matter, and the same test names a known mistake by comparing
with each mutant's counts. mlm_loss is deterministic and compared to tight tolerances.
"""

import torch

from graders.cases import Case
from graders.checks import chernoff_gap

DELTA = 1e-7  # the false-failure chance each statistical case allows itself
IGNORE = -100


# ---------------------------------------------------------------- mask_tokens, statistical


def mask_features(m, ids, special_mask, mask_id, vocab_size, p, seed, histogram=False):
    """Run mask_tokens once; return its contract and counts {name: [k, n]} (k of n positions)."""
    import torch

    original = ids.clone()
    g = torch.Generator(device=ids.device).manual_seed(int(seed))
    inputs, labels = m.mask_tokens(ids, mask_id, vocab_size, special_mask, p=p, generator=g)
    contract = " ".join(
        f"{name} {str(getattr(t, 'dtype', type(t).__name__)).removeprefix('torch.')} "
        f"{tuple(getattr(t, 'shape', ()))}"
        for name, t in (("inputs", inputs), ("labels", labels))
    )
    inputs, labels = torch.as_tensor(inputs).to(ids.device), torch.as_tensor(labels).to(ids.device)
    chosen = labels != -100
    ordinary = ~special_mask
    n_chosen = int(chosen.sum())

    def count(flags, among):
        return [int((flags & among).sum()), int(among.sum())]

    counts = {
        "ordinary tokens chosen": count(chosen, ordinary),
        "special tokens chosen": count(chosen, special_mask),
        "chosen tokens whose label is not their original id": count(labels != original, chosen),
        "unchosen tokens whose input changed": count(inputs != original, ~chosen),
        "chosen tokens turned into mask_id": count(inputs == mask_id, chosen),
        "chosen tokens left as they were": count(inputs == original, chosen),
        "chosen tokens given another id": count((inputs != mask_id) & (inputs != original), chosen),
        "inputs outside 0 .. vocab_size - 1": count(
            (inputs < 0) | (inputs >= vocab_size), torch.ones_like(chosen)
        ),
    }
    if histogram:
        for t in range(vocab_size):
            counts[f"chosen tokens whose input is id {t}"] = [
                int((inputs[chosen] == t).sum()),
                n_chosen,
            ]
    return {
        "contract": contract,
        "ids_modified": not torch.equal(ids, original),
        "counts": counts,
    }


def compare_features(actual, expected, inputs):
    """None when the learner's counts could come from the same law as `expected`'s.

    Exact parts: the contract (dtypes, shapes), whether ids was modified, and counts that are 0 or
    all in `expected` (a correct output chooses no special token, changes no unchosen token, ...;
    the cases keep every other count in the hundreds or more, so a correct output never gets 0 or
    all by chance). The other counts, k1 of n1 (learner) against k2 of n2: given the pooled
    k1 + k2, k1 is hypergeometric with mean n1 r, r = (k1 + k2) / (n1 + n2), and Chernoff's bound
    (valid without replacement, Hoeffding 1963) gives P(n1 KL(k1 / n1 || r) >= c) <= 2 exp(-c).
    With c = ln(2 cells / DELTA), the union bound keeps a false failure below DELTA = 1e-7.
    """
    if not isinstance(actual, dict) or set(actual) != set(expected):
        return "mask_tokens: the output could not be read (expected (inputs, labels))"
    if actual["contract"] != expected["contract"]:
        return f"mask_tokens returned {actual['contract']}; expected {expected['contract']}"
    if actual["ids_modified"] != expected["ids_modified"]:
        return (
            "mask_tokens changed ids in place; it must return new tensors"
            if actual["ids_modified"]
            else "mask_tokens left ids unchanged, unlike the output compared with"
        )
    counts = expected["counts"]
    for name, (k2, n2) in counts.items():
        k1, n1 = actual["counts"][name]
        got = f"{name}: {k1} of {n1}" + (f" ({k1 / n1:.2%})" if n1 else "")
        want = f"{k2} of {n2}" + (f" ({k2 / n2:.2%})" if n2 else "")
        if n1 == 0 or n2 == 0 or k2 in (0, n2):  # none, all, or nothing to count: exact
            same = n1 == n2 == 0 if not (n1 and n2) else k1 == (0 if k2 == 0 else n1)
            if not same:
                return f"mask_tokens: {got}; expected {want}"
            continue
        r = (k1 + k2) / (n1 + n2)
        if chernoff_gap(k1, n1, r, len(counts), DELTA):
            return (
                f"mask_tokens: {got}; expected about {k2 / n2:.2%} (the reference: {want}); a gap "
                f"this large has a chance below {DELTA:g} for a correct implementation"
            )
    return None


def padded_batch(g, B, T, vocab_size, first_ordinary):
    """[CLS] w_1 .. w_L [SEP] [PAD] ...: ids 0 = [PAD], 1 = [CLS], 2 = [SEP]; words are drawn from
    first_ordinary .. vocab_size - 1; L varies per row. Returns ids and special_mask."""
    lengths = torch.randint(T // 3, T - 1, (B, 1), generator=g)
    pos = torch.arange(T).expand(B, T)
    ids = torch.randint(first_ordinary, vocab_size, (B, T), generator=g)
    ids = torch.where(pos == 0, 1, torch.where(pos == lengths + 1, 2, ids))
    ids = torch.where(pos > lengths + 1, 0, ids)
    return ids, (pos == 0) | (pos >= lengths + 1)


def padded_p25(seed):
    g = torch.Generator().manual_seed(seed)
    ids, special = padded_batch(g, 96, 200, vocab_size=500, first_ordinary=5)
    return {
        "ids": ids,
        "special_mask": special,
        "mask_id": 4,
        "vocab_size": 500,
        "p": 0.25,
        "seed": seed,
    }


def three_d_uniform(seed):
    g = torch.Generator().manual_seed(seed)
    V = 16  # mask_id 1; ids 0 and 2 are special; the last id, 15, is an ordinary word
    ids = torch.randint(3, V, (40, 20, 64), generator=g)
    special = torch.rand(ids.shape, generator=g) < 0.1
    ids = torch.where(special, torch.where(torch.rand(ids.shape, generator=g) < 0.5, 0, 2), ids)
    return {
        "ids": ids,
        "special_mask": special,
        "mask_id": 1,
        "vocab_size": V,
        "p": 1.0,
        "seed": seed,
        "histogram": True,
    }


def one_d_p40(seed):
    g = torch.Generator().manual_seed(seed)
    ids, special = padded_batch(g, 1, 30000, vocab_size=30522, first_ordinary=999)
    return {
        "ids": ids[0],
        "special_mask": special[0],
        "mask_id": 103,
        "vocab_size": 30522,
        "p": 0.4,
        "seed": seed,
    }


def long_batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids, special = padded_batch(g, 256, 512, vocab_size=30522, first_ordinary=999)
    return {
        "ids": ids,
        "special_mask": special,
        "mask_id": 103,
        "vocab_size": 30522,
        "p": 0.15,
        "seed": seed,
    }


# ---------------------------------------------------------------- mask_tokens, exact


def mask_raw(m, ids, special_mask, mask_id, vocab_size, p):
    import torch

    g = torch.Generator(device=ids.device).manual_seed(0)
    inputs, labels = m.mask_tokens(ids, mask_id, vocab_size, special_mask, p=p, generator=g)
    return {"inputs": inputs, "labels": labels}


def nothing_chosen(seed):
    g = torch.Generator().manual_seed(seed)
    ids, special = padded_batch(g, 3, 40, vocab_size=120, first_ordinary=5)
    return {"ids": ids, "special_mask": special, "mask_id": 4, "vocab_size": 120, "p": 0.0}


# ---------------------------------------------------------------- mlm_loss, exact


def loss_and_grad(m, logits, labels):
    import torch

    logits = logits.clone().requires_grad_()
    loss = m.mlm_loss(logits, labels)
    loss = torch.as_tensor(loss)
    grad = torch.autograd.grad(loss, logits)[0] if loss.requires_grad else torch.zeros_like(logits)
    return {"loss": loss.detach(), "grad": grad}


def _logits_and_labels(seed, shape, V, dtype, scale, labelled):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(*shape, V, generator=g, dtype=dtype)
    labels = torch.randint(0, V, shape, generator=g)
    # The share of labelled positions varies along the first axis, so per-row means differ.
    share = torch.linspace(0.05, 0.5, shape[0]).reshape(-1, *[1] * (len(shape) - 1)) * labelled
    keep = torch.rand(shape, generator=g) < share
    return {"logits": logits, "labels": torch.where(keep, labels, IGNORE)}


def loss_float64(seed):
    return _logits_and_labels(seed, (4, 33), 70, torch.float64, 2.0, 1.0)


def loss_float32_large(seed):
    return _logits_and_labels(seed, (6, 3, 17), 40, torch.float32, 3e3, 1.0)


def loss_no_labels(seed):
    return _logits_and_labels(seed, (2, 9), 11, torch.float64, 1.0, 0.0)


CASES = [
    Case(
        "p = 0 on [CLS] ... [SEP] sequences: nothing chosen",
        call=mask_raw,
        inputs=nothing_chosen,
        points=1,
    ),
    Case(
        "p = 0.25 on padded sequences: choice and 80/10/10 (statistical)",
        call=mask_features,
        inputs=padded_p25,
        compare=compare_features,
        points=3,
        seed=7,
    ),
    Case(
        "p = 1 on a 3-D batch, V = 16: random ids uniform over the vocabulary (statistical)",
        call=mask_features,
        inputs=three_d_uniform,
        compare=compare_features,
        points=2,
        seed=8,
    ),
    Case(
        "one 30,000-token sequence, p = 0.4, BERT's vocabulary size (statistical)",
        call=mask_features,
        inputs=one_d_p40,
        compare=compare_features,
        points=1,
        seed=9,
    ),
    Case(
        "mlm_loss and its gradient, float64, 4 x 33 positions",
        call=loss_and_grad,
        inputs=loss_float64,
        points=2,
        seed=10,
        rtol=1e-10,
        atol=1e-12,
    ),
    Case(
        "mlm_loss, float32 logits near 3e3, 3-D labels",
        call=loss_and_grad,
        inputs=loss_float32_large,
        points=1,
        seed=11,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "mlm_loss with no labelled position is 0",
        call=loss_and_grad,
        inputs=loss_no_labels,
        points=1,
        seed=12,
        rtol=0,
        atol=0,
    ),
    Case(
        "speed: masking 256 x 512 tokens",
        call=mask_features,
        inputs=long_batch,
        compare=compare_features,
        points=0.5,
        seed=13,
        speed_ratio=4.0,
        speed_points=1,
    ),
]
