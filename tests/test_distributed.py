"""`graders.distributed.run_ranks`: real processes in a gloo group, results in rank order, failures
reported with the rank named, and no process left behind, even when a collective never completes."""

from __future__ import annotations

import pickle
import time

import pytest
import torch
import torch.distributed as dist

from graders.checks import SpecFailure, fail
from graders.distributed import RankError, run_ranks
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
