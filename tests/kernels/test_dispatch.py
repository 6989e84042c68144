"""Per-family switches: a kernel family forced to its twins leaves the other family on its kernel."""

from __future__ import annotations

import pytest
import torch

import kernels

pytest.importorskip("triton")
from kernels.ops import routed, transposed_attention


@pytest.fixture
def kernels_that_ran(monkeypatch, device):
    """Call both public functions on tiny inputs; return the families whose Triton kernel ran."""
    monkeypatch.delenv("SLERIR_REFERENCE_KERNELS", raising=False)
    if device.type == "cpu":
        monkeypatch.setenv("SLERIR_KERNELS", "triton")  # TRITON_INTERPRET=1 is set by the root conftest
    else:
        monkeypatch.delenv("SLERIR_KERNELS", raising=False)
    ran: set[str] = set()
    for module, name, family in (
        (transposed_attention, "transposed_attention_triton", "transposed_attention"),
        (routed, "routed_pointwise_triton", "routed"),
    ):
        fn = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _fn=fn, _family=family: ran.add(_family) or _fn(*a))
    q = torch.randn(1, 1, 4, 9, device=device)
    x, weight, index = torch.randn(2, 3, 5, device=device), torch.randn(2, 4, 3, device=device), torch.tensor([1, 0])

    def run() -> set[str]:
        ran.clear()
        kernels.transposed_attention(q, q, q, torch.ones(1, device=device))
        kernels.routed_pointwise(x, weight, index.to(device))
        return set(ran)

    return run


def test_no_switch_runs_both_kernels(kernels_that_ran):
    assert kernels_that_ran() == {"transposed_attention", "routed"}


@pytest.mark.parametrize(
    ("value", "kernels_left"),
    [
        ("routed", {"transposed_attention"}),
        ("transposed_attention", {"routed"}),
        (" Transposed_Attention , routed ", set()),
        ("routed,", {"transposed_attention"}),
        ("", {"transposed_attention", "routed"}),
    ],
)
def test_env_forces_only_the_named_families(value, kernels_left, monkeypatch, kernels_that_ran):
    monkeypatch.setenv("SLERIR_REFERENCE_KERNELS", value)
    assert kernels_that_ran() == kernels_left


def test_env_unknown_family_is_an_error(monkeypatch, kernels_that_ran):
    monkeypatch.setenv("SLERIR_REFERENCE_KERNELS", "routed,mdta")
    with pytest.raises(ValueError, match=r"SLERIR_REFERENCE_KERNELS: unknown kernel families \['mdta'\]"):
        kernels_that_ran()


def test_use_reference_for_one_family(kernels_that_ran):
    with kernels.use_reference(family="routed"):
        assert kernels_that_ran() == {"transposed_attention"}
        with kernels.use_reference(family="transposed_attention"):
            assert kernels_that_ran() == set()
        assert kernels_that_ran() == {"transposed_attention"}
    assert kernels_that_ran() == {"transposed_attention", "routed"}


def test_use_reference_as_a_call_stays_until_lifted(kernels_that_ran):
    kernels.use_reference(True, family="transposed_attention")
    try:
        assert kernels_that_ran() == {"routed"}
    finally:
        kernels.use_reference(False, family="transposed_attention")
    assert kernels_that_ran() == {"transposed_attention", "routed"}


def test_use_reference_without_family_forces_all_and_lifts_all(kernels_that_ran):
    with kernels.use_reference():
        assert kernels_that_ran() == set()
        with kernels.use_reference(False):
            assert kernels_that_ran() == {"transposed_attention", "routed"}
        assert kernels_that_ran() == set()


def test_global_switch_overrides_the_family_list(monkeypatch, kernels_that_ran):
    """``SLERIR_KERNELS=reference`` still forces every family, whatever the per-family list says."""
    monkeypatch.setenv("SLERIR_REFERENCE_KERNELS", "routed")
    monkeypatch.setenv("SLERIR_KERNELS", "reference")
    assert kernels_that_ran() == set()


def test_use_reference_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="known: transposed_attention, routed"):
        kernels.use_reference(family="routed_pointwise")
