"""Synthetic degradations: contract (shape, dtype, range, seeding) and the physics each one promises."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from slerir_core.clean_images import dead_leaves
from slerir_core.degradations import (
    DEGRADATIONS,
    NOISE_SIGMAS,
    TASKS,
    composite,
    defocus_kernel,
    degrade,
    degrade_random,
    motion_kernel,
    register_degradation,
)
from slerir_core.degradations.blur import (
    BLUR_REACH,
    DEFOCUS_RADIUS_RANGE,
    GAUSSIAN_SIGMA_RANGE,
    LINEAR_LENGTH_RANGE,
    MOTION_LENGTH_RANGE,
    gaussian_kernel,
    linear_motion_kernel,
)
from slerir_core.degradations.registry import REACH


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A 64×64 textured RGB scene with edges at many scales."""
    return dead_leaves(64, np.random.default_rng(0))


def flat(value: float, shape: tuple[int, int, int] = (64, 64, 3)) -> np.ndarray:
    return np.full(shape, value, np.float32)


def high_frequency_energy(image: np.ndarray) -> float:
    """Mean squared horizontal plus vertical pixel differences."""
    return float((np.diff(image, axis=0) ** 2).mean() + (np.diff(image, axis=1) ** 2).mean())


def test_registry_holds_exactly_the_tasks():
    assert TASKS == ("noise", "rain", "haze", "blur", "lowlight", "micro_noise", "micro_blur")
    assert set(DEGRADATIONS) == set(TASKS)


def test_duplicate_registration_is_rejected():
    before = dict(DEGRADATIONS)
    with pytest.raises(ValueError, match="already registered"):
        register_degradation("noise")(lambda clean, rng: clean)
    assert before == DEGRADATIONS


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("channels", [1, 3])
def test_contract(task, channels, scene):
    clean = np.ascontiguousarray(scene[:48, :40, :channels])
    original = clean.copy()
    out = degrade(clean, task, np.random.default_rng(1))
    assert out.shape == clean.shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, clean, atol=1e-3), "the degradation changed nothing"
    np.testing.assert_array_equal(clean, original)


@pytest.mark.parametrize("task", TASKS)
def test_seed_reproduces_and_differs(task, scene):
    a = degrade(scene, task, np.random.default_rng(7))
    b = degrade(scene, task, np.random.default_rng(7))
    c = degrade(scene, task, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_float64_input_is_accepted_and_returned_as_float32(scene):
    out = degrade(scene.astype(np.float64), "noise", np.random.default_rng(0), sigma=15)
    assert out.dtype == np.float32


def test_unknown_task_is_a_clear_value_error(scene):
    with pytest.raises(ValueError, match="unknown degradation task 'snow'"):
        degrade(scene, "snow", np.random.default_rng(0))


def test_bad_inputs_are_rejected(scene):
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="floating-point"):
        degrade((scene * 255).astype(np.uint8), "noise", rng)
    with pytest.raises(ValueError, match="H×W×C"):
        degrade(scene[:, :, 0], "noise", rng)
    with pytest.raises(ValueError, match="H×W×C"):
        degrade(np.zeros((8, 8, 2), np.float32), "haze", rng)


# ---------------------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", NOISE_SIGMAS)
def test_noise_sigma_matches_on_flat_grey(sigma):
    clean = flat(128 / 255, (96, 96, 3))
    out = degrade(clean, "noise", np.random.default_rng(sigma), sigma=sigma)
    residual = out - clean
    assert abs(residual.std() * 255 / sigma - 1) < 0.04
    assert abs(residual.mean()) < 0.1 * sigma / 255


def test_noise_default_sigma_is_a_benchmark_level():
    clean = flat(128 / 255, (64, 64, 1))
    measured = [(degrade(clean, "noise", np.random.default_rng(i)) - clean).std() * 255 for i in range(12)]
    nearest = [min(NOISE_SIGMAS, key=lambda s, m=m: abs(s - m)) for m in measured]
    assert all(abs(m / s - 1) < 0.06 for m, s in zip(measured, nearest, strict=True))
    assert len(set(nearest)) >= 2, "default sigma should vary between calls"


def test_noise_is_added_on_the_uint8_grid():
    clean = flat(0.5001)  # rounds to grey level 128 first
    out = degrade(clean, "noise", np.random.default_rng(0), sigma=0)
    np.testing.assert_allclose(out, 128 / 255, atol=1e-7)
    quantised = degrade(clean, "noise", np.random.default_rng(0), sigma=25, quantize=True)
    np.testing.assert_allclose(quantised * 255, np.round(quantised * 255), atol=1e-4)


def test_noise_rejects_negative_sigma():
    with pytest.raises(ValueError, match="sigma"):
        degrade(flat(0.5), "noise", np.random.default_rng(0), sigma=-1)


# ---------------------------------------------------------------------------------------------------------
# Rain
# ---------------------------------------------------------------------------------------------------------


