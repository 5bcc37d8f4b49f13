"""`graders.distributed`: `run_ranks` (real processes in a gloo group) and `simulate_ranks` (threads
with torch.distributed faked) give results in rank order, report failures with the rank named, and
leave nothing behind, even when a collective never completes; `collective_calls` counts on both."""

from __future__ import annotations

import pickle
import threading
import time

import pytest
import torch
import torch.distributed as dist

from graders.checks import SpecFailure, fail
from graders.distributed import RankError, collective_calls, run_ranks, simulate_ranks
from graders.pytest_plugin import _reload


def summed_rank(rank: int, world_size: int, scale: float) -> float:
    t = torch.tensor([float(rank) * scale])
    dist.all_reduce(t)
    return t.item()


def own_tensor(rank: int, world_size: int) -> torch.Tensor:
    return torch.full((3,), float(rank))


def rank_one_fails(rank: int, world_size: int) -> None:
    if rank == 1:
        fail("rank one's verdict")
    dist.barrier()  # rank 0 waits here for a rank that never comes


def rank_one_never_comes(rank: int, world_size: int) -> None:
    if rank == 0:
        dist.all_reduce(torch.ones(1))
    else:
        time.sleep(600)


def not_started(rank: int, world_size: int) -> None:
    raise NotImplementedError("f: not implemented yet")


def loads_the_reference(rank: int, world_size: int, impl) -> str:
    return impl.__name__


def test_each_rank_returns_its_result_after_a_collective():
    assert run_ranks(summed_rank, 3, 2.0) == [6.0, 6.0, 6.0]


def test_tensors_come_back_by_value_after_their_rank_has_exited():
    first, second = run_ranks(own_tensor, 2)
    assert first.tolist() == [0.0] * 3 and second.tolist() == [1.0] * 3


def test_a_rank_s_verdict_is_raised_with_the_rank_named_and_the_others_are_killed():
    with pytest.raises(SpecFailure, match="rank 1 of 2: rank one's verdict"):
        run_ranks(rank_one_fails, 2, timeout=60)


def test_a_collective_that_never_completes_times_out():
    with pytest.raises(RankError, match="still running after 5 s"):
        run_ranks(rank_one_never_comes, 2, timeout=5)


def test_a_stub_stays_not_implemented():
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        run_ranks(not_started, 2)


def test_the_impl_fixture_travels_by_what_loaded_it():
    impl = _reload("attention", "solutions", None)
    assert pickle.loads(pickle.dumps(impl))._loaded_by == ("attention", "solutions", None)
    assert run_ranks(loads_the_reference, 2, impl) == ["ladder.solutions.attention"] * 2


def every_collective(rank: int, world_size: int) -> dict:
    """Each simulated collective once; the values make a wrong order or a wrong rank show."""
    t = torch.tensor([[1e16, 1.0, -1e16][rank], 0.1 * rank], dtype=torch.float64)
    dist.all_reduce(t)
    mean = torch.tensor([float(rank)])
    dist.all_reduce(mean, op=dist.ReduceOp.AVG)
    parts = [torch.empty(2) for _ in range(world_size)]
    dist.all_gather(parts, torch.tensor([rank, -rank], dtype=torch.float32))
    flat = torch.empty(world_size)
    dist.all_gather_into_tensor(flat, torch.tensor([10.0 * rank]))
    mine = torch.empty(1)
    dist.reduce_scatter(mine, [torch.tensor([rank + 10.0 * k]) for k in range(world_size)])
    mine2 = torch.empty(2)
    dist.reduce_scatter_tensor(mine2, torch.arange(2.0 * world_size) * (rank + 1))
    b = torch.tensor([float(rank)])
    dist.broadcast(b, src=world_size - 1)
    dist.barrier()
    return {
        "is_initialized": dist.is_initialized(),
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "all_reduce": t.tolist(),
        "avg": mean.item(),
        "all_gather": torch.cat(parts).tolist(),
        "into_tensor": flat.tolist(),
        "reduce_scatter": mine.item(),
        "reduce_scatter_tensor": mine2.tolist(),
        "broadcast": b.item(),
        "calls": collective_calls(),
    }


