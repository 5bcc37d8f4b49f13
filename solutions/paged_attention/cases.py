"""Hidden grading cases for paged_attention: pool sizes, block sizes and head counts unlike the
public specs'. Block numbers are the learner's choice, so the cases report block tables in a
canonical form: each physical block renamed by the order in which the tables first mention it."""

import torch

from graders.cases import Case


def allocator_story(m, num_blocks):
    a = m.BlockAllocator(num_blocks)
    got = [a.allocate() for _ in range(num_blocks)]
    try:
        a.allocate()
        out = "returned"
    except m.OutOfBlocks:
        out = "OutOfBlocks"
    except Exception as err:
        out = type(err).__name__
    b = got[1]
    a.share(b)
    a.share(b)
    counts = [a.refcount(b), a.num_free]
    a.free(b)
    counts += [a.refcount(b), a.num_free]
    a.free(b)
    a.free(b)
    counts += [a.refcount(b), a.num_free, int(a.allocate() == b)]
    return {"distinct": sorted(got) == list(range(num_blocks)), "out": out, "counts": counts}


def sampling_story(m, prompt_k, prompt_v, new_k, new_v, block_size, num_blocks):
    """Parallel sampling: one prompt, forked into n samples that each decode their own tokens."""
    import torch

    n, steps = new_k.shape[0], new_k.shape[1]
    G, D = prompt_k.shape[1:]
    cache = m.PagedKVCache(
        num_blocks, block_size, G, D, dtype=prompt_k.dtype, device=prompt_k.device
    )
    cache.add_sequence(0)
    cache.append(0, prompt_k, prompt_v)
    for s in range(1, n):
        cache.fork(0, s)
    record = []

    def snapshot(live):
        names = {}
        tables = [[names.setdefault(b, len(names)) for b in cache.block_table(s)] for s in live]
        refs = [cache.allocator.refcount(b) for b in names]
        return {"tables": tables, "refs": refs, "free": cache.allocator.num_free}

    record.append(snapshot(range(n)))
    for t in range(steps):  # one decoding step: every sample appends its next token
        for s in range(n):
            cache.append(s, new_k[s, t : t + 1], new_v[s, t : t + 1])
        record.append(snapshot(range(n)))
    keys = torch.stack([cache.gather(s)[0] for s in range(n)])
    values = torch.stack([cache.gather(s)[1] for s in range(n)])
    cache.free(0)
    cache.free(2)
    record.append(snapshot([1, 3]))
    for s in range(n):
        if s not in (0, 2):
            cache.free(s)
    record.append(cache.allocator.num_free)
    return {"record": record, "keys": keys, "values": values}


def beam_story(m, k, v, block_size):
    """Forks taken at different lengths (as beam search does), with appends to parents and
    children in turn; the contents of every live sequence and the canonical tables."""
    import torch

    G, D = k.shape[1:]
    cache = m.PagedKVCache(32, block_size, G, D, dtype=k.dtype, device=k.device)
    shadow = {0: 0}  # sequence -> how many tokens it holds (all read k[:n], v[:n])
    cache.add_sequence(0)
    cache.append(0, k[:5], v[:5])
    shadow[0] = 5
    plan = [("fork", 0, 1), ("append", 1, 3), ("fork", 1, 2), ("append", 0, 2), ("append", 2, 1)]
    plan += [("fork", 2, 3), ("free", 1, 0), ("append", 3, 4), ("append", 2, 2), ("free", 0, 0)]
    values = {0: v.clone()}
    for op, s, x in plan:
        if op == "fork":
            cache.fork(s, x)
            shadow[x] = shadow[s]
            values[x] = values[s].clone()
        elif op == "append":
            n = shadow[s]
            # Each sequence writes its own values after the shared prefix: -1 - token index.
            new_v = -1.0 - torch.arange(n, n + x, dtype=k.dtype, device=k.device)
            new_v = new_v[:, None, None].expand(x, G, D) * (s + 1)
            cache.append(s, k[n : n + x], new_v)
            values[s][n : n + x] = new_v
            shadow[s] = n + x
        else:
            cache.free(s)
            del shadow[s]
    names = {}
    tables = {s: [names.setdefault(b, len(names)) for b in cache.block_table(s)] for s in shadow}
    return {
        "tables": [tables[s] for s in sorted(shadow)],
        "refs": [cache.allocator.refcount(b) for b in names],
        "free": cache.allocator.num_free,
        "keys": [cache.gather(s)[0] for s in sorted(shadow)],
        "values": [cache.gather(s)[1] for s in sorted(shadow)],
        "expected_values": [values[s][: shadow[s]] for s in sorted(shadow)],
    }


