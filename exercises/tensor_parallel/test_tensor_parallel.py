"""Specs for tensor_parallel: `pytest exercises/tensor_parallel` (`--impl=solutions`: reference).

Three levels, in the order a learner meets them:
1. one rank, no process group: every collective is a no-op, so shards are checked one by one;
2. simulated ranks: `graders.distributed.simulate_ranks` runs each rank in a thread of this
   process, with torch.distributed faked and all_reduce an exact in-process sum (CPU only);
3. real ranks: `graders.distributed.run_ranks` spawns 2 and 4 processes in one gloo group.
Every layer is compared with the unsharded torch module it was built from, in float64: outputs,
the input's gradient and every parameter's gradient, and the number of collectives per pass.
"""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from graders.checks import assert_close, fail
from graders.distributed import collective_calls, run_ranks, simulate_ranks

TOL = dict(rtol=1e-10, atol=1e-12)  # float64: a few hundred products and sums lose ~1e-15
DT = torch.float64

# ---------------------------------------------------------------------------------------------
# Counting collectives: graders.distributed logs each rank's calls, on simulated and real ranks.


def counts() -> dict:
    """This rank's collectives so far, {name: calls}."""
    return dict(Counter(name for name, _ in collective_calls()))


def since(before: dict) -> dict:
    now = counts()
    return {k: now[k] - before.get(k, 0) for k in now if now[k] != before.get(k, 0)}


def expect_collectives(what: str, phase: str, got: dict, all_reduces: int) -> None:
    want = {"all_reduce": all_reduces} if all_reduces else {}
    if got != want:
        fail(
            f"{what}: the {phase} pass made collective calls {got or 'none'}; the paper needs "
            f"{want or 'none'} (call collectives as torch.distributed.all_reduce or through the "
            "given all_reduce, so they can be counted)"
        )


# ---------------------------------------------------------------------------------------------
# The checks, each run on every rank (simulated or real). Unsharded modules come from a seed,
# so every rank builds the same ones.


def _inputs(seed, *shape, out=None):
    """x of `shape` and loss weights r (shape[:-1] + (out,)); the loss is (layer(x) * r).sum()."""
    g = torch.Generator().manual_seed(seed)
    r_shape = shape if out is None else (*shape[:-1], out)
    return torch.randn(*shape, generator=g, dtype=DT), torch.randn(*r_shape, generator=g, dtype=DT)


