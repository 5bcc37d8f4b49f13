"""Common mistakes in a paged KV cache, each replacing one method or function of the reference."""

import math

import torch

from graders.impl import reference
from graders.mutants import mutant

ref = reference("paged_attention")


@mutant(
    "BlockAllocator.allocate",
    "allocate() pops from an empty free list: running out raises IndexError, not OutOfBlocks",
)
def out_of_blocks_is_an_index_error(self):
    block = self._free.pop()
    self._refs[block] = 1
    return block


@mutant(
    "BlockAllocator.free",
    "free() returns a block to the free list whatever its reference count: a shared block is "
    "handed out again while another sequence still holds it",
)
def free_ignores_the_refcount(self, block):
    if self._refs[block] == 0:
        raise ValueError(f"BlockAllocator.free: block {block} is already free")
    self._refs[block] = 0
    self._free.append(block)


@mutant(
    "PagedKVCache.fork",
    "fork() copies the parent's blocks instead of sharing them: no memory is saved",
)
def fork_copies_blocks(self, parent_id, child_id):
    table = []
    for block in self.tables[parent_id]:
        new = self.allocator.allocate()
        self.k[new], self.v[new] = self.k[block], self.v[block]
        table.append(new)
    self.tables[child_id], self.lengths[child_id] = table, self.lengths[parent_id]


@mutant(
    "PagedKVCache.append",
    "no copy-on-write: appending to a shared, partly filled last block overwrites it for every "
    "sequence that shares it",
)
def no_copy_on_write(self, seq_id, k, v):
    table, n, T, bs = self.tables[seq_id], self.lengths[seq_id], k.shape[0], self.block_size
    new_blocks = math.ceil((n + T) / bs) - len(table)
    if new_blocks > self.allocator.num_free:
        raise ref.OutOfBlocks(f"PagedKVCache.append: {new_blocks} block(s) needed")
    table.extend(self.allocator.allocate() for _ in range(new_blocks))
    pos = torch.arange(n, n + T, device=self.k.device)
    blocks = torch.tensor(table, device=self.k.device)[pos // bs]
    self.k[blocks, pos % bs], self.v[blocks, pos % bs] = k, v
    self.lengths[seq_id] = n + T


@mutant(
    "PagedKVCache.append",
    "a new block is taken as soon as the last one is full, not when a token does not fit: a "
    "whole empty block is wasted",
)
def new_block_when_last_fills(self, seq_id, k, v):
    ref.PagedKVCache.append(self, seq_id, k, v)
    n = self.lengths[seq_id]
    if n % self.block_size == 0 and self.allocator.num_free:
        self.tables[seq_id].append(self.allocator.allocate())


@mutant(
    "PagedKVCache.free",
    "free() forgets the sequence without releasing its blocks: they leak",
)
def free_leaks_blocks(self, seq_id):
    del self.tables[seq_id], self.lengths[seq_id]


@mutant(
    "paged_attention",
    "attention runs over every slot of the last block, unfilled ones included: mask the slots "
    "at or after the sequence's length",
)
def attends_unfilled_slots(q, cache, seq_ids):
    S, H, D = q.shape
    G = cache.n_kv_heads
    tables = [cache.block_table(s) for s in seq_ids]
    width = max(len(t) for t in tables)
    padded = torch.tensor([t + [0] * (width - len(t)) for t in tables], device=q.device)
    k = cache.k[padded].flatten(1, 2).to(q.dtype)
    v = cache.v[padded].flatten(1, 2).to(q.dtype)
    n_blocks = torch.tensor([len(t) for t in tables], device=q.device)
    filled = (
        torch.arange(k.shape[1], device=q.device)[None, :] < cache.block_size * n_blocks[:, None]
    )
    scores = torch.einsum("sgrd,stgd->sgrt", q.view(S, G, H // G, D), k) / math.sqrt(D)
    scores = scores.masked_fill(~filled[:, None, None, :], float("-inf"))
    out = torch.einsum("sgrt,stgd->sgrd", torch.softmax(scores, dim=-1), v)
    return out.reshape(S, H, D)


@mutant(
    "paged_attention",
    "query head h reads key/value head h % n_kv_heads; grouped-query attention gives it head "
    "h // (n_heads // n_kv_heads)",
)
def heads_grouped_modulo(q, cache, seq_ids):
    H = q.shape[1]
    G = cache.n_kv_heads
    # Reorder the query heads so that the reference's grouping pairs head h with h % G.
    order = torch.arange(H, device=q.device).view(H // G, G).T.reshape(-1)
    out = ref.paged_attention(q[:, order], cache, seq_ids)
    return out[:, torch.argsort(order)]


@mutant(
    "paged_attention",
    "the keys and values are gathered one token at a time in Python: index the cache with the "
    "whole block table at once",
    slow=True,
)
def gathers_token_by_token(q, cache, seq_ids):
    H, D = q.shape[1:]
    G = cache.n_kv_heads
    out = []
    for i, s in enumerate(seq_ids):
        table, n = cache.block_table(s), cache.length(s)
        k = torch.stack(
            [cache.k[table[t // cache.block_size], t % cache.block_size] for t in range(n)]
        )
        v = torch.stack(
            [cache.v[table[t // cache.block_size], t % cache.block_size] for t in range(n)]
        )
        k, v = (x.to(q.dtype).transpose(0, 1).repeat_interleave(H // G, dim=0) for x in (k, v))
        w = torch.softmax(q[i][:, None] @ k.transpose(-2, -1) / math.sqrt(D), dim=-1)
        out.append((w @ v)[:, 0])
    return torch.stack(out)
