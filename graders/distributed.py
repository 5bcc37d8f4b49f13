"""Run a function on several ranks for real: processes started by `torch.multiprocessing`'s spawn,
joined in one gloo process group on loopback, and always cleaned up.

Specs of the distributed exercises call `run_ranks(fn, world_size, impl, ...)`: `fn` is a top-level
function of the spec file, called as `fn(rank, world_size, *args)` in each process after
`torch.distributed.init_process_group("gloo", ...)`. The `impl` fixture may be passed among the
arguments: it travels as the name of what it loaded and is loaded again in each process.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    import torch.distributed as dist

    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only, also in a sandbox
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:  # pickled here by value: a tensor sent as shared memory dies with the rank that sent it
        results.put((rank, "ok", pickle.dumps(fn(rank, world_size, *args))))
    except SpecFailure as err:
        results.put((rank, "spec", str(err)))
    except NotImplementedError as err:
        results.put((rank, "todo", str(err)))
    except BaseException:
        results.put((rank, "error", traceback.format_exc(limit=-8)))
    finally:
        dist.destroy_process_group()