def out_of_blocks_story(m, k, v):
    """A pool of 5 blocks of 3 tokens: appends that fit, appends that do not, and the state."""
    G, D = k.shape[1:]
    cache = m.PagedKVCache(5, 3, G, D, dtype=k.dtype, device=k.device)
    cache.add_sequence(0)
    cache.append(0, k[:7], v[:7])  # 3 blocks, the last holds 1 token
    cache.fork(0, 1)
    lengths = {0: 7, 1: 7}
    log = []
    for s, T in [(1, 6), (1, 3), (0, 2), (0, 9), (1, 1), (0, 1), (1, 2), (0, 1)]:
        n = lengths[s]
        try:
            cache.append(s, k[n : n + T], v[n : n + T])
            lengths[s] = n + T
            outcome = "ok"
        except m.OutOfBlocks:
            outcome = "OutOfBlocks"
        except Exception as err:
            outcome = type(err).__name__
        log.append([outcome, cache.allocator.num_free, cache.length(0), cache.length(1)])
    return {"log": log, "keys": [cache.gather(s)[0] for s in (0, 1)]}


def attend(m, keys, values, q, block_size, num_blocks, stale):
    """Sequences appended in turns, a few tokens at a time, then one paged_attention call."""
    G, D = keys[0].shape[1:]
    cache = m.PagedKVCache(num_blocks, block_size, G, D, dtype=q.dtype, device=q.device)
    if stale is not None:  # fill the pool with other data, then free it
        cache.add_sequence(-1)
        cache.append(-1, stale, -stale)
        cache.free(-1)
    for i in range(len(keys)):
        cache.add_sequence(i)
    longest = max(k.shape[0] for k in keys)
    for lo in range(0, longest, 5):
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            if lo < k.shape[0]:
                cache.append(i, k[lo : lo + 5], v[lo : lo + 5])
    ids = list(range(len(keys)))
    ids = ids[1::2] + ids[::2]
    return m.paged_attention(q[: len(ids)], cache, ids)


def decode_steps(m, keys, values, q, new_k, new_v):
    """Serving: a pool holding many long sequences, then a few decoding steps of paged_attention
    (one new token per sequence and step). Returns the last step's output."""
    S, G, D = len(keys), keys[0].shape[1], keys[0].shape[2]
    cache = m.PagedKVCache(S * 20, 16, G, D, dtype=q.dtype, device=q.device)
    for i in range(S):
        cache.add_sequence(i)
        cache.append(i, keys[i], values[i])
    ids = list(range(S))
    for t in range(new_k.shape[1]):
        for i in ids:
            cache.append(i, new_k[i, t : t + 1], new_v[i, t : t + 1])
        out = m.paged_attention(q[:, t], cache, ids)
    return out


def _g(seed):
    return torch.Generator().manual_seed(seed)


def allocator_inputs(seed):
    return {"num_blocks": 7}


def sampling_inputs(seed):
    g, G, D, n, steps = _g(seed), 3, 5, 4, 6
    return {
        "prompt_k": torch.randn(13, G, D, generator=g, dtype=torch.float64),
        "prompt_v": torch.randn(13, G, D, generator=g, dtype=torch.float64),
        "new_k": torch.randn(n, steps, G, D, generator=g, dtype=torch.float64),
        "new_v": torch.randn(n, steps, G, D, generator=g, dtype=torch.float64),
        "block_size": 4,
        "num_blocks": 24,
    }


