"""Training configs: one YAML per experiment, validated into frozen dataclasses.

A training YAML has four top-level keys::

    name: compact-synthetic          # run name; the default output folder is runs/<name>-phase<k>
    model: compact                   # a named model config (slerir_core/configs), a YAML path, or a mapping
    data: {...}                      # DataConfig
    train: {...}                     # TrainConfig, with phase1: and phase2: sections

``model`` may also be ``{base: NAME_OR_PATH, <key>: <override>, ...}``: the base config with the given keys
replaced (mappings such as ``degradation_extractor`` are merged key by key). The model's ``tasks`` are always
set from ``data.tasks``, so the weights' task prototypes follow the dataset. Unknown keys and ill-typed
values are errors naming the file and the key (``slerir_core.config.from_dict``).

An older file's ``train.stage``, ``stage1``, ``stage2`` and ``amp`` are read as the new keys (``convert_old_keys``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slerir_core.config import ModelConfig, from_dict, read_yaml, require, to_plain
from slerir_core.degradations import TASKS
from slerir_core.device import PRECISIONS
from slerir_core.errors import ConfigError

TRAIN_CONFIG_DIR = Path(__file__).parent / "configs"
DATA_TYPES = ("synthetic", "folders")
# Old train-section keys and their new names; an old ``amp`` value maps through AMP_PRECISION.
OLD_TRAIN_KEYS = {"stage": "phase", "stage1": "phase1", "stage2": "phase2", "amp": "precision"}
AMP_PRECISION = {"auto": "auto", "bf16": "bf16", "none": "fp32"}


@dataclass(frozen=True)
class DataConfig:
    """Where training pairs come from, and how they are cut and augmented.

    Attributes:
        type: ``synthetic`` (clean crops degraded on the fly) or ``folders`` (the PromptIR layout under ``root``).
        tasks: degradation names, in label order (``slerir_core.degradations.TASKS`` names).
        route_groups: tasks that share one routing path in phase 1's routing-consistency targets (the same
            degradation in two domains, which the degradation extractor cannot tell apart); a task in no
            group has a path of its own.
        root: data folder for ``folders`` (see ``training/datasets.py`` for the layout).
        crop: training crop size (128 in the paper).
        noise_sigmas: Gaussian noise levels (0-255 scale) drawn uniformly for the ``noise`` task, as PromptIR
            does (a level listed twice is drawn twice as often); empty leaves the level to the degradation's
            own random range.
        dead_leaves_prob: share of synthetic clean crops that are dead-leaves images (the rest are crops of
            the scikit-image training images).
        composite_prob: chance that a sample degraded on the fly carries a second degradation of the same
            domain (photo or microscopy), applied in physical order; the label stays the first.
        grey_prob: share of synthetic samples that are grey pictures as the restorer sees them: the clean
            crop's channels averaged, and the degraded crop's first channel in all three, so its noise is the
            same in every channel (a grey image is restored as three identical channels).
        workers: DataLoader worker processes (0 loads in the training process).
        on_device: make synthetic batches on the training device, from a bank of clean crops made once and
            batched degradations (``training/device_stream.py``), instead of in DataLoader workers.
        val_images: held-out images per task for the per-epoch validation.
        val_size: side of the validation images.
    """

    type: str = "synthetic"
    tasks: tuple[str, ...] = ("noise", "rain", "haze", "blur", "lowlight")
    route_groups: tuple[tuple[str, ...], ...] = ()
    root: str | None = None
    crop: int = 128
    noise_sigmas: tuple[float, ...] = (15.0, 25.0, 50.0)
    dead_leaves_prob: float = 0.5
    composite_prob: float = 0.0
    grey_prob: float = 0.0
    workers: int = 0
    on_device: bool = False
    val_images: int = 4
    val_size: int = 64

    def __post_init__(self) -> None:
        require(self.type in DATA_TYPES, f"type must be one of {DATA_TYPES}")
        require(len(self.tasks) >= 1 and len(set(self.tasks)) == len(self.tasks), "tasks must be distinct, >= 1")
        unknown = [t for t in self.tasks if t not in TASKS]
        require(not unknown, f"unknown task(s) {unknown}; choose from {list(TASKS)}")
        grouped = [t for group in self.route_groups for t in group]
        strangers = sorted(set(grouped) - set(self.tasks))
        require(not strangers, f"route_groups name task(s) {strangers} that are not in tasks")
        require(len(set(grouped)) == len(grouped) and all(self.route_groups), "route groups: one per task, none empty")
        require(self.type != "folders" or self.root is not None, "type 'folders' needs root")
        require(self.crop >= 16 and self.crop % 8 == 0, "crop must be a multiple of 8, at least 16")
        require(all(s > 0 for s in self.noise_sigmas), "noise_sigmas must be > 0")
        require(0.0 <= self.dead_leaves_prob <= 1.0, "dead_leaves_prob must be in [0, 1]")
        require(0.0 <= self.composite_prob <= 1.0, "composite_prob must be in [0, 1]")
        require(0.0 <= self.grey_prob <= 1.0, "grey_prob must be in [0, 1]")
        require(not self.on_device or self.type == "synthetic", "on_device makes synthetic data only")
        require(self.workers >= 0 and self.val_images >= 0, "workers and val_images must be >= 0")
        require(self.val_size >= 16, "val_size must be >= 16")

    def route_group_index(self) -> list[int]:
        """The route group of each task, in task order (groups numbered from 0, a lone task its own group)."""
        group_of = {task: i for i, group in enumerate(self.route_groups) for task in group}
        lone = [t for t in self.tasks if t not in group_of]
        group_of.update({task: len(self.route_groups) + i for i, task in enumerate(lone)})
        return [group_of[t] for t in self.tasks]


@dataclass(frozen=True)
class PhaseConfig:
    """Settings that differ between training phase 1 (soft routing) and phase 2 (hard routing).

    Attributes:
        batch_size: crops per step on each process.
        epochs: length in epochs (ignored when ``steps`` is set).
        steps: length in optimiser steps; overrides ``epochs``.
        lr: peak learning rate (Adam).
        min_lr: floor of the cosine decay.
        warmup_steps: linear warm-up before the cosine decay.
        init: weights to start from (a ``.safetensors`` file or a training state ``.pt``); phase 2 needs one.
    """

    batch_size: int = 10
    epochs: int | None = None
    steps: int | None = None
    lr: float = 2e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    init: str | None = None

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(self.epochs is not None or self.steps is not None, "set epochs or steps")
        require(
            (self.epochs is None or self.epochs >= 1) and (self.steps is None or self.steps >= 1),
            "epochs and steps must be >= 1",
        )
        require(self.lr > 0 and 0 <= self.min_lr <= self.lr, "need lr > 0 and 0 <= min_lr <= lr")
        require(self.warmup_steps >= 0, "warmup_steps must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpointing.

    Attributes:
        phase: the training phase run when the command line does not say (1 or 2).
        seed: seeds model initialisation, the data stream and the centre updates.
        steps_per_epoch: optimiser steps per epoch (validation and the epoch counter); ``None`` derives it
            from a folder dataset's size (one pass over all pairs), and is required for synthetic data.
        betas, weight_decay: Adam's.
        grad_clip: max gradient norm; ``None`` does not clip.
        precision: ``auto`` (bf16 autocast on CUDA and on CPUs with native bf16), ``fp32`` or ``bf16``.
        device: ``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else CPU), or a torch device string.
        cpu_processes: on a CPU, data-parallel training processes of one torch thread each (``batch_size``
            crops per process); 0 starts one per available core. At these small sizes two single-threaded
            processes get about twice the crops per second of one process running two threads, which spend
            much of each op waiting on each other. Ignored on GPUs and under torchrun.
        checkpoint_every: steps between training-state checkpoints (and at the end).
        log_every: steps between CSV/TensorBoard rows; the loss terms are read back from the device only then.
        cuda_graphs: on CUDA, record a training step once and replay it as one CUDA graph
            (``training/capture.py``); falls back to eager steps by itself where capture fails.
        prototype_momentum: EMA momentum of the per-task mean routing vectors kept in phase 1.
        prototype_batches: batches of fresh training data averaged into the task prototypes at the end of
            phase 1 (0 keeps the EMA).
        phase1, phase2: per-phase settings.
    """

    phase: int = 1
    seed: int = 0
    steps_per_epoch: int | None = None
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    precision: str = "auto"
    device: str = "auto"
    cpu_processes: int = 1
    checkpoint_every: int = 500
    log_every: int = 10
    cuda_graphs: bool = True
    prototype_momentum: float = 0.99
    prototype_batches: int = 8
    phase1: PhaseConfig = field(default_factory=lambda: PhaseConfig(batch_size=10, epochs=15))
    phase2: PhaseConfig = field(default_factory=lambda: PhaseConfig(batch_size=20, epochs=80))

    def __post_init__(self) -> None:
        require(self.phase in (1, 2), "phase must be 1 or 2")
        require(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch must be >= 1")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas needs 2 values in [0, 1)")
        require(self.weight_decay >= 0, "weight_decay must be >= 0")
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0")
        require(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        require(self.cpu_processes >= 0, "cpu_processes must be >= 0 (0: one per core)")
        require(self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every and log_every must be >= 1")
        require(0.0 <= self.prototype_momentum < 1.0, "prototype_momentum must be in [0, 1)")
        require(self.prototype_batches >= 0, "prototype_batches must be >= 0")

    def phase_config(self, phase: int) -> PhaseConfig:
        """The settings of phase 1 or 2."""
        return self.phase1 if phase == 1 else self.phase2


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole training experiment: the model, the data and the optimisation.

    Attributes:
        name: run name.
        model: the network (its ``tasks`` equal ``data.tasks``).
        data: the data.
        train: the optimisation.
        source: where the config came from (not part of the YAML).
    """

    name: str
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (the model section fully expanded)."""
        out = to_plain(self)
        out.pop("source")
        return out

    def to_yaml(self) -> str:
        """The resolved config as YAML, for the run folder."""
        header = f"# Resolved from {self.source}\n" if self.source else ""
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; nested mappings merge key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_model(spec: Any, tasks: tuple[str, ...], where: str) -> ModelConfig:
    """Build the model config of a training YAML's ``model`` entry, with ``tasks`` set.

    Args:
        spec: a named config or path, a full mapping, or ``{base: NAME_OR_PATH, **overrides}``.
        tasks: the dataset's task names, which the task prototypes are indexed by.
        where: prefix for error messages.
    """
    if isinstance(spec, str):
        spec = {"base": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a config name, a path or a mapping, got {spec!r}")
    data = dict(spec)
    if "base" in data:
        base, base_where = read_yaml(str(data.pop("base")))
        data = _merge(base, data)
        where = f"{where} (base {base_where})"
    data["tasks"] = list(tasks)
    return from_dict(ModelConfig, data, where)


def convert_old_keys(data: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """A training config mapping with its old train-section keys renamed: ``stage``, ``stage1``, ``stage2`` to
    ``phase``, ``phase1``, ``phase2``, and ``amp`` to ``precision`` (``none`` becoming ``fp32``).

    Raises:
        ConfigError: an old key next to its new name, or an ``amp`` value that has no precision.
    """
    train = data.get("train")
    if not isinstance(train, Mapping) or not set(train) & set(OLD_TRAIN_KEYS):
        return dict(data)
    converted: dict[str, Any] = {}
    for key, value in train.items():
        new = OLD_TRAIN_KEYS.get(key)
        if new is None:
            converted[key] = value
            continue
        if new in train:
            raise ConfigError(f"{where}.train: {key!r} is the old name of {new!r}; set only {new!r}")
        if key == "amp":
            if not isinstance(value, str) or value not in AMP_PRECISION:
                raise ConfigError(f"{where}.train.amp must be one of {tuple(AMP_PRECISION)}, got {value!r}")
            value = AMP_PRECISION[value]
        converted[new] = value
    return {**data, "train": converted}


def experiment_from_dict(data: Mapping[str, Any], where: str = "config") -> ExperimentConfig:
    """Validate a training config mapping (old keys converted, ``convert_old_keys``).

    Raises:
        ConfigError: naming the offending key.
    """
    data = convert_old_keys(data, where)
    known = {"name", "model", "data", "train"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    if "name" not in data or "model" not in data:
        raise ConfigError(f"{where}: 'name' and 'model' are required")
    data_cfg = from_dict(DataConfig, data.get("data") or {}, f"{where}.data")
    train_cfg = from_dict(TrainConfig, data.get("train") or {}, f"{where}.train")
    if data_cfg.type == "synthetic" and train_cfg.steps_per_epoch is None:
        raise ConfigError(f"{where}.train: synthetic data is an endless stream: set steps_per_epoch")
    model = resolve_model(data["model"], data_cfg.tasks, f"{where}.model")
    return ExperimentConfig(name=str(data["name"]), model=model, data=data_cfg, train=train_cfg, source=where)


def load_experiment(name_or_path: str | Path) -> ExperimentConfig:
    """Load a training config: a name from ``training/configs`` or a YAML path.

    Raises:
        ConfigError: for a missing file, invalid YAML, unknown keys or bad values.
    """
    data, where = read_yaml(name_or_path, TRAIN_CONFIG_DIR)
    return experiment_from_dict(data, where)


def with_overrides(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A copy with values replaced by dotted keys into the resolved config, re-validated.

    Example: ``with_overrides(cfg, **{"train.phase1.steps": 40, "data.crop": 64, "model.dim": 16})``.

    Raises:
        ConfigError: a key whose parent is not a section of the config, or an invalid result.
    """
    data = config.to_dict()
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for depth, key in enumerate(parents):
            if not isinstance(node.get(key), dict):
                section = ".".join(parents[: depth + 1])
                raise ConfigError(f"cannot set {dotted!r}: {section!r} is not a section of the config")
            node = node[key]
        node[last] = value
    model = data.pop("model")
    model.pop("tasks")
    data["model"] = model
    return dataclasses.replace(experiment_from_dict(data, config.source or "config"), source=config.source)


def list_experiments() -> list[str]:
    """Names of the training configs shipped in ``training/configs``."""
    return sorted(p.stem for p in TRAIN_CONFIG_DIR.glob("*.yaml"))
