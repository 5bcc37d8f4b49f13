"""Hidden grading cases for tensor_parallel.

A case's `call` travels to the sandbox as source, where a spawned process could not import it, so
the ranks are simulated: one thread per rank in the sandbox's process, with torch.distributed's
all_reduce replaced by an exact sum over the threads (the public specs' level 2). The call returns
every rank's output, input gradient and parameter gradients, and how many collectives each rank
made in the forward and in the backward pass.
"""

import torch

from graders.cases import Case


def simulated(m, layer, world_size, weights, x, r, is_causal=False):
    import threading

    import torch
    import torch.distributed as dist

    cond, local = threading.Condition(), threading.local()
    state = {"slots": [None] * world_size, "arrived": 0, "gen": 0, "result": None, "done": set()}

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        local.count += 1
        rank = local.rank
        with cond:
            state["slots"][rank] = tensor.detach().clone()
            state["arrived"] += 1
            gen = state["gen"]
            if state["arrived"] == world_size:
                total = state["slots"][0].clone()
                for s in state["slots"][1:]:
                    total += s
                state.update(result=total, arrived=0, gen=gen + 1)
                cond.notify_all()
            else:
                cond.wait_for(lambda: state["gen"] != gen or state["done"], timeout=60)
                if state["gen"] == gen:
                    raise RuntimeError("the ranks made different collective calls")
            result = state["result"]
        with torch.no_grad():
            tensor.copy_(result)

    def unsupported(*args, **kwargs):
        local.count += 1000  # any other collective: tensor parallelism needs only all_reduce
        raise RuntimeError("only all_reduce is simulated")

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

    def rank_main(rank, results):
        local.rank, local.count = rank, 0
        try:
            if layer == "fg":  # f then g on a different input per rank
                xr = x[rank].clone().requires_grad_()
                y = m.reduce_from_ranks(m.copy_to_ranks(xr) * (rank + 1))
                fwd = local.count
                y.backward(r[rank])
                results[rank] = (y.detach(), xr.grad, [], [fwd, local.count - fwd])
                return
            mod, params = build(rank)
            xr = x[rank] if layer == "row" else x
            xr = xr.clone().requires_grad_()
            y = mod(xr)
            fwd = local.count
            out_r = r[..., rank, :] if layer == "column" else r
            (y * out_r).sum().backward()
            grads = [
                torch.zeros(0, dtype=x.dtype)
                if p is None or p.grad is None
                else p.grad.detach().flatten()
                for p in params
            ]
            results[rank] = (y.detach(), xr.grad, grads, [fwd, local.count - fwd])
        except BaseException as err:
            results[rank] = err
        finally:
            with cond:
                state["done"].add(rank)
                cond.notify_all()

    names = ["all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor"]
    names += ["broadcast", "reduce", "all_to_all_single"]
    fakes = {
        "is_initialized": lambda: True,
        "get_world_size": lambda group=None: world_size,
        "get_rank": lambda group=None: local.rank,
        "all_reduce": all_reduce,
        **{n: unsupported for n in names},
    }
    saved = {n: getattr(dist, n) for n in fakes if hasattr(dist, n)}
    results = {}
    try:
        for n, fake in fakes.items():
            setattr(dist, n, fake)
        threads = [
            threading.Thread(target=rank_main, args=(k, results), daemon=True)
            for k in range(world_size)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for n, original in saved.items():
            setattr(dist, n, original)
    for k in range(world_size):
        if isinstance(results.get(k), BaseException):
            raise results[k]
    empty = torch.zeros(0, dtype=x.dtype)
    return {
        "out": torch.stack([results[k][0] for k in range(world_size)]),
        "x_grad": torch.stack(
            [empty if results[k][1] is None else results[k][1] for k in range(world_size)]
        ),
        "param_grads": [
            torch.cat(results[k][2]) if results[k][2] else empty for k in range(world_size)
        ],
        "collectives": [results[k][3] for k in range(world_size)],
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