def test_rain_adds_sparse_bright_streaks(scene):
    out = degrade(scene, "rain", np.random.default_rng(3))
    assert out.mean() > scene.mean()
    assert (out >= scene - 1e-6).all(), "screened streaks never darken"
    changed = (out - scene).max(axis=-1) > 0.05
    assert 0.01 < changed.mean() < 0.4


def test_rain_streaks_are_thin_and_follow_the_angle():
    dark = flat(0.0, (96, 96, 1))
    vertical = degrade(dark, "rain", np.random.default_rng(0), angle=0.0, length=30, density=0.004)[..., 0]
    # Along a vertical streak the image barely changes; across it, it jumps.
    across = np.abs(np.diff(vertical, axis=1)).mean()
    along = np.abs(np.diff(vertical, axis=0)).mean()
    assert across > 3 * along
    tilted = degrade(dark, "rain", np.random.default_rng(0), angle=30.0, length=30, density=0.004)[..., 0]
    assert np.abs(np.diff(tilted, axis=1)).mean() < across


# ---------------------------------------------------------------------------------------------------------
# Haze
# ---------------------------------------------------------------------------------------------------------


def test_haze_lowers_contrast_and_moves_towards_airlight(scene):
    out = degrade(scene, "haze", np.random.default_rng(0), airlight=0.9)
    assert out.std() < 0.8 * scene.std()
    assert np.abs(out - 0.9).mean() < 0.8 * np.abs(scene - 0.9).mean()


def test_haze_follows_the_scattering_model(scene):
    depth = np.full(scene.shape[:2], 0.5, np.float32)
    out = degrade(scene, "haze", np.random.default_rng(0), beta=1.2, airlight=[0.8, 0.85, 0.9], depth=depth)
    t = np.exp(-1.2 * 0.5)
    np.testing.assert_allclose(out, scene * t + np.array([0.8, 0.85, 0.9]) * (1 - t), atol=1e-6)


def test_haze_is_denser_far_away(scene):
    depth = np.tile(np.linspace(1.0, 0.1, 64, dtype=np.float32)[:, None], (1, 64))
    out = degrade(scene, "haze", np.random.default_rng(0), beta=2.0, airlight=1.0, depth=depth)
    assert out[:16].std() < 0.5 * out[-16:].std()


# ---------------------------------------------------------------------------------------------------------
# Blur
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["motion", "linear", "defocus", "gaussian"])
def test_blur_lowers_high_frequency_energy(kind, scene):
    out = degrade(scene, "blur", np.random.default_rng(0), kind=kind, length=12, radius=3, sigma=2)
    assert high_frequency_energy(out) < 0.5 * high_frequency_energy(scene)
    assert abs(out.mean() - scene.mean()) < 0.02


@pytest.mark.parametrize("task", ["blur", "micro_blur"])
def test_blur_keeps_a_flat_image_flat(task):
    # Reflecting borders and a normalised kernel: no darkened frame, no brightness change.
    out = degrade(flat(0.6), task, np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.6, atol=1e-5)


def test_kernels_are_normalised_and_centred():
    for seed in range(5):
        k = motion_kernel(20.0, np.random.default_rng(seed))
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert abs(k.sum() - 1) < 1e-5 and (k >= 0).all()
        r, c = np.indices(k.shape) - k.shape[0] // 2
        assert abs((k * r).sum()) < 0.5 and abs((k * c).sum()) < 0.5
        extent = np.ptp(np.argwhere(k > 0), axis=0).max()
        assert 17 <= extent <= 22
    for d in (defocus_kernel(3.0), gaussian_kernel(2.0)):
        assert abs(d.sum() - 1) < 1e-6
        np.testing.assert_allclose(d, d.T, atol=1e-7)


@pytest.mark.parametrize("angle", [0.0, 0.7, np.pi / 2])
def test_linear_motion_is_a_centred_segment_of_its_length_and_angle(angle):
    k = linear_motion_kernel(15.0, angle)
    assert k.shape[0] % 2 == 1 and abs(k.sum() - 1) < 1e-5
    c = k.shape[0] // 2
    rows, cols = np.nonzero(k > 1e-3)
    x, y = cols - c, rows - c
    assert abs((k[rows, cols] * x).sum()) < 0.1 and abs((k[rows, cols] * y).sum()) < 0.1
    assert np.abs(x * np.sin(angle) - y * np.cos(angle)).max() < 1.5  # bilinear weights: within a pixel's diagonal
    assert 14 <= np.hypot(x, y).max() * 2 <= 17


def test_every_psf_lies_within_the_blur_reach():
    """All but a thousandth of every PSF's weight lies within ``BLUR_REACH`` of its centre."""
    rng = np.random.default_rng(0)
    kernels = [motion_kernel(rng.uniform(*MOTION_LENGTH_RANGE), rng) for _ in range(300)]
    kernels += [linear_motion_kernel(LINEAR_LENGTH_RANGE[1], rng.uniform(0, np.pi)) for _ in range(20)]
    kernels += [defocus_kernel(DEFOCUS_RADIUS_RANGE[1]), gaussian_kernel(GAUSSIAN_SIGMA_RANGE[1])]
    for k in kernels:
        c, r = k.shape[0] // 2, BLUR_REACH
        assert k[max(0, c - r) : c + r + 1, max(0, c - r) : c + r + 1].sum() > 0.999
    assert REACH["blur"] == BLUR_REACH and REACH["noise"] == 0 and REACH["micro_blur"] == 12


