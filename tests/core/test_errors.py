"""Quoting another library's error in one line."""

from __future__ import annotations

from slerir_core.errors import first_line


def test_first_line_keeps_the_first_line_of_a_long_message():
    err = RuntimeError("\n  CUDA error: no kernel image is available\nCompile with TORCH_USE_CUDA_DSA\n")
    assert first_line(err) == "CUDA error: no kernel image is available"


def test_first_line_names_the_type_of_an_error_without_a_message():
    assert first_line(EOFError()) == "EOFError"
