"""Device matters in one place: which device, whether it computes bf16, autocast, threads and GPU memory.

The Restorer, training, the command line and the plugin all take these from here, so that "auto" means
the same device and the same precision everywhere.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from slerir_core.errors import first_line

PRECISIONS = ("auto", "fp32", "bf16")
"""The one vocabulary for numeric precision: ``auto`` (bf16 where the device computes it natively), or forced."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when present, else the CPU; otherwise the named device, once a tensor
    could be made on it.

    Raises:
        ValueError: an unknown device, or one this machine does not have (CUDA, MPS, ...).
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but MPS (Apple silicon GPUs, macOS) is not available")
    if device.type != "cpu":
        try:
            torch.zeros(1, device=device).cpu()
        except Exception as err:  # each backend fails its own way: AssertionError, RuntimeError, ...
            raise ValueError(f"device {str(device)!r} is not usable on this machine: {first_line(err)}") from None
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX (oneDNN's check);
    elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` (one of ``PRECISIONS``) runs bf16 autocast on ``device``.

    Raises:
        ValueError: a precision outside ``PRECISIONS``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return native_bf16(device) if precision == "auto" else precision == "bf16"


def autocast(device: torch.device, bf16: bool, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else nothing (fp32).

    ``cache=False`` casts the weights anew at each use instead of once per region: what a region recorded as
    a CUDA graph needs, since a cast cached outside the recording would not be replayed.
    """
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)


def hardware_name(device: torch.device) -> str:
    """What runs the work, for the model card: the GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next(
        (line.split(":", 1)[1].strip() for line in _proc("cpuinfo") if line.startswith("model name")), "unknown CPU"
    )
    return f"{model} ({os.cpu_count()} cores)"


def _proc(name: str) -> list[str]:
    """The lines of ``/proc/<name>`` (Linux), or none."""
    try:
        return Path("/proc", name).read_text().splitlines()
    except OSError:
        return []


def set_torch_threads(n: int | None) -> None:
    """Give torch's intra-op pool of the *calling* thread ``n`` threads (``default_torch_threads()`` for None).

    torch applies its thread count per calling thread (OpenMP's setting is per thread), so whatever the
    main thread or an earlier job set is not a reliable guide for a pooled worker thread: set it where the
    work runs.
    """
    torch.set_num_threads(n or default_torch_threads())


def default_torch_threads() -> int:
    """Threads for torch in a worker: ``SLERIR_TORCH_THREADS`` when set, else every usable core.

    Every usable core is what torch itself uses on the main thread, so a job in the napari widget runs as fast
    as a direct ``Restorer.restore`` call (see ``benchmarks/widget_overhead.py``). On a machine shared with
    other busy processes, fewer threads avoid OpenMP's spinning threads fighting over cores.
    """
    env = os.environ.get("SLERIR_TORCH_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def free_memory(device: torch.device) -> int | None:
    """Bytes that work on ``device`` can still take: on CUDA the driver's free memory plus what torch's cache
    holds unused; elsewhere the system's available memory (MPS shares it). ``None`` where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    for line in _proc("meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # kB
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system that reports it
        return None


def free_cuda_cache() -> None:
    """Give cached GPU memory back (after an out-of-memory error, so a retry with smaller tiles can fit)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
