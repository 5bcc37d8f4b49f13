"""Common mistakes in byte-level BPE, each replacing one function or method of the reference."""

from collections import Counter
from itertools import pairwise

from graders.impl import reference
from graders.mutants import mutant

ref = reference("tokenization")


@mutant(
    "count_pairs", "each distinct pre-token counts once: weight its pairs by how often it occurs"
)
def frequencies_ignored(words, freqs):
    return ref.count_pairs(words, [1] * len(freqs))


@mutant(
    "count_pairs",
    "a pair that occurs twice in one pre-token is counted once: count every adjacent position",
)
def repeats_counted_once(words, freqs):
    pair_counts, where = Counter(), {}
    for i, word in enumerate(words):
        for pair in set(pairwise(word)):
            pair_counts[pair] += freqs[i]
            where.setdefault(pair, set()).add(i)
    return dict(pair_counts), where


@mutant(
    "merge_pair",
    "every pair of every pre-token is recounted after each merge: update only the pre-tokens in "
    "where[pair]",
)
def recount_every_pair(words, freqs, pair_counts, where, pair):
    for i in range(len(words)):
        words[i] = ref.merge_word(words[i], pair)
    counts, index = ref.count_pairs(words, freqs)
    pair_counts.clear()
    pair_counts.update(counts)
    where.clear()
    where.update(index)


@mutant(
    "merge_pair",
    "the pairs a merge creates are counted but not added to where, so later merges miss them",
)
def new_pairs_not_indexed(words, freqs, pair_counts, where, pair):
    for i in where.pop(pair):
        word = words[i]
        for p in pairwise(word):
            pair_counts[p] -= freqs[i]
            if pair_counts[p] == 0:
                del pair_counts[p]
        words[i] = word = ref.merge_word(word, pair)
        for p in pairwise(word):
            pair_counts[p] = pair_counts.get(p, 0) + freqs[i]


def _train(text, vocab_size, special_tokens, *, tie=max, keep_specials=False):
    """The reference's training loop, with the tie rule `tie` and the special tokens optionally
    left in the training text."""
    vocab = {i: bytes([i]) for i in range(256)}
    for token in special_tokens:
        vocab[len(vocab)] = token.encode("utf-8")
    pieces = ref.split_special(text, special_tokens)
    counts = Counter(
        word
        for piece in pieces
        if keep_specials or piece not in special_tokens
        for word in ref.pretokenize(piece)
    )
    words = [[bytes([b]) for b in word.encode("utf-8")] for word in counts]
    freqs = list(counts.values())
    pair_counts, where = ref.count_pairs(words, freqs)
    merges = []
    for _ in range(vocab_size - len(vocab)):
        if not pair_counts:
            break
        top = max(pair_counts.values())
        best = tie(p for p, c in pair_counts.items() if c == top)
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        ref.merge_pair(words, freqs, pair_counts, where, best)
    return vocab, merges


@mutant("train_bpe", "ties go to the lexicographically smaller pair; the greater one should win")
def ties_to_the_smaller_pair(text, vocab_size, special_tokens=()):
    return _train(text, vocab_size, special_tokens, tie=min)


@mutant(
    "train_bpe",
    "special tokens stay in the training text, so their bytes get merged: cut them out first",
)
def special_tokens_trained_on(text, vocab_size, special_tokens=()):
    return _train(text, vocab_size, special_tokens, keep_specials=True)


@mutant(
    "Tokenizer._bpe",
    "encode merges the leftmost known pair first; apply the earliest-learned merge first",
)
def leftmost_merge_first(self, word):
    tokens = [bytes([b]) for b in word]
    while True:
        pair = next((p for p in pairwise(tokens) if p in self.rank), None)
        if pair is None:
            return tokens
        tokens = ref.merge_word(tokens, pair)


@mutant(
    "Tokenizer.encode",
    "special tokens are encoded as ordinary text: split them out of the text before pre-tokenizing",
)
def special_tokens_split(self, text):
    ids = []
    for word in ref.pretokenize(text):
        ids += [self.ids[t] for t in self._bpe(word.encode("utf-8"))]
    return ids


@mutant(
    "Tokenizer.decode",
    "each token is decoded on its own, which breaks characters whose bytes span two tokens: join "
    "the bytes first, then decode",
)
def decode_token_by_token(self, ids):
    return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)


@mutant(
    "Tokenizer.encode_iterable",
    "each chunk is encoded on its own: a word or special token cut between two chunks comes out "
    "split",
)
def chunks_encoded_separately(self, chunks):
    for chunk in chunks:
        yield from self.encode(chunk)
