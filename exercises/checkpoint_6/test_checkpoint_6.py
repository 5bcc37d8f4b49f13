"""Checkpoint 6, "the same model, sharded": a small transformer trained on 2 ranks with your
tensor-parallel layers, trained on 2 ranks with your ZeRO optimizer, and trained with your
FlashAttention, ends where the same model trained in one process with torch's modules ends.

Run `pytest exercises/checkpoint_6`. Every piece comes from your own exercises (`load_impl`). The
specs climb as the exercises did: FlashAttention in one process, then the ranks simulated as
threads of this process (`graders.distributed.simulate_ranks`: tracebacks stay readable), then 2
real processes in a gloo group on loopback (`graders.distributed.run_ranks`), which run the very
same functions.
"""

import math
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from graders.checks import SpecFailure, assert_close, fail
from graders.distributed import run_ranks, simulate_ranks

PIECES = ("tensor_parallel", "zero", "flash_attention")
DT = torch.float64
# The model and its training: tiny, so that every run takes a fraction of a second.
CONFIG = dict(
    vocab=64, context=16, d_model=32, n_heads=4, n_layers=2, d_hidden=128, batch=4, steps=6,
    lr=1e-2, weight_decay=0.1, block_q=8, block_k=4, seed=0,
)  # fmt: skip
WORLD = 2
STAGES = (1, 2, 3)
# float64: sharded sums add the same products in another order (~1e-16 each). Adam divides by
# sqrt(v) + eps, which magnifies the rounding of a gradient that is zero in exact arithmetic (the
# key bias's: softmax ignores it) up to 1/eps times, so those parameters agree to ~3e-11 only;
# the losses agree to ~1e-15. Every known mistake in the pieces moves them by 1e-4 or more.
TOL = dict(rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# The model: a pre-LN GPT with learned positions, whose attention and MLP are swappable modules.


class TorchAttention(nn.Module):
    """The referee: torch's nn.MultiheadAttention with a causal mask."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x):
        T = x.shape[1]
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        return self.mha(x, x, x, attn_mask=future, need_weights=False)[0]


def split_heads(t, heads):
    """(B, T, heads * d) -> (B, heads, T, d)."""
    B, T, _ = t.shape
    return t.view(B, T, heads, -1).transpose(1, 2)


def merge_heads(t):
    """(B, heads, T, d) -> (B, T, heads * d)."""
    B, H, T, d = t.shape
    return t.transpose(1, 2).reshape(B, T, H * d)


class FlashSelfAttention(nn.Module):
    """nn.MultiheadAttention's weights around your flash_attention (causal)."""

    def __init__(self, mha: nn.MultiheadAttention, flash, config) -> None:
        super().__init__()
        self.mha, self.flash, self.blocks = mha, flash, (config["block_q"], config["block_k"])

    def forward(self, x):
        q, k, v = F.linear(x, self.mha.in_proj_weight, self.mha.in_proj_bias).chunk(3, dim=-1)
        H = self.mha.num_heads
        q, k, v = (split_heads(t, H) for t in (q, k, v))
        o = self.flash.flash_attention(q, k, v, True, *self.blocks)
        return self.mha.out_proj(merge_heads(o))


class TorchMLP(nn.Module):
    def __init__(self, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class YourParallelAttention(nn.Module):
    """This rank's heads: your ParallelSelfAttention, causal."""

    def __init__(self, attn) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x, is_causal=True)


class YourParallelFlashAttention(nn.Module):
    """This rank's heads with your flash_attention between your ParallelSelfAttention's qkv_proj
    (column-parallel: this rank's queries, keys, values) and out_proj (row-parallel)."""

    def __init__(self, attn, flash, config) -> None:
        super().__init__()
        self.attn, self.flash, self.blocks = attn, flash, (config["block_q"], config["block_k"])
        self.heads = config["n_heads"] // attn.world_size

    def forward(self, x):
        q, k, v = (split_heads(t, self.heads) for t in self.attn.qkv_proj(x).chunk(3, dim=-1))
        o = self.flash.flash_attention(q, k, v, True, *self.blocks)
        return self.attn.out_proj(merge_heads(o))


class Block(nn.Module):
    def __init__(self, d: int, attn: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d, dtype=DT), attn
        self.ln2, self.mlp = nn.LayerNorm(d, dtype=DT), mlp

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, pre-LN blocks, a final LayerNorm, an untied head."""

    def __init__(self, config) -> None:
        super().__init__()
        V, T, d, h = config["vocab"], config["context"], config["d_model"], config["n_heads"]
        self.tok_emb, self.pos_emb = nn.Embedding(V, d, dtype=DT), nn.Embedding(T, d, dtype=DT)
        blocks = []
        for _ in range(config["n_layers"]):
            mha = nn.MultiheadAttention(d, h, batch_first=True, dtype=DT)
            fc1 = nn.Linear(d, config["d_hidden"], dtype=DT)
            fc2 = nn.Linear(config["d_hidden"], d, dtype=DT)
            blocks.append(Block(d, TorchAttention(mha), TorchMLP(fc1, fc2)))
        self.blocks = nn.ModuleList(blocks)
        self.ln_f, self.head = nn.LayerNorm(d, dtype=DT), nn.Linear(d, V, bias=False, dtype=DT)

    def forward(self, idx):
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def new_model(config, device="cpu"):
    """The unsharded model, every weight drawn from config["seed"] (no global random state, so
    that simulated ranks in threads build the same one)."""
    model = TinyGPT(config)
    g = torch.Generator().manual_seed(config["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=DT)
            if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight")):
                p.copy_(1 + 0.1 * noise)
            elif "emb" in name or p.ndim == 1:
                p.copy_(noise * (1.0 if "emb" in name else 0.1))
            else:  # weight matrices: unit-variance outputs, so attention is far from uniform
                p.copy_(noise / math.sqrt(p.shape[1]))
    return model.to(device)


def with_flash(model, flash, config):
    """The model with your FlashAttention in place of torch's attention (same weights)."""
    for block in model.blocks:
        block.attn = FlashSelfAttention(block.attn.mha, flash, config)
    return model


def sharded(model, tp, rank, world_size, config, flash=None):
    """Rank `rank`'s model: every block's attention and MLP replaced by your parallel layers
    built from them; embeddings, LayerNorms and head stay whole on every rank."""
    for block in model.blocks:
        attn = tp.ParallelSelfAttention.from_multihead_attention(block.attn.mha, rank, world_size)
        block.attn = (
            YourParallelAttention(attn)
            if flash is None
            else YourParallelFlashAttention(attn, flash, config)
        )
        block.mlp = tp.ParallelMLP.from_linears(block.mlp.fc1, block.mlp.fc2, rank, world_size)
    return model


def batches(config, device="cpu"):
    """config["steps"] batches of (x, y), (batch, context) each: every sequence counts up by its
    own stride from its own start (mod vocab), so the next token is predictable from context."""
    g = torch.Generator().manual_seed(config["seed"] + 1)
    B, T, V = config["batch"], config["context"], config["vocab"]
    out = []
    for _ in range(config["steps"]):
        start = torch.randint(V, (B, 1), generator=g)
        stride = torch.randint(1, 8, (B, 1), generator=g)
        seq = (start + stride * torch.arange(T + 1)) % V
        out.append((seq[:, :-1].to(device), seq[:, 1:].to(device)))
    return out


def train(model, opt, data, rows=slice(None), gathered=nullcontext):
    """Each step: zero_grad, forward and backward on this rank's rows (inside `gathered()`, which
    ZeRO stage 3 needs), step. The losses (steps,) float64."""
    losses = []
    for x, y in data:
        opt.zero_grad()
        with gathered():
            logits = model(x[rows])
            loss = F.cross_entropy(logits.flatten(0, 1), y[rows].flatten())
            loss.backward()
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=DT)


