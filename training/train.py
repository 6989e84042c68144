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
import csv
import hashlib
import json
import math
import os
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
import torch.nn.functional as F
from torch import nn

from slerir_core.atomic import atomic_write
from slerir_core.checkpoint import save_weights
from slerir_core.losses import hyperspherical_contrastive_loss, restoration_loss
from slerir_core.model import SLERIR
from training.config import ExperimentConfig, StageConfig, load_experiment, with_overrides
from training.datasets import StreamSampler, TrainStream, build_train_dataset

STATE_FORMAT = "slerir-train-state-1"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"


class TrainError(ValueError):
    """A training job that cannot run as asked (missing initial weights, a run folder already in use, ...)."""


# -- processes and devices -----------------------------------------------------------------------------------


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


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` if CUDA is available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def init_runtime(device_name: str) -> Runtime:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU) and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
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


def mean_over_ranks(values: dict[str, float], rt: Runtime) -> dict[str, float]:
    """Average scalar logs over ranks, so rank 0 logs the whole batch's numbers."""
    if not rt.distributed or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / rt.world_size).tolist(), strict=True))


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that stops the per-forward buffer broadcast (renamed in recent torch versions)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, to check that ranks hold identical models."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- model and optimisation ----------------------------------------------------------------------------------


def load_init(model: SLERIR, path: str | Path) -> None:
    """Load weights to start from: a ``.safetensors`` weights file or a training ``checkpoint.pt``.

    Raises:
        TrainError: if the file is missing or its tensors do not fit the model (another config).
    """
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"initial weights {path} do not exist (stage 2 starts from stage-1 weights)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise TrainError(f"{path} does not fit this config's model: {err}") from None


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
    """Adam over the trainable parameters (§4.1: β = (0.9, 0.999))."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=stage_cfg.lr, betas=tuple(train_betas), weight_decay=weight_decay)


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


# -- training state ------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers (loadable with ``weights_only=True``)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "key": key.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: never a half-written file."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state written by ``save_state``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise TrainError(f"{path} is not a SLER-IR training state ({STATE_FORMAT})")
    return state


# -- logging (rank 0) ----------------------------------------------------------------------------------------


class RunLog:
    """CSV files, TensorBoard scalars and console lines of one run; inert on ranks other than 0.

    Args:
        out: the run folder.
        primary: whether this process logs.
        start_step: rows after this step (from a run killed after its last checkpoint) are dropped.
    """

    def __init__(self, out: Path, primary: bool, start_step: int) -> None:
        self.out, self.primary = out, primary
        self.tb = None
        if not primary:
            return
        for name in ("train_log.csv", "val_log.csv"):
            _truncate_csv(out / name, start_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.print("note: tensorboard is not installed; TensorBoard scalars are skipped (CSV logs are written)")
        else:
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def print(self, message: str) -> None:
        """A console line (tqdm-safe)."""
        if self.primary:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def row(self, name: str, values: dict[str, Any], step: int, scalars: bool = True) -> None:
        """Append a row to ``<name>.csv`` and (with ``scalars``) its numbers to TensorBoard under ``train/``."""
        if not self.primary:
            return
        path = self.out / f"{name}.csv"
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(values))
            if new:
                writer.writeheader()
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in values.items()})
        if self.tb is not None and scalars:
            for key, value in values.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"{name.split('_')[0]}/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


def _truncate_csv(path: Path, last_step: int) -> None:
    """Keep only the rows up to ``last_step`` (all of them are dropped for a fresh run)."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
        fields = rows[0].keys() if rows else []
    keep = [r for r in rows if int(r["step"]) <= last_step]
    with path.open("w", newline="") as fh:
        if keep:
            writer = csv.DictWriter(fh, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(keep)


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
    routing = routing_summary([c.task for c in cases], method.routes)
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


def plan_job(
    exp: ExperimentConfig,
    stage: int,
    out: Path,
    dataset: TrainStream,
    world_size: int,
    stop_at: int | None,
    init: str | None,
    resume: bool,
) -> Job:
    """Work out the epoch length and the number of steps of a stage.

    Raises:
        TrainError: stage 2 without initial weights.
    """
    stage_cfg = exp.train.stage_config(stage)
    spe = exp.train.steps_per_epoch or max(1, len(dataset) // (stage_cfg.batch_size * world_size))
    total = stage_cfg.steps or stage_cfg.epochs * spe
    init = init or stage_cfg.init
    if stage == 2 and init is None:
        raise TrainError("stage 2 starts from stage-1 weights: pass --init PATH or set train.stage2.init")
    stop = total if stop_at is None else min(stop_at, total)
    return Job(exp, stage, out, total, spe, stop, init, resume)


def batches(loader: torch.utils.data.DataLoader, rt: Runtime) -> Iterator[tuple[torch.Tensor, ...]]:
    """The loader's batches, moved to the device."""
    for degraded, clean, labels in loader:
        yield (
            degraded.to(rt.device, non_blocking=True),
            clean.to(rt.device, non_blocking=True),
            labels.to(rt.device, non_blocking=True),
        )


def autocast_enabled(amp: str, device: torch.device) -> bool:
    """bf16 autocast on CUDA by default; on CPU only when asked for."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


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
        cls, _ = model.degradation_extractor(x)
        f, _ = model.router(cls)
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


def build_trainee(job: Job, rt: Runtime, resume_state: dict[str, Any] | None) -> Trainee:
    """Build the model for the job's stage, and restore the training state when resuming.

    The seed is set before construction so that every rank builds identical initial weights.
    """
    tcfg, scfg = job.exp.train, job.exp.train.stage_config(job.stage)
    torch.manual_seed(tcfg.seed)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    model = SLERIR(job.exp.model)
    if job.init is not None and resume_state is None:
        load_init(model, job.init)
    model.to(rt.device)
    configure_stage(model, job.stage)
    optimizer = build_optimizer(model, tcfg.betas, tcfg.weight_decay, scfg)
    trainee = Trainee(
        model, optimizer, build_scheduler(optimizer, job.total_steps, scfg), torch.Generator().manual_seed(tcfg.seed)
    )  # same on every rank: identical centre updates
    if resume_state is not None:
        restore_trainee(trainee, resume_state, job, rt)
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
            **_no_buffer_sync(),
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
    if job.stop_at == job.total_steps:
        summary.update(_finish(job, rt, model, dataset, sampler, val_cases))
    if rt.distributed:
        digests: list[Any] = [None] * rt.world_size
        dist.all_gather_object(digests, state_digest(model))
        summary["rank_digests"] = digests
    if rt.primary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.close()
    return summary


def _finish(
    job: Job, rt: Runtime, model: SLERIR, dataset: TrainStream, sampler: StreamSampler, val_cases: list[Any]
) -> dict[str, Any]:
    """End of a stage: final task prototypes (stage 1), the safetensors export and a last validation."""
    if job.stage == 1:
        refit_prototypes(model, dataset, sampler, job.total_steps, job.exp.train.prototype_batches, rt)
    if not rt.primary:
        return {}
    meta = {
        "stage": str(job.stage),
        "steps": str(job.total_steps),
        "run": job.exp.name,
        "data": f"{job.exp.data.type}: {', '.join(job.exp.data.tasks)}",
    }
    save_weights(model, job.out / WEIGHTS, **meta)
    out: dict[str, Any] = {"weights": str(job.out / WEIGHTS)}
    if val_cases:
        out["validation"] = validate(model, val_cases, rt.device)
    return out


def _train_step(
    job: Job, rt: Runtime, trainee: Trainee, net: nn.Module, batch: tuple[torch.Tensor, ...]
) -> dict[str, float]:
    model, optimizer = trainee.model, trainee.optimizer
    degraded, clean, labels = batch
    cfg = job.exp.model
    with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=autocast_enabled(job.exp.train.amp, rt.device)):
        restored, info = net(degraded)
    l1 = restoration_loss(restored, clean)
    values = {"l1": l1}
    loss = l1
    if job.stage == 1 and cfg.hc_alpha > 0:
        hc = hyperspherical_contrastive_loss(info["embeddings"].float(), labels, cfg.hc_margin)
        loss = loss + cfg.hc_alpha * hc
        values["hc"] = hc
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
        logs.update(model.router.update_centres(f, generator=trainee.centre_gen))
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
    start, model = trainee.start, trainee.model
    bar = tqdm(total=job.stop_at, initial=start, disable=not rt.primary, dynamic_ncols=True, desc=f"stage {job.stage}")
    logs: dict[str, float] = {}
    step = start
    tick = time.perf_counter()
    stream = batches(loader, rt)
    while step < job.stop_at:
        batch = next(stream)
        logs = _train_step(job, rt, trainee, net, batch)
        step += 1
        now = time.perf_counter()
        logs["img_per_s"] = scfg.batch_size * rt.world_size / max(now - tick, 1e-9)
        tick = now
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", img_s=f"{logs['img_per_s']:.1f}")
        if step % tcfg.log_every == 0 or step == job.stop_at:
            log.row("train_log", {"step": step, "epoch": step / job.steps_per_epoch, **logs}, step)
        if step % job.steps_per_epoch == 0 and rt.primary and val_cases:
            _log_validation(validate(model, val_cases, rt.device), step, log)
            set_train_mode(model, job.stage)
        if step % tcfg.checkpoint_every == 0 or step == job.stop_at:
            _checkpoint(job, rt, trainee, step)
    bar.close()
    return {
        "name": job.exp.name,
        "stage": job.stage,
        "step": step,
        "total_steps": job.total_steps,
        "finished": step == job.total_steps,
        "last": logs,
    }


def _log_validation(results: dict[str, Any], step: int, log: RunLog) -> None:
    width = max(map(len, results), default=0)
    lines = [f"step {step} validation (PSNR, gain over the input, most common path, its purity):"]
    for task, r in results.items():
        log.row(
            "val_log",
            {
                "step": step,
                "task": task,
                "psnr": r["psnr"],
                "gain": r["gain"],
                "path": r["path"],
                "purity": r["purity"],
            },
            step,
            scalars=False,
        )
        if log.tb is not None:
            log.tb.add_scalar(f"val/psnr_{task}", r["psnr"], step)
            log.tb.add_scalar(f"val/purity_{task}", r["purity"], step)
        lines.append(
            f"  {task:<{width}}  {r['psnr']:6.2f} dB ({r['gain']:+6.2f})  path {r['path']}  purity {r['purity']:.2f}"
        )
    log.print("\n".join(lines))


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
        },
    )


# -- command line --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``slerir train``."""
    parser.add_argument("--config", required=True, help="training config: a name in training/configs or a YAML path")
    parser.add_argument("--stage", type=int, choices=(1, 2), help="training stage (default: train.stage)")
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
    parser.add_argument("--device", help="torch device (default: train.device; 'auto' is cuda:LOCAL_RANK or cpu)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. train.stage1.lr=1.0e-3 data.crop=64",
    )


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
    stage = args.stage or int(changes.get("train.stage", exp.train.stage))
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
    from slerir_core.config import ConfigError
    from training.datasets import DataError

    try:
        return _run(args)
    except (ConfigError, DataError, TrainError) as err:
        print(f"slerir train: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    exp, stage, out = resolve_args(args)
    rt = init_runtime(exp.train.device)
    try:
        dataset = build_train_dataset(exp.data, exp.train.seed)
        job = plan_job(exp, stage, out, dataset, rt.world_size, args.stop_at, args.init, args.resume)
        summary = train(job, rt, dataset)
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
    if rt.primary:
        state = "finished" if summary["finished"] else f"stopped at step {summary['step']}"
        print(f"{exp.name} stage {stage} {state}; run folder {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m training.train``: the same as ``slerir train``."""
    parser = argparse.ArgumentParser(prog="slerir train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