def _randomise(module, seed):
    """Every parameter from its own generator: threads share torch's global one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / max(p.shape[-1], 1) ** 0.5)
    return module


def _linear(seed, n_in, n_out, bias=True):
    return _randomise(torch.nn.Linear(n_in, n_out, bias=bias, dtype=DT), seed)


def _block(n, rank, world_size):
    size = n // world_size
    return slice(rank * size, (rank + 1) * size)


def _grad(p, what):
    if p.grad is None:
        fail(f"{what} has no gradient after backward (keep everything in torch operations)")
    return p.grad


def check_column(rank, world_size, impl, seed=0, n_in=6, n_out=8, bias=True):
    linear = _linear(seed, n_in, n_out, bias)
    x0, r0 = _inputs(seed + 1, 3, n_in, out=n_out)
    full = linear(x0.requires_grad_())
    (full * r0).sum().backward()
    layer = impl.ColumnParallelLinear.from_linear(linear, rank, world_size)
    what = f"ColumnParallelLinear.from_linear(Linear({n_in}, {n_out}), {rank}, {world_size})"
    x = x0.detach().clone().requires_grad_()
    before = counts()
    y = layer(x)
    expect_collectives(what, "forward", since(before), 0)
    cols = _block(n_out, rank, world_size)
    assert_close(y, full.detach()[:, cols], what=f"{what}(x {tuple(x.shape)})", **TOL)
    before = counts()
    (y * r0[:, cols]).sum().backward()
    expect_collectives(what, "backward", since(before), 1 if world_size > 1 else 0)
    assert_close(_grad(x, "x"), x0.grad, what=f"{what}: x.grad (summed over the ranks by f)", **TOL)
    w = _grad(layer.weight, f"{what}.weight")
    assert_close(w, linear.weight.grad[cols], what=f"{what}: weight.grad", **TOL)
    if bias:
        b = _grad(layer.bias, f"{what}.bias")
        assert_close(b, linear.bias.grad[cols], what=f"{what}: bias.grad", **TOL)


def check_row(rank, world_size, impl, seed=0, n_in=8, n_out=5, bias=True):
    linear = _linear(seed, n_in, n_out, bias)
    x0, r0 = _inputs(seed + 1, 4, n_in, out=n_out)
    full = linear(x0.requires_grad_())
    (full * r0).sum().backward()
    layer = impl.RowParallelLinear.from_linear(linear, rank, world_size)
    what = f"RowParallelLinear.from_linear(Linear({n_in}, {n_out}), {rank}, {world_size})"
    mine = _block(n_in, rank, world_size)
    x = x0.detach()[:, mine].clone().requires_grad_()
    before = counts()
    y = layer(x)
    expect_collectives(what, "forward", since(before), 1 if world_size > 1 else 0)
    assert_close(y, full.detach(), what=f"{what}(this rank's x {tuple(x.shape)})", **TOL)
    before = counts()
    (y * r0).sum().backward()
    expect_collectives(what, "backward", since(before), 0)
    assert_close(_grad(x, "x"), x0.grad[:, mine], what=f"{what}: x.grad", **TOL)
    w = _grad(layer.weight, f"{what}.weight")
    assert_close(w, linear.weight.grad[:, mine], what=f"{what}: weight.grad", **TOL)
    if bias:
        b = _grad(layer.bias, f"{what}.bias")
        assert_close(b, linear.bias.grad, what=f"{what}: bias.grad", **TOL)


def check_mlp(rank, world_size, impl, seed=0, d_model=6, d_hidden=12, shape=(2, 3)):
    fc1, fc2 = _linear(seed, d_model, d_hidden), _linear(seed + 7, d_hidden, d_model)
    x0, r0 = _inputs(seed + 1, *shape, d_model)
    full = fc2(F.gelu(fc1(x0.requires_grad_())))
    (full * r0).sum().backward()
    mlp = impl.ParallelMLP.from_linears(fc1, fc2, rank, world_size)
    what = (
        f"ParallelMLP.from_linears(Linear({d_model}, {d_hidden}), Linear({d_hidden}, {d_model}), "
        f"{rank}, {world_size})"
    )
    x = x0.detach().clone().requires_grad_()
    before = counts()
    y = mlp(x)
    expect_collectives(what, "forward", since(before), 1 if world_size > 1 else 0)
    assert_close(y, full.detach(), what=f"{what}(x {tuple(x.shape)})", **TOL)
    before = counts()
    (y * r0).sum().backward()
    expect_collectives(what, "backward", since(before), 1 if world_size > 1 else 0)
    assert_close(_grad(x, "x"), x0.grad, what=f"{what}: x.grad", **TOL)
    hidden = _block(d_hidden, rank, world_size)
    for name, got, want in [
        ("fc1.weight", mlp.fc1.weight, fc1.weight.grad[hidden]),
        ("fc1.bias", mlp.fc1.bias, fc1.bias.grad[hidden]),
        ("fc2.weight", mlp.fc2.weight, fc2.weight.grad[:, hidden]),
        ("fc2.bias", mlp.fc2.bias, fc2.bias.grad),
    ]:
        assert_close(_grad(got, name), want, what=f"{what}: {name}.grad", **TOL)


def check_attention(
    rank, world_size, impl, seed=0, d_model=8, n_heads=4, B=2, T=5, is_causal=True, bias=True
):
    mha = torch.nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True, dtype=DT)
    _randomise(mha, seed)  # biases too: torch starts them at zero
    x0, r0 = _inputs(seed + 1, B, T, d_model)
    blocked = torch.ones(T, T, dtype=torch.bool).triu(1) if is_causal else None  # True: blocked
    full, _ = mha(*[x0.requires_grad_()] * 3, attn_mask=blocked, need_weights=False)
    (full * r0).sum().backward()
    attn = impl.ParallelSelfAttention.from_multihead_attention(mha, rank, world_size)
    what = (
        f"ParallelSelfAttention.from_multihead_attention(MultiheadAttention({d_model}, {n_heads}, "
        f"bias={bias}), {rank}, {world_size})"
    )
    x = x0.detach().clone().requires_grad_()
    before = counts()
    y = attn(x, is_causal=is_causal)
    expect_collectives(what, "forward", since(before), 1 if world_size > 1 else 0)
    assert_close(
        y, full.detach(), what=f"{what}(x {(B, T, d_model)}, is_causal={is_causal})", **TOL
    )
    before = counts()
    (y * r0).sum().backward()
    expect_collectives(what, "backward", since(before), 1 if world_size > 1 else 0)
    assert_close(_grad(x, "x"), x0.grad, what=f"{what}: x.grad", **TOL)
    mine = _block(d_model, rank, world_size)
    want_qkv = torch.cat([g[mine] for g in mha.in_proj_weight.grad.chunk(3)])
    got = _grad(attn.qkv_proj.weight, "qkv_proj.weight")
    assert_close(got, want_qkv, what=f"{what}: qkv_proj.weight.grad", **TOL)
    got = _grad(attn.out_proj.weight, "out_proj.weight")
    assert_close(
        got, mha.out_proj.weight.grad[:, mine], what=f"{what}: out_proj.weight.grad", **TOL
    )
    if bias:
        want = torch.cat([g[mine] for g in mha.in_proj_bias.grad.chunk(3)])
        got = _grad(attn.qkv_proj.bias, "qkv_proj.bias")
        assert_close(got, want, what=f"{what}: qkv_proj.bias.grad", **TOL)
        got = _grad(attn.out_proj.bias, "out_proj.bias")
        assert_close(got, mha.out_proj.bias.grad, what=f"{what}: out_proj.bias.grad", **TOL)


def check_f_and_g(rank, world_size, impl):
    x, r = _inputs(100 + rank, 3, 4)  # different on every rank, so sums show
    xs = [_inputs(100 + k, 3, 4) for k in range(world_size)]
    total_x, total_r = sum(a for a, _ in xs), sum(b for _, b in xs)
    x = x.requires_grad_()
    before = counts()
    y = impl.copy_to_ranks(x)
    expect_collectives("copy_to_ranks (f)", "forward", since(before), 0)
    assert_close(y, x.detach(), what="copy_to_ranks(x (3, 4)): the forward pass", **TOL)
    before = counts()
    y.backward(r)
    expect_collectives("copy_to_ranks (f)", "backward", since(before), int(world_size > 1))
    assert_close(
        _grad(x, "x"), total_r, what="copy_to_ranks: x.grad (every rank's gradient summed)", **TOL
    )
    x = x.detach().clone().requires_grad_()
    before = counts()
    y = impl.reduce_from_ranks(x)
    expect_collectives("reduce_from_ranks (g)", "forward", since(before), int(world_size > 1))
    assert_close(y, total_x, what="reduce_from_ranks(x (3, 4)): every rank's x summed", **TOL)
    before = counts()
    y.backward(r)
    expect_collectives("reduce_from_ranks (g)", "backward", since(before), 0)
    assert_close(_grad(x, "x"), r, what="reduce_from_ranks: x.grad (passed through)", **TOL)


# ---------------------------------------------------------------------------------------------
# 1. One rank at a time, no process group.


def test_f_and_g_on_one_rank(impl, device):
    x = torch.randn(3, 4, dtype=DT, device=device, requires_grad=True)
    r = torch.randn(3, 4, dtype=DT, device=device)
    for name in ("copy_to_ranks", "reduce_from_ranks"):
        x.grad = None
        y = getattr(impl, name)(x)
        assert_close(y, x.detach(), what=f"{name}(x (3, 4)) without a process group", **TOL)
        y.backward(r)
        assert_close(
            _grad(x, "x"), r, what=f"{name}: x.grad without a process group (identity)", **TOL
        )


@given(
    n_in=st.integers(1, 7),
    per_rank=st.integers(1, 4),
    world_size=st.sampled_from([1, 2, 3, 4]),
    bias=st.booleans(),
)
def test_column_shards_concatenate_to_the_linear(impl, device, n_in, per_rank, world_size, bias):
    n_out = per_rank * world_size
    linear = _linear(n_in + n_out, n_in, n_out, bias).to(device)
    x = torch.randn(2, 3, n_in, dtype=DT, device=device)
    outs = []
    for rank in range(world_size):
        layer = impl.ColumnParallelLinear.from_linear(linear, rank, world_size)
        what = f"ColumnParallelLinear.from_linear(Linear({n_in}, {n_out}), {rank}, {world_size})"
        y = layer(x)
        if tuple(y.shape) != (2, 3, per_rank):
            fail(f"{what}(x (2, 3, {n_in})) returned {tuple(y.shape)}; expected (2, 3, {per_rank})")
        outs.append(y)
    assert_close(
        torch.cat(outs, -1),
        linear(x),
        what=f"the {world_size} ranks' ColumnParallelLinear outputs, concatenated in rank order",
        **TOL,
    )


@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6), bias=st.booleans())
def test_row_on_one_rank_is_the_linear(impl, device, n_in, n_out, bias):
    linear = _linear(n_in * n_out, n_in, n_out, bias).to(device)
    x = torch.randn(5, n_in, dtype=DT, device=device)
    layer = impl.RowParallelLinear.from_linear(linear, 0, 1)
    assert_close(
        layer(x),
        linear(x),
        what=f"RowParallelLinear.from_linear(Linear({n_in}, {n_out}, bias={bias}), 0, 1)(x)",
        **TOL,
    )


def test_mlp_and_attention_on_one_rank(impl, device):
    torch.manual_seed(3)
    fc1, fc2 = torch.nn.Linear(8, 20, dtype=DT), torch.nn.Linear(20, 8, dtype=DT)
    x = torch.randn(2, 7, 8, dtype=DT)
    mlp = impl.ParallelMLP.from_linears(fc1.to(device), fc2.to(device), 0, 1)
    expected = fc2(F.gelu(fc1(x.to(device))))
    assert_close(
        mlp(x.to(device)), expected, what="ParallelMLP.from_linears(..., 0, 1)(x (2, 7, 8))", **TOL
    )
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=DT).to(device)
    attn = impl.ParallelSelfAttention.from_multihead_attention(mha, 0, 1)
    xd = x.to(device)
    expected, _ = mha(xd, xd, xd, need_weights=False)
    assert_close(
        attn(xd),
        expected,
        what="ParallelSelfAttention.from_multihead_attention(MultiheadAttention(8, 2), 0, 1)"
        "(x (2, 7, 8))",
        **TOL,
    )


# ---------------------------------------------------------------------------------------------
# 2. Simulated ranks (threads; autograd runs CUDA backward passes on one shared worker thread,
# where the ranks would wait for each other forever, so these run on the CPU only).


def _cpu_only(device):
    if device != "cpu":
        pytest.skip("simulated ranks run on the CPU (CUDA's autograd worker is shared)")


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_f_and_g_simulated(impl, device, world_size):
    _cpu_only(device)
    simulate_ranks(check_f_and_g, world_size, impl)


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_column_parallel_simulated(impl, device, world_size, bias):
    _cpu_only(device)
    simulate_ranks(check_column, world_size, impl, 5, 7, 4 * world_size, bias)


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_row_parallel_simulated(impl, device, world_size, bias):
    _cpu_only(device)
    simulate_ranks(check_row, world_size, impl, 6, 3 * world_size, 5, bias)


@given(
    d_model=st.integers(1, 6),
    per_rank=st.integers(1, 3),
    world_size=st.sampled_from([2, 4]),
    seed=st.integers(0, 999),
)
def test_mlp_simulated(impl, device, d_model, per_rank, world_size, seed):
    _cpu_only(device)
    simulate_ranks(check_mlp, world_size, impl, seed, d_model, per_rank * world_size, (2, 3))


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_simulated(impl, device, world_size, is_causal, bias):
    _cpu_only(device)
    simulate_ranks(check_attention, world_size, impl, 9, 12, 4, 2, 5, is_causal, bias)


# ---------------------------------------------------------------------------------------------
# 3. Real processes: 2 and 4 ranks in one gloo group on loopback.


def every_layer_on_a_real_rank(rank, world_size, impl):
    check_f_and_g(rank, world_size, impl)
    check_column(rank, world_size, impl, 11, 5, 3 * world_size)
    check_row(rank, world_size, impl, 12, 2 * world_size, 7)
    check_mlp(rank, world_size, impl, 13, 6, 4 * world_size, (3, 2))
    check_attention(rank, world_size, impl, 14, 16, 4, 2, 6, True)
    return counts()


@pytest.mark.parametrize("world_size", [2, 4])
def test_every_layer_on_real_processes(impl, device, world_size):
    _cpu_only(device)
    tallies = run_ranks(every_layer_on_a_real_rank, world_size, impl)
    if any(t != tallies[0] for t in tallies):
        fail(f"the ranks made different collective calls: {tallies}")