def adamw(params, config):
    return torch.optim.AdamW(params, lr=config["lr"], weight_decay=config["weight_decay"])


def parameters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def one_process(config, flash=None, device="cpu"):
    """The referee (flash=None): the model trained in one process with torch.optim.AdamW.
    With your flash module: the same with your FlashAttention. {"losses", "params"}."""
    model = new_model(config, device)
    if flash is not None:
        with_flash(model, flash, config)
    losses = train(model, adamw(model.parameters(), config), batches(config, device))
    return {"losses": losses, "params": parameters(model)}


# ------------------------------------------------------------------------------------------------
# What each rank runs (a simulated rank or a real process: the same functions).


def tensor_parallel_rank(rank, world_size, own, config, use_flash=False):
    """Your tensor-parallel model on this rank, trained on the whole batch with torch's AdamW
    (each rank updates its own shards; the replicated weights get the same gradient everywhere).
    Returns the losses and this rank's pieces: {"losses", "whole", "shards"}."""
    flash = own.flash_attention if use_flash else None
    model = sharded(new_model(config), own.tensor_parallel, rank, world_size, config, flash)
    losses = train(model, adamw(model.parameters(), config), batches(config))
    whole = {  # replicated on every rank
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if ".attn." not in n and ".mlp." not in n
    }
    shards = {}
    for i, block in enumerate(model.blocks):
        attn, mlp = block.attn.attn, block.mlp
        shards[f"blocks.{i}"] = {
            "qkv.weight": attn.qkv_proj.weight,
            "qkv.bias": attn.qkv_proj.bias,
            "out.weight": attn.out_proj.weight,
            "out.bias": attn.out_proj.bias,
            "fc1.weight": mlp.fc1.weight,
            "fc1.bias": mlp.fc1.bias,
            "fc2.weight": mlp.fc2.weight,
            "fc2.bias": mlp.fc2.bias,
        }
    shards = {b: {k: t.detach().clone() for k, t in s.items()} for b, s in shards.items()}
    return {"losses": losses, "whole": whole, "shards": shards}


