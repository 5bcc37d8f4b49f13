"""Hidden grading cases for zero: shapes, world sizes, settings and models unlike the public specs'.

The grader ships each `call` to the sandbox as source, where a spawned process could not import
it, so the ranks are simulated in one process by `graders.distributed.simulate_ranks`: threads
with torch.distributed faked, which the optimizer's default `Collectives()` calls unchanged.
Every case is deterministic, so none can fail by chance.
"""

import torch

from graders.cases import Case

# float64: a few AdamW steps agree with the reference to about 1e-15; every mistake in
# mutants.py is off by 1e-6 or far more.
TIGHT = {"rtol": 1e-9, "atol": 1e-11}


# -- calls: run in the learner's sandbox and in the trusted worker ------------------------------


def shards(m, tensors, world_size):
    return [s.clone() for s in m.partition_flat(tensors, world_size)]


def shard_path(m, start, grads, hyper):
    """adamw_shard_step over every row of grads: the shard after each step, and the moments."""
    import torch

    shard, exp_avg, exp_avg_sq = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    path = []
    for step, grad in enumerate(grads, start=1):
        m.adamw_shard_step(shard, grad.clone(), exp_avg, exp_avg_sq, step, **hyper)
        path.append(shard.clone())
    return {"path": torch.stack(path), "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def memory_table(m, n_params, n_devices, k):
    """zero_memory_bytes for every (n_params, n_devices, stage), in GB, as a float64 tensor."""
    import torch

    table = [
        [[m.zero_memory_bytes(p, d, s, k=k) / 1e9 for s in range(4)] for d in n_devices]
        for p in n_params
    ]
    return torch.tensor(table, dtype=torch.float64)


def zero_on_threads(m, init, x, y, stage, world_size, steps, hyper):
    """The learner's ZeroAdamW on world_size ranks simulated as threads of this process, over the
    default Collectives() (torch.distributed, faked by simulate_ranks)."""
    import torch

    from graders.distributed import collective_calls, simulate_ranks

    def loss_fn(params, x, y):
        w1, b1, w2, w3 = params
        return ((torch.relu(x @ w1 + b1) @ w2).tanh() @ w3 - y).pow(2).mean()

    def rank_main(rank, world_size):
        params = [t.clone().requires_grad_() for t in init]
        xr, yr = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
        opt = m.ZeroAdamW(params, stage=stage, **hyper)
        between, grads_left = [], []
        for _ in range(steps):
            opt.zero_grad()
            with opt.gathered():
                loss_fn(params, xr, yr).backward()
            opt.step()
            between.append([int(p.numel()) for p in params])
            grads_left.append([p.grad is not None for p in params])
        with opt.gathered():
            final = [p.detach().clone() for p in params]
        return {
            "params": final,
            "shard": opt.shard.detach().clone(),
            "exp_avg": opt.exp_avg.detach().clone(),
            "exp_avg_sq": opt.exp_avg_sq.detach().clone(),
            "numel between uses": between,
            "p.grad left after step": grads_left,
            "collectives": collective_calls(),  # (name, elements sent), in call order
        }

    return simulate_ranks(rank_main, world_size)


# -- inputs: built on the trusted side from a seed ----------------------------------------------


def uneven(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (2, 2, 2), ()]  # N = 31
    return {"tensors": [torch.randn(s, generator=g) for s in shapes], "world_size": 4}


def fewer_elements_than_ranks(seed):
    g = torch.Generator().manual_seed(seed)
    return {"tensors": [torch.randn(2, generator=g, dtype=torch.float64)], "world_size": 5}


def _path(seed, length, steps, dtype, **hyper):
    g = torch.Generator().manual_seed(seed)
    return {
        "start": torch.randn(length, generator=g, dtype=dtype),
        "grads": torch.randn(steps, length, generator=g, dtype=dtype) * 0.3,
        "hyper": hyper,
    }


def path64(seed):
    return _path(
        seed, 53, 12, torch.float64, lr=0.02, betas=(0.85, 0.995), eps=1e-7, weight_decay=0.3
    )


def path32(seed):
    return _path(
        seed, 29, 8, torch.float32, lr=0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05
    )


def table(seed):
    # The paper's Table 1 grid: 7.5B, 128B and 1T parameters on 1 to 1024 devices.
    return {"n_params": [7.5e9, 128e9, 1e12], "n_devices": [1, 4, 16, 64, 256, 1024], "k": 12}


def other_k(seed):
    return {"n_params": [1.3e9, 175e9], "n_devices": [2, 8, 3000], "k": 16}


def model(stage):
    def inputs(seed):
        g = torch.Generator().manual_seed(seed)
        d_in, hidden, mid, d_out, batch = 4, 5, 3, 2, 9  # N = 46: 3 ranks pad it to 48
        shapes = [(d_in, hidden), (hidden,), (hidden, mid), (mid, d_out)]
        return {
            "init": [torch.randn(s, generator=g, dtype=torch.float64) * 0.7 for s in shapes],
            "x": torch.randn(batch, d_in, generator=g, dtype=torch.float64),
            "y": torch.randn(batch, d_out, generator=g, dtype=torch.float64),
            "stage": stage,
            "world_size": 3,
            "steps": 4,
            "hyper": {"lr": 0.03, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.2},
        }

    return inputs


CASES = [
    Case("partition_flat: 31 elements on 4 ranks", call=shards, inputs=uneven, points=1, seed=3),
    Case(
        "partition_flat: 2 elements on 5 ranks",
        call=shards,
        inputs=fewer_elements_than_ranks,
        points=1,
        seed=4,
    ),
    Case(
        "adamw_shard_step: 12 steps, float64",
        call=shard_path,
        inputs=path64,
        points=2,
        seed=5,
        **TIGHT,
    ),
    Case(
        "adamw_shard_step: 8 steps, float32",
        call=shard_path,
        inputs=path32,
        points=1,
        seed=6,
        rtol=1e-5,
        atol=1e-6,
    ),
    Case(
        "zero_memory_bytes: the paper's Table 1", call=memory_table, inputs=table, points=1, **TIGHT
    ),
    Case("zero_memory_bytes: K = 16", call=memory_table, inputs=other_k, points=1, **TIGHT),
    *[
        Case(
            f"ZeroAdamW stage {stage} on 3 simulated ranks, 4 steps",
            call=zero_on_threads,
            inputs=model(stage),
            points=2,
            seed=20 + stage,
            **TIGHT,
        )
        for stage in range(4)
    ],
]
