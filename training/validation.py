"""Validation during training: held-out images per task, the model's PSNR and routes on them, and the
validation the loop times to keep back enough of a time budget for the closing one.

The numbers come from the functions ``slerir evaluate`` uses (``training/evaluate.py``): one evaluation path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slerir_core.model import SLERIR
from training.config import ExperimentConfig
from training.datasets import TEST_FOLDERS
from training.evaluate import EvalCase, ModelMethod, folder_test_set, generated_test_set, psnr_ssim, routing_summary
from training.phase import set_train_mode
from training.run_log import RunLog, log_validation
from training.runtime import Runtime


def validation_cases(exp: ExperimentConfig) -> list[EvalCase]:
    """Held-out validation images: the real test folders that exist for folder data, a generated set otherwise."""
    d = exp.data
    if d.val_images == 0:
        return []
    sigmas = d.noise_sigmas or (25.0,)
    if d.type == "folders":
        tasks = [t for t in d.tasks if t in TEST_FOLDERS and (Path(d.root) / "Test" / TEST_FOLDERS[t]).is_dir()]
        return folder_test_set(d.root, tasks, sigmas, d.val_images, d.val_size)
    return generated_test_set(d.tasks, d.val_images, d.val_size, sigmas)


def validate(model: SLERIR, cases: list[EvalCase], device: torch.device) -> dict[str, Any]:
    """Per-task PSNR of the model (hard routing) and of the input, and the routing statistics per task."""
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


def timed_validation(model: SLERIR, cases: list[EvalCase], step: int, rt: Runtime, log: RunLog, phase: int) -> float:
    """Validate and log on rank 0, then put the model back in the phase's training mode.

    Returns:
        The seconds to keep back for a validation and the export after the last step: the time this one took,
        with a margin; 0 where nothing ran.
    """
    if not (rt.primary and cases):
        return 0.0
    begin = time.monotonic()
    log_validation(validate(model, cases, rt.device), step, log)
    set_train_mode(model, phase)
    return 1.2 * (time.monotonic() - begin) + 2.0
