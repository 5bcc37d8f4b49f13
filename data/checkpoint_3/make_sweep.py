"""Make data/checkpoint_3/sweep.json: a sweep of tiny GPT training runs for checkpoint 3.

Trains the gpt exercise's reference model on the bytes of data/corpus/tinytales.txt at five widths
(2 layers, d_model 32 to 128) and three token budgets each (2^16 to 2^18 tokens, in batches of 8
windows of 32 bytes), every run with its own warm-up and cosine schedule whose peak rate falls
with the width, 1.5e-3 sqrt(64 / d_model). (Wider models want a gentler rate; a rate too high, or
models narrower than 32, leave the runs stuck for hundreds of steps on the bytes' unigram
frequencies, near 3.15 nats, where no power law holds: the sweep this one replaced had both.)
For each run it stores the shape, the non-embedding parameter count (counted from the model's own
weight matrices), the tokens it trained on and the final loss on 512 held-out windows (from the
corpus's last 10%). Then it fits the reference's loss surface to the runs and stores the
compute-optimal split that checkpoint 3 compares the learner's with.

Run from the kit's root: `python data/checkpoint_3/make_sweep.py` (15 runs, 8,960 steps in all,
two processes of one thread: about 4 minutes of CPU on two quiet cores; it took 14 minutes under
`nice` on the kit's shared 2-core machine at a load of 10). Seeds are fixed: the same machine
writes the same file.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from graders.impl import load  # noqa: E402

N_LAYERS, N_HEADS, N_CTX, BATCH = 2, 2, 32, 8
WIDTHS = (32, 48, 64, 96, 128)
BUDGETS = (2**16, 2**17, 2**18)  # training tokens per run
BASE_LR, WARMUP = 1.5e-3, 0.1  # peak rate BASE_LR * sqrt(64 / d_model)
EVAL_WINDOWS = 512  # held-out windows of N_CTX + 1 bytes, the same for every run
BUDGET_C = 1e12  # the compute budget (FLOPs) whose compute-optimal split checkpoint 3 compares
JOBS = 2  # worker processes


def run(gpt, width: int, tokens: int, train: torch.Tensor, held_out: tuple) -> dict:
    torch.manual_seed(1000 + width)
    config = gpt.GPTConfig(
        vocab_size=256,
        block_size=N_CTX,
        n_layers=N_LAYERS,
        n_heads=N_HEADS,
        n_kv_heads=N_HEADS,
        d_model=width,
    )
    model = gpt.GPT(config)
    # Kaplan's N: the weight matrices of the blocks (no embedding, no layer norm, no bias).
    n_params = sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2
    )
    max_lr = BASE_LR * (64 / width) ** 0.5
    opt = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=0.0)
    steps = tokens // (BATCH * N_CTX)
    generator = torch.Generator().manual_seed(2000 + width)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = gpt.cosine_lr(step, max_lr, int(WARMUP * steps), steps, max_lr / 10)
        x, y = gpt.get_batch(train, N_CTX, BATCH, generator)
        loss = gpt.lm_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = gpt.lm_loss(model(held_out[0]), held_out[1]).item()
    return {
        "n_layer": N_LAYERS,
        "d_model": width,
        "n_ctx": N_CTX,
        "n_params": n_params,
        "tokens": steps * BATCH * N_CTX,
        "max_lr": round(max_lr, 6),
        "loss": round(final, 6),
    }


def task(job: tuple[int, int]) -> dict:
    """One run in a worker process (seeds depend on the width alone, so the order is free)."""
    torch.set_num_threads(1)
    width, budget = job
    gpt = load("gpt", "solutions")
    data = (ROOT / "data" / "corpus" / "tinytales.txt").read_bytes()
    tokens = torch.tensor(list(data), dtype=torch.long)
    cut = int(0.9 * len(tokens))
    train, test = tokens[:cut], tokens[cut:]
    x, y = gpt.get_batch(test, N_CTX, EVAL_WINDOWS, torch.Generator().manual_seed(7))
    start = time.perf_counter()
    result = run(gpt, width, budget, train, (x, y))
    print(result, f"{time.perf_counter() - start:.1f} s", flush=True)
    return result


def main() -> None:
    jobs = [(width, budget) for width in WIDTHS for budget in BUDGETS]
    # The longest runs first, over JOBS processes of one thread each.
    with multiprocessing.get_context("spawn").Pool(JOBS) as pool:
        done = pool.map(task, sorted(jobs, key=lambda j: -j[0] * j[1]), chunksize=1)
    write_sweep(sorted(done, key=lambda r: (r["d_model"], r["tokens"])))


def write_sweep(runs: list[dict]) -> None:
    # What the reference makes of the runs (checkpoint 3 compares the learner's with these).
    chinchilla = load("chinchilla", "solutions")
    N = np.array([r["n_params"] for r in runs], dtype=np.float64)
    D = np.array([r["tokens"] for r in runs], dtype=np.float64)
    L = np.array([r["loss"] for r in runs])
    surface = chinchilla.fit_loss_surface(N, D, L)
    n_opt, d_opt = chinchilla.compute_optimal(BUDGET_C, *surface)
    sweep = {
        "about": "tiny GPT runs on tinytales bytes; made by data/checkpoint_3/make_sweep.py",
        "corpus": "data/corpus/tinytales.txt, bytes; training on the first 90%, loss on the rest",
        "batch": BATCH,
        "n_ctx": N_CTX,
        "schedule": f"AdamW, peak {BASE_LR} sqrt(64 / d_model), warm-up {WARMUP:.0%}, "
        "cosine to a tenth",
        "runs": runs,
        "reference": {
            "budget_flops": BUDGET_C,
            "surface": dict(zip(("E", "A", "B", "alpha", "beta"), surface, strict=True)),
            "n_opt": float(n_opt),
            "d_opt": float(d_opt),
        },
    }
    path = Path(__file__).with_name("sweep.json")
    path.write_text(json.dumps(sweep, indent=1) + "\n")
    print(json.dumps(sweep["reference"], indent=1))


if __name__ == "__main__":
    main()
