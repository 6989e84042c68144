"""``slerir train``: the two training stages of SLER-IR (§3.2, §4.1), on one CPU, one GPU or many (torchrun).

Stage 1 (probabilistic routing): ``model.routing = "soft"``, loss ``L1 + α·L_HC`` (Eq. 9-10), expert centres
moved by uniform clustering after every step, per-task mean routing vectors kept as the model's task
prototypes. Stage 2 (deterministic routing): starts from stage-1 weights, freezes the extractors, the router
and the centres, routes hard and trains the rest with L1 only.

Run hygiene: the resolved config is written into the run folder; every ``checkpoint_every`` steps the whole
training state (model, optimiser, scheduler, RNG states, data position) is written atomically to
``checkpoint.pt``, so a run killed at any moment loses at most one interval and ``--resume`` continues it
bit-exactly (on a CPU; on a GPU up to the nondeterminism of its kernels); at the end the model is exported to
``model.safetensors``. Rank 0 alone logs (tqdm, CSV,
TensorBoard) and writes files.

Multi-GPU::

    torchrun --nproc_per_node 4 -m slerir_core.cli train --config compact-synthetic

Each rank reads its own block of the deterministic data stream; DDP averages the gradients; the centre
update sees the embeddings of all ranks (``all_gather``) with the same random generator, so the centres stay
identical everywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from slerir_core.atomic import remove_stale_temporaries
from slerir_core.checkpoint import save_weights
from slerir_core.device import hardware_name, native_bf16
from slerir_core.losses import hyperspherical_contrastive_loss, restoration_loss, routing_consistency_loss
from slerir_core.model import SLERIR
from slerir_core.model.router import target_anchors
from training.config import ExperimentConfig, StageConfig, load_experiment, with_overrides
from training.datasets import StreamSampler, TrainStream, build_train_dataset
from training.run_log import RunLog, log_validation
from training.runtime import (
    Runtime,
    all_gather_cat,
    cpu_process_count,
    init_runtime,
    mean_over_ranks,
    no_buffer_sync,
    spawn_cpu_ranks,
    with_other_ranks,
)
from training.state import (
    CHECKPOINT,
    STATE_FORMAT,
    TrainError,
    capture_rng,
    load_init,
    load_state,
    new_history,
    recorded_stage,
    restore_rng,
    save_state,
    state_digest,
)

WEIGHTS = "model.safetensors"


# -- model and optimisation ----------------------------------------------------------------------------------


def configure_stage(model: SLERIR, stage: int) -> None:
    """Soft routing and everything trainable (stage 1), or hard routing with the routing parts frozen (stage 2)."""
    model.routing = "soft" if stage == 1 else "hard"
    for module in model.routing_modules():
        module.requires_grad_(stage == 1)
    set_train_mode(model, stage)


def set_train_mode(model: SLERIR, stage: int) -> None:
    """Training mode, except the frozen routing modules in stage 2 (kept in eval mode)."""
    model.train()
    if stage == 2:
        for module in model.routing_modules():
            module.eval()


def build_optimizer(
    model: nn.Module, train_betas: tuple[float, ...], weight_decay: float, stage_cfg: StageConfig
) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (§4.1: β = (0.9, 0.999)), fused: one kernel over all parameters
    instead of per-tensor ops (a step over the compact model on one CPU thread: 8 against 25 ms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=stage_cfg.lr, betas=tuple(train_betas), weight_decay=weight_decay, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, stage_cfg: StageConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``total_steps``."""
    floor = stage_cfg.min_lr / stage_cfg.lr
    warmup = stage_cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def update_prototypes(prototypes: torch.Tensor, f: torch.Tensor, labels: torch.Tensor, momentum: float) -> None:
    """EMA of each task's mean routing vector (per stage, on the unit sphere), in place.

    A task seen for the first time takes its batch mean; tasks absent from the batch keep theirs.

    Args:
        prototypes: (T, K, d) buffer.
        f: (N, K, d) routing vectors.
        labels: (N,) task indices.
        momentum: share of the old prototype kept.
    """
    f = f.detach().float()
    sums = torch.zeros_like(prototypes).index_add_(0, labels, f)
    present = torch.bincount(labels, minlength=prototypes.shape[0]) > 0
    means = F.normalize(sums, dim=-1)
    fresh = prototypes.flatten(1).abs().sum(dim=1) == 0
    blended = F.normalize(momentum * prototypes + (1 - momentum) * means, dim=-1)
    new = torch.where(fresh[:, None, None], means, blended)
    prototypes.copy_(torch.where(present[:, None, None], new, prototypes))


