"""KV cache memory in parallel sampling: paged and shared, paged alone, and contiguous. Reported,
never asserted.

    python benchmarks/paged_attention.py [--impl solutions|exercises|FOLDER] [--samples 2 4 6]

Memory: each request is a prompt of P tokens sampled n times; every sample decodes a random number
of tokens (uniform in 1 .. max_new) one step at a time through the learner's PagedKVCache. Peak
cache size, in token slots, for: a contiguous slab per sample sized for P + max_new (what serving
systems reserved before vLLM), a contiguous slab per sample of exactly its final length (an oracle
that knows every length in advance), paged without sharing (each sample appends its own copy of the
prompt), and paged with sharing (the prompt forked, copy-on-write). The saving by sharing is the
paper's measure: blocks saved by sharing / blocks without sharing (Kwon et al., 2023, Fig. 15).

Time: one decoding step of paged_attention over S sequences against torch's attention over the same
keys and values laid out contiguously (padded to the longest), on the CPU and on CUDA when present.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from graders.impl import load


def peak_slots(m, prompt, lengths, block_size, share):
    """Decode len(lengths) samples of one prompt; return the peak slots the paged cache holds."""
    n, steps = len(lengths), max(lengths)
    cache = m.PagedKVCache(n * (prompt + steps) // block_size + 2 * n, block_size, 1, 1)
    one = torch.zeros(1, 1, 1)
    cache.add_sequence(0)
    cache.append(0, torch.zeros(prompt, 1, 1), torch.zeros(prompt, 1, 1))
    for s in range(1, n):
        if share:
            cache.fork(0, s)
        else:
            cache.add_sequence(s)
            cache.append(s, torch.zeros(prompt, 1, 1), torch.zeros(prompt, 1, 1))
    peak, live = 0, set(range(n))
    for t in range(steps):
        for s in sorted(live):
            cache.append(s, one, one)
            if t + 1 == lengths[s]:  # this sample has finished: its blocks go back
                peak = max(peak, cache.allocator.num_blocks - cache.allocator.num_free)
                cache.free(s)
                live.discard(s)
        used = cache.allocator.num_blocks - cache.allocator.num_free
        peak = max(peak, used)
    return peak * block_size


def memory(m, args):
    g = torch.Generator().manual_seed(0)
    print(
        f"parallel sampling, block_size {args.block_size}, new tokens uniform in 1 .. "
        f"{args.max_new}, {args.requests} requests per row; peak token slots per request"
    )
    print(
        f"{'prompt':>6} {'n':>3} {'reserved':>9} {'exact':>8} {'paged':>8} {'shared':>8} "
        f"{'saved by sharing':>17} {'vs reserved':>12}"
    )
    for prompt in args.prompts:
        for n in args.samples:
            rows = []
            for _ in range(args.requests):
                lengths = torch.randint(1, args.max_new + 1, (n,), generator=g).tolist()
                reserved = n * (prompt + args.max_new)
                exact = sum(prompt + x for x in lengths)
                paged = peak_slots(m, prompt, lengths, args.block_size, share=False)
                shared = peak_slots(m, prompt, lengths, args.block_size, share=True)
                rows.append((reserved, exact, paged, shared))
            r, e, p, s = (statistics.mean(c) for c in zip(*rows, strict=True))
            print(
                f"{prompt:>6} {n:>3} {r:>9.0f} {e:>8.0f} {p:>8.0f} {s:>8.0f} "
                f"{100 * (p - s) / p:>16.1f}% {100 * (r - s) / r:>11.1f}%"
            )


def median_seconds(fn, rounds, cuda=False):
    fn()
    times = []
    for _ in range(rounds):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed(m, device, args):
    g = torch.Generator().manual_seed(1)
    S, H, G, D = args.seqs, 32, 8, 128
    lengths = torch.randint(args.seq_len // 2, args.seq_len + 1, (S,), generator=g).tolist()
    cache = m.PagedKVCache(S * (args.seq_len // 16 + 1), 16, G, D, device=device)
    padded_k = torch.zeros(S, G, max(lengths), D, device=device)
    padded_v = torch.zeros_like(padded_k)
    mask = torch.zeros(S, 1, 1, max(lengths), dtype=torch.bool, device=device)
    for i, n in enumerate(lengths):
        k, v = (torch.randn(n, G, D, generator=g).to(device) for _ in range(2))
        cache.add_sequence(i)
        cache.append(i, k, v)
        padded_k[i, :, :n], padded_v[i, :, :n], mask[i, ..., :n] = (
            k.transpose(0, 1),
            v.transpose(0, 1),
            True,
        )
    q = torch.randn(S, H, D, generator=g).to(device)
    ids = list(range(S))
    cuda = device == "cuda"

    def contiguous():
        k = padded_k.repeat_interleave(H // G, dim=1)
        v = padded_v.repeat_interleave(H // G, dim=1)
        return F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask)

    with torch.no_grad():
        for what, fn in [
            ("paged_attention", lambda: m.paged_attention(q, cache, ids)),
            ("contiguous, padded (F.sdpa)", contiguous),
        ]:
            t = median_seconds(fn, args.rounds, cuda)
            print(
                f"{device:<5} {what:<30} {S} sequences <= {args.seq_len} tokens {t * 1e3:9.2f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--impl", default="solutions", help="solutions (default), exercises, or a folder"
    )
    parser.add_argument("--prompts", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--samples", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--max-new", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--seqs", type=int, default=32, help="sequences in the timed decoding step")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    m = load("paged_attention", args.impl)
    memory(m, args)
    print()
    speed(m, "cpu", args)
    if torch.cuda.is_available():
        speed(m, "cuda", args)
    else:
        print("no CUDA device here: the GPU timing is skipped")


if __name__ == "__main__":
    main()
