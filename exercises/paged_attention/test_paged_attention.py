"""Specs for paged_attention: `pytest exercises/paged_attention` (`--impl=solutions`: reference).

The oracle for contents is a contiguous "shadow" cache: the keys and values each sequence was given,
concatenated in order; the oracle for attention is torch's scaled_dot_product_attention over it.
"""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from graders.checks import assert_close, fail

TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}


def kv(T, G, D, device, seed, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(T, G, D, generator=g, dtype=dtype) * scale
    v = torch.randn(T, G, D, generator=g, dtype=dtype) * scale
    return k.to(device), v.to(device)


def contiguous_attention(q, keys, values):
    """q (S, H, D); keys[i], values[i] (T_i, G, D) -> (S, H, D), with torch's own attention."""
    H = q.shape[1]
    out = []
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        r = H // k.shape[1]  # query head h reads key/value head h // r
        k, v = (t.transpose(0, 1).repeat_interleave(r, dim=0) for t in (k, v))  # (H, T, D)
        out.append(F.scaled_dot_product_attention(q[i][:, None], k, v)[:, 0])
    return torch.stack(out)


def expect_out_of_blocks(impl, call, what):
    try:
        call()
    except impl.OutOfBlocks as err:
        if not str(err):
            fail(f"{what} raised OutOfBlocks with an empty message; say what ran out")
        return
    except Exception as err:
        fail(f"{what} should raise OutOfBlocks; it raised {type(err).__name__}: {err}")
    fail(f"{what} should raise OutOfBlocks (no free block is left); it returned normally")


def check_contents(cache, seq_id, k, v, what):
    gk, gv = cache.gather(seq_id)
    assert_close(gk, k, rtol=0, atol=0, what=f"gather({seq_id}) keys {what}")
    assert_close(gv, v, rtol=0, atol=0, what=f"gather({seq_id}) values {what}")


# ------------------------------------------------------------------ the allocator


def test_allocator_hands_out_every_block_once(impl):
    a = impl.BlockAllocator(5)
    got = [a.allocate() for _ in range(5)]
    if sorted(got) != list(range(5)):
        fail(f"BlockAllocator(5): five allocate() calls returned {got}; expected 0..4, once each")
    if a.num_free != 0 or any(a.refcount(b) != 1 for b in got):
        fail(
            f"BlockAllocator(5) after five allocations: num_free {a.num_free} (expected 0), "
            f"refcounts {[a.refcount(b) for b in got]} (expected 1 each)"
        )
    expect_out_of_blocks(impl, a.allocate, "BlockAllocator(5).allocate() a sixth time")
    a.free(got[2])
    if a.num_free != 1 or a.allocate() != got[2]:
        fail(f"BlockAllocator: after free({got[2]}), the next allocate() should return it")


def test_allocator_counts_holders(impl):
    a = impl.BlockAllocator(3)
    b = a.allocate()
    a.share(b)
    a.share(b)
    steps = [("allocate + share + share", a.refcount(b), 3, a.num_free, 2)]
    a.free(b)
    steps.append(("then free", a.refcount(b), 2, a.num_free, 2))
    a.free(b)
    a.free(b)
    steps.append(("then free twice more", a.refcount(b), 0, a.num_free, 3))
    for when, count, want_count, free, want_free in steps:
        if count != want_count or free != want_free:
            fail(
                f"BlockAllocator(3), block {b} after {when}: refcount {count}, num_free {free}; "
                f"expected refcount {want_count}, num_free {want_free} (a block returns to the "
                "free list only when its last holder frees it)"
            )
    for name, call in [("freeing", a.free), ("sharing", a.share)]:
        try:
            call(b)
        except ValueError:
            continue
        fail(
            f"BlockAllocator(3): {name} block {b} after its last holder freed it should raise "
            "ValueError (a free block has no holder to free or to share)"
        )


# ------------------------------------------------------------------ the cache


def test_append_takes_a_block_only_when_the_last_is_full(impl, device):
    cache = impl.PagedKVCache(12, 4, 2, 3, dtype=torch.float64, device=device)
    cache.add_sequence(7)
    k, v = kv(9, 2, 3, device, seed=1)
    for n in range(1, 10):
        cache.append(7, k[n - 1 : n], v[n - 1 : n])
        blocks = cache.block_table(7)
        if len(blocks) != math.ceil(n / 4) or cache.allocator.num_free != 12 - math.ceil(n / 4):
            fail(
                f"PagedKVCache(block_size=4): after appending token {n} one at a time, the block "
                f"table is {blocks} and num_free {cache.allocator.num_free}; expected "
                f"{math.ceil(n / 4)} blocks and {12 - math.ceil(n / 4)} free"
            )
        if cache.length(7) != n:
            fail(f"PagedKVCache: length(7) is {cache.length(7)} after {n} tokens")
    check_contents(cache, 7, k, v, "after 9 single-token appends (block_size 4)")
    cache.add_sequence(8)
    k2, v2 = kv(12, 2, 3, device, seed=2)
    for lo, hi, want in [(0, 7, 2), (7, 8, 2), (8, 12, 3)]:
        cache.append(8, k2[lo:hi], v2[lo:hi])
        if len(cache.block_table(8)) != want:
            fail(
                f"PagedKVCache(block_size=4): after appending {hi - lo} tokens to reach {hi}, the "
                f"block table is {cache.block_table(8)}; expected ceil({hi} / 4) = {want} blocks"
            )
    check_contents(cache, 8, k2, v2, "after appends of 7, 1 and 4 tokens (block_size 4)")


def test_gather_follows_the_block_table(impl, device):
    # Two sequences grown in turns: their blocks interleave in memory.
    cache = impl.PagedKVCache(10, 3, 1, 2, dtype=torch.float64, device=device)
    shadow = {}
    for s in (0, 1):
        cache.add_sequence(s)
        shadow[s] = kv(11, 1, 2, device, seed=10 + s)
    for lo, hi in [(0, 2), (2, 5), (5, 6), (6, 11)]:
        for s in (0, 1):
            cache.append(s, shadow[s][0][lo:hi], shadow[s][1][lo:hi])
    for s in (0, 1):
        check_contents(cache, s, *shadow[s], f"(block table {cache.block_table(s)}, block_size 3)")


def test_fork_shares_every_block(impl, device):
    cache = impl.PagedKVCache(8, 4, 2, 3, dtype=torch.float64, device=device)
    cache.add_sequence(0)
    k, v = kv(10, 2, 3, device, seed=3)
    cache.append(0, k, v)
    free = cache.allocator.num_free
    cache.fork(0, 1)
    parent, child = cache.block_table(0), cache.block_table(1)
    if child != parent or cache.allocator.num_free != free:
        fail(
            f"PagedKVCache.fork(0, 1) of a 10-token sequence with blocks {parent}: the child's "
            f"table is {child} and num_free went {free} -> {cache.allocator.num_free}; a fork "
            "shares the parent's blocks (same table) and allocates nothing"
        )
    counts = [cache.allocator.refcount(b) for b in parent]
    if counts != [2] * len(parent):
        fail(f"PagedKVCache.fork: refcounts of the shared blocks {parent} are {counts}; expected 2")
    if cache.length(1) != 10:
        fail(f"PagedKVCache.fork: the child's length is {cache.length(1)}; expected 10")
    check_contents(cache, 1, k, v, "of a fork of a 10-token sequence")


def test_copy_on_write(impl, device):
    cache = impl.PagedKVCache(8, 4, 2, 3, dtype=torch.float64, device=device)
    cache.add_sequence(0)
    k, v = kv(8, 2, 3, device, seed=4)
    cache.append(0, k[:6], v[:6])  # blocks: one full, one holding 2 of 4 slots
    cache.fork(0, 1)
    parent = cache.block_table(0)
    k1, v1 = kv(1, 2, 3, device, seed=5)
    cache.append(1, k1, v1)
    child = cache.block_table(1)
    if child[0] != parent[0] or child[1] == parent[1]:
        fail(
            f"PagedKVCache: the parent holds blocks {parent} (6 tokens, block_size 4); after fork "
            f"and one token appended to the child, its table is {child}. The full first block "
            "stays shared; the shared, partly filled last block is copied before the write"
        )
    if [cache.allocator.refcount(b) for b in parent] != [2, 1]:
        fail(
            f"PagedKVCache: after the copy-on-write, refcounts of the parent's blocks {parent} "
            f"are {[cache.allocator.refcount(b) for b in parent]}; expected [2, 1]"
        )
    check_contents(cache, 0, k[:6], v[:6], "of the parent after its child appended a token")
    check_contents(cache, 1, torch.cat([k[:6], k1]), torch.cat([v[:6], v1]), "of the child")
    cache.append(0, k[6:7], v[6:7])  # the parent's last block is its own now: written in place
    if cache.block_table(0) != parent:
        fail(
            f"PagedKVCache: the parent's last block {parent[1]} is no longer shared, so appending "
            f"to it must not copy it; the table went {parent} -> {cache.block_table(0)}"
        )
    # A full shared last block is never written again: the child just takes a new block.
    cache.append(0, k[7:8], v[7:8])
    cache.fork(0, 2)
    free = cache.allocator.num_free
    cache.append(2, k1, v1)
    if cache.block_table(2)[:2] != cache.block_table(0) or cache.allocator.num_free != free - 1:
        fail(
            f"PagedKVCache: appending to a fork of a sequence whose blocks {cache.block_table(0)} "
            f"are full gave the table {cache.block_table(2)} (num_free {free} -> "
            f"{cache.allocator.num_free}); expected both blocks shared and one new block"
        )
    check_contents(cache, 0, k, v, "of the parent after forks and appends")


def test_free_drops_one_holder(impl, device):
    cache = impl.PagedKVCache(6, 2, 1, 2, dtype=torch.float64, device=device)
    cache.add_sequence(0)
    k, v = kv(5, 1, 2, device, seed=6)
    cache.append(0, k, v)
    cache.fork(0, 1)
    blocks = cache.block_table(1)
    cache.free(0)
    counts = [cache.allocator.refcount(b) for b in blocks]
    if counts != [1, 1, 1] or cache.allocator.num_free != 3:
        fail(
            f"PagedKVCache.free(0) of a parent whose fork 1 shares its blocks {blocks}: refcounts "
            f"{counts}, num_free {cache.allocator.num_free}; expected [1, 1, 1] and 3 (each "
            "block loses one holder and stays with the child)"
        )
    check_contents(cache, 1, k, v, "of a fork after its parent was freed")
    cache.free(1)
    if cache.allocator.num_free != 6:
        fail(
            f"PagedKVCache: after freeing every sequence, num_free is {cache.allocator.num_free} "
            "of 6: blocks leaked"
        )


def test_out_of_blocks_changes_nothing(impl, device):
    cache = impl.PagedKVCache(3, 2, 1, 2, dtype=torch.float64, device=device)
    cache.add_sequence(0)
    k, v = kv(8, 1, 2, device, seed=7)
    cache.append(0, k[:3], v[:3])  # 2 blocks
    cache.fork(0, 1)  # one block left; the shared last block is half full
    before = (cache.block_table(1), cache.length(1), cache.allocator.num_free)
    expect_out_of_blocks(
        impl,
        lambda: cache.append(1, k[3:5], v[3:5]),
        "PagedKVCache(num_blocks=3, block_size=2): appending 2 tokens to a fork of a 3-token "
        "sequence (a copy-on-write and a new block, with one block free)",
    )
    after = (cache.block_table(1), cache.length(1), cache.allocator.num_free)
    if after != before:
        fail(
            f"PagedKVCache.append raised OutOfBlocks but changed the cache: (block table, length, "
            f"num_free) went {before} -> {after}; check that the blocks suffice before changing "
            "anything"
        )
    check_contents(cache, 0, k[:3], v[:3], "of the parent after a failed append")
    cache.append(1, k[3:4], v[3:4])  # the copy-on-write alone fits
    check_contents(cache, 1, k[:4], v[:4], "of the child after an append that fits")


# ------------------------------------------------------------------ attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    block_size=st.integers(1, 5),
    G=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 2, 3]),
    D=st.integers(1, 8),
    lengths=st.lists(st.integers(1, 13), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_paged_attention_matches_contiguous(
    impl, device, dtype, block_size, G, group, D, lengths, seed
):
    cache = impl.PagedKVCache(64, block_size, G, D, dtype=dtype, device=device)
    shadow = [kv(n, G, D, device, seed + i, dtype) for i, n in enumerate(lengths)]
    for i in range(len(lengths)):
        cache.add_sequence(i)
    for lo in range(0, 13, 3):  # in turns, three tokens at a time: the blocks interleave
        for i, (k, v) in enumerate(shadow):
            if lo < len(k):
                cache.append(i, k[lo : lo + 3], v[lo : lo + 3])
    g = torch.Generator().manual_seed(seed)
    ids = list(range(len(lengths)))[::-1]  # any order of sequences
    q = torch.randn(len(ids), G * group, D, generator=g, dtype=dtype).to(device)
    expected = contiguous_attention(q, [shadow[i][0] for i in ids], [shadow[i][1] for i in ids])
    rtol, atol = TOL[dtype]
    assert_close(
        impl.paged_attention(q, cache, ids),
        expected,
        rtol=rtol,
        atol=atol,
        what=f"paged_attention(q {tuple(q.shape)}, cache with block_size {block_size} and "
        f"{G} key/value heads, sequences {ids} of lengths {[lengths[i] for i in ids]})",
    )


def test_paged_attention_ignores_unfilled_slots(impl, device):
    cache = impl.PagedKVCache(6, 4, 2, 8, dtype=torch.float64, device=device)
    # Fill every block with large keys and values, then free them: stale data stays behind.
    cache.add_sequence(0)
    cache.append(0, *kv(24, 2, 8, device, seed=8, scale=50.0))
    cache.free(0)
    shadow = [kv(n, 2, 8, device, seed=9 + n) for n in (5, 3, 10)]
    for i, (k, v) in enumerate(shadow):
        cache.add_sequence(i)
        cache.append(i, k, v)
    q = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    q = q.to(device)
    assert_close(
        impl.paged_attention(q, cache, [0, 1, 2]),
        contiguous_attention(q, [k for k, _ in shadow], [v for _, v in shadow]),
        rtol=1e-10,
        atol=1e-10,
        what="paged_attention over sequences of 5, 3 and 10 tokens (block_size 4) in reused "
        "blocks whose unfilled slots hold stale keys and values",
    )


# ------------------------------------------------------------------ any sequence of operations


class CacheMachine(RuleBasedStateMachine):
    """Random add / append / fork / free / attend, checked against a contiguous shadow cache."""

    def __init__(self, impl, device):
        super().__init__()
        self.impl, self.device = impl, device
        self.shadow = {}  # seq id -> (keys, values), each (T, G, D)
        self.next_id = 0

    @initialize(
        num_blocks=st.integers(4, 16), block_size=st.integers(1, 4), G=st.sampled_from([1, 2])
    )
    def start(self, num_blocks, block_size, G):
        self.num_blocks, self.block_size, self.G, self.D = num_blocks, block_size, G, 3
        self.cache = self.impl.PagedKVCache(
            num_blocks, block_size, G, self.D, dtype=torch.float64, device=self.device
        )

    def pick(self, data, nonempty=False):
        ids = sorted(s for s, (k, _) in self.shadow.items() if k.shape[0] or not nonempty)
        return data.draw(st.sampled_from(ids))

    @precondition(lambda self: len(self.shadow) < 5)
    @rule()
    def add_sequence(self):
        self.cache.add_sequence(self.next_id)
        empty = torch.zeros(0, self.G, self.D, dtype=torch.float64, device=self.device)
        self.shadow[self.next_id] = (empty, empty)
        self.next_id += 1

    @precondition(lambda self: self.shadow)
    @rule(data=st.data(), T=st.integers(1, 4), seed=st.integers(0, 2**16))
    def append(self, data, T, seed):
        s = self.pick(data)
        k, v = kv(T, self.G, self.D, self.device, seed)
        n, table = self.shadow[s][0].shape[0], self.cache.block_table(s)
        alloc = self.cache.allocator
        copy = n % self.block_size != 0 and alloc.refcount(table[-1]) > 1
        need = math.ceil((n + T) / self.block_size) - len(table) + copy
        before = (table, alloc.num_free)
        what = (
            f"PagedKVCache.append({s}, {T} tokens) to a sequence of {n} tokens with blocks "
            f"{table} (block_size {self.block_size}, {alloc.num_free} blocks free, {need} needed)"
        )
        if need > alloc.num_free:
            expect_out_of_blocks(self.impl, lambda: self.cache.append(s, k, v), what)
            if (self.cache.block_table(s), alloc.num_free) != before:
                fail(f"{what} raised OutOfBlocks but changed the block table or num_free")
            return
        try:
            self.cache.append(s, k, v)
        except self.impl.OutOfBlocks as err:
            fail(f"{what} raised OutOfBlocks ({err}) though the blocks suffice")
        old_k, old_v = self.shadow[s]
        self.shadow[s] = (torch.cat([old_k, k]), torch.cat([old_v, v]))

    @precondition(lambda self: self.shadow and len(self.shadow) < 6)
    @rule(data=st.data())
    def fork(self, data):
        parent, child = self.pick(data), self.next_id
        free = self.cache.allocator.num_free
        self.cache.fork(parent, child)
        self.next_id += 1
        self.shadow[child] = self.shadow[parent]
        if self.cache.block_table(child) != self.cache.block_table(parent):
            fail(
                f"PagedKVCache.fork({parent}, {child}): the child's blocks "
                f"{self.cache.block_table(child)} are not the parent's "
                f"{self.cache.block_table(parent)}; a fork shares blocks, it copies none"
            )
        if self.cache.allocator.num_free != free:
            fail(f"PagedKVCache.fork({parent}, {child}) allocated blocks; a fork shares them")

    @precondition(lambda self: self.shadow)
    @rule(data=st.data())
    def free(self, data):
        s = self.pick(data)
        self.cache.free(s)
        del self.shadow[s]

    @precondition(lambda self: any(k.shape[0] for k, _ in self.shadow.values()))
    @rule(data=st.data(), group=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
    def attend(self, data, group, seed):
        ids = [self.pick(data, nonempty=True) for _ in range(data.draw(st.integers(1, 3)))]
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(len(ids), self.G * group, self.D, generator=g, dtype=torch.float64)
        q = q.to(self.device)
        assert_close(
            self.impl.paged_attention(q, self.cache, ids),
            contiguous_attention(
                q, [self.shadow[s][0] for s in ids], [self.shadow[s][1] for s in ids]
            ),
            rtol=1e-10,
            atol=1e-10,
            what=f"paged_attention(q {tuple(q.shape)}, sequences {ids} of lengths "
            f"{[self.shadow[s][0].shape[0] for s in ids]}, block_size {self.block_size})",
        )

    @invariant()
    def blocks_are_accounted_for(self):
        if not hasattr(self, "cache"):
            return
        alloc, tables = self.cache.allocator, {s: self.cache.block_table(s) for s in self.shadow}
        holders = Counter(b for table in tables.values() for b in table)
        for b in range(self.num_blocks):
            if alloc.refcount(b) != holders[b]:
                fail(
                    f"PagedKVCache: block {b} has refcount {alloc.refcount(b)} but {holders[b]} "
                    f"block-table entries hold it (tables {tables})"
                )
        if alloc.num_free != self.num_blocks - len(holders):
            fail(
                f"PagedKVCache: num_free is {alloc.num_free}, but {len(holders)} of "
                f"{self.num_blocks} blocks are held (tables {tables}): a block leaked or was "
                "freed twice"
            )
        for s, table in tables.items():
            n = self.shadow[s][0].shape[0]
            if self.cache.length(s) != n or len(table) != math.ceil(n / self.block_size):
                fail(
                    f"PagedKVCache: sequence {s} should hold {n} tokens in ceil({n} / "
                    f"{self.block_size}) blocks; it reports length {self.cache.length(s)} and "
                    f"blocks {table} (less than one block per sequence may be wasted)"
                )
            check_contents(self.cache, s, *self.shadow[s], f"(blocks {table})")


def test_cache_invariants_under_any_operations(impl, device):
    run_state_machine_as_test(
        lambda: CacheMachine(impl, device), settings=settings(stateful_step_count=20)
    )
