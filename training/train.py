"""``slerir train``'s loop: the two training phases of SLER-IR (§3.2, §4.1, where they are called stages), on
one CPU, one GPU or many (torchrun).

Phase 1 (probabilistic routing): ``model.routing = "soft"``, loss ``L1 + α·L_HC`` (Eq. 9-10), expert centres
moved by uniform clustering after every step, per-task mean routing vectors kept as the model's task
prototypes. Phase 2 (deterministic routing): starts from phase-1 weights, freezes the extractors, the router
and the centres, routes hard and trains the rest with L1 only (``training/phase.py``).

Run hygiene: the resolved config is written into the run folder; every ``checkpoint_every`` steps the whole
training state (model, optimiser, scheduler, RNG states, data position) is written atomically to
``checkpoint.pt``, so a run killed at any moment loses at most one interval and ``--resume`` continues it
bit-exactly (on a CPU; on a GPU up to the nondeterminism of its kernels); at the end the model is exported to
``model.safetensors``. Rank 0 alone logs (tqdm, CSV, TensorBoard) and writes files.

Multi-GPU (``torchrun --nproc_per_node 4 -m slerir_core.cli train --config compact-synthetic``; the command
line is ``training/commands.py``): each rank reads its own block of the deterministic data stream; DDP averages
the gradients; the centre update sees the embeddings of all ranks (``all_gather``) with the same random
generator, so the centres stay identical everywhere.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from slerir_core.atomic import remove_stale_temporaries
from slerir_core.checkpoint import save_weights
from slerir_core.device import hardware_name, uses_bf16
from slerir_core.model import SLERIR
from training.capture import CapturedStep
from training.config import ExperimentConfig, TrainConfig, convert_old_keys
from training.datasets import StreamSampler, TrainStream
from training.device_stream import DeviceStream
from training.evaluate import EvalCase
from training.expert_updates import ExpertUpdates
from training.phase import (
    build_optimizer,
    build_scheduler,
    configure_phase,
    refit_prototypes,
    route_paths,
    routing_targets,
)
from training.run_log import RunLog, log_validation
from training.runtime import Runtime, mean_over_ranks, no_buffer_sync
from training.state import (
    CHECKPOINT,
    STATE_FORMAT,
    TrainError,
    as_history,
    load_init,
    load_state,
    new_history,
    phase_of,
    rng_state,
    save_state,
    set_rng_state,
    state_digest,
)
from training.step import Batch, TrainStep, move_routing_state
from training.validation import timed_validation, validate, validation_cases

WEIGHTS = "model.safetensors"


@dataclass
class Job:
    """A resolved training job: what to run, where, for how long."""

    exp: ExperimentConfig
    phase: int
    out: Path
    total_steps: int
    steps_per_epoch: int
    stop_at: int
    init: str | None
    resume: bool
    time_budget: float | None = None
    started: float = field(default_factory=time.monotonic)


def build_job(
    exp: ExperimentConfig,
    phase: int,
    out: Path,
    dataset: TrainStream,
    world_size: int,
    stop_at: int | None,
    init: str | None,
    resume: bool,
    time_budget: float | None = None,
) -> Job:
    """Work out the epoch length and the number of steps of a phase.

    Raises:
        TrainError: phase 2 without initial weights.
    """
    phase_cfg = exp.train.phase_config(phase)
    spe = exp.train.steps_per_epoch or max(1, len(dataset) // (phase_cfg.batch_size * world_size))
    total = phase_cfg.steps if phase_cfg.steps is not None else phase_cfg.epochs * spe
    init = init or phase_cfg.init
    if phase == 2 and init is None:
        raise TrainError("phase 2 starts from phase-1 weights: pass --init PATH or set train.phase2.init")
    stop = total if stop_at is None else min(stop_at, total)
    return Job(exp, phase, out, total, spe, stop, init, resume, time_budget)


def batches(exp: ExperimentConfig, dataset: TrainStream, sampler: StreamSampler, rt: Runtime) -> Iterator[Batch]:
    """The training batches on the device, from the sampler's position on: made there (``data.on_device``: a
    bank of clean crops degraded by batched torch ops), or made by the CPU stream's workers and copied."""
    if exp.data.on_device:
        stream = DeviceStream(exp.data, exp.train.seed, rt.device, sampler)
        for step in itertools.count(sampler.start_step):
            yield stream.batch(step)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=exp.data.workers, pin_memory=rt.device.type == "cuda"
    )
    for degraded, clean, labels in loader:
        yield (
            degraded.to(rt.device, non_blocking=True),
            clean.to(rt.device, non_blocking=True),
            labels.to(rt.device, non_blocking=True),
        )