def unshard(results, config):
    """The whole model's parameters, named as in TinyGPT, from every rank's pieces (the layouts
    of exercises/tensor_parallel/README.md: column-parallel rows and row-parallel columns in rank
    order, [W_q; W_k; W_v] each split by heads, row-parallel biases whole on every rank)."""
    params = dict(results[0]["whole"])
    for i in range(config["n_layers"]):
        s = [r["shards"][f"blocks.{i}"] for r in results]
        p = f"blocks.{i}."
        qkv_w = [t["qkv.weight"].chunk(3) for t in s]
        qkv_b = [t["qkv.bias"].chunk(3) for t in s]
        params[p + "attn.mha.in_proj_weight"] = torch.cat(
            [torch.cat([w[j] for w in qkv_w]) for j in range(3)]
        )
        params[p + "attn.mha.in_proj_bias"] = torch.cat(
            [torch.cat([b[j] for b in qkv_b]) for j in range(3)]
        )
        params[p + "attn.mha.out_proj.weight"] = torch.cat([t["out.weight"] for t in s], dim=1)
        params[p + "attn.mha.out_proj.bias"] = s[0]["out.bias"]
        params[p + "mlp.fc1.weight"] = torch.cat([t["fc1.weight"] for t in s])
        params[p + "mlp.fc1.bias"] = torch.cat([t["fc1.bias"] for t in s])
        params[p + "mlp.fc2.weight"] = torch.cat([t["fc2.weight"] for t in s], dim=1)
        params[p + "mlp.fc2.bias"] = s[0]["fc2.bias"]
    return params