# -- validation ----------------------------------------------------------------------------------------------


def validation_cases(exp: ExperimentConfig) -> list[Any]:
    """Held-out validation images: the real test folders that exist for folder data, a generated set otherwise."""
    from training.evaluate import folder_test_set, generated_test_set

    d = exp.data
    if d.val_images == 0:
        return []
    sigmas = d.noise_sigmas or (25.0,)
    if d.type == "folders":
        from training.datasets import TEST_FOLDERS

        tasks = [t for t in d.tasks if t in TEST_FOLDERS and (Path(d.root) / "Test" / TEST_FOLDERS[t]).is_dir()]
        return folder_test_set(d.root, tasks, sigmas, d.val_images, d.val_size)
    return generated_test_set(d.tasks, d.val_images, d.val_size, sigmas)


def validate(model: SLERIR, cases: list[Any], device: torch.device) -> dict[str, Any]:
    """Per-task PSNR of the model (hard routing) and of the input, and the routing statistics per task."""
    from training.evaluate import ModelMethod, psnr_ssim, routing_summary

    method = ModelMethod(model, device)
    psnr: dict[str, list[float]] = {}
    gain: dict[str, list[float]] = {}
    for case in cases:
        p_out, _ = psnr_ssim(method(case.degraded), case.clean, ssim=False)
        p_in, _ = psnr_ssim(case.degraded, case.clean, ssim=False)
        psnr.setdefault(case.task, []).append(p_out)
        gain.setdefault(case.task, []).append(p_out - p_in)
    routing = routing_summary([c.task for c in cases], method.routes, model.config.num_experts)
    return {
        task: {"psnr": float(np.mean(v)), "gain": float(np.mean(gain[task])), **routing[task]}
        for task, v in psnr.items()
    }


