"""Hidden grading cases for tensor_parallel.

A case's `call` travels to the sandbox as source, where a spawned process could not import it, so
the ranks are simulated by `graders.distributed.simulate_ranks`: one thread per rank in the
sandbox's process, with torch.distributed faked and all_reduce an exact sum over the threads (the
public specs' level 2). The call returns every rank's output, input gradient and parameter
gradients, and the collectives each rank called in the forward and in the backward pass.
"""

import torch

from graders.cases import Case


def simulated(m, layer, world_size, weights, x, r, is_causal=False):
    import torch

    from graders.distributed import collective_calls, simulate_ranks

    # On the CPU: CUDA runs every backward pass on one shared autograd thread, where the ranks'
    # all-reduces would wait for each other forever.
    x, r = x.cpu(), r.cpu()
    weights = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in weights.items()}

    def build(rank):
        d = weights
        if layer in ("column", "row", "mlp"):
            linears = []
            for name in ("fc1", "fc2") if layer == "mlp" else ("fc",):
                w = d[f"{name}.weight"]
                lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=f"{name}.bias" in d)
                lin = lin.to(w.dtype)
                with torch.no_grad():
                    lin.weight.copy_(w)
                    if lin.bias is not None:
                        lin.bias.copy_(d[f"{name}.bias"])
                linears.append(lin)
            if layer == "column":
                mod = m.ColumnParallelLinear.from_linear(linears[0], rank, world_size)
                return mod, [mod.weight, mod.bias]
            if layer == "row":
                mod = m.RowParallelLinear.from_linear(linears[0], rank, world_size)
                return mod, [mod.weight, mod.bias]
            mod = m.ParallelMLP.from_linears(*linears, rank, world_size)
            return mod, [mod.fc1.weight, mod.fc1.bias, mod.fc2.weight, mod.fc2.bias]
        w = d["in_proj_weight"]
        bias = "in_proj_bias" in d
        mha = torch.nn.MultiheadAttention(
            w.shape[1], d["n_heads"], bias=bias, batch_first=True, dtype=w.dtype
        )
        mha.load_state_dict({k: v for k, v in d.items() if k != "n_heads"})
        mod = m.ParallelSelfAttention.from_multihead_attention(mha, rank, world_size)
        params = [mod.qkv_proj.weight, mod.qkv_proj.bias, mod.out_proj.weight, mod.out_proj.bias]
        return (lambda t: mod(t, is_causal=is_causal)), params

    def rank_main(rank, world_size):
        if layer == "fg":  # f then g on a different input per rank
            xr = x[rank].clone().requires_grad_()
            y = m.reduce_from_ranks(m.copy_to_ranks(xr) * (rank + 1))
            fwd = len(collective_calls())
            y.backward(r[rank])
            return y.detach(), xr.grad, [], passes(fwd)
        mod, params = build(rank)
        xr = x[rank] if layer == "row" else x
        xr = xr.clone().requires_grad_()
        y = mod(xr)
        fwd = len(collective_calls())
        out_r = r[..., rank, :] if layer == "column" else r
        (y * out_r).sum().backward()
        grads = [
            torch.zeros(0, dtype=x.dtype)
            if p is None or p.grad is None
            else p.grad.detach().flatten()
            for p in params
        ]
        return y.detach(), xr.grad, grads, passes(fwd)

    def passes(fwd):
        """The names of this rank's collectives in the forward and in the backward pass."""
        names = [name for name, _ in collective_calls()]
        return [names[:fwd], names[fwd:]]

    results = simulate_ranks(rank_main, world_size)
    empty = torch.zeros(0, dtype=x.dtype)
    return {
        "out": torch.stack([res[0] for res in results]),
        "x_grad": torch.stack([empty if res[1] is None else res[1] for res in results]),
        "param_grads": [torch.cat(res[2]) if res[2] else empty for res in results],
        "collectives": [res[3] for res in results],
    }


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _w(g, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=g, dtype=dtype) / shape[-1] ** 0.5