def test_simulated_ranks_return_in_rank_order_with_exact_collectives():
    out = simulate_ranks(every_collective, 3)
    triangle = sum(k + 1 for k in range(3))  # sum over ranks of (rank + 1)
    for rank, got in enumerate(out):
        assert (got["is_initialized"], got["rank"], got["world_size"]) == (True, rank, 3)
        # in rank order (1e16 + 1) - 1e16 rounds to 0, where 1e16 + (1 - 1e16) would give 2
        assert got["all_reduce"] == [0.0, (0.0 + 0.1) + 0.2]
        assert got["avg"] == 1.0
        assert got["all_gather"] == [0.0, 0.0, 1.0, -1.0, 2.0, -2.0]
        assert got["into_tensor"] == [0.0, 10.0, 20.0]
        assert got["reduce_scatter"] == 3 + 30.0 * rank
        assert got["reduce_scatter_tensor"] == [2.0 * rank * triangle, (2.0 * rank + 1) * triangle]
        assert got["broadcast"] == 2.0
    assert [name for name, _ in out[0]["calls"]] == [
        "all_reduce", "all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
        "reduce_scatter_tensor", "broadcast", "barrier",
    ]  # fmt: skip
    assert [n for _, n in out[0]["calls"]] == [2, 1, 2, 1, 3, 6, 1, 0]  # elements each rank sent
    assert dist.is_initialized() is False and collective_calls() == []  # all restored afterwards


def test_a_simulated_rank_s_verdict_is_raised_with_the_rank_named():
    with pytest.raises(SpecFailure, match=r"rank 1 of 2 \(simulated\): rank one's verdict"):
        simulate_ranks(rank_one_fails, 2, timeout=10)


def test_a_simulated_rank_s_error_names_the_rank_and_keeps_the_cause():
    def rank_two_divides_by_zero(rank, world_size):
        dist.barrier()
        return 1 / (rank - 2)

    with pytest.raises(RankError, match=r"rank 2 of 3 \(simulated\) raised ZeroDivisionError"):
        simulate_ranks(rank_two_divides_by_zero, 3)
    with pytest.raises(
        NotImplementedError, match=r"rank 0 of 2 \(simulated\): f: not implemented yet"
    ):
        simulate_ranks(not_started, 2)


def test_a_simulated_collective_that_never_completes_times_out():
    release = threading.Event()

    def rank_one_is_busy(rank, world_size):
        if rank == 0:
            dist.all_reduce(torch.ones(1))
        else:
            release.wait(30)

    start = time.monotonic()
    try:
        with pytest.raises(RankError, match=r"simulated ranks \[1\] of 2 still running after 2 s"):
            simulate_ranks(rank_one_is_busy, 2, timeout=2)
    finally:
        release.set()
    assert time.monotonic() - start < 10


def test_a_simulated_rank_left_alone_in_a_collective_fails_at_once():
    def rank_one_skips_it(rank, world_size):
        if rank == 0:
            dist.all_reduce(torch.ones(1))

    start = time.monotonic()
    with pytest.raises(
        RankError, match=r"rank 0 of 2 \(simulated\) waits in all_reduce: ranks \[1\]"
    ):
        simulate_ranks(rank_one_skips_it, 2, timeout=60)
    assert time.monotonic() - start < 10


def test_simulated_ranks_calling_different_collectives_fail():
    def mismatched(rank, world_size):
        if rank == 0:
            dist.all_reduce(torch.ones(3))
        else:
            dist.all_gather([torch.empty(3), torch.empty(3)], torch.ones(3))

    with pytest.raises(RankError, match="different collectives at once"):
        simulate_ranks(mismatched, 2)


def counted_on_a_real_rank(rank: int, world_size: int) -> list:
    dist.all_reduce(torch.ones(4))
    dist.broadcast(torch.ones(2), src=0)
    return collective_calls()


def test_real_ranks_count_their_collectives_too():
    assert run_ranks(counted_on_a_real_rank, 2) == [[("all_reduce", 4), ("broadcast", 2)]] * 2