# -- the loop ------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A resolved training job: what to run, where, for how long."""

    exp: ExperimentConfig
    stage: int
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
    stage: int,
    out: Path,
    dataset: TrainStream,
    world_size: int,
    stop_at: int | None,
    init: str | None,
    resume: bool,
    time_budget: float | None = None,
) -> Job:
    """Work out the epoch length and the number of steps of a stage.

    Raises:
        TrainError: stage 2 without initial weights.
    """
    stage_cfg = exp.train.stage_config(stage)
    spe = exp.train.steps_per_epoch or max(1, len(dataset) // (stage_cfg.batch_size * world_size))
    total = stage_cfg.steps if stage_cfg.steps is not None else stage_cfg.epochs * spe
    init = init or stage_cfg.init
    if stage == 2 and init is None:
        raise TrainError("stage 2 starts from stage-1 weights: pass --init PATH or set train.stage2.init")
    stop = total if stop_at is None else min(stop_at, total)
    return Job(exp, stage, out, total, spe, stop, init, resume, time_budget)


def batches(loader: torch.utils.data.DataLoader, rt: Runtime) -> Iterator[tuple[torch.Tensor, ...]]:
    """The loader's batches, moved to the device."""
    for degraded, clean, labels in loader:
        yield (
            degraded.to(rt.device, non_blocking=True),
            clean.to(rt.device, non_blocking=True),
            labels.to(rt.device, non_blocking=True),
        )


def autocast_enabled(amp: str, device: torch.device) -> bool:
    """bf16 autocast by default on CUDA and on CPUs with native bf16 arithmetic (AVX-512 BF16 or AMX)."""
    if amp != "auto":
        return amp == "bf16"
    return native_bf16(device)


def attention_kernels(device: torch.device, bf16: bool) -> AbstractContextManager[object]:
    """The attention kernels a training step may use (in the extractors' ViT blocks).

    On a CPU in bf16 the flash kernel's backward is 3x slower than the plain math path at the extractors'
    shapes (68 sequences of 65 tokens, 4 heads of 32: 143 ms against 45 ms forward and backward), about a
    fifth of a step; in fp32, on CUDA and at inference, PyTorch's own choice stays.
    """
    return sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" and bf16 else nullcontext()


@torch.no_grad()
def refit_prototypes(
    model: SLERIR, dataset: TrainStream, sampler: StreamSampler, first_step: int, batches_: int, rt: Runtime
) -> None:
    """Set the task prototypes to the exact per-task mean routing vectors of fresh training batches.

    The batches come from stream positions after the run's last step, so they were not trained on; the
    embeddings are gathered from all ranks, so every rank computes the same prototypes.
    """
    if batches_ == 0:
        return
    model.eval()
    protos = model.task_prototypes
    sums, counts = torch.zeros_like(protos), torch.zeros(protos.shape[0], device=protos.device)
    for k in range(batches_):
        items = [dataset[i] for i in sampler.batch(first_step + k)]
        x = torch.stack([d for d, _, _ in items]).to(rt.device)
        labels = torch.tensor([lab for _, _, lab in items], device=rt.device)
        f, _ = model.router(model.degradation_embedding(x))
        f, labels = all_gather_cat(f, rt), all_gather_cat(labels, rt)
        sums.index_add_(0, labels, f.float())
        counts += torch.bincount(labels, minlength=protos.shape[0]).float()
    seen = counts > 0
    protos.copy_(torch.where(seen[:, None, None], F.normalize(sums, dim=-1), protos))


@dataclass
class Trainee:
    """The model and its optimisation state, as built (or restored) for a run."""

    model: SLERIR
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    centre_gen: torch.Generator
    start: int = 0
    history: dict[str, Any] = field(default_factory=new_history)
    route_targets: torch.Tensor | None = None  # (T, K), fixed once every task has a prototype


def build_trainee(job: Job, rt: Runtime, resume_state: dict[str, Any] | None) -> Trainee:
    """Build the model for the job's stage, and restore the training state when resuming.

    The seed is set before construction so that every rank builds identical initial weights.
    """
    tcfg, scfg = job.exp.train, job.exp.train.stage_config(job.stage)
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    model = SLERIR(job.exp.model)
    history = new_history()
    if job.init is not None and resume_state is None:
        history = load_init(model, job.init)
    model.to(rt.device)
    configure_stage(model, job.stage)
    optimizer = build_optimizer(model, tcfg.betas, tcfg.weight_decay, scfg)
    trainee = Trainee(
        model,
        optimizer,
        build_scheduler(optimizer, job.total_steps, scfg),
        torch.Generator().manual_seed(tcfg.seed),  # same on every rank: identical centre updates
        history=history,
    )
    if resume_state is not None:
        restore_trainee(trainee, resume_state, job, rt)
    for key, value in (("hardware", hardware_name(rt.device)), ("sessions", time.strftime("%Y-%m-%d", time.gmtime()))):
        if value not in trainee.history[key]:
            trainee.history[key].append(value)
    return trainee


def restore_trainee(trainee: Trainee, state: dict[str, Any], job: Job, rt: Runtime) -> None:
    """Load model, optimiser, scheduler, RNG states and data position from a training state."""
    if state["stage"] != job.stage:
        raise TrainError(f"{job.out / CHECKPOINT} is a stage-{state['stage']} run; this is stage {job.stage}")
    trainee.model.load_state_dict(state["model"])
    trainee.optimizer.load_state_dict(state["optimizer"])
    trainee.scheduler.load_state_dict(state["scheduler"])
    trainee.centre_gen.set_state(state["rng"]["centres"])
    restore_rng(state["rng"])
    trainee.start = int(state["data_position"])
    trainee.history = {**new_history(), **state.get("history", {})}
    if state.get("route_targets") is not None:
        trainee.route_targets = state["route_targets"].to(rt.device)
    if state["config"] != job.exp.to_dict() and rt.primary:
        print(
            f"warning: {job.out / CHECKPOINT} was written with another config; continuing with the new one",
            file=sys.stderr,
        )


def train(job: Job, rt: Runtime, dataset: TrainStream) -> dict[str, Any]:
    """Run (or resume) one training stage; returns the run summary (also written to ``summary.json``).

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
    batch_size = exp.train.stage_config(job.stage).batch_size
    sampler = StreamSampler(batch_size, job.steps_per_epoch, rt.rank, rt.world_size, trainee.start)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=exp.data.workers, pin_memory=rt.device.type == "cuda"
    )
    val_cases = validation_cases(exp) if rt.primary else []
    log = RunLog(out, rt.primary, trainee.start)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.print(
        f"[{exp.name}] stage {job.stage}: steps {trainee.start}->{job.stop_at} of {job.total_steps}, "
        f"{job.steps_per_epoch} steps/epoch, batch {batch_size}×{rt.world_size}, device {rt.device}, "
        f"torch {torch.__version__}, trainable {n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M parameters"
    )
    summary = _loop(job, rt, trainee, net, loader, val_cases, log)
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
    val_cases: list[Any],
    log: RunLog,
) -> dict[str, Any]:
    """End of a stage or of a time budget: final task prototypes (stage 1), the safetensors export with the
    training record, and a last validation table (after the checkpoint, which keeps the EMA prototypes, so
    that a resumed run continues exactly)."""
    model = trainee.model
    if job.stage == 1:
        refit_prototypes(model, dataset, sampler, job.total_steps, job.exp.train.prototype_batches, rt)
    if not rt.primary:
        return {}
    meta = {
        "stage": str(job.stage),
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


def routing_targets(job: Job, trainee: Trainee) -> torch.Tensor:
    """Each task's expert per stage for the routing-consistency term: assigned from the task prototypes and
    then kept for the rest of the stage.

    They are fixed as soon as every task has a prototype. Assigned anew at every step, they moved with the
    prototypes and the centres, the router chased them, and routes kept changing for the whole of stage 1
    (in one run haze took six paths in twelve validations). Tasks of one ``data.route_groups`` entry share
    their targets.
    """
    if trainee.route_targets is not None:
        return trainee.route_targets
    targets = trainee.model.router.assign_tasks(trainee.model.task_prototypes, job.exp.data.route_group_index())
    if bool((targets >= 0).all()):
        trainee.route_targets = targets
    return targets


def _train_step(
    job: Job, rt: Runtime, trainee: Trainee, net: nn.Module, batch: tuple[torch.Tensor, ...]
) -> dict[str, float]:
    model, optimizer = trainee.model, trainee.optimizer
    degraded, clean, labels = batch
    cfg = job.exp.model
    bf16 = autocast_enabled(job.exp.train.amp, rt.device)
    with (
        torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=bf16),
        attention_kernels(rt.device, bf16),
    ):
        restored, info = net(degraded)
    l1 = restoration_loss(restored, clean)
    values = {"l1": l1}
    loss = l1
    if job.stage == 1 and cfg.hc_alpha > 0:
        f, all_labels = with_other_ranks(info["embeddings"].float(), labels, rt)
        # Tasks that share a route are one degradation to the contrastive loss too: pushed apart by it, they
        # would be pulled away from the path the routing-consistency term gives them both.
        groups = torch.tensor(job.exp.data.route_group_index(), device=all_labels.device)
        hc = hyperspherical_contrastive_loss(f, groups[all_labels], cfg.hc_margin)
        # Each rank differentiates its own rows and DDP averages the ranks: scaled back to the whole gradient.
        loss = loss + cfg.hc_alpha * rt.world_size * hc
        values["hc"] = hc
    if job.stage == 1 and cfg.route_alpha > 0:
        route = routing_consistency_loss(info["probs"], labels, routing_targets(job, trainee))
        loss = loss + cfg.route_alpha * route
        values["route"] = route
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if job.exp.train.grad_clip is not None:
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], job.exp.train.grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    trainee.scheduler.step()
    logs = mean_over_ranks({"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in values.items()}}, rt)
    logs["lr"] = lr
    if job.stage == 1:
        f, all_labels = all_gather_cat(info["embeddings"].detach(), rt), all_gather_cat(labels, rt)
        # Once targets are fixed, the centres follow them rather than an even split of each stage.
        anchors = None
        if cfg.route_alpha > 0 and trainee.route_targets is not None:
            anchors = target_anchors(model.task_prototypes, trainee.route_targets, cfg.num_experts)
        logs.update(model.router.update_centres(f, generator=trainee.centre_gen, anchors=anchors))
        update_prototypes(model.task_prototypes, f, all_labels, job.exp.train.prototype_momentum)
    return logs


def _loop(
    job: Job,
    rt: Runtime,
    trainee: Trainee,
    net: nn.Module,
    loader: torch.utils.data.DataLoader,
    val_cases: list[Any],
    log: RunLog,
) -> dict[str, Any]:
    from tqdm import tqdm

    tcfg, scfg = job.exp.train, job.exp.train.stage_config(job.stage)
    start, model, history = trainee.start, trainee.model, trainee.history
    # GPU-hours count every GPU; CPU ranks share one machine, whose hours are wall-clock hours.
    hours_key, devices = ("gpu", rt.world_size) if rt.device.type == "cuda" else ("cpu", 1)
    # Time kept back from a budget for what follows the last step: a validation and the export, measured.
    reserve = _timed_validation(model, val_cases, start, rt, log, job) if job.time_budget is not None else 0.0
    bar = tqdm(total=job.stop_at, initial=start, disable=not rt.primary, dynamic_ncols=True, desc=f"stage {job.stage}")
    logs: dict[str, float] = {}
    step, out_of_time = start, False
    tick = time.perf_counter()
    stream = batches(loader, rt)
    while step < job.stop_at and not out_of_time:
        batch = next(stream)
        logs = _train_step(job, rt, trainee, net, batch)
        step += 1
        now = time.perf_counter()
        seconds = max(now - tick, 1e-9)
        tick = now
        logs["img_per_s"] = scfg.batch_size * rt.world_size / seconds
        history["steps"] += 1
        history["crops"] += scfg.batch_size * rt.world_size
        history["hours"][hours_key] = history["hours"].get(hours_key, 0.0) + seconds * devices / 3600
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{logs['img_per_s']:.1f}")
        if step % job.steps_per_epoch == 0 and rt.primary and val_cases:
            reserve = _timed_validation(model, val_cases, step, rt, log, job)
        if job.time_budget is not None:
            out_of_time = time.monotonic() + reserve + 2 * seconds > job.started + job.time_budget
            if rt.distributed:  # every rank must stop at the same step
                flag = torch.tensor(float(out_of_time), device=rt.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag)
        if step % tcfg.log_every == 0 or step == job.stop_at or out_of_time:
            log.row("train_log", {"step": step, "epoch": step / job.steps_per_epoch, **logs}, step)
        if step % tcfg.checkpoint_every == 0 or step == job.stop_at or out_of_time:
            _checkpoint(job, rt, trainee, step)
    bar.close()
    if out_of_time:
        log.print(f"time budget reached: stopped at step {step} of {job.total_steps} (continue with --resume)")
    return {
        "name": job.exp.name,
        "stage": job.stage,
        "step": step,
        "total_steps": job.total_steps,
        "finished": step == job.total_steps,
        "out_of_time": out_of_time and step < job.total_steps,
        "last": logs,
        "route_targets": route_paths(job.exp.data.tasks, trainee.route_targets),
    }


def route_paths(tasks: Sequence[str], targets: torch.Tensor | None) -> dict[str, str]:
    """Each task's routing-consistency target as a path (``0-2-1-...``), for the run summary."""
    if targets is None:
        return {}
    return {task: "-".join(map(str, path)) for task, path in zip(tasks, targets.tolist(), strict=True)}


def _timed_validation(model: SLERIR, val_cases: list[Any], step: int, rt: Runtime, log: RunLog, job: Job) -> float:
    """Validate and log; returns the seconds it took (plus the export's share), 0 where nothing ran."""
    if not (rt.primary and val_cases):
        return 0.0
    begin = time.monotonic()
    log_validation(validate(model, val_cases, rt.device), step, log)
    set_train_mode(model, job.stage)
    return 1.2 * (time.monotonic() - begin) + 2.0


def _checkpoint(job: Job, rt: Runtime, trainee: Trainee, step: int) -> None:
    if not rt.primary:
        return
    rng = capture_rng()
    rng["centres"] = trainee.centre_gen.get_state()
    save_state(
        job.out / CHECKPOINT,
        {
            "format": STATE_FORMAT,
            "stage": job.stage,
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


# -- command line --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``slerir train``."""
    parser.add_argument("--config", required=True, help="training config: a name in training/configs or a YAML path")
    parser.add_argument(
        "--stage",
        type=int,
        choices=(1, 2),
        help="training stage (default: the stage --init's weights record, else train.stage)",
    )
    parser.add_argument("--steps", type=int, help="optimiser steps of the stage (overrides its epochs)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<name>-stage<k>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if it exists")
    parser.add_argument("--init", help="weights to start from (.safetensors or checkpoint.pt); stage 2 needs them")
    parser.add_argument(
        "--stop-at",
        type=int,
        help="stop after this step and checkpoint, keeping the schedule of "
        "the full run (to split a run into jobs; continue with --resume)",
    )
    parser.add_argument(
        "--time-budget",
        type=parse_duration,
        metavar="DURATION",
        help="wall-clock budget of this command (90s, 20m, 2.5h): stop in time to checkpoint, export the weights "
        "and print a validation table (timed by a validation at the start); continue with --resume",
    )
    parser.add_argument("--device", help="torch device (default: train.device; 'auto' is cuda:LOCAL_RANK or cpu)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. train.stage1.lr=1.0e-3 data.crop=64",
    )


def parse_duration(text: str) -> float:
    """``90s``, ``20m``, ``2.5h`` or plain seconds -> seconds (> 0).

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 2.5h, got {text!r}")
    return seconds


def _parse_value(text: str) -> Any:
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads '1e-3' as a string
        except ValueError:
            return value
    return value


def resolve_args(args: argparse.Namespace) -> tuple[ExperimentConfig, int, Path]:
    """The experiment config with command-line overrides, the stage and the run folder."""
    exp = load_experiment(args.config)
    changes: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"--set expects KEY=VALUE, got {item!r}")
        changes[key] = _parse_value(value)
    # Weights to continue from train on in the stage they were trained in, unless the command says otherwise:
    # continuing a stage-2 file in stage 1 would unfreeze the routes it was trained for.
    stage = args.stage or int(
        changes.get("train.stage") or (args.init and recorded_stage(args.init)) or exp.train.stage
    )
    if args.steps is not None:
        changes[f"train.stage{stage}.steps"] = args.steps
    if args.device is not None:
        changes["train.device"] = args.device
    if changes:
        exp = with_overrides(exp, **changes)
    out = args.out or Path("runs") / f"{exp.name}-stage{stage}"
    return exp, stage, out


def run(args: argparse.Namespace) -> int:
    """Entry point of ``slerir train``: 0 when the stage ran, 2 (with the reason) for an unusable request."""
    from slerir_core.errors import ConfigError
    from training.datasets import DataError

    try:
        return _run(args)
    except (ConfigError, DataError, TrainError) as err:
        print(f"slerir train: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    exp, stage, out = resolve_args(args)
    procs = cpu_process_count(exp)
    if procs > 1:
        return spawn_cpu_ranks(run, args, procs)
    rt = init_runtime(exp.train.device)
    try:
        dataset = build_train_dataset(exp.data, exp.train.seed)
        job = build_job(exp, stage, out, dataset, rt.world_size, args.stop_at, args.init, args.resume, args.time_budget)
        summary = train(job, rt, dataset)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
    if rt.primary:
        state = "finished" if summary["finished"] else f"stopped at step {summary['step']}"
        if summary["out_of_time"]:
            state += " (time budget)"
        print(f"{exp.name} stage {stage} {state}; run folder {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m training.train``: the same as ``slerir train``."""
    parser = argparse.ArgumentParser(prog="slerir train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
