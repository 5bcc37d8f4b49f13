"""Hidden grading cases for tokenization: mixed scripts, real corpus windows, awkward chunkings.

Every case is deterministic: BPE is exact integer counting, so outputs are compared exactly (bytes
travel as hex strings). The speed case trains on a window of the shipped corpus and allows 3x the
reference's time: an answer that updates pair counts incrementally takes about the reference's
time, one that recounts every pair after each merge takes about ten times as long.
"""

import functools
import random
from collections import Counter

from graders.cases import Case
from graders.curriculum import kit_root
from graders.impl import reference

SPECIAL = "<|endoftext|>"
# Words from several scripts, contractions, digits and odd whitespace: unlike the public specs'.
WORDS = (
    "naïve façade Straße über crème brûlée 東京 北京 東北 Привет мир μῆνιν ἄειδε θεὰ नमस्ते "
    "😀 😀😀 👍🏽 isn't we'll they're I'd 2016 42 4242 ... !? aaaa aaaaa abab ababab"
)
MIXED = WORDS.split()


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def pair_table(m, strings, freqs):
    words = [[bytes([b]) for b in s.encode("utf-8")] for s in strings]
    pair_counts, where = m.count_pairs(words, freqs)
    return {
        "counts": sorted([a.hex(), b.hex(), int(c)] for (a, b), c in pair_counts.items()),
        "where": sorted(
            [a.hex(), b.hex(), sorted(int(i) for i in s)] for (a, b), s in where.items()
        ),
    }


def merge_steps(m, strings, freqs, steps):
    """`steps` merges with merge_pair from a state counted here, each of the most frequent pair
    (ties to the greater); what changed, and which words each merge read beyond where[pair]."""
    from itertools import pairwise

    class Watched(list):
        def __init__(self, items):
            super().__init__(items)
            self.touched = set()

        def _note(self, index):
            span = range(len(self))
            self.touched.update(span[index] if isinstance(index, slice) else [span[index]])

        def __getitem__(self, index):
            self._note(index)
            return super().__getitem__(index)

        def __setitem__(self, index, value):
            self._note(index)
            super().__setitem__(index, value)

        def __iter__(self):
            self.touched.update(range(len(self)))
            return super().__iter__()

    plain = [[bytes([b]) for b in s.encode("utf-8")] for s in strings]
    counts, where = {}, {}
    for i, word in enumerate(plain):
        for p in pairwise(word):
            counts[p] = counts.get(p, 0) + freqs[i]
            where.setdefault(p, set()).add(i)
    words = Watched(plain)
    beyond = []
    for _ in range(steps):
        candidates = [p for p in counts if p in where]
        if not candidates:
            break
        pair = max(candidates, key=lambda p: (counts[p], p))
        holders = set(where[pair])
        words.touched.clear()
        m.merge_pair(words, freqs, counts, where, pair)
        beyond.append(sorted(words.touched - holders))
    final = list(list.__iter__(words))
    missing = sorted(
        [a.hex(), b.hex(), i]
        for i, word in enumerate(final)
        for a, b in pairwise(word)
        if i not in where.get((a, b), ())
    )
    return {
        "words": [[t.hex() for t in word] for word in final],
        "counts": sorted([a.hex(), b.hex(), int(c)] for (a, b), c in counts.items()),
        "words read beyond where[pair]": beyond,
        "pairs missing from where": missing[:10],
    }


def train(m, text, vocab_size, special_tokens):
    vocab, merges = m.train_bpe(text, vocab_size, special_tokens)
    return {
        "vocab": sorted([int(i), t.hex()] for i, t in vocab.items()),
        "merges": [[a.hex(), b.hex()] for a, b in merges],
    }


def train_digest(m, text, vocab_size, special_tokens):
    """A small output for the speed case: sizes, the last merges and a digest of them all."""
    import hashlib

    vocab, merges = m.train_bpe(text, vocab_size, special_tokens)
    joined = b"".join(
        len(a).to_bytes(2, "big") + a + len(b).to_bytes(2, "big") + b for a, b in merges
    )
    return {
        "vocab size": len(vocab),
        "last merges": [[a.hex(), b.hex()] for a, b in merges[-5:]],
        "sha256 of all merges": hashlib.sha256(joined).hexdigest(),
    }


def encode(m, vocab, merges, special_tokens, texts):
    tokenizer = m.Tokenizer(
        {int(i): bytes.fromhex(t) for i, t in vocab},
        [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in merges],
        special_tokens,
    )
    return [[int(i) for i in tokenizer.encode(text)] for text in texts]


def decode(m, vocab, merges, special_tokens, sequences):
    tokenizer = m.Tokenizer(
        {int(i): bytes.fromhex(t) for i, t in vocab},
        [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in merges],
        special_tokens,
    )
    return [tokenizer.decode(ids) for ids in sequences]


def stream(m, vocab, merges, special_tokens, chunks):
    """encode_iterable over `chunks`, counting how many were read before the first id came."""
    tokenizer = m.Tokenizer(
        {int(i): bytes.fromhex(t) for i, t in vocab},
        [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in merges],
        special_tokens,
    )
    read = []

    def source():
        for chunk in chunks:
            read.append(chunk)
            yield chunk

    ids, read_at_first = [], None
    for i in tokenizer.encode_iterable(source()):
        if read_at_first is None:
            read_at_first = len(read)
        ids.append(int(i))
    return {
        "ids": ids,
        "first id before a quarter of the chunks was read": (read_at_first or 0)
        <= len(chunks) // 4,
    }


# -- inputs: built on the trusted side from a seed ----------------------------------------------


