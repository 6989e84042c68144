"""Triton op files, one op each: private ``@triton.jit`` kernels, host launchers, the autograd op, the entry.

These modules import triton at import time; ``kernels.functional`` imports them only when a kernel is about to
run (triton reads ``TRITON_INTERPRET`` when a kernel is defined). Call ``kernels.transposed_attention`` & co.
"""
