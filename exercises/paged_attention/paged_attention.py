"""PagedAttention: a KV cache kept in fixed-size blocks, like virtual memory (Kwon et al., 2023).

A serving system that reserves one contiguous slab per request for the longest possible answer
wastes most of it. vLLM instead cuts the cache into blocks of `block_size` tokens, hands them out
from a free list one at a time as a sequence grows, and keeps for each sequence a block table that
maps its logical blocks to physical ones. Sequences sampled from one prompt share the prompt's
blocks (reference counts), and a shared block is copied only when one of them writes into it
(copy-on-write). Attention reads the keys and values through the block table.

One `PagedKVCache` holds one attention layer's keys and values. A model with several layers keeps
one cache per layer and applies the same add_sequence / append / fork / free calls to each: their
block tables then stay identical, as vLLM's one table per sequence serves every layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BlockAllocator", "OutOfBlocks", "PagedKVCache", "paged_attention"]


class OutOfBlocks(RuntimeError):
    """Raised when the cache has no free block left for an allocation (given)."""


class BlockAllocator:
    """The free list and reference counts of num_blocks physical blocks, numbered 0 .. num_blocks-1.

    A block is free when its reference count is 0. allocate() takes a free block (count 1);
    share(b) adds one holder; free(b) removes one, and the block returns to the free list when
    no holder is left.
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"BlockAllocator: num_blocks={num_blocks} must be at least 1")
        self.num_blocks = num_blocks
        # YOUR CODE HERE
        raise NotImplementedError(
            "BlockAllocator.__init__: not implemented yet; see exercises/paged_attention/README.md"
        )

    @property
    def num_free(self) -> int:
        """How many blocks are free now."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "BlockAllocator.num_free: not implemented yet; see exercises/paged_attention/README.md"
        )

    def refcount(self, block: int) -> int:
        """How many holders (block-table entries) block `block` has; 0 when it is free."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "BlockAllocator.refcount: not implemented yet; see exercises/paged_attention/README.md"
        )

    def allocate(self) -> int:
        """Take a free block and return its number, with reference count 1.

        Raises OutOfBlocks (with a message that says how many blocks there are) when none is free.
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "BlockAllocator.allocate: not implemented yet; see exercises/paged_attention/README.md"
        )

    def share(self, block: int) -> None:
        """Add one holder to an allocated block. Raises ValueError if the block is free."""
        # YOUR CODE HERE
        raise NotImplementedError(
            "BlockAllocator.share: not implemented yet; see exercises/paged_attention/README.md"
        )

    def free(self, block: int) -> None:
        """Remove one holder; the block returns to the free list when none is left.

        Raises ValueError if the block is already free (a double free).
        """
        # YOUR CODE HERE
        raise NotImplementedError(
            "BlockAllocator.free: not implemented yet; see exercises/paged_attention/README.md"
        )


class PagedKVCache:
    """One attention layer's keys and values for many sequences, in blocks of block_size tokens.

    Storage (given): self.k and self.v, each (num_blocks, block_size, n_kv_heads, head_dim), of
    `dtype` on `device`; self.allocator, the `BlockAllocator` of those blocks. Token t of a
    sequence lives in physical block block_table(seq)[t // block_size], slot t % block_size.
    A sequence of n tokens holds exactly ceil(n / block_size) blocks: a new block is taken only
    when a token does not fit in the last one, so less than one block per sequence is wasted.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        if block_size < 1:
            raise ValueError(f"PagedKVCache: block_size={block_size} must be at least 1")
        self.block_size, self.n_kv_heads, self.head_dim = block_size, n_kv_heads, head_dim
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_blocks, block_size, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.tables: dict[int, list[int]] = {}  # sequence id -> its physical blocks, in order
        self.lengths: dict[int, int] = {}  # sequence id -> how many tokens it holds

    def _check(self, seq_id: int) -> None:
        if seq_id not in self.tables:
            raise KeyError(f"PagedKVCache: no sequence {seq_id!r}")

    def add_sequence(self, seq_id: int) -> None:
        """Start an empty sequence (no block yet). Raises ValueError if seq_id exists (given)."""
        if seq_id in self.tables:
            raise ValueError(f"PagedKVCache.add_sequence: sequence {seq_id!r} exists already")
        self.tables[seq_id], self.lengths[seq_id] = [], 0

    def length(self, seq_id: int) -> int:
        """How many tokens sequence seq_id holds (given)."""
        self._check(seq_id)
        return self.lengths[seq_id]

    def block_table(self, seq_id: int) -> list[int]:
        """A copy of sequence seq_id's block table: its physical block numbers, in order (given)."""
        self._check(seq_id)
        return list(self.tables[seq_id])

    def append(self, seq_id: int, k: Tensor, v: Tensor) -> None:
        """Append T tokens' keys and values, k and v each (T, n_kv_heads, head_dim), T >= 1.

        Fills the last block first, then takes new blocks. If the last block is partly filled and
        shared with another sequence, it is copied first (copy-on-write). Atomic: raises
        OutOfBlocks and changes nothing when the free blocks do not suffice.
        """
        self._check(seq_id)
        shape = (self.n_kv_heads, self.head_dim)
        if k.dim() != 3 or k.shape[1:] != shape or v.shape != k.shape or k.shape[0] < 1:
            raise ValueError(
                f"PagedKVCache.append: k and v must both be (T, {shape[0]}, {shape[1]}) with T >= "
                f"1; got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        # YOUR CODE HERE
        raise NotImplementedError(
            "PagedKVCache.append: not implemented yet; see exercises/paged_attention/README.md"
        )

    def fork(self, parent_id: int, child_id: int) -> None:
        """Start sequence child_id as a copy of parent_id that shares all of its blocks.

        No block is allocated or copied: each of the parent's blocks gains one holder.
        Raises ValueError if child_id exists.
        """
        self._check(parent_id)
        if child_id in self.tables:
            raise ValueError(f"PagedKVCache.fork: sequence {child_id!r} exists already")
        # YOUR CODE HERE
        raise NotImplementedError(
            "PagedKVCache.fork: not implemented yet; see exercises/paged_attention/README.md"
        )

    def free(self, seq_id: int) -> None:
        """Drop sequence seq_id: each of its blocks loses one holder (shared blocks survive)."""
        self._check(seq_id)
        # YOUR CODE HERE
        raise NotImplementedError(
            "PagedKVCache.free: not implemented yet; see exercises/paged_attention/README.md"
        )

    def gather(self, seq_id: int) -> tuple[Tensor, Tensor]:
        """Sequence seq_id's keys and values, contiguous: each (length, n_kv_heads, head_dim)."""
        self._check(seq_id)
        # YOUR CODE HERE
        raise NotImplementedError(
            "PagedKVCache.gather: not implemented yet; see exercises/paged_attention/README.md"
        )


def paged_attention(q: Tensor, cache: PagedKVCache, seq_ids: list[int]) -> Tensor:
    """One decoding step: query i attends over all of sequence seq_ids[i]'s cached tokens.

    Shapes: q (S, n_heads, head_dim) with S = len(seq_ids) -> (S, n_heads, head_dim), q's dtype.
    n_heads is a multiple of cache.n_kv_heads (grouped-query attention): query head h reads
    key/value head h // (n_heads // n_kv_heads). Every sequence holds at least one token. Equal to
    softmax(q k^T / sqrt(head_dim)) v over the sequence's keys and values laid out contiguously.
    """
    S, H, D = q.shape
    G = cache.n_kv_heads
    if H % G or cache.head_dim != D or len(seq_ids) != S:
        raise ValueError(
            f"paged_attention: q {tuple(q.shape)} needs n_heads a multiple of {G}, head_dim "
            f"{cache.head_dim} and one query per sequence ({len(seq_ids)} sequences)"
        )
    # YOUR CODE HERE
    raise NotImplementedError(
        "paged_attention: not implemented yet; see exercises/paged_attention/README.md"
    )
