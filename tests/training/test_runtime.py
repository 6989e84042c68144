"""The distributed runtime: devices per rank, the collectives on one process and on two gloo ranks, and how
many CPU ranks a run starts."""

from __future__ import annotations

import argparse
import inspect
import json
import os

import pytest
import torch
from torch import nn

from training.config import load_experiment, with_overrides
from training.runtime import (
    Runtime,
    all_gather_cat,
    cpu_process_count,
    init_runtime,
    mean_over_ranks,
    no_buffer_sync,
    rank_device,
    spawn_cpu_ranks,
    with_other_ranks,
)
from training.state import TrainError


def test_one_process_is_the_primary_and_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rt = init_runtime("cpu")
    assert rt == Runtime() and rt.primary and not rt.distributed
    assert not Runtime(rank=1, world_size=2).primary and Runtime(rank=1, world_size=2).distributed


def test_rank_devices():
    expected = torch.device("cuda:1") if torch.cuda.is_available() else torch.device("cpu")
    assert rank_device("auto", 1) == expected
    assert rank_device("cpu", 1) == torch.device("cpu")
    for name in ("nonsense", *(() if torch.cuda.is_available() else ("cuda:0",))):
        with pytest.raises(TrainError, match=name.split(":")[0]):
            rank_device(name, 0)


def test_collectives_on_one_process_give_back_their_input():
    rt = Runtime()
    f, labels = torch.randn(4, 2, requires_grad=True), torch.arange(4)
    assert all_gather_cat(f, rt) is f
    assert with_other_ranks(f, labels, rt) == (f, labels)
    assert mean_over_ranks({"loss": 0.5}, rt) == {"loss": 0.5}


def test_the_buffer_keyword_is_one_ddp_takes():
    (key, value), *rest = no_buffer_sync().items()
    assert not rest and value is False
    assert key in inspect.signature(nn.parallel.DistributedDataParallel).parameters


def test_cpu_process_count(monkeypatch):
    exp = load_experiment("tiny-synthetic")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cpu_process_count(exp) == 1  # the config's own setting
    assert cpu_process_count(with_overrides(exp, **{"train.cpu_processes": 3})) == 3
    assert cpu_process_count(with_overrides(exp, **{"train.cpu_processes": 0})) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun the ranks are torchrun's
    assert cpu_process_count(with_overrides(exp, **{"train.cpu_processes": 3})) == 1


def _two_rank_entry(args: argparse.Namespace) -> int:
    """Each rank gathers its rank-valued rows and writes what the collectives gave it; rank 1 then fails."""
    rt = init_runtime("cpu")
    f = torch.full((2, 1), float(rt.rank), requires_grad=True)
    mixed, labels = with_other_ranks(f, torch.tensor([rt.rank, rt.rank]), rt)
    mixed.sum().backward()
    result = {
        "threads": torch.get_num_threads(),
        "gathered": all_gather_cat(f.detach(), rt).flatten().tolist(),
        "labels": labels.tolist(),
        "grad": f.grad.flatten().tolist(),  # only this rank's own rows carry a gradient
        "mean": mean_over_ranks({"v": float(rt.rank)}, rt),
    }
    (args.out / f"rank{rt.rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()
    return 3 if rt.rank == 1 else 0


# Two spawned interpreters importing torch: about half a minute on two busy cores.
@pytest.mark.slow
def test_two_cpu_ranks_share_their_rows_and_report_a_failing_rank(tmp_path):
    assert spawn_cpu_ranks(_two_rank_entry, argparse.Namespace(out=tmp_path), 2) == 3
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["threads"] == 1
        assert result["gathered"] == [0.0, 0.0, 1.0, 1.0] and result["labels"] == [0, 0, 1, 1]
        assert result["grad"] == [1.0, 1.0] and result["mean"] == {"v": 0.5}