@dataclass
class Trainee:
    """The model and its optimisation state, as built (or resumed) for a run."""

    model: SLERIR
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    centre_gen: torch.Generator
    start: int = 0
    history: dict[str, Any] = field(default_factory=new_history)
    route_targets: torch.Tensor | None = None  # (T, K), fixed once every task has a prototype
    updates: ExpertUpdates = field(init=False)  # the optimiser's step, leaving untrained experts as they were

    def __post_init__(self) -> None:
        self.updates = ExpertUpdates(self.model, self.optimizer)


def build_trainee(job: Job, rt: Runtime, resume_state: dict[str, Any] | None) -> Trainee:
    """Build the model for the job's phase, and load the training state when resuming.

    The seed is set before construction so that every rank builds identical initial weights.
    """
    tcfg, pcfg = job.exp.train, job.exp.train.phase_config(job.phase)
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    model = SLERIR(job.exp.model)
    history = new_history()
    if job.init is not None and resume_state is None:
        history = load_init(model, job.init)
    model.to(rt.device)
    configure_phase(model, job.phase)
    optimizer = build_optimizer(model, tcfg.betas, tcfg.weight_decay, pcfg, capturable=capturing(tcfg, rt))
    trainee = Trainee(
        model,
        optimizer,
        build_scheduler(optimizer, job.total_steps, pcfg),
        torch.Generator().manual_seed(tcfg.seed),  # same on every rank: identical centre updates
        history=history,
    )
    if resume_state is not None:
        resume_trainee(trainee, resume_state, job, rt)
    for key, value in (("hardware", hardware_name(rt.device)), ("run_dates", time.strftime("%Y-%m-%d", time.gmtime()))):
        if value not in trainee.history[key]:
            trainee.history[key].append(value)
    return trainee


def resume_trainee(trainee: Trainee, state: dict[str, Any], job: Job, rt: Runtime) -> None:
    """Load model, optimiser, scheduler, RNG states and data position from a training state."""
    phase = phase_of(state)
    if phase != job.phase:
        raise TrainError(f"{job.out / CHECKPOINT} is a phase-{phase} run; this is phase {job.phase}")
    trainee.model.load_state_dict(state["model"])
    try:
        trainee.optimizer.load_state_dict(state["optimizer"])
    except ValueError as err:  # e.g. a state from an earlier version, whose experts' tensors were parameters apiece
        how = f"start a new run (another --out) from its weights with --init {job.out / CHECKPOINT}"
        raise TrainError(
            f"{job.out / CHECKPOINT}: its optimiser state does not fit this model ({err}); {how}"
        ) from None
    trainee.scheduler.load_state_dict(state["scheduler"])
    trainee.centre_gen.set_state(state["rng"]["centres"])
    set_rng_state(state["rng"])
    trainee.start = int(state["data_position"])
    trainee.history = as_history(state.get("history", {}))
    if state.get("route_targets") is not None:
        trainee.route_targets = state["route_targets"].to(rt.device)
    if convert_old_keys(state["config"]) != job.exp.to_dict() and rt.primary:
        warning = f"warning: {job.out / CHECKPOINT} was written with another config; continuing with the new one"
        print(warning, file=sys.stderr)


def train(job: Job, rt: Runtime, dataset: TrainStream) -> dict[str, Any]:
    """Run (or resume) one training phase; returns the run summary (also written to ``summary.json``).

    Args:
        job: what to train.
        rt: this process's rank and device.
        dataset: the training data (``build_train_dataset``).
    """
    exp, out = job.exp, job.out
    checkpoint = out / CHECKPOINT
    if checkpoint.is_file() and not job.resume:  # checked on every rank, so none is left waiting
        raise TrainError(f"{out} already holds a training run: pass --resume, or choose another --out")
    resume_state = load_state(checkpoint) if job.resume and checkpoint.is_file() else None
    if rt.primary:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out):
            print(f"removed {stale}, a partial file of a run that was killed", file=sys.stderr)
        (out / "config.yaml").write_text(exp.to_yaml())
    trainee = build_trainee(job, rt, resume_state)
    model = trainee.model
    net: nn.Module = model
    if rt.distributed:
        # Soft routing runs unchosen experts without autograd and hard routing skips them: some parameters
        # get no gradient in a step. Buffers (centres, prototypes) are kept identical by construction.
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            find_unused_parameters=True,
            **no_buffer_sync(),
        )
    batch_size = exp.train.phase_config(job.phase).batch_size
    sampler = StreamSampler(batch_size, job.steps_per_epoch, rt.rank, rt.world_size, trainee.start)
    val_cases = validation_cases(exp) if rt.primary else []
    log = RunLog(out, rt.primary, trainee.start)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.print(
        f"[{exp.name}] phase {job.phase}: steps {trainee.start}->{job.stop_at} of {job.total_steps}, "
        f"{job.steps_per_epoch} steps/epoch, batch {batch_size}×{rt.world_size}, device {rt.device}, "
        f"torch {torch.__version__}, trainable {n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters"
    )
    summary = _loop(job, rt, trainee, net, batches(exp, dataset, sampler, rt), val_cases, log)
    if summary["finished"] or summary["out_of_time"]:
        summary.update(_finish(job, rt, trainee, dataset, sampler, val_cases, log))
    if rt.distributed:
        digests: list[Any] = [None] * rt.world_size
        dist.all_gather_object(digests, state_digest(model))
        summary["rank_digests"] = digests
    if rt.primary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.close()
    return summary