@functools.cache
def _corpus() -> str:
    return (kit_root() / "data" / "corpus" / "tinytales.txt").read_text(encoding="utf-8")


def _window(seed: int, size: int) -> str:
    """`size` characters of the corpus from a story start chosen by `seed`."""
    text = _corpus()
    start = random.Random(seed).randrange(len(text) - size - 1000)
    start = text.index(SPECIAL + "\n", start) + len(SPECIAL) + 1
    return text[start : start + size]


def _mixed_text(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    words = [rng.choice(MIXED) for _ in range(n_words)]
    gaps = [rng.choice([" ", " ", " ", "  ", "\n", "\t", " \n"]) for _ in range(n_words)]
    return "".join(w + g for w, g in zip(words, gaps, strict=True))


def pair_table_inputs(seed):
    counts = Counter(reference("tokenization").pretokenize(_mixed_text(seed, 400)))
    return {"strings": list(counts), "freqs": list(counts.values())}


def merge_steps_inputs(seed):
    counts = Counter(reference("tokenization").pretokenize(_window(seed, 30_000)))
    return {"strings": list(counts), "freqs": list(counts.values()), "steps": 3}


def mixed_training_inputs(seed):
    rng = random.Random(seed)
    pieces = [_mixed_text(seed + k, rng.randint(5, 40)) for k in range(12)]
    text = "".join(p + rng.choice([SPECIAL, "<pad>", ""]) for p in pieces)
    return {"text": text, "vocab_size": 256 + 2 + 120, "special_tokens": [SPECIAL, "<pad>"]}


def ties_inputs(seed):
    """Words of two distinct letters each: every pair occurs the same number of times."""
    rng = random.Random(seed)
    letters = "abcdefgh"
    words = [x + y for x in letters for y in letters if x != y]
    rng.shuffle(words)
    return {
        "text": "".join(w + "\n" for w in words * 3),
        "vocab_size": 256 + 10,
        "special_tokens": [],
    }


@functools.cache
def _tokenizer(seed: int) -> tuple[list, list, list]:
    """A tokenizer trained by the reference on a corpus window, as plain data."""
    specials = [SPECIAL, SPECIAL + SPECIAL, "<tab>"]
    vocab, merges = reference("tokenization").train_bpe(_window(seed, 60_000), 700, [SPECIAL])
    return (
        [[i, t.hex()] for i, t in vocab.items()],
        [[a.hex(), b.hex()] for a, b in merges],
        specials,
    )


def encode_inputs(seed):
    vocab, merges, specials = _tokenizer(seed)
    rng = random.Random(seed)
    texts = [
        _window(seed + 1, 3_000),
        _mixed_text(seed, 60),
        f"a{SPECIAL}{SPECIAL}{SPECIAL}b<tab><ta<|endoftext|",
        "".join(rng.choice(["the", " the", SPECIAL, "<tab>", "'ll", " ", "é"]) for _ in range(80)),
    ]
    return {"vocab": vocab, "merges": merges, "special_tokens": specials, "texts": texts}


def decode_inputs(seed):
    vocab, merges, specials = _tokenizer(seed)
    rng = random.Random(seed)
    sequences = [[rng.randrange(len(vocab)) for _ in range(rng.randint(1, 30))] for _ in range(30)]
    sequences += [[0xE6, 0x9D, 0xB1], [0xE6, 0x9D], [0xF0, 0x9F], [ord("a"), 0x80, ord("b")]]
    return {"vocab": vocab, "merges": merges, "special_tokens": specials, "sequences": sequences}


def stream_inputs(seed):
    vocab, merges, specials = _tokenizer(seed)
    text = _window(seed + 2, 8_000) + "x'l" + "l  \n\n " + SPECIAL + SPECIAL + "<ta" + "b>"
    rng = random.Random(seed)
    cuts, at = [], 0
    while at < len(text):
        at += rng.randint(1, 12)
        cuts.append(min(at, len(text)))
    chunks = [text[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
    return {"vocab": vocab, "merges": merges, "special_tokens": specials, "chunks": chunks}


def speed_inputs(seed):
    return {"text": _window(seed, 150_000), "vocab_size": 1000, "special_tokens": [SPECIAL]}


CASES = [
    Case(
        "count_pairs on 400 words in six scripts, emoji and repeats",
        call=pair_table,
        inputs=pair_table_inputs,
        points=1,
        seed=3,
    ),
    Case(
        "merge_pair: three merges on 30 kB of tinytales, and the words each one reads",
        call=merge_steps,
        inputs=merge_steps_inputs,
        points=2,
        seed=5,
    ),
    Case(
        "train_bpe on mixed scripts with two special tokens, 120 merges",
        call=train,
        inputs=mixed_training_inputs,
        points=2,
        seed=7,
    ),
    Case(
        "train_bpe where every pair ties",
        call=train,
        inputs=ties_inputs,
        points=1,
        seed=11,
    ),
    Case(
        "encode: a corpus window, mixed scripts, overlapping special tokens",
        call=encode,
        inputs=encode_inputs,
        points=2,
        seed=13,
    ),
    Case(
        "decode: random ids and broken UTF-8",
        call=decode,
        inputs=decode_inputs,
        points=1,
        seed=17,
    ),
    Case(
        "encode_iterable over 8 kB cut into chunks of 1 to 12 characters",
        call=stream,
        inputs=stream_inputs,
        points=2,
        seed=19,
    ),
    Case(
        "speed: train_bpe on 150 kB of tinytales to 1000 tokens",
        call=train_digest,
        inputs=speed_inputs,
        points=1,
        seed=23,
        speed_ratio=3.0,
        speed_points=2,
    ),
]