def f_and_g(seed, world_size=3):
    g = _g(seed)
    x = torch.randn(world_size, 4, 5, generator=g, dtype=torch.float64)
    r = torch.randn(world_size, 4, 5, generator=g, dtype=torch.float64)
    return {"layer": "fg", "world_size": world_size, "weights": {}, "x": x, "r": r}


def column(seed, world_size=4, n_in=9, per_rank=3):
    g = _g(seed)
    n_out = world_size * per_rank
    weights = {"fc.weight": _w(g, n_out, n_in), "fc.bias": _w(g, n_out)}
    x = torch.randn(2, 5, n_in, generator=g, dtype=torch.float64)
    r = torch.randn(2, 5, world_size, per_rank, generator=g, dtype=torch.float64)
    return {"layer": "column", "world_size": world_size, "weights": weights, "x": x, "r": r}


def row(seed, world_size=3, per_rank=4, n_out=7):
    g = _g(seed)
    weights = {"fc.weight": _w(g, n_out, world_size * per_rank), "fc.bias": _w(g, n_out)}
    x = torch.randn(world_size, 6, per_rank, generator=g, dtype=torch.float64)
    r = torch.randn(6, n_out, generator=g, dtype=torch.float64)
    return {"layer": "row", "world_size": world_size, "weights": weights, "x": x, "r": r}


def mlp(seed, world_size=2, d_model=10, d_hidden=24):
    g = _g(seed)
    weights = {
        "fc1.weight": _w(g, d_hidden, d_model),
        "fc1.bias": _w(g, d_hidden),
        "fc2.weight": _w(g, d_model, d_hidden),
        "fc2.bias": _w(g, d_model),
    }
    x = torch.randn(3, 4, d_model, generator=g, dtype=torch.float64)
    r = torch.randn(3, 4, d_model, generator=g, dtype=torch.float64)
    return {"layer": "mlp", "world_size": world_size, "weights": weights, "x": x, "r": r}


def mlp4(seed):
    return mlp(seed, world_size=4, d_model=7, d_hidden=28)


def attention(seed, world_size=2, d_model=18, n_heads=6, bias=True, is_causal=True):
    g = _g(seed)
    weights = {
        "in_proj_weight": _w(g, 3 * d_model, d_model),
        "out_proj.weight": _w(g, d_model, d_model),
        "n_heads": n_heads,
    }
    if bias:
        weights["in_proj_bias"] = _w(g, 3 * d_model)
        weights["out_proj.bias"] = _w(g, d_model)
    x = torch.randn(2, 7, d_model, generator=g, dtype=torch.float64)
    r = torch.randn(2, 7, d_model, generator=g, dtype=torch.float64)
    return {
        "layer": "attention",
        "world_size": world_size,
        "weights": weights,
        "x": x,
        "r": r,
        "is_causal": is_causal,
    }


def attention4(seed):
    return attention(seed, world_size=4, d_model=16, n_heads=8, bias=False, is_causal=False)


TOL = {"rtol": 1e-9, "atol": 1e-11}  # float64, one all-reduce summed in rank order

CASES = [
    Case(
        "f and g over 3 simulated ranks", call=simulated, inputs=f_and_g, points=2, seed=31, **TOL
    ),
    Case(
        "column-parallel linear, 4 ranks", call=simulated, inputs=column, points=1, seed=32, **TOL
    ),
    Case("row-parallel linear, 3 ranks", call=simulated, inputs=row, points=2, seed=33, **TOL),
    Case("ParallelMLP, 2 ranks", call=simulated, inputs=mlp, points=2, seed=34, **TOL),
    Case("ParallelMLP, 4 ranks", call=simulated, inputs=mlp4, points=2, seed=35, **TOL),
    Case(
        "causal ParallelSelfAttention, 6 heads on 2 ranks",
        call=simulated,
        inputs=attention,
        points=2,
        seed=36,
        **TOL,
    ),
    Case(
        "ParallelSelfAttention without biases, 8 heads on 4 ranks",
        call=simulated,
        inputs=attention4,
        points=2,
        seed=37,
        **TOL,
    ),
]
