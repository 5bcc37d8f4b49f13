"""The shared comparison helpers that specs and hidden cases lean on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graders.checks import SpecFailure, assert_close, bernoulli_kl, chernoff_gap


def test_bernoulli_kl_matches_its_definition_and_its_edges():
    a, p = 0.3, 0.6
    assert math.isclose(bernoulli_kl(a, p), a * math.log(a / p) + (1 - a) * math.log(0.7 / 0.4))
    assert bernoulli_kl(p, p) == 0
    assert math.isclose(bernoulli_kl(0.0, p), math.log(1 / (1 - p)))
    assert math.isclose(bernoulli_kl(1.0, p), math.log(1 / p))


def test_chernoff_gap_flags_only_counts_too_far_for_chance():
    # 1000 fair coins at delta 1e-7: the threshold is 1000 KL(k/1000 || 0.5) > log(2e7) = 16.8,
    # crossed between 590 and 600 heads (KL(0.59 || 0.5) = 0.0163, KL(0.6 || 0.5) = 0.0201).
    assert not chernoff_gap(500, 1000, 0.5, 1, 1e-7)
    assert not chernoff_gap(590, 1000, 0.5, 1, 1e-7) and not chernoff_gap(410, 1000, 0.5, 1, 1e-7)
    assert chernoff_gap(600, 1000, 0.5, 1, 1e-7) and chernoff_gap(400, 1000, 0.5, 1, 1e-7)
    assert chernoff_gap(0, 1000, 0.5, 1, 1e-7) and chernoff_gap(1000, 1000, 0.5, 1, 1e-7)
    # More cells, a looser threshold for each.
    k = next(k for k in range(500, 1000) if chernoff_gap(k, 1000, 0.5, 1, 1e-7))
    assert not chernoff_gap(k, 1000, 0.5, 1000, 1e-7)


def test_assert_close_compares_booleans_and_integers_exactly():
    with pytest.raises(SpecFailure, match="is False where True was expected"):
        assert_close(np.array([True, False]), np.array([True, True]), what="mask")
    big = np.array([2**64 - 1], dtype=np.uint64)
    with pytest.raises(SpecFailure, match="18446744073709551614 where 18446744073709551615"):
        assert_close(big - np.uint64(1), big, what="hashes")
