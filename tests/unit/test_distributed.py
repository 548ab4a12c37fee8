"""Rank helpers without a process group: one process, `alone()`, the global batch split."""

from __future__ import annotations

import pytest
import torch

from recam.engine import distributed
from recam.errors import RecamInputError


def test_alone_hides_the_world_and_restores_it(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (4, 2, False)
    with distributed.alone():
        assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
        assert not distributed.is_distributed()
        with distributed.alone():  # nested blocks keep it hidden
            assert distributed.world_size() == 1
        assert distributed.world_size() == 1
        value = torch.tensor(3.0)
        assert distributed.mean_over_ranks(value) is value
    assert (distributed.world_size(), distributed.rank()) == (4, 2)


def test_alone_restores_after_an_error(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError), distributed.alone():
        raise ValueError("stage failed")
    assert distributed.world_size() == 2


def test_global_batch_splits_over_ranks_or_names_the_problem(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.per_rank_batch(8) == 4
    with pytest.raises(RecamInputError, match="batch_size=5 does not split over 2"):
        distributed.per_rank_batch(5)
