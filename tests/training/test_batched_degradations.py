"""The batched degradations against the CPU generators: exact filters, matching statistics, determinism.

The statistics tests degrade the same clean crops with the CPU generator (one numpy rng per crop) and with the
batched op, and compare four per-crop statistics: the mean and spread of ``degraded − clean``, the log of the
brightness ratio and the log of the high-frequency energy ratio (Laplacian energy). Two sets of crops pass if
every statistic's mean differs by less than ``Z`` standard errors; each task also has a mis-set CPU parameter
that must fail, so the tolerance is shown to catch a wrong setting.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slerir_core.degradations import blur as cpu_blur
from slerir_core.degradations import degrade, depth_proxy
from slerir_core.degradations.haze import haze as cpu_haze
from slerir_core.degradations.microscopy import micro_blur as cpu_micro_blur
from training.batched_degradations import (
    BatchedDegradations,
    KernelBank,
    blob_field,
    centre_kernels,
    dirichlet,
    gamma,
    scatter,
)
from training.batched_degradations import depth_proxy as batched_depth_proxy
from training.batched_filters import convolve, gaussian_blur, mirror_pad
from training.config import DataConfig
from training.crop_bank import make_crops

N, SIDE, Z = 192, 48, 4.0
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """N clean crops in the training mix (dead leaves and scikit-image pictures), N×S×S×3 float32."""
    cfg = DataConfig(crop=SIDE, tasks=("noise",))  # a task that needs no margin around its crops
    return make_crops(cfg, seed=0, start=0, stop=N).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def degradations() -> BatchedDegradations:
    kernels = KernelBank.build(0, torch.device("cpu"), blur=320, streaks=128)
    return BatchedDegradations((15, 25, 50), kernels)


def batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def cpu_degraded(crops: np.ndarray, task: str, **params) -> torch.Tensor:
    return batch(np.stack([degrade(c, task, np.random.default_rng((7, i)), **params) for i, c in enumerate(crops)]))


def statistics(degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-crop statistics of a degradation."""

    def laplacian(a: torch.Tensor) -> torch.Tensor:
        centre = a[..., 1:-1, 1:-1]
        return 4 * centre - a[..., 2:, 1:-1] - a[..., :-2, 1:-1] - a[..., 1:-1, 2:] - a[..., 1:-1, :-2]

    residual = (degraded - clean).double()
    hf = (laplacian(degraded.double()) ** 2).mean((1, 2, 3)) / (laplacian(clean.double()) ** 2).mean((1, 2, 3))
    return {
        "mean residual": residual.mean((1, 2, 3)),
        "residual std": residual.std((1, 2, 3)),
        "log brightness ratio": torch.log(degraded.double().mean((1, 2, 3)) / clean.double().mean((1, 2, 3))),
        "log high-frequency ratio": torch.log(hf),
    }


def z_scores(a: torch.Tensor, b: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """How many standard errors apart the means of each statistic of two degraded sets of ``clean`` are."""
    sa, sb = statistics(a, clean), statistics(b, clean)
    out = {}
    for name in sa:
        se = torch.sqrt(sa[name].var() / len(a) + sb[name].var() / len(b))
        out[name] = float((sa[name].mean() - sb[name].mean()).abs() / se.clamp_min(1e-12))
    return out


def same_distribution(a: torch.Tensor, b: torch.Tensor, clean: torch.Tensor) -> bool:
    return max(z_scores(a, b, clean).values()) < Z


# -- exact twins of the CPU filters ------------------------------------------------------------------------


@pytest.mark.parametrize("repeat_edge, mode", [(False, "reflect"), (True, "symmetric")])
@pytest.mark.parametrize("pad", [2, 7, 30])
def test_mirror_pad_is_numpys_at_any_width(repeat_edge, mode, pad):
    x = np.random.default_rng(0).random((2, 3, 9, 6)).astype(np.float32)
    expected = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    np.testing.assert_array_equal(mirror_pad(torch.from_numpy(x), pad, pad, repeat_edge).numpy(), expected)


def test_convolve_blurs_as_the_cpu_blur(crops):
    rng = np.random.default_rng(1)
    kernels = [cpu_blur.motion_kernel(24.0, rng), cpu_blur.motion_kernel(6.0, rng), cpu_blur.defocus_kernel(4.2)]
    expected = np.stack([cpu_blur.blur(crops[i], rng, kernel=k) for i, k in enumerate(kernels)])
    out = convolve(batch(crops[:3]), torch.from_numpy(centre_kernels(kernels))).clamp(0, 1)
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, atol=2e-6)


