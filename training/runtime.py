"""The distributed runtime of ``slerir train``: which rank and device a process is, and the collectives
the step needs.

The collectives return their input unchanged on one process, so the training step reads the same with or
without torchrun. The single-threaded CPU ranks (``train.cpu_processes``) are spawned here too, as gloo ranks
like torchrun's: at small sizes they train faster than one process running as many threads.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from slerir_core.device import resolve_device
from training.config import ExperimentConfig
from training.state import TrainError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs and which part of the job it does.

    Attributes:
        rank: global rank (0 without torchrun).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: this process's device.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def primary(self) -> bool:
        """Whether this process logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there are several processes."""
        return self.world_size > 1


def rank_device(name: str, local_rank: int) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` if CUDA is available, else CPU; any other name as the Restorer checks it.

    Raises:
        TrainError: a device this machine does not have.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        return resolve_device(name)
    except ValueError as err:
        raise TrainError(str(err)) from None


def world_size() -> int:
    """Processes of the run: ``WORLD_SIZE`` as torchrun (or ``spawn_cpu_ranks``) sets it, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_runtime(device_name: str) -> Runtime:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU) and pick the device."""
    world = world_size()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Runtime(rank, world, local_rank, device)


def all_gather_cat(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Concatenate ``t`` from every rank in rank order (``t`` itself on one process)."""
    if not rt.distributed:
        return t
    parts = [torch.empty_like(t) for _ in range(rt.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def with_other_ranks(f: torch.Tensor, labels: torch.Tensor, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's routing vectors and labels together with every other rank's (those without gradients).

    A contrastive loss over the whole step's batch sees every task of the step, not only the one or two of
    a small per-process batch; each rank's loss back-propagates through its own vectors only, and DDP sums
    the ranks' gradients.
    """
    if not rt.distributed:
        return f, labels
    parts = list(all_gather_cat(f.detach(), rt).chunk(rt.world_size))
    parts[rt.rank] = f
    return torch.cat(parts), all_gather_cat(labels, rt)


def mean_over_ranks(values: dict[str, float], rt: Runtime) -> dict[str, float]:
    """Average scalar logs over ranks, so rank 0 logs the whole batch's numbers."""
    if not rt.distributed or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / rt.world_size).tolist(), strict=True))


def no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that stops the per-forward buffer broadcast (renamed in recent torch versions)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def cpu_process_count(exp: ExperimentConfig) -> int:
    """How many single-threaded CPU processes to start: 1 under torchrun, on a GPU, or when not asked for."""
    if "WORLD_SIZE" in os.environ or rank_device(exp.train.device, 0).type != "cpu":
        return 1
    return exp.train.cpu_processes or len(os.sched_getaffinity(0))


def _end_with_parent() -> None:
    """On Linux, have the kernel end this rank when the process that started it dies, however it dies:
    an orphaned rank would otherwise keep training and writing into the run folder."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def spawn_cpu_ranks(entry: Callable[[argparse.Namespace], int], args: argparse.Namespace, procs: int) -> int:
    """Run the command ``entry(args)`` as ``procs`` gloo ranks on this machine, one torch thread each; the first
    failing rank's exit code (its error is already printed) or 0."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free port for the rendezvous, on loopback only
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        mp.spawn(_cpu_rank, args=(procs, port, entry, args), nprocs=procs, join=True)
    except mp.ProcessExitedException as err:
        return err.exit_code or 1
    return 0


def _cpu_rank(
    rank: int, procs: int, port: int, entry: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> None:
    # The entry comes as an argument, not an import of training.commands: that module imports this one.
    _end_with_parent()
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    code = entry(args)
    if code:
        sys.exit(code)
