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
        ### BEGIN SOLUTION
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: block 0 comes out first
        self._refs = [0] * num_blocks
        ### END SOLUTION

    @property
    def num_free(self) -> int:
        """How many blocks are free now."""
        ### BEGIN SOLUTION
        return len(self._free)
        ### END SOLUTION

    def refcount(self, block: int) -> int:
        """How many holders (block-table entries) block `block` has; 0 when it is free."""
        ### BEGIN SOLUTION
        return self._refs[block]
        ### END SOLUTION

    def allocate(self) -> int:
        """Take a free block and return its number, with reference count 1.

        Raises OutOfBlocks (with a message that says how many blocks there are) when none is free.
        """
        ### BEGIN SOLUTION
        if not self._free:
            raise OutOfBlocks(f"BlockAllocator: all {self.num_blocks} blocks are in use")
        block = self._free.pop()
        self._refs[block] = 1
        return block
        ### END SOLUTION

    def share(self, block: int) -> None:
        """Add one holder to an allocated block. Raises ValueError if the block is free."""
        ### BEGIN SOLUTION
        if self._refs[block] == 0:
            raise ValueError(f"BlockAllocator.share: block {block} is free")
        self._refs[block] += 1
        ### END SOLUTION

    def free(self, block: int) -> None:
        """Remove one holder; the block returns to the free list when none is left.

        Raises ValueError if the block is already free (a double free).
        """
        ### BEGIN SOLUTION
        if self._refs[block] == 0:
            raise ValueError(f"BlockAllocator.free: block {block} is already free")
        self._refs[block] -= 1
        if self._refs[block] == 0:
            self._free.append(block)
        ### END SOLUTION


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
        ### BEGIN SOLUTION
        table, n, T, bs = self.tables[seq_id], self.lengths[seq_id], k.shape[0], self.block_size
        new_blocks = math.ceil((n + T) / bs) - len(table)
        # A partly filled last block that another sequence also holds must not be written in
        # place: the writer gets its own copy (copy-on-write). A full one is never written again.
        copy = n % bs != 0 and self.allocator.refcount(table[-1]) > 1
        if new_blocks + copy > self.allocator.num_free:
            raise OutOfBlocks(
                f"PagedKVCache.append: {T} token(s) for sequence {seq_id!r} need "
                f"{new_blocks + copy} free block(s); {self.allocator.num_free} left"
            )
        if copy:
            shared, table[-1] = table[-1], self.allocator.allocate()
            self.k[table[-1]], self.v[table[-1]] = self.k[shared], self.v[shared]
            self.allocator.free(shared)
        table.extend(self.allocator.allocate() for _ in range(new_blocks))
        # Logical position t lives in block table[t // bs] at slot t % bs: one scattered write.
        pos = torch.arange(n, n + T, device=self.k.device)
        blocks = torch.tensor(table, device=self.k.device)[pos // bs]
        self.k[blocks, pos % bs] = k.to(self.k.dtype)
        self.v[blocks, pos % bs] = v.to(self.v.dtype)
        self.lengths[seq_id] = n + T
        ### END SOLUTION

    def fork(self, parent_id: int, child_id: int) -> None:
        """Start sequence child_id as a copy of parent_id that shares all of its blocks.

        No block is allocated or copied: each of the parent's blocks gains one holder.
        Raises ValueError if child_id exists.
        """
        self._check(parent_id)
        if child_id in self.tables:
            raise ValueError(f"PagedKVCache.fork: sequence {child_id!r} exists already")
        ### BEGIN SOLUTION
        for block in self.tables[parent_id]:
            self.allocator.share(block)
        self.tables[child_id] = list(self.tables[parent_id])
        self.lengths[child_id] = self.lengths[parent_id]
        ### END SOLUTION

    def free(self, seq_id: int) -> None:
        """Drop sequence seq_id: each of its blocks loses one holder (shared blocks survive)."""
        self._check(seq_id)
        ### BEGIN SOLUTION
        for block in self.tables.pop(seq_id):
            self.allocator.free(block)
        del self.lengths[seq_id]
        ### END SOLUTION

    def gather(self, seq_id: int) -> tuple[Tensor, Tensor]:
        """Sequence seq_id's keys and values, contiguous: each (length, n_kv_heads, head_dim)."""
        self._check(seq_id)
        ### BEGIN SOLUTION
        n = self.lengths[seq_id]
        table = torch.tensor(self.tables[seq_id], dtype=torch.long, device=self.k.device)
        # (blocks, block_size, G, D) -> (blocks * block_size, G, D), then cut the unfilled tail.
        k = self.k.index_select(0, table).flatten(0, 1)[:n]
        v = self.v.index_select(0, table).flatten(0, 1)[:n]
        return k, v
        ### END SOLUTION


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
    ### BEGIN SOLUTION
    tables = [cache.block_table(s) for s in seq_ids]
    lengths = torch.tensor([cache.length(s) for s in seq_ids], device=q.device)
    width = max(len(t) for t in tables)
    # Pad the block tables to one width (block 0 stands in; those slots are masked below).
    padded = torch.tensor([t + [0] * (width - len(t)) for t in tables], device=q.device)
    # One gather through the block tables: (S * width, block_size, G, D) -> (S, G, T_max, D).
    k = cache.k.index_select(0, padded.flatten()).view(S, -1, G, D).transpose(1, 2).to(q.dtype)
    v = cache.v.index_select(0, padded.flatten()).view(S, -1, G, D).transpose(1, 2).to(q.dtype)
    # Grouped-query heads: the H query heads form G groups of H // G, one per key/value head.
    qg = q.view(S, G, H // G, D)
    scores = qg @ k.transpose(-2, -1) / math.sqrt(D)  # (S, G, H // G, T_max)
    # Only slots 0 .. length-1 hold tokens: the rest of the last block (and padding) is masked.
    filled = torch.arange(k.shape[2], device=q.device)[None, :] < lengths[:, None]  # (S, T_max)
    scores = scores.masked_fill(~filled[:, None, None, :], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # (S, G, H // G, D)
    return out.reshape(S, H, D)
    ### END SOLUTION
