"""Public specs for `zero`: `pytest exercises/zero` (`--impl=solutions`: the reference).

Oracles: torch.optim.AdamW in one process on the whole batch (every stage, on any number of ranks,
must end at its parameters and, shard by shard, at its moments); torch's own
ZeroRedundancyOptimizer for stage 1; the paper's Figure 1 for the memory formula. The first specs
need no processes: the ranks are a loop in this process, or its threads with torch.distributed
faked (graders.distributed.simulate_ranks). The last ones start 2 and 4 real processes joined in a
gloo group on loopback (graders.distributed.run_ranks), which are always killed, even when a spec
fails. No spec is statistical: every input comes from a seed.
"""

import math

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, fail
from graders.distributed import collective_calls, run_ranks, simulate_ranks

# float64 throughout the training specs: a few AdamW steps agree with torch to about 1e-15, and
# every mistake the specs look for moves a parameter by 1e-6 or more. See the README's table.
RTOL, ATOL = 1e-9, 1e-11
TOL32 = (1e-5, 1e-6)  # float32 AdamW: torch's lerp and this module's formula differ by an ulp
STEPS = 5
HYPER = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
STAGES = [0, 1, 2, 3]


# -- a small problem: a tanh network with an odd number of parameters ----------------------------


def problem(seed: int, device: str = "cpu", d_in=3, hidden=6, d_out=2, batch=12):
    """Initial parameters (N = 39 elements by default: no world size of 2 or 4 divides it) and a
    batch (x, y) for the loss of `loss_fn`."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(d_in, hidden), (hidden,), (hidden, d_out), (d_out,), ()]
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    x = torch.randn(batch, d_in, generator=g, dtype=torch.float64)
    y = torch.randn(batch, d_out, generator=g, dtype=torch.float64)
    return [t.to(device) for t in init], x.to(device), y.to(device)


def loss_fn(params, x, y):
    w1, b1, w2, b2, scale = params
    return ((torch.tanh(x @ w1 + b1) @ w2 + b2) * scale - y).pow(2).mean()


def rows(x, rank, world_size):
    """Rank r's equal share of the batch; the mean over ranks of their mean losses is the whole
    batch's mean loss, so the averaged gradient is the single process's gradient."""
    return x.chunk(world_size)[rank]


def torch_adamw(init, x, y, steps=STEPS):
    """Single-process AdamW on the whole batch: the final parameters and the flat moments."""
    params = [t.clone().requires_grad_() for t in init]
    opt = torch.optim.AdamW(params, **HYPER)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params, x, y).backward()
        opt.step()
    flat = [
        torch.cat([opt.state[p][k].reshape(-1) for p in params]) for k in ("exp_avg", "exp_avg_sq")
    ]
    return [p.detach() for p in params], flat


def train(impl, rank, world_size, stage, seed, steps=STEPS, device="cpu"):
    """The learner's ZeroAdamW on this rank (simulated or real, over torch.distributed through the
    default Collectives()): what it ends with, and what it held between uses."""
    init, x, y = problem(seed, device)
    params = [t.clone().requires_grad_() for t in init]
    x, y = rows(x, rank, world_size), rows(y, rank, world_size)
    opt = impl.ZeroAdamW(params, stage=stage, **HYPER)
    inside, between, grads_left = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        with opt.gathered():
            inside.append([p.numel() for p in params])
            loss_fn(params, x, y).backward()
        opt.step()
        between.append([p.numel() for p in params])
        grads_left.append([p.grad is not None for p in params])
    with opt.gathered():
        final = [p.detach().clone().cpu() for p in params]
    return {
        "params": final,
        "shard": opt.shard.detach().clone().cpu(),
        "exp_avg": opt.exp_avg.detach().clone().cpu(),
        "exp_avg_sq": opt.exp_avg_sq.detach().clone().cpu(),
        "inside": inside,
        "between": between,
        "grads_left": grads_left,
    }


# -- ranks simulated as threads of this process (graders.distributed.simulate_ranks) ------------


def zero_on_a_simulated_rank(rank, world_size, impl, stage, seed, steps, device):
    """train() on one simulated rank, and the collectives it called: (name, elements sent)."""
    return train(impl, rank, world_size, stage, seed, steps, device), collective_calls()


# -- checks shared by the simulated and the real ranks -------------------------------------------


def check_against_adamw(out, world_size, stage, seed, where):
    """Every rank's final parameters, shard and moments against single-process AdamW."""
    init, x, y = problem(seed)
    expected, (m, v) = torch_adamw(init, x, y)
    n = m.numel()
    size = n if stage == 0 else math.ceil(n / world_size)
    flat = torch.cat([p.reshape(-1) for p in expected])
    pad = torch.zeros(size * world_size - n, dtype=torch.float64)
    for rank, got in enumerate(out):
        what = f"ZeroAdamW(stage={stage}) on rank {rank} of {world_size} ({where}), {STEPS} steps"
        names = ["w1 (3, 6)", "b1 (6,)", "w2 (6, 2)", "b2 (2,)", "scale ()"]
        for name, a, e in zip(names, got["params"], expected, strict=True):
            assert_close(
                a,
                e,
                what=f"{what}: parameter {name} against torch.optim.AdamW",
                rtol=RTOL,
                atol=ATOL,
            )
        first = 0 if stage == 0 else rank * size
        for key, full in [("shard", flat), ("exp_avg", m), ("exp_avg_sq", v)]:
            mine = torch.cat([full, pad])[first : first + size]
            if got[key].shape != (size,):
                fail(
                    f"{what}: opt.{key} has shape {tuple(got[key].shape)}; expected ({size},): "
                    + (
                        "stage 0 keeps all N"
                        if stage == 0
                        else f"ceil(N / {world_size}) of N = {n}"
                    )
                    + " elements"
                )
            assert_close(
                got[key],
                mine,
                what=f"{what}: opt.{key} against elements {first}..{first + size - 1} of torch's "
                "flat state (zero padding past the end)",
                rtol=RTOL,
                atol=ATOL * max(1.0, float(mine.abs().max())),
            )