def zero_rank(rank, world_size, own, config, stage):
    """The unsharded model, data parallel: this rank's rows of every batch, your ZeroAdamW.
    Returns {"losses" (this rank's rows), "params" (gathered after training), "memory"}."""
    model = new_model(config)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    opt = own.zero.ZeroAdamW(
        params, stage=stage, lr=config["lr"], weight_decay=config["weight_decay"]
    )
    rows = config["batch"] // world_size
    losses = train(model, opt, batches(config), slice(rank * rows, (rank + 1) * rows), opt.gathered)
    memory = {  # what each rank holds between steps
        "shard": int(opt.shard.numel()),
        "grads_kept": sum(p.grad is not None for p in params),
        "param_elements": sum(p.numel() for p in params),
        "n": n,
    }
    with opt.gathered():
        final = parameters(model)
    return {"losses": losses, "params": final, "memory": memory}


def every_run(rank, world_size, own, config, names=None):
    """Every sharded run of the checkpoint on this rank (or those in `names`), each one's error
    kept apart: {name: (kind, value)}."""
    runs = {
        "tensor_parallel": lambda: tensor_parallel_rank(rank, world_size, own, config),
        "tensor_parallel+flash": lambda: tensor_parallel_rank(rank, world_size, own, config, True),
    }
    for stage in STAGES:
        runs[f"zero stage {stage}"] = lambda stage=stage: zero_rank(
            rank, world_size, own, config, stage
        )
    out = {}
    for name, run in runs.items():
        if names is not None and name not in names:
            continue
        try:
            out[name] = ("ok", run())
        except SpecFailure as err:
            out[name] = ("spec", str(err))
        except NotImplementedError as err:
            out[name] = ("todo", str(err))
        except Exception as err:  # reported by the spec of that run
            out[name] = ("error", f"{type(err).__name__}: {err}")
    return out


def real_rank(rank, world_size, own, config):
    """In each spawned process: every run."""
    return every_run(rank, world_size, SimpleNamespace(**own), config)


def outcome(per_rank, name, where):
    """Run `name`'s results on every rank, or its first rank's failure raised again."""
    results = []
    for rank, out in enumerate(per_rank):
        kind, value = out[name]
        if kind == "todo":
            raise NotImplementedError(value)
        if kind != "ok":
            fail(f"{name}, rank {rank} of {len(per_rank)} ({where}): {value}")
        results.append(value)
    return results


# ------------------------------------------------------------------------------------------------
# The checks.


def same_run(what, got, want):
    """got and want: {"losses": (steps,), "params": {name: tensor}} of the same model."""
    assert_close(got["losses"], want["losses"], what=f"{what}: the loss at each step", **TOL)
    for name, expected in want["params"].items():
        if name not in got["params"]:
            fail(f"{what}: no parameter {name} came back after training")
        assert_close(got["params"][name], expected, what=f"{what}: {name} after training", **TOL)


def tensor_parallel_result(results, config):
    """One run's {"losses", "params"} from every rank's pieces; the ranks must agree."""
    for rank, r in enumerate(results[1:], start=1):
        assert_close(
            r["losses"],
            results[0]["losses"],
            what=f"the loss on rank {rank} against rank 0 (every rank sees the same batch)",
            **TOL,
        )
        for name, t in r["whole"].items():
            assert_close(
                t, results[0]["whole"][name], what=f"replicated {name}: rank {rank} vs 0", **TOL
            )
    return {"losses": results[0]["losses"], "params": unshard(results, config)}


