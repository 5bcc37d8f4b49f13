"""Run a function on several ranks, for real or simulated, with the same reporting.

`run_ranks(fn, world_size, impl, ...)` starts processes with `torch.multiprocessing`'s spawn, joins
them in one gloo process group on loopback, and always cleans them up: `fn` is a top-level function
of the spec file, called as `fn(rank, world_size, *args)` in each process after
`torch.distributed.init_process_group("gloo", ...)`. The `impl` fixture may be passed among the
arguments: it travels as the name of what it loaded and is loaded again in each process.

`simulate_ranks(fn, world_size, ...)` calls the same `fn` on threads of this process while
torch.distributed is faked: collectives meet in an exact exchange that sums in rank order. It
needs no spawn, so a hidden case's `call` (shipped as source) can use it, and tracebacks stay
readable. CUDA runs every backward pass on one shared autograd thread, so ranks whose backward
pass calls a collective can only be simulated on the CPU.

On either kind of rank, `collective_calls()` lists the collectives that rank has called so far.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import pickle
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from graders.checks import SpecFailure

TIMEOUT = 120.0  # seconds for all ranks together; spawning alone imports torch in each process


class RankError(RuntimeError):
    """A rank raised something other than a spec's verdict; the message holds its traceback."""


def run_ranks(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = TIMEOUT
) -> list[Any]:
    """`fn(rank, world_size, *args)` on `world_size` processes; their return values, in rank order.

    A rank's `SpecFailure` or `NotImplementedError` is raised again here with the rank named, so a
    spec run on several processes reports like one run in this process. Every process is killed
    when one fails or when `timeout` passes.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="ladder-ranks-") as tmp:
        store = Path(tmp) / "store"  # a file rendezvous: no port to choose, none to collide
        results = mp.get_context("spawn").SimpleQueue()
        context = mp.start_processes(
            _rank_main,
            args=(fn, world_size, args, str(store), results),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        try:
            outcomes = _collect(context.processes, results, timeout)
        finally:  # a rank still waiting in a collective that a failed rank never joined
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join()
    for rank in sorted(outcomes):
        kind, value = outcomes[rank]
        if kind == "spec":
            raise SpecFailure(f"rank {rank} of {world_size}: {value}")
        if kind == "todo":
            raise NotImplementedError(value)
        if kind == "error":
            raise RankError(f"rank {rank} of {world_size} raised:\n{value}")
    missing = [rank for rank in range(world_size) if rank not in outcomes]
    if missing:
        raise RankError(f"ranks {missing} of {world_size} died without a result")
    return [pickle.loads(outcomes[rank][1]) for rank in range(world_size)]


def _collect(processes: list, results: Any, timeout: float) -> dict[int, tuple[str, Any]]:
    """Each rank's (kind, value) until all have answered, one has failed, or all have exited."""
    outcomes: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(outcomes) < len(processes):
        while not results.empty():
            rank, kind, value = results.get()
            outcomes[rank] = (kind, value)
        if any(kind != "ok" for kind, _ in outcomes.values()):
            break
        if not any(p.is_alive() for p in processes) and results.empty():
            break
        if time.monotonic() > deadline:
            raise RankError(
                f"{len(processes)} ranks still running after {timeout:.0f} s (a collective "
                "that some rank never joined waits forever); all were killed"
            )
        time.sleep(0.02)
    return outcomes


def _rank_main(rank: int, fn: Callable, world_size: int, args: tuple, store: str, results) -> None:
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only, also in a sandbox
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    barrier = dist.barrier  # the real one, before logging wraps it
    for name in COLLECTIVES:  # so that collective_calls() answers here as on a simulated rank
        setattr(dist, name, _logged(name, getattr(dist, name)))
    try:  # pickled here by value: a tensor sent as shared memory dies with the rank that sent it
        results.put((rank, "ok", pickle.dumps(fn(rank, world_size, *args))))
    except SpecFailure as err:
        results.put((rank, "spec", str(err)))
    except NotImplementedError as err:
        results.put((rank, "todo", str(err)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc(limit=-8)))
    finally:  # no rank leaves, closing its connections, while another is still making them
        with contextlib.suppress(Exception):
            barrier()
        dist.destroy_process_group()


