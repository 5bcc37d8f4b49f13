"""Byte-level byte-pair encoding (Sennrich, Haddow and Birch, 2016; Radford et al., 2019).

BPE starts from an alphabet of symbols and learns merges: again and again it fuses the most
frequent pair of adjacent symbols into a new symbol, until the vocabulary has the size asked for.
GPT-2 made it byte-level: the alphabet is the 256 byte values, so every string, in any script or
none, has an encoding and nothing is ever unknown. Text is first cut into pre-tokens (words with
their leading space, numbers, runs of punctuation, whitespace) by a regular expression, and merges
never cross a pre-token's edges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise

import regex

__all__ = [
    "Tokenizer",
    "count_pairs",
    "merge_pair",
    "merge_word",
    "pretokenize",
    "split_special",
    "train_bpe",
]

# GPT-2's pre-tokenizer (Radford et al., 2019): English contractions, letters with an optional
# leading space, numbers likewise, other symbols likewise, then whitespace (a run of spaces before a
# word leaves its last space to that word).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRETOKEN = regex.compile(GPT2_PATTERN)

Pair = tuple[bytes, bytes]  # two adjacent tokens; merging them makes the token a + b


def pretokenize(text: str) -> list[str]:
    """The pre-tokens of `text` under GPT2_PATTERN, in order (given); they concatenate to `text`.

    pretokenize("Hi there, it's 2016!") == ["Hi", " there", ",", " it", "'s", " 2016", "!"]
    """
    return _PRETOKEN.findall(text)


def split_special(text: str, special_tokens: Sequence[str]) -> list[str]:
    """`text` cut into pieces, each special token a piece of its own (given); the pieces
    concatenate to `text`. Where two special tokens overlap, the longer wins:
    split_special("a<|x|>b", ["<|x|>"]) == ["a", "<|x|>", "b"].
    """
    if not special_tokens:
        return [text]
    ordered = sorted(special_tokens, key=len, reverse=True)
    return [p for p in regex.split("(" + "|".join(map(regex.escape, ordered)) + ")", text) if p]


def merge_word(word: list[bytes], pair: Pair) -> list[bytes]:
    """`word` (a pre-token as a list of tokens) with every occurrence of `pair` fused into one
    token, scanning left to right (given): merge_word([a, a, a], (a, a)) == [a + a, a]."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def count_pairs(
    words: Sequence[list[bytes]], freqs: Sequence[int]
) -> tuple[dict[Pair, int], dict[Pair, set[int]]]:
    """Count the adjacent pairs of tokens in distinct pre-tokens: returns (pair_counts, where).

    words[i] is a distinct pre-token as a list of tokens (bytes), occurring freqs[i] times in the
    text. pair_counts[p] is the number of occurrences of p in the text: every adjacent position in
    words[i] that holds p adds freqs[i] (so [a, a, a] holds (a, a) twice); pairs that never occur
    are absent. where[p] is the set of indices i whose words[i] holds p.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "count_pairs: not implemented yet; see exercises/tokenization/README.md"
    )


def merge_pair(
    words: list[list[bytes]],
    freqs: Sequence[int],
    pair_counts: dict[Pair, int],
    where: dict[Pair, set[int]],
    pair: Pair,
) -> None:
    """Apply one merge to the training state, in place, touching only the words that hold `pair`.

    words, freqs, pair_counts and where are as count_pairs describes them. Afterwards, each
    words[i] with i in where[pair] is merge_word(words[i], pair); pair_counts is exactly what
    count_pairs would count on the new words (no zero counts, `pair` gone); where[p] holds every
    word that now holds p (it may still list a word that no longer does) and `pair` is gone from
    it. Only words[i] for i in where[pair] may be read or written: this is BPE's incremental
    update, and it is what makes training fast.
    """
    # YOUR CODE HERE
    raise NotImplementedError(
        "merge_pair: not implemented yet; see exercises/tokenization/README.md"
    )


def train_bpe(
    text: str, vocab_size: int, special_tokens: Sequence[str] = ()
) -> tuple[dict[int, bytes], list[Pair]]:
    """Learn byte-level BPE on `text`: returns (vocab, merges).

    vocab maps id -> bytes: ids 0 .. 255 are the single bytes (id b is bytes([b])), then come the
    special tokens in the order given (their UTF-8 bytes), then one id per merge in the order the
    merges were learned; len(vocab) == vocab_size unless the text runs out of pairs first.
    merges[k] = (a, b) is the k-th merge: the adjacent tokens a and b become the token a + b.

    The text is cut at the special tokens, which take no part in training, and each piece into
    pre-tokens with GPT2_PATTERN; pairs are counted inside pre-tokens only. Each step merges the
    most frequent pair; among equally frequent pairs it takes the lexicographically greater one,
    comparing (a, b) as a tuple of bytes. Counts are kept up to date with merge_pair, never
    recounted from scratch.
    """
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(
            f"train_bpe: vocab_size={vocab_size} is smaller than the 256 bytes plus "
            f"{len(special_tokens)} special tokens"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "train_bpe: not implemented yet; see exercises/tokenization/README.md"
    )


class Tokenizer:
    """Encode text to token ids and back with a trained byte-level BPE.

    Tokenizer(vocab, merges, special_tokens): vocab maps id -> bytes, merges lists (a, b) pairs in
    the order they were learned (as train_bpe returns them), special_tokens lists strings that are
    always encoded as their own single id and never split or merged; a special token whose bytes
    are not in vocab gets the next free id.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] = (),
    ) -> None:
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tokenizer.__init__: not implemented yet; see exercises/tokenization/README.md"
        )

    def encode(self, text: str) -> list[int]:
        """The token ids of `text`: a list of ints.

        Special tokens are found first (the longest wins where two overlap) and become their ids;
        the text between them is cut into pre-tokens with GPT2_PATTERN, and each pre-token's UTF-8
        bytes are merged by replaying the merges in the order they were learned.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tokenizer.encode: not implemented yet; see exercises/tokenization/README.md"
        )

    def _bpe(self, word: bytes) -> list[bytes]:
        """One pre-token's bytes merged into tokens: apply the earliest-learned merge among the
        adjacent pairs, everywhere in the word, until no pair is a merge."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tokenizer._bpe: not implemented yet; see exercises/tokenization/README.md"
        )

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`: their bytes joined, then decoded as UTF-8, with each invalid byte
        sequence replaced by U+FFFD (errors="replace")."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tokenizer.decode: not implemented yet; see exercises/tokenization/README.md"
        )

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """Lazily yield the ids of the text that `chunks` (strings, e.g. an open file's lines) make
        when joined, holding only a little text at a time: list(encode_iterable(chunks)) ==
        encode("".join(chunks)) for any way of cutting the text into chunks.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tokenizer.encode_iterable: not implemented yet; see exercises/tokenization/README.md"
        )

    def _safe_cut(self, text: str) -> int:
        """Where `text` may be cut, so that what comes after can no longer change the ids of the
        part before: ahead of any special token still being written, and ahead of the last two
        pre-tokens before that (a pre-token can grow, and "'" + "l" become "'ll" when an "l" comes).
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "Tokenizer._safe_cut: not implemented yet; see exercises/tokenization/README.md"
        )