def zero_result(results, config, stage, what):
    """One run's {"losses", "params"}: the full batch's loss is the mean of the ranks' losses
    (equal rows each); every rank must end with the same parameters and hold only its share."""
    world_size = len(results)
    for rank, r in enumerate(results):
        m = r["memory"]
        shard = math.ceil(m["n"] / world_size)
        if m["shard"] != shard:
            fail(
                f"{what}: rank {rank}'s optimizer.shard holds {m['shard']} elements; ZeRO stage "
                f"{stage} gives each of {world_size} ranks ceil({m['n']} / {world_size}) = {shard}"
            )
        if stage >= 2 and m["grads_kept"]:
            fail(
                f"{what}: after step(), rank {rank} still holds {m['grads_kept']} parameters' "
                f"full gradients (p.grad); stage {stage} keeps only its shard of the gradient "
                "(reduce-scatter, then drop p.grad)"
            )
        if stage == 3 and m["param_elements"]:
            fail(
                f"{what}: between steps rank {rank}'s parameters hold {m['param_elements']} "
                "elements; stage 3 frees them after gathered() and keeps only its shard"
            )
        for name, t in r["params"].items():
            assert_close(
                t, results[0]["params"][name], what=f"{what}: {name}, rank {rank} vs 0", **TOL
            )
    losses = torch.stack([r["losses"] for r in results]).mean(0)
    return {"losses": losses, "params": results[0]["params"]}


def check_every_run(per_rank, config, where):
    """Every sharded run against the one-process referee; (name, message) of those that fail."""
    want = one_process(config)
    failures = []
    for name in per_rank[0]:
        what = f"{name} on {len(per_rank)} ranks ({where}) vs one process"
        try:
            results = outcome(per_rank, name, where)
            if name.startswith("tensor_parallel"):
                got = tensor_parallel_result(results, config)
            else:
                got = zero_result(results, config, int(name[-1]), what)
            same_run(what, got, want)
        except (SpecFailure, NotImplementedError) as err:
            failures.append((name, err))
    return failures


@pytest.fixture(scope="module")
def own(load_impl):
    return SimpleNamespace(**{name: load_impl(name) for name in PIECES})


def cpu_only(device):
    if device != "cpu":
        pytest.skip("the ranks run on CPU (gloo, and threads); the CPU run covers the logic")


def report(failures, name):
    for run, err in failures:
        if run == name:
            raise err


# ------------------------------------------------------------------------------------------------
# 1. One process: your FlashAttention in place of torch's.


def test_your_flash_attention_gives_the_same_loss_curve(own, device):
    want = one_process(CONFIG, device=device)
    got = one_process(CONFIG, flash=own.flash_attention, device=device)
    what = (
        "the model with your flash_attention (causal, block_q=8, block_k=4) vs torch's "
        "nn.MultiheadAttention, 6 AdamW steps"
    )
    same_run(what, got, want)


# ------------------------------------------------------------------------------------------------
# 2. Ranks simulated as threads: the first steps, with readable tracebacks.

_SIMULATED: dict = {}


def simulated_failures(own):
    key = id(own)
    if key not in _SIMULATED:
        per_rank = simulate_ranks(every_run, WORLD, own, CONFIG)
        _SIMULATED[key] = (own, check_every_run(per_rank, CONFIG, "simulated as threads"))
    return _SIMULATED[key][1]


def test_your_tensor_parallel_model_on_simulated_ranks(own, device):
    cpu_only(device)
    report(simulated_failures(own), "tensor_parallel")


@pytest.mark.parametrize("stage", STAGES)
def test_your_zero_on_simulated_ranks(own, device, stage):
    cpu_only(device)
    report(simulated_failures(own), f"zero stage {stage}")


def test_your_flash_attention_inside_your_tensor_parallel_model(own, device):
    cpu_only(device)
    report(simulated_failures(own), "tensor_parallel+flash")


# ------------------------------------------------------------------------------------------------
# 3. Two real processes in a gloo group: every run at once (spawning imports torch in each).


def test_the_same_model_sharded_on_two_real_processes(own, device):
    cpu_only(device)
    pieces = {name: getattr(own, name) for name in PIECES}
    per_rank = run_ranks(real_rank, WORLD, pieces, CONFIG)
    failures = check_every_run(per_rank, CONFIG, "real processes, gloo")
    if failures:
        todo = [err for _, err in failures if isinstance(err, NotImplementedError)]
        if todo:
            raise todo[0]
        fail("\n".join(f"{name}: {err}" for name, err in failures))