def _finish(
    job: Job,
    rt: Runtime,
    trainee: Trainee,
    dataset: TrainStream,
    sampler: StreamSampler,
    val_cases: list[EvalCase],
    log: RunLog,
) -> dict[str, Any]:
    """End of a phase or of a time budget: final task prototypes (phase 1), the safetensors export with the
    training record, and a last validation table (after the checkpoint, which keeps the EMA prototypes, so
    that a resumed run continues exactly)."""
    model = trainee.model
    if job.phase == 1:
        refit_prototypes(model, dataset, sampler, job.total_steps, job.exp.train.prototype_batches, rt)
    if not rt.primary:
        return {}
    meta = {
        "phase": str(job.phase),
        "steps": str(trainee.history["steps"]),
        "run": job.exp.name,
        "data": f"{job.exp.data.type}: {', '.join(job.exp.data.tasks)}",
        "history": json.dumps(trainee.history),
    }
    save_weights(model, job.out / WEIGHTS, **meta)
    out: dict[str, Any] = {"weights": str(job.out / WEIGHTS), "history": trainee.history}
    if val_cases:
        out["validation"] = validate(model, val_cases, rt.device)
        log_validation(out["validation"], trainee.history["steps"], log, final=True)
    return out


def _loop(
    job: Job,
    rt: Runtime,
    trainee: Trainee,
    net: nn.Module,
    stream: Iterator[Batch],
    val_cases: list[EvalCase],
    log: RunLog,
) -> dict[str, Any]:
    from tqdm import tqdm

    exp, tcfg, pcfg = job.exp, job.exp.train, job.exp.train.phase_config(job.phase)
    start, model, history = trainee.start, trainee.model, trainee.history
    crops_per_step = pcfg.batch_size * rt.world_size
    # GPU-hours count every GPU; CPU ranks share one machine, whose hours are wall-clock hours.
    hours_key, devices = ("gpu", rt.world_size) if rt.device.type == "cuda" else ("cpu", 1)
    # Time kept back from a budget for what follows the last step: a validation and the export, measured.
    reserve = timed_validation(model, val_cases, start, rt, log, job.phase) if job.time_budget is not None else 0.0
    train_step = TrainStep(
        model,
        net,
        trainee.updates,
        job.phase,
        rt,
        uses_bf16(tcfg.precision, rt.device),
        torch.tensor(exp.data.route_group_index(), device=rt.device),
        tcfg.grad_clip,
        trainee.route_targets,
    )
    captured = CapturedStep(train_step, capture=capturing(tcfg, rt))
    # The bar only on a terminal (in a file its redraws bury the other lines; a line per logged step instead).
    on_terminal = sys.stderr.isatty()
    quiet = not rt.primary or not on_terminal
    bar = tqdm(total=job.stop_at, initial=start, disable=quiet, dynamic_ncols=True, desc=f"phase {job.phase}")
    logs: dict[str, float] = {}
    step, out_of_time, logged_step = start, False, start
    tick = logged_at = time.perf_counter()
    while step < job.stop_at and not out_of_time:
        batch = next(stream)
        routing_fixed = job.phase == 2 or exp.model.route_alpha == 0 or trainee.route_targets is not None
        if not routing_fixed:  # the first steps of phase 1, until every task has a prototype: reads back
            targets, fixed = routing_targets(model, None, exp.data.route_group_index())
            train_step.route_targets = targets
            if fixed:
                trainee.route_targets = targets
        # A step is recorded for replay once what it computes stops changing: from the start in phase 2, once
        # the routing targets are fixed in phase 1.
        out = captured(batch) if routing_fixed else train_step(batch)
        lr = trainee.scheduler.get_last_lr()[0]
        if isinstance(lr, torch.Tensor):  # a recorded step's rate, which the scheduler is about to overwrite
            lr = lr.clone()
        trainee.scheduler.step()
        if job.phase == 1:
            move_routing_state(
                model,
                out["embeddings"],
                batch[2],
                trainee.route_targets,
                trainee.centre_gen,
                tcfg.prototype_momentum,
                rt,
            )
        step += 1
        now = time.perf_counter()
        seconds, tick = max(now - tick, 1e-9), now
        history["steps"] += 1
        history["crops"] += crops_per_step
        history["hours"][hours_key] = history["hours"].get(hours_key, 0.0) + seconds * devices / 3600
        bar.update(1)
        if step % job.steps_per_epoch == 0 and rt.primary and val_cases:
            reserve = timed_validation(model, val_cases, step, rt, log, job.phase)
        if job.time_budget is not None:
            out_of_time = time.monotonic() + reserve + 2 * seconds > job.started + job.time_budget
            if rt.distributed:  # every rank must stop at the same step
                flag = torch.tensor(float(out_of_time), device=rt.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag)
        # The first step is logged too: its row's time is the warm-up (first compiles, the recording).
        if step % tcfg.log_every == 0 or step in (start + 1, job.stop_at) or out_of_time:
            # The one read back of the interval: the device finishes its queue here, so the interval's time
            # is its true throughput.
            logs = read_logs(out, model, job.phase, rt)
            now = time.perf_counter()
            logs["lr"] = float(lr)
            logs["img_per_s"] = crops_per_step * (step - logged_step) / max(now - logged_at, 1e-9)
            logged_step, logged_at = step, now
            bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{logs['img_per_s']:.1f}")
            if not on_terminal:
                log.print(
                    f"phase {job.phase} step {step}/{job.stop_at}: loss {logs['loss']:.4f}, lr {logs['lr']:.2e}, "
                    f"{logs['img_per_s']:.1f} img/s"
                )
            log.row("train_log", {"step": step, "epoch": step / job.steps_per_epoch, **logs}, step)
        if step % tcfg.checkpoint_every == 0 or step == job.stop_at or out_of_time:
            _checkpoint(job, rt, trainee, step)
    bar.close()
    if out_of_time:
        log.print(f"time budget reached: stopped at step {step} of {job.total_steps} (continue with --resume)")
    return {
        "name": exp.name,
        "phase": job.phase,
        "step": step,
        "total_steps": job.total_steps,
        "finished": step == job.total_steps,
        "out_of_time": out_of_time and step < job.total_steps,
        "captured": captured.captured,
        "last": logs,
        "route_targets": route_paths(exp.data.tasks, trainee.route_targets),
    }