def test_gaussian_blur_is_scipys_with_a_sigma_per_sample(crops):
    sigma = torch.tensor([1.0, 1.7, 3.0])
    expected = np.stack([cpu_micro_blur(crops[i], None, sigma=float(s)) for i, s in enumerate(sigma)])
    out = gaussian_blur(batch(crops[:3]), sigma, radius=12)
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, atol=2e-6)


@pytest.mark.parametrize("seed", range(4))
def test_haze_depth_and_scattering_are_the_cpus_for_the_same_draws(crops, seed):
    clean, near, beta, airlight = crops[seed], 0.2, 1.3, np.array([0.8, 0.85, 0.9], np.float32)
    expected_depth = depth_proxy(clean, np.random.default_rng(seed), near)
    replay = np.random.default_rng(seed)  # the draws depth_proxy makes, in its order
    tilt = np.deg2rad(replay.uniform(-30.0, 30.0))
    grid = replay.integers(3, 6)
    blobs = blob_field(torch.from_numpy(replay.standard_normal((grid, grid))).float()[None], SIDE, SIDE)
    weights = torch.from_numpy(replay.dirichlet((4.0, 1.5, 1.0))).float()[None]
    x = batch(clean[None])
    depth = batched_depth_proxy(x, torch.tensor([tilt]).float(), blobs, weights, torch.tensor([near]))
    np.testing.assert_allclose(depth[0].numpy(), expected_depth, atol=1e-5)
    hazy = scatter(x, torch.tensor([beta]), torch.from_numpy(airlight)[None], depth).clamp(0, 1)
    expected = cpu_haze(clean, None, beta=beta, airlight=airlight, depth=expected_depth)
    np.testing.assert_allclose(hazy[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_gamma_and_dirichlet_draws_have_their_moments():
    g = torch.Generator().manual_seed(0)
    for alpha in (1.0, 1.5, 4.0):
        draws = gamma(100_000, alpha, g)
        assert abs(float(draws.mean()) - alpha) < 0.02 * alpha and abs(float(draws.var()) - alpha) < 0.05 * alpha
    mean = dirichlet(100_000, (4.0, 1.5, 1.0), g).mean(0)
    torch.testing.assert_close(mean, torch.tensor([4.0, 1.5, 1.0]) / 6.5, atol=3e-3, rtol=0)


# -- statistics against the CPU generators -----------------------------------------------------------------


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_noise_std_matches_the_cpu_at_each_sigma_and_a_wrong_sigma_fails(crops, sigma):
    clean = batch(crops)
    expected = cpu_degraded(crops, "noise", sigma=sigma)
    kernels = KernelBank.build(0, torch.device("cpu"), blur=1, streaks=1)
    g = torch.Generator().manual_seed(0)
    right = BatchedDegradations((sigma,), kernels)(clean, "noise", g)
    assert same_distribution(expected, right, clean), z_scores(expected, right, clean)
    wrong = BatchedDegradations((sigma * 1.15,), kernels)(clean, "noise", g)
    assert not same_distribution(expected, wrong, clean)


MIS_SET = {
    "noise": {"sigma": 50},
    "rain": {"density": 0.008},
    "haze": {"beta": 2.2},
    "blur": {"kind": "motion", "length": 25.0},
    "lowlight": {"exposure": 0.3},
    "micro_noise": {"peak": 5.0},
    "micro_blur": {"sigma": 3.0},
}


@pytest.mark.parametrize("task", list(MIS_SET))
def test_each_task_matches_the_cpu_generator_in_distribution(crops, degradations, task):
    clean = batch(crops)
    expected = cpu_degraded(crops, task)
    out = degradations(clean, task, torch.Generator().manual_seed(0))
    assert same_distribution(expected, out, clean), z_scores(expected, out, clean)
    assert not same_distribution(cpu_degraded(crops, task, **MIS_SET[task]), out, clean)


# -- contract ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", list(MIS_SET))
def test_a_task_is_a_function_of_the_generator_seed(crops, device, task):
    kernels = KernelBank.build(0, torch.device(device), blur=320, streaks=128)
    degradations = BatchedDegradations((15, 25, 50), kernels)
    clean = batch(crops[[0, 0, 1, 2]]).to(device)
    a = degradations(clean, task, torch.Generator(device).manual_seed(3))
    b = degradations(clean, task, torch.Generator(device).manual_seed(3))
    c = degradations(clean, task, torch.Generator(device).manual_seed(4))
    assert a.shape == clean.shape and a.dtype == torch.float32 and a.device == clean.device
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # one clean crop twice: every sample draws its own parameters


def test_an_unknown_task_is_refused(degradations, crops):
    with pytest.raises(ValueError, match="unknown degradation task"):
        degradations(batch(crops[:1]), "snow", torch.Generator())