def beam_inputs(seed):
    g = _g(seed)
    k = torch.randn(16, 2, 3, generator=g, dtype=torch.float64)
    return {"k": k, "v": torch.randn(16, 2, 3, generator=g, dtype=torch.float64), "block_size": 3}


def oob_inputs(seed):
    g = _g(seed)
    return {
        "k": torch.randn(24, 1, 4, generator=g, dtype=torch.float64),
        "v": torch.randn(24, 1, 4, generator=g, dtype=torch.float64),
    }


def gqa_inputs(seed):
    g, G, D = _g(seed), 2, 16
    lengths = [9, 30, 1, 17, 22]
    return {
        "keys": [torch.randn(n, G, D, generator=g) for n in lengths],
        "values": [torch.randn(n, G, D, generator=g) for n in lengths],
        "q": torch.randn(len(lengths), 8, D, generator=g),
        "block_size": 8,
        "num_blocks": 16,
        "stale": None,
    }


def stale_inputs(seed):
    g, G, D = _g(seed), 3, 6
    lengths = [11, 4, 19]
    return {
        "keys": [torch.randn(n, G, D, generator=g, dtype=torch.float64) for n in lengths],
        "values": [torch.randn(n, G, D, generator=g, dtype=torch.float64) for n in lengths],
        "q": torch.randn(len(lengths), 6, D, generator=g, dtype=torch.float64),
        "block_size": 6,
        "num_blocks": 7,
        "stale": 30 * torch.randn(42, G, D, generator=g, dtype=torch.float64),
    }


def serving_inputs(seed):
    g, S, G, D, H, steps = _g(seed), 32, 2, 16, 8, 3
    lengths = torch.randint(200, 300, (S,), generator=g).tolist()
    return {
        "keys": [torch.randn(n, G, D, generator=g) for n in lengths],
        "values": [torch.randn(n, G, D, generator=g) for n in lengths],
        "q": torch.randn(S, steps, H, D, generator=g),
        "new_k": torch.randn(S, steps, G, D, generator=g),
        "new_v": torch.randn(S, steps, G, D, generator=g),
    }


CASES = [
    Case(
        "allocator: 7 blocks, then out of blocks; shared reference counts",
        call=allocator_story,
        inputs=allocator_inputs,
        points=2,
        seed=1,
    ),
    Case(
        "parallel sampling: a 13-token prompt shared by 4 samples, 6 decoding steps",
        call=sampling_story,
        inputs=sampling_inputs,
        points=3,
        seed=2,
        rtol=0,
        atol=0,
    ),
    Case(
        "forks at different lengths, appends and frees in turn (beam-search-like)",
        call=beam_story,
        inputs=beam_inputs,
        points=2,
        seed=3,
        rtol=0,
        atol=0,
    ),
    Case(
        "running out of blocks: failed appends change nothing",
        call=out_of_blocks_story,
        inputs=oob_inputs,
        points=2,
        seed=4,
        rtol=0,
        atol=0,
    ),
    Case(
        "paged attention, 8 query heads over 2 key/value heads, float32",
        call=attend,
        inputs=gqa_inputs,
        points=2,
        seed=5,
        rtol=1e-5,
        atol=1e-5,
    ),
    Case(
        "paged attention in reused blocks holding stale data, float64",
        call=attend,
        inputs=stale_inputs,
        points=2,
        seed=6,
        rtol=1e-10,
        atol=1e-10,
    ),
    Case(
        "decoding 32 sequences of about 250 tokens (speed)",
        call=decode_steps,
        inputs=serving_inputs,
        points=1,
        seed=7,
        rtol=1e-5,
        atol=1e-5,
        speed_ratio=3.0,
        speed_points=2,
    ),
]