def capturing(tcfg: TrainConfig, rt: Runtime) -> bool:
    """Whether steps are recorded and replayed as CUDA graphs: on one CUDA device, when the config asks.

    Several ranks all-reduce inside the step (DDP's buckets, the contrastive loss's all-gather), which a
    recorded graph would have to capture across processes: they run eagerly.
    """
    return tcfg.cuda_graphs and rt.device.type == "cuda" and not rt.distributed


def read_logs(out: dict[str, torch.Tensor], model: SLERIR, phase: int, rt: Runtime) -> dict[str, float]:
    """The step's loss terms as numbers, averaged over ranks, and in phase 1 where the centres stand."""
    terms = {name: value for name, value in out.items() if name != "embeddings"}
    values = torch.stack([value.float() for value in terms.values()]).tolist()
    logs = mean_over_ranks(dict(zip(terms, values, strict=True)), rt)
    if phase == 1:
        logs.update(model.router.centre_stats())
    return logs


def _checkpoint(job: Job, rt: Runtime, trainee: Trainee, step: int) -> None:
    if not rt.primary:
        return
    rng = rng_state()
    rng["centres"] = trainee.centre_gen.get_state()
    save_state(
        job.out / CHECKPOINT,
        {
            "format": STATE_FORMAT,
            "phase": job.phase,
            "step": step,
            "data_position": step,
            "total_steps": job.total_steps,
            "model": trainee.model.state_dict(),
            "optimizer": trainee.optimizer.state_dict(),
            "scheduler": trainee.scheduler.state_dict(),
            "rng": rng,
            "config": job.exp.to_dict(),
            "history": trainee.history,
            "route_targets": trainee.route_targets,
        },
    )
