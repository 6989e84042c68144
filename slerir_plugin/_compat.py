"""Workarounds for running torch inside napari.

Triton ships LLVM linked into ``triton/_C/libtriton.so``. When the viewer's OpenGL comes from Mesa (llvmpipe
software rendering under Xvfb or remote desktops, radeonsi on AMD GPUs), Mesa has already loaded the
system's ``libLLVM-*.so`` into the process, and loading libtriton afterwards resolves LLVM symbols against
Mesa's copy: the process dies with a segmentation fault. torch imports triton indirectly (torchvision ->
``torch._dynamo`` -> ``import triton``), so the first restoration in such a viewer would crash napari.
Loading libtriton with ``RTLD_DEEPBIND`` makes it bind its own LLVM first, which avoids the clash and
keeps Triton usable.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def foreign_llvm_loaded() -> bool:
    """Whether a shared ``libLLVM`` (Mesa's) is mapped into this process (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return "libLLVM" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def preload_triton() -> bool:
    """Load Triton's native library with ``RTLD_DEEPBIND`` when Mesa's LLVM is already in the process.

    Call before the first ``import torchvision``/``open_clip``/``slerir_core.restore`` in a process that
    shows OpenGL. Does nothing when triton is already imported, is not installed, or no foreign LLVM is
    loaded.

    Returns:
        Whether it preloaded the library.
    """
    if "triton" in sys.modules or not hasattr(os, "RTLD_DEEPBIND") or not foreign_llvm_loaded():
        return False
    try:
        if importlib.util.find_spec("triton") is None:
            return False
    except (ImportError, ValueError):
        return False
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        importlib.import_module("triton._C.libtriton")
    except ImportError:
        return False
    finally:
        sys.setdlopenflags(flags)
    return True