def test_micro_blur_lowers_high_frequency_energy(scene):
    out = degrade(scene, "micro_blur", np.random.default_rng(0), sigma=2.0)
    assert high_frequency_energy(out) < 0.3 * high_frequency_energy(scene)


# ---------------------------------------------------------------------------------------------------------
# Low light and microscopy noise
# ---------------------------------------------------------------------------------------------------------


def test_lowlight_darkens_and_adds_noise(scene):
    out = degrade(scene, "lowlight", np.random.default_rng(0))
    assert out.mean() < 0.5 * scene.mean()
    grey = degrade(flat(0.5), "lowlight", np.random.default_rng(0), exposure=0.2, gamma=1.0, peak=100)
    assert abs(grey.mean() - 0.1) < 0.01
    assert grey.std() > 0.01


def test_micro_noise_is_poisson_gaussian():
    level, peak, read = 0.5, 40.0, 0.02
    params = {"peak": peak, "read_sigma": read}
    out = degrade(flat(level, (128, 128, 1)), "micro_noise", np.random.default_rng(0), **params)
    assert abs(out.mean() - level) < 0.01
    expected_var = level / peak + read**2
    assert abs(out.var() / expected_var - 1) < 0.1
    # Shot noise grows with the signal; read noise alone would not.
    dim = degrade(flat(0.1, (128, 128, 1)), "micro_noise", np.random.default_rng(0), **params)
    assert dim.var() < 0.5 * out.var()


# ---------------------------------------------------------------------------------------------------------
# Composites and random draws
# ---------------------------------------------------------------------------------------------------------


def test_composite_applies_each_in_physical_order():
    clean = flat(0.2, (96, 96, 3))
    depth = np.full((96, 96), 1.0, np.float32)
    params = {"haze": {"beta": 1.0, "airlight": 0.9, "depth": depth}, "noise": {"sigma": 25}}
    out = composite(clean, ["noise", "haze"], np.random.default_rng(0), params=params)
    t = np.exp(-1.0)
    # Haze moved the mean; noise came last, so its full sigma survives (not scaled by t).
    assert abs(out.mean() - (0.2 * t + 0.9 * (1 - t))) < 0.01
    assert abs(out.std() * 255 / 25 - 1) < 0.06


def test_composite_order_of_names_does_not_matter(scene):
    a = composite(scene, ["lowlight", "rain", "blur"], np.random.default_rng(4))
    b = composite(scene, ["blur", "lowlight", "rain"], np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, degrade(scene, "rain", np.random.default_rng(4)))


def test_composite_rejects_repeats_and_unknowns(scene):
    with pytest.raises(ValueError, match="distinct"):
        composite(scene, ["noise", "noise"], np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown"):
        composite(scene, ["noise", "fog"], np.random.default_rng(0))


def test_degrade_random_labels_cover_all_tasks_and_reproduce():
    small = dead_leaves(16, np.random.default_rng(0))
    labels = {degrade_random(small, np.random.default_rng(i))[1] for i in range(80)}
    assert labels == set(range(len(TASKS)))
    a, la = degrade_random(small, np.random.default_rng(5), composite_prob=0.5)
    b, lb = degrade_random(small, np.random.default_rng(5), composite_prob=0.5)
    np.testing.assert_array_equal(a, b)
    assert la == lb


def test_degrade_random_restricted_tasks_label_indexes_tasks(scene):
    out, label = degrade_random(scene, np.random.default_rng(0), tasks=("haze",))
    assert label == TASKS.index("haze")
    assert out.shape == scene.shape and out.dtype == np.float32
    with pytest.raises(ValueError, match="unknown"):
        degrade_random(scene, np.random.default_rng(0), tasks=("snow",))


def test_degrade_random_composites_stay_in_one_domain(scene, monkeypatch):
    calls: list[list[str]] = []
    # The package re-exports the function under the module's name, so fetch the module itself.
    composite_module = importlib.import_module("slerir_core.degradations.composite")
    real = composite_module.composite

    def spy(clean, tasks, rng, params=None):
        calls.append(list(tasks))
        return real(clean, tasks, rng, params)

    monkeypatch.setattr(composite_module, "composite", spy)
    small = scene[:24, :24]
    for seed in range(30):
        _, label = degrade_random(small, np.random.default_rng(seed), composite_prob=1.0)
        chosen = calls[-1]
        assert chosen[0] == TASKS[label]
        assert 2 <= len(chosen) <= 3 and len(set(chosen)) == len(chosen)
        assert len({t.startswith("micro_") for t in chosen}) == 1
    assert {len(c) for c in calls} == {2, 3}