def check_memory_between_uses(out, world_size, stage, where):
    sizes = [t.numel() for t in problem(0)[0]]
    for rank, got in enumerate(out):
        what = f"ZeroAdamW(stage={stage}) on rank {rank} of {world_size} ({where})"
        if got["inside"][0] != sizes:
            fail(
                f"{what}: inside gathered() the parameters hold {got['inside'][0]} elements; "
                f"expected {sizes}"
            )
        expected = [0] * len(sizes) if stage == 3 else sizes
        if any(b != expected for b in got["between"]):
            fail(
                f"{what}: after step(), outside gathered(), the parameters hold {got['between']} "
                f"elements per step; expected {expected}"
                + (": stage 3 frees the full parameters between uses" if stage == 3 else "")
            )
        if stage >= 2 and any(any(g) for g in got["grads_left"]):
            fail(
                f"{what}: after step() some p.grad is still set ({got['grads_left']}); stages 2 "
                "and 3 keep only the reduce-scattered gradient shard and drop the full gradients"
            )


# -- the learner's first steps: no processes ------------------------------------------------------


@given(
    sizes=st.lists(st.lists(st.integers(1, 4), max_size=3), min_size=1, max_size=4),
    world_size=st.integers(1, 9),
)
def test_partition_flat_pads_and_splits(impl, device, sizes, world_size):
    g = torch.Generator().manual_seed(len(sizes) * 31 + world_size)
    tensors = [torch.randn(tuple(s), generator=g, dtype=torch.float64).to(device) for s in sizes]
    before = [t.clone() for t in tensors]
    n = sum(t.numel() for t in tensors)
    size = math.ceil(n / world_size)
    what = (
        f"partition_flat(tensors of shapes {[tuple(s) for s in sizes]} (N = {n}), "
        f"world_size={world_size})"
    )
    shards = impl.partition_flat(tensors, world_size)
    if not isinstance(shards, list | tuple) or len(shards) != world_size:
        fail(
            f"{what} should return {world_size} shards, one per rank; got "
            f"{type(shards).__name__} of {len(shards)}"
        )
    lengths = [tuple(s.shape) for s in shards]
    if any(s != (size,) for s in lengths):
        fail(
            f"{what}: every shard must be 1-D of length ceil(N / world_size) = {size}, padding "
            f"included; got shapes {lengths}"
        )
    flat = torch.cat([t.reshape(-1) for t in before])
    expected = torch.cat(
        [flat, torch.zeros(size * world_size - n, dtype=flat.dtype, device=device)]
    )
    assert_close(
        torch.cat(list(shards)),
        expected,
        what=f"{what}: the shards concatenated (zeros past N)",
        rtol=0,
        atol=0,
    )
    for t, b in zip(tensors, before, strict=True):
        assert_close(
            t,
            b,
            what=f"{what}: the input tensors afterwards (they must not change)",
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(
    length=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    lr=st.sampled_from([1e-3, 0.05]),
    betas=st.sampled_from([(0.9, 0.999), (0.8, 0.9), (0.0, 0.99)]),
    eps=st.sampled_from([1e-8, 1e-4]),
    weight_decay=st.sampled_from([0.0, 0.1, 1.0]),
)
def test_adamw_shard_step_matches_torch(
    impl, device, dtype, length, seed, lr, betas, eps, weight_decay
):
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(length, generator=g, dtype=dtype).to(device)
    grads = (torch.randn(STEPS * 2, length, generator=g, dtype=dtype) * 0.1).to(device)
    hyper = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    p = start.clone().requires_grad_()
    opt = torch.optim.AdamW([p], **hyper)
    shard, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    rtol, atol = (RTOL, ATOL) if dtype == torch.float64 else TOL32
    for step in range(1, len(grads) + 1):
        p.grad = grads[step - 1].clone()
        opt.step()
        out = impl.adamw_shard_step(shard, grads[step - 1].clone(), m, v, step, **hyper)
        what = (
            f"adamw_shard_step(shard ({length},) {str(dtype)[6:]}, grad, exp_avg, exp_avg_sq, "
            f"step={step}, "
            f"{', '.join(f'{k}={val}' for k, val in hyper.items())}) against torch.optim.AdamW"
        )
        if out is not None:
            fail(
                f"{what} returned {type(out).__name__}; it updates its arguments in place and "
                "returns None"
            )
        assert_close(shard, p.detach(), what=f"{what}: the shard, in place", rtol=rtol, atol=atol)
        assert_close(
            m, opt.state[p]["exp_avg"], what=f"{what}: exp_avg, in place", rtol=rtol, atol=atol
        )
        assert_close(
            v,
            opt.state[p]["exp_avg_sq"],
            what=f"{what}: exp_avg_sq, in place",
            rtol=rtol,
            atol=atol,
        )


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_ranks_simulated_in_a_loop_update_their_own_shards(impl, device, world_size):
    """The whole of ZeRO's step, with the ranks as a loop: each rank r updates shard r of the flat
    parameters with shard r of the (already averaged) gradient; the shards together are AdamW."""
    init, x, y = problem(7, device)
    n = sum(t.numel() for t in init)
    expected, (m_full, _) = torch_adamw(init, x, y)
    shards = impl.partition_flat(init, world_size)
    state = [(torch.zeros_like(s), torch.zeros_like(s)) for s in shards]
    for step in range(1, STEPS + 1):
        params = [t.clone().requires_grad_() for t in _unflatten(torch.cat(shards)[:n], init)]
        loss_fn(params, x, y).backward()
        grad_shards = impl.partition_flat([p.grad for p in params], world_size)
        for rank in range(world_size):
            impl.adamw_shard_step(shards[rank], grad_shards[rank], *state[rank], step, **HYPER)
    what = (
        f"{world_size} simulated ranks, each calling adamw_shard_step on its partition_flat shard "
        f"(N = {n}), after {STEPS} steps"
    )
    got = torch.cat(shards)
    assert_close(
        got[:n],
        torch.cat([p.reshape(-1) for p in expected]),
        what=f"{what}: the flat parameters against torch.optim.AdamW",
        rtol=RTOL,
        atol=ATOL,
    )
    assert_close(
        got[n:],
        torch.zeros_like(got[n:]),
        what=f"{what}: the padding (zero gradient: it must stay zero)",
        rtol=0,
        atol=0,
    )
    assert_close(
        torch.cat([s[0] for s in state])[:n],
        m_full,
        what=f"{what}: the ranks' exp_avg together",
        rtol=RTOL,
        atol=ATOL,
    )


def _unflatten(flat, like):
    out, offset = [], 0
    for t in like:
        out.append(flat[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return out


def test_zero_memory_matches_figure_1(impl):
    # The paper's Figure 1: 7.5B parameters, 64 devices, mixed-precision Adam (K = 12).
    paper = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}  # GB per device
    for stage, gb in paper.items():
        got = impl.zero_memory_bytes(7.5e9, 64, stage)
        if not isinstance(got, int | float) or round(got / 1e9, 1) != gb:
            fail(
                f"zero_memory_bytes(7.5e9, 64, stage={stage}) = {got!r} bytes; the paper's "
                f"Figure 1 gives {gb} GB (1 GB = 1e9 bytes) per device"
            )


@given(
    n_params=st.integers(1, 10**12),
    n_devices=st.integers(1, 4096),
    k=st.sampled_from([12, 8, 16, 4]),
)
def test_zero_memory_formula(impl, n_params, n_devices, k):
    got = {s: impl.zero_memory_bytes(n_params, n_devices, s, k=k) for s in STAGES}
    what = f"zero_memory_bytes({n_params}, {n_devices}, stage, k={k})"
    psi = float(n_params)
    laws = [
        ("stage 0 keeps (2 + 2 + K) bytes per parameter on every device", got[0], (4 + k) * psi),
        (
            "stage 1 divides only the K bytes of optimizer state by N_d",
            got[1],
            4 * psi + k * psi / n_devices,
        ),
        (
            "stage 2 divides the gradient's 2 bytes by N_d too",
            got[2],
            2 * psi + (2 + k) * psi / n_devices,
        ),
        ("stage 3 divides everything by N_d", got[3], (4 + k) * psi / n_devices),
    ]
    for law, a, e in laws:
        if not math.isclose(a, e, rel_tol=1e-12):
            fail(f"{what}: {law}: expected {e:.6g} bytes, got {a!r}")


# -- ZeroAdamW with ranks simulated as threads ----------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_simulated_ranks_match_single_process_adamw(impl, device, stage):
    world_size = 3
    runs = simulate_ranks(zero_on_a_simulated_rank, world_size, impl, stage, 3, STEPS, device)
    out = [o for o, _ in runs]
    check_against_adamw(out, world_size, stage, seed=3, where="ranks simulated as threads")
    check_memory_between_uses(out, world_size, stage, where="ranks simulated as threads")


@pytest.mark.parametrize("stage", [2, 3])
def test_gradients_are_reduce_scattered(impl, device, stage):
    world_size = 2
    n = sum(t.numel() for t in problem(0)[0])
    size = math.ceil(n / world_size)
    runs = simulate_ranks(zero_on_a_simulated_rank, world_size, impl, stage, 5, 2, device)
    what = (
        f"ZeroAdamW(stage={stage}) on 2 simulated ranks (N = {n}), 2 steps: the collectives "
        "called, (name, elements sent)"
    )
    calls = runs[0][1]
    if any(name == "all_reduce" for name, _ in calls):
        fail(
            f"{what}: {calls}; stage {stage} never all-reduces: a reduce_scatter of the padded "
            f"flat gradient ({2 * size} elements) leaves each rank only its own {size}-element sum"
        )
    if calls.count(("reduce_scatter", 2 * size)) != 2:
        fail(f"{what}: {calls}; expected one reduce_scatter of {2 * size} elements per step")
    gathers = [c for c in calls if c[0] == "all_gather"]
    expected = 3 if stage == 3 else 2  # stage 3: one per gathered() (two steps, the final read)
    if len(gathers) != expected or any(c != ("all_gather", size) for c in gathers):
        fail(
            f"{what}: {calls}; expected {expected} all_gathers of the {size}-element shard"
            + (
                ": stage 3 gathers in gathered() only, not in step()"
                if stage == 3
                else ": one after each step"
            )
        )


# -- real processes: 2 and 4 ranks in a gloo group ------------------------------------------------


def zero_on_ranks(rank: int, world_size: int, impl, seed: int):
    """Run in each spawned process: every stage of the learner's optimizer, and torch's
    ZeroRedundancyOptimizer, on this rank's share of the batch."""
    out = {stage: train(impl, rank, world_size, stage, seed) for stage in STAGES}
    from torch.distributed.optim import ZeroRedundancyOptimizer

    init, x, y = problem(seed)
    params = [t.clone().requires_grad_() for t in init]
    x, y = rows(x, rank, world_size), rows(y, rank, world_size)
    opt = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, **HYPER)
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(params, x, y).backward()
        for p in params:  # data parallelism: average the gradients, as DDP would
            dist.all_reduce(p.grad)
            p.grad /= world_size
        opt.step()
    out["zero_redundancy"] = [p.detach().clone() for p in params]
    return out


_RUNS: dict = {}


def on_ranks(impl, world_size):
    """zero_on_ranks on world_size real processes, once per module and world size."""
    key = (id(impl), world_size)  # the entry keeps impl alive, so its id is never reused
    if key not in _RUNS:
        try:
            _RUNS[key] = (impl, run_ranks(zero_on_ranks, world_size, impl, 11))
        except Exception as err:  # the next spec reports the same failure without respawning
            _RUNS[key] = (impl, err)
    result = _RUNS[key][1]
    if isinstance(result, Exception):
        raise result
    return result


def cpu_only(device):
    if device != "cpu":
        pytest.skip("the ranks run with gloo on CPU; the CPU run covers the logic")


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_match_single_process_adamw(impl, device, world_size):
    cpu_only(device)
    out = on_ranks(impl, world_size)
    for stage in STAGES:
        check_against_adamw(
            [o[stage] for o in out], world_size, stage, seed=11, where="real processes, gloo"
        )


@pytest.mark.parametrize("world_size", [2, 4])
def test_stage_1_matches_zero_redundancy_optimizer(impl, device, world_size):
    cpu_only(device)
    out = on_ranks(impl, world_size)
    for rank, o in enumerate(out):
        for i, (a, e) in enumerate(zip(o[1]["params"], o["zero_redundancy"], strict=True)):
            assert_close(
                a,
                e,
                what=f"ZeroAdamW(stage=1) on rank {rank} of {world_size} (real processes), "
                f"parameter {i} after {STEPS} steps, against "
                "torch.distributed.optim.ZeroRedundancyOptimizer(AdamW)",
                rtol=RTOL,
                atol=ATOL,
            )


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_hold_only_their_shards(impl, device, world_size):
    cpu_only(device)
    out = on_ranks(impl, world_size)
    for stage in STAGES:
        check_memory_between_uses(
            [o[stage] for o in out], world_size, stage, where="real processes, gloo"
        )