# -- the collectives each rank calls -------------------------------------------------------------

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter")
COLLECTIVES += ("reduce_scatter_tensor", "broadcast", "barrier")
_SENT = {  # the argument each collective sends, by torch.distributed's parameter names
    "all_reduce": "tensor",
    "all_gather": "tensor",
    "all_gather_into_tensor": "input_tensor",
    "reduce_scatter": "input_list",
    "reduce_scatter_tensor": "input",
    "broadcast": "tensor",
}
_this_rank = threading.local()


def collective_calls() -> list[tuple[str, int]]:
    """The collectives this rank has called so far, in order: (name, number of elements it sent).

    Answers on a simulated rank (a thread of `simulate_ranks`) and in `run_ranks`' processes alike.
    """
    return list(getattr(_this_rank, "calls", ()))


def _logged(name: str, collective: Callable) -> Callable:
    signature = inspect.signature(collective)

    def logged(*args: Any, **kwargs: Any) -> Any:
        sent = signature.bind(*args, **kwargs).arguments.get(_SENT.get(name, ""))
        tensors = sent if isinstance(sent, list | tuple) else [] if sent is None else [sent]
        calls = _this_rank.__dict__.setdefault("calls", [])
        calls.append((name, sum(t.numel() for t in tensors)))
        return collective(*args, **kwargs)

    return logged


# -- simulated ranks ------------------------------------------------------------------------------


class _Stranded(RankError):
    """A simulated rank waited in a collective that the other ranks never joined."""


class _World:
    """Where the simulated ranks meet: each collective returns once every rank has called one."""

    def __init__(self, world_size: int, timeout: float) -> None:
        self.world_size, self.timeout = world_size, timeout
        self.deadline = time.monotonic() + timeout
        self.cond = threading.Condition()
        self.slots, self.arrived, self.generation, self.met = [None] * world_size, 0, 0, []
        self.finished: set[int] = set()

    def exchange(self, name: str, value: Any) -> list:
        """Every rank's value, in rank order."""
        rank = _this_rank.rank
        key = (name, _shapes(value))
        with self.cond:
            self.slots[rank] = (key, value)
            self.arrived += 1
            generation = self.generation
            if self.arrived == self.world_size:
                self.met, self.slots = self.slots, [None] * self.world_size
                self.arrived, self.generation = 0, generation + 1
                self.cond.notify_all()
            else:
                self.cond.wait_for(
                    lambda: self.generation != generation or self.finished,
                    timeout=max(0.0, self.deadline - time.monotonic()),
                )
                if self.generation == generation:
                    why = (
                        f"ranks {sorted(self.finished)} finished or failed without it"
                        if self.finished
                        else f"no other rank joined it within {self.timeout:.0f} s"
                    )
                    raise _Stranded(
                        f"rank {rank} of {self.world_size} (simulated) waits in {name}: {why} "
                        "(every rank must make the same collective calls, in the same order)"
                    )
            met = self.met
        if any(k != key for k, _ in met):
            raise RankError(
                f"the ranks called different collectives at once, as (name, shapes) per rank: "
                f"{[k for k, _ in met]}; every rank must call the same ones, in the same order, "
                "with tensors of the same shapes"
            )
        return [v for _, v in met]

    def reduce(self, name: str, value: Any, op: Any) -> torch.Tensor:
        """The elementwise sum (or mean) over the ranks, added up in rank order: the same bits
        on every rank, every time."""
        if op not in (dist.ReduceOp.SUM, dist.ReduceOp.AVG):
            raise ValueError(f"torch.distributed.{name}: the simulation sums or averages only")
        parts = self.exchange(name, value)
        if isinstance(value, list):  # reduce_scatter: the sum of every rank's part for this rank
            parts = [p[_this_rank.rank] for p in parts]
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total / self.world_size if op == dist.ReduceOp.AVG else total

    # The fakes, with torch.distributed's signatures.

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        with torch.no_grad():
            tensor.copy_(self.reduce("all_reduce", tensor.detach().clone(), op))
        return _done(async_op)

    def all_gather(self, tensor_list, tensor, group=None, async_op=False):
        parts = self.exchange("all_gather", tensor.detach().clone())
        with torch.no_grad():
            for out, t in zip(tensor_list, parts, strict=True):
                out.copy_(t)
        return _done(async_op)

    def all_gather_into_tensor(self, output_tensor, input_tensor, group=None, async_op=False):
        parts = self.exchange("all_gather_into_tensor", input_tensor.detach().clone())
        with torch.no_grad():
            output_tensor.copy_(torch.cat(parts).view_as(output_tensor))
        return _done(async_op)

    def reduce_scatter(self, output, input_list, op=dist.ReduceOp.SUM, group=None, async_op=False):
        parts = [t.detach().clone() for t in input_list]
        with torch.no_grad():
            output.copy_(self.reduce("reduce_scatter", parts, op))
        return _done(async_op)

    def reduce_scatter_tensor(
        self, output, input, op=dist.ReduceOp.SUM, group=None, async_op=False
    ):
        total = self.reduce("reduce_scatter_tensor", input.detach().clone(), op)
        with torch.no_grad():
            output.copy_(total.chunk(self.world_size)[_this_rank.rank].view_as(output))
        return _done(async_op)

    def broadcast(self, tensor, src=None, group=None, async_op=False, group_src=None):
        src = group_src if src is None else src
        with torch.no_grad():
            tensor.copy_(self.exchange("broadcast", tensor.detach().clone())[src])
        return _done(async_op)

    def barrier(self, group=None, async_op=False, device_ids=None, timeout=None):
        self.exchange("barrier", None)
        return _done(async_op)

    def run(self, rank: int, fn: Callable, args: tuple, outcomes: dict) -> None:
        _this_rank.rank, _this_rank.calls = rank, []
        try:
            outcomes[rank] = ("ok", fn(rank, self.world_size, *args))
        except BaseException as err:
            outcomes[rank] = ("error", err)
        finally:
            with self.cond:
                self.finished.add(rank)
                self.cond.notify_all()


class _Work:
    """A finished collective, as `async_op=True` returns it (the simulation never overlaps)."""

    def wait(self, timeout: Any = None) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def _done(async_op: bool) -> _Work | None:
    return _Work() if async_op else None


def _shapes(value: Any) -> Any:
    if isinstance(value, list):
        return [tuple(t.shape) for t in value]
    return None if value is None else tuple(value.shape)


_one_simulation = threading.Lock()  # torch.distributed is faked for the whole process


def simulate_ranks(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = TIMEOUT
) -> list[Any]:
    """`fn(rank, world_size, *args)` on `world_size` threads of this process; their return values,
    in rank order.

    While they run, torch.distributed is faked: `is_initialized()` is True, `get_rank()` and
    `get_world_size()` answer for the calling thread, and the collectives (all_reduce, all_gather,
    all_gather_into_tensor, reduce_scatter, reduce_scatter_tensor, broadcast, barrier; op SUM or
    AVG) wait until every rank has called the same one, then reduce exactly, in rank order.
    A rank's `SpecFailure` or `NotImplementedError` is raised again here with the rank named, any
    other error as a `RankError` caused by it; a rank left waiting in a collective that the others
    never join fails when another rank finishes, or when `timeout` (all ranks together) passes.
    """
    world, outcomes = _World(world_size, timeout), {}
    fakes = {name: getattr(world, name) for name in COLLECTIVES}
    fakes = {name: _logged(name, fake) for name, fake in fakes.items()}
    fakes["is_initialized"] = lambda: True
    fakes["get_rank"] = lambda group=None: _this_rank.rank
    fakes["get_world_size"] = lambda group=None: world_size
    with _one_simulation:
        saved = {name: getattr(dist, name) for name in fakes}
        try:
            for name, fake in fakes.items():
                setattr(dist, name, fake)
            threads = [
                threading.Thread(target=world.run, args=(rank, fn, args, outcomes), daemon=True)
                for rank in range(world_size)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(max(0.0, world.deadline - time.monotonic()) + 1.0)
        finally:
            for name, original in saved.items():
                setattr(dist, name, original)
    errors = [(r, v) for r, (kind, v) in sorted(outcomes.items()) if kind == "error"]
    causes = [(r, v) for r, v in errors if not isinstance(v, _Stranded)]
    for rank, err in causes[:1]:  # the first rank that failed by itself, not one left waiting
        where = f"rank {rank} of {world_size} (simulated)"
        if isinstance(err, SpecFailure):
            raise SpecFailure(f"{where}: {err}") from err
        if isinstance(err, NotImplementedError):
            raise NotImplementedError(f"{where}: {err}") from err
        raise RankError(f"{where} raised {type(err).__name__}: {err}") from err
    running = [rank for rank in range(world_size) if rank not in outcomes]
    if running:
        raise RankError(
            f"simulated ranks {running} of {world_size} still running after {timeout:.0f} s"
            + (f"; {errors[0][1]}" if errors else "")
        )
    if errors:
        raise errors[0][1]
    return [outcomes[rank][1] for rank in range(world_size)]
