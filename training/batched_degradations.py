"""The synthetic degradations as batched torch ops on any device, for training data made where the model trains.

Every op takes a (B, C, H, W) float batch in [0, 1] and degrades each sample with parameters of its own, drawn
on the batch's device from a :class:`torch.Generator`. Each follows its CPU generator in
``slerir_core.degradations`` (the same formula, the parameter ranges imported from there), so both streams
train on the same distribution of degradations:

* formulas that are plain arithmetic (noise, low light, microscopy noise, the scattering model of haze) are
  written again in torch;
* filters (``training.batched_filters``) keep the CPU's borders, and haze's upsampled depth blobs use
  scikit-image's own cubic-spline weights, so given the same parameters the outputs are the CPU's up to
  float rounding;
* where the CPU draws a random kernel per image (camera-shake trajectories, defocus discs, rain streaks),
  :class:`KernelBank` fills a bank once with the CPU functions themselves and each sample picks one: a
  Monte-Carlo sample of the same kernel distribution, thousands strong.

Random draws differ from the CPU's (another generator), so the two streams agree in distribution, not in
samples.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from slerir_core.degradations.blur import BLUR_KINDS, blur_kernel
from slerir_core.degradations.haze import HAZE_AIRLIGHT_RANGE, HAZE_BETA_RANGE, HAZE_NEAR_RANGE, HAZE_TINT
from slerir_core.degradations.lowlight import (
    LOWLIGHT_EXPOSURE_RANGE,
    LOWLIGHT_GAMMA_RANGE,
    LOWLIGHT_PEAK_RANGE,
    LOWLIGHT_READ_SIGMA_RANGE,
)
from slerir_core.degradations.microscopy import MICRO_PEAK_RANGE, MICRO_PSF_SIGMA_RANGE, MICRO_READ_SIGMA_RANGE
from slerir_core.degradations.rain import (
    RAIN_ANGLE_RANGE,
    RAIN_DENSITY_RANGE,
    RAIN_INTENSITY_RANGE,
    RAIN_LENGTH_RANGE,
    RAIN_WIDTH_RANGE,
    streak_kernel,
)
from training.batched_filters import TRUNCATE, convolve, gaussian_blur, valid_convolution

KERNEL_BANK_TAG = 0xB1A5
"""Spawn key of the kernel banks' seeds, which keeps them apart from the training streams'."""
HAZE_BLOB_GRIDS = (3, 4, 5)
"""Sides of the random grids that haze's depth proxy upsamples (``rng.integers(3, 6)`` on the CPU)."""
HAZE_TILT_RANGE = (-30.0, 30.0)
"""Tilt of the depth proxy's ramp from vertical, in degrees."""
HAZE_CUE_WEIGHTS = (4.0, 1.5, 1.0)
"""Dirichlet concentrations of the depth proxy's ramp, luminance and blob cues."""
HAZE_LUMINANCE_SIGMA = 0.04
"""Smoothing of the depth proxy's luminance cue, as a fraction of the image's larger side."""
RAIN_SHORT_RANGE = (0.4, 0.8)
"""Length of a rain field's short streaks relative to its long ones."""
RAIN_DROP_BRIGHTNESS = (0.3, 1.0)
"""Brightness of one drop relative to the field's intensity."""


# -- random draws ---------------------------------------------------------------------------------------------


def uniform(n: int, bounds: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """``n`` draws, uniform in ``bounds = (low, high)``, on the generator's device."""
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def log_uniform(n: int, bounds: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """``n`` draws, log-uniform in ``bounds`` (for scale-like parameters)."""
    return torch.exp(uniform(n, (math.log(bounds[0]), math.log(bounds[1])), generator))


def gamma(n: int, alpha: float, generator: torch.Generator, tries: int = 8) -> torch.Tensor:
    """``n`` Gamma(``alpha``, 1) draws, ``alpha >= 1``, by Marsaglia & Tsang's squeeze method.

    ``torch.distributions`` cannot take a generator, so the sampler is written out; it runs ``tries``
    candidates per draw at once and keeps the first accepted one (each is accepted with probability above
    0.95, so all ``tries`` fail less than once in 10¹⁰ draws; the last candidate is kept then).
    """
    if alpha < 1:
        raise ValueError(f"alpha must be >= 1, got {alpha}")
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn(n, tries, generator=generator, device=generator.device)
    v = (1.0 + c * x) ** 3
    u = torch.rand(n, tries, generator=generator, device=generator.device)
    accept = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
    accept[:, -1] = True
    first = accept.float().argmax(dim=1, keepdim=True)  # the first True
    return d * v.gather(1, first).squeeze(1)


def dirichlet(n: int, concentration: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """``n`` Dirichlet draws (n, K), as normalised Gamma draws."""
    g = torch.stack([gamma(n, a, generator) for a in concentration], dim=1)
    return g / g.sum(dim=1, keepdim=True)


# -- formulas -----------------------------------------------------------------------------------------------


def gaussian_noise(x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """White Gaussian noise on the uint8 grid, as ``slerir_core.degradations.noise.gaussian_noise`` adds it.

    Args:
        x: (B, C, H, W) images in [0, 1].
        sigma: (B,) standard deviations in grey levels (0-255).
        generator: random source on ``x``'s device.
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device) * sigma[:, None, None, None]
    return (torch.round(x * 255.0) + noise).clamp(0.0, 255.0) / 255.0


def poisson_gaussian(
    signal: torch.Tensor, peak: torch.Tensor, read_sigma: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Shot noise at ``peak`` photons for signal 1 plus Gaussian read noise, per sample; unclipped.

    Args:
        signal: (B, C, H, W) expected intensity.
        peak: (B,) photons at intensity 1.
        read_sigma: (B,) read-noise standard deviations.
        generator: random source on ``signal``'s device.
    """
    peak, read_sigma = peak[:, None, None, None], read_sigma[:, None, None, None]
    shot = torch.poisson(signal.clamp_min(0.0) * peak, generator=generator) / peak
    return shot + read_sigma * torch.randn(signal.shape, generator=generator, device=signal.device)


@functools.cache
def _blob_weights(grid: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """skimage's ``resize(order=3, mode="reflect")`` of a grid×grid array to h×w as a linear map (grid², h, w).

    Resizing up is linear in the array and then clipped to its range; the map is each basis image resized.
    """
    from skimage.transform import resize

    basis = np.eye(grid * grid).reshape(-1, grid, grid)
    weights = np.stack([resize(e, (h, w), order=3, mode="reflect", clip=False) for e in basis])
    return torch.from_numpy(weights.astype(np.float32)).to(device)


def blob_field(noise: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Random grids upsampled to h×w as haze's depth proxy does it (cubic spline, clipped to each grid's range).

    Args:
        noise: (B, g, g) grids.
        h, w: the output size.

    Returns:
        (B, h, w) smooth fields.
    """
    b, g, _ = noise.shape
    weights = _blob_weights(g, h, w, noise.device)
    flat = noise.reshape(b, -1)
    field = torch.einsum("bk,khw->bhw", flat, weights)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    return torch.maximum(torch.minimum(field, high[:, None, None]), low[:, None, None])


def _unit(a: torch.Tensor) -> torch.Tensor:
    """Rescale each sample of (B, H, W) to [0, 1]; a constant sample becomes 0.5."""
    low = a.amin(dim=(1, 2), keepdim=True)
    span = a.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span < 1e-8, torch.full_like(a, 0.5), (a - low) / span.clamp_min(1e-8))


def depth_proxy(
    x: torch.Tensor, tilt: torch.Tensor, blobs: torch.Tensor, weights: torch.Tensor, near: torch.Tensor
) -> torch.Tensor:
    """Haze's scene-depth stand-in, per sample, as ``slerir_core.degradations.haze.depth_proxy`` builds it.

    Args:
        x: (B, C, H, W) clean images.
        tilt: (B,) ramp tilts in radians.
        blobs: (B, H, W) the upsampled random grids (:func:`blob_field`).
        weights: (B, 3) weights of the ramp, luminance and blob cues.
        near: (B,) depth of the nearest point.

    Returns:
        (B, H, W) depth in [near, 1].
    """
    b, _, h, w = x.shape
    yy = torch.arange(h, device=x.device, dtype=torch.float32) / max(h - 1, 1)
    xx = torch.arange(w, device=x.device, dtype=torch.float32) / max(w - 1, 1)
    ramp = -yy[None, :, None] * torch.cos(tilt)[:, None, None] + xx[None, None, :] * torch.sin(tilt)[:, None, None]
    sigma = torch.full((b,), HAZE_LUMINANCE_SIGMA * max(h, w), device=x.device)
    radius = int(TRUNCATE * HAZE_LUMINANCE_SIGMA * max(h, w) + 0.5)
    luminance = gaussian_blur(x.mean(dim=1, keepdim=True), sigma, radius)[:, 0]
    cues = torch.stack([_unit(ramp), _unit(luminance), _unit(blobs)], dim=1)
    depth = _unit((weights[:, :, None, None] * cues).sum(dim=1))
    return near[:, None, None] + (1.0 - near[:, None, None]) * depth


def scatter(x: torch.Tensor, beta: torch.Tensor, airlight: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """The atmospheric scattering model ``I = J·t + A·(1 − t)``, ``t = exp(−β·d)``, per sample.

    Args:
        x: (B, C, H, W) clean images.
        beta: (B,) scattering coefficients.
        airlight: (B, C) atmospheric light.
        depth: (B, H, W) normalised depth.
    """
    t = torch.exp(-beta[:, None, None] * depth)[:, None]
    return x * t + airlight[:, :, None, None] * (1.0 - t)


def streak_layer(drops: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The grey rain layer of each sample: its long and short drops smeared by its two streak kernels.

    Args:
        drops: (B, 2, H + k - 1, W + k - 1) drop brightness on a canvas larger than the image, so that
            streaks also enter across its borders; channel 0 long drops, 1 short ones.
        kernels: (B, 2, k, k) long and short streak kernels.

    Returns:
        (B, H, W) streaks, unclipped.
    """
    return valid_convolution(drops, kernels).sum(dim=1)


# -- kernel banks ---------------------------------------------------------------------------------------------


def centre_kernels(kernels: Sequence[np.ndarray]) -> np.ndarray:
    """Zero-pad square odd kernels, centred, to the largest side among them: (K, S, S)."""
    side = max(k.shape[0] for k in kernels)
    return np.stack([np.pad(k, (side - k.shape[0]) // 2) for k in kernels]).astype(np.float32)


@dataclass(frozen=True)
class KernelBank:
    """Random PSFs and rain streaks made once by the CPU generators' own functions, for per-sample picks.

    A kernel zero-padded about its centre blurs as the kernel itself does, so every bank holds one side.

    Attributes:
        blur: (K, S, S) blur PSFs, each of a kind drawn with ``BLUR_KINDS``' probabilities: a uniform pick
            from the bank draws the kinds as ``blur`` does.
        streaks: (K', 2, S', S') long and short streak kernels of one rain field each.
    """

    blur: torch.Tensor
    streaks: torch.Tensor

    @classmethod
    def build(cls, seed: int, device: torch.device, blur: int = 2560, streaks: int = 1024) -> KernelBank:
        """Draw the banks with the CPU generators' ranges.

        Args:
            seed: seeds the kernels' parameters and trajectories.
            device: where the banks live.
            blur: blur PSFs (``slerir_core.degradations.blur``: kinds and parameter ranges).
            streaks: rain streak pairs (length, angle and width uniform in the rain ranges, the short streak
                ``RAIN_SHORT_RANGE`` of the long one).
        """
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(KERNEL_BANK_TAG,)))
        kinds = rng.choice(list(BLUR_KINDS), size=blur, p=list(BLUR_KINDS.values()))
        psfs = [blur_kernel(str(kind), rng) for kind in kinds]
        pairs = []
        for _ in range(streaks):
            length, angle = rng.uniform(*RAIN_LENGTH_RANGE), rng.uniform(*RAIN_ANGLE_RANGE)
            width, short = rng.uniform(*RAIN_WIDTH_RANGE), rng.uniform(*RAIN_SHORT_RANGE)
            pairs += [streak_kernel(length, angle, width), streak_kernel(length * short, angle, width)]
        streak_bank = centre_kernels(pairs)
        streak_bank = streak_bank.reshape(streaks, 2, *streak_bank.shape[1:])
        return cls(torch.from_numpy(centre_kernels(psfs)).to(device), torch.from_numpy(streak_bank).to(device))


# -- the tasks ------------------------------------------------------------------------------------------------


class BatchedDegradations:
    """Every synthetic task as one batched call: ``degradations(x, task, generator)``.

    Args:
        noise_sigmas: the Gaussian noise levels (grey levels) the ``noise`` task draws from, uniformly.
        kernels: the blur and rain kernel banks.
    """

    def __init__(self, noise_sigmas: Sequence[float], kernels: KernelBank) -> None:
        self.kernels = kernels
        self.noise_sigmas = torch.tensor([float(s) for s in noise_sigmas], device=kernels.blur.device)
        self.tasks: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
            "noise": self.noise,
            "rain": self.rain,
            "haze": self.haze,
            "blur": self.blur,
            "lowlight": self.lowlight,
            "micro_noise": self.micro_noise,
            "micro_blur": self.micro_blur,
        }

    def __call__(self, x: torch.Tensor, task: str, generator: torch.Generator) -> torch.Tensor:
        """Degrade every sample of ``x`` (B, C, H, W) in [0, 1] with ``task``; the result is clipped to [0, 1].

        Raises:
            ValueError: an unknown task.
        """
        if task not in self.tasks:
            raise ValueError(f"unknown degradation task {task!r}; choose one of {sorted(self.tasks)}")
        return self.tasks[task](x, generator).clamp(0.0, 1.0)

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise at a level drawn uniformly from ``noise_sigmas``."""
        pick = torch.randint(len(self.noise_sigmas), (x.shape[0],), generator=generator, device=x.device)
        return gaussian_noise(x, self.noise_sigmas[pick], generator)

    def rain(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Rain100L-like streaks screened over the image (``slerir_core.degradations.rain.rain``)."""
        b, _, h, w = x.shape
        density = uniform(b, RAIN_DENSITY_RANGE, generator)[:, None, None]
        intensity = uniform(b, RAIN_INTENSITY_RANGE, generator)
        kernels = self.kernels.streaks[self._pick(len(self.kernels.streaks), b, generator)]
        k = kernels.shape[-1]
        canvas = (b, h + k - 1, w + k - 1)
        seeds = torch.rand(canvas, generator=generator, device=x.device) < density
        low, high = RAIN_DROP_BRIGHTNESS
        brightness = (low + (high - low) * torch.rand(canvas, generator=generator, device=x.device)) * seeds
        is_long = torch.rand(canvas, generator=generator, device=x.device) < 0.5
        drops = torch.stack([brightness * is_long, brightness * ~is_long], dim=1)
        layer = (intensity[:, None, None] * streak_layer(drops, kernels).clamp(0.0, 1.0))[:, None]
        return 1.0 - (1.0 - x) * (1.0 - layer)

    def haze(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Atmospheric scattering over a depth proxy (``slerir_core.degradations.haze.haze``)."""
        b, c, h, w = x.shape
        beta = uniform(b, HAZE_BETA_RANGE, generator)
        grey = uniform(b, HAZE_AIRLIGHT_RANGE, generator)[:, None]
        tint = uniform(b * c, (-HAZE_TINT, HAZE_TINT), generator).reshape(b, c) if c == 3 else 0.0
        airlight = (grey + tint).clamp(0.0, 1.0).expand(b, c)
        near = uniform(b, HAZE_NEAR_RANGE, generator)
        tilt = torch.deg2rad(uniform(b, HAZE_TILT_RANGE, generator))
        grid = torch.randint(len(HAZE_BLOB_GRIDS), (b,), generator=generator, device=x.device)
        blobs = torch.zeros(b, h, w, device=x.device)
        for i, g in enumerate(HAZE_BLOB_GRIDS):  # three grid sizes, each a batched upsampling of all samples
            noise = torch.randn(b, g, g, generator=generator, device=x.device)
            blobs = torch.where((grid == i)[:, None, None], blob_field(noise, h, w), blobs)
        weights = dirichlet(b, HAZE_CUE_WEIGHTS, generator)
        return scatter(x, beta, airlight, depth_proxy(x, tilt, blobs, weights, near))

    def blur(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Camera shake, linear motion, defocus or a Gaussian (``slerir_core.degradations.blur.blur``), a PSF
        of the bank per sample."""
        bank = self.kernels.blur
        return convolve(x, bank[self._pick(len(bank), x.shape[0], generator)])

    def lowlight(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Exposure drop, darkening gamma, then shot and read noise (``slerir_core.degradations.lowlight``)."""
        b = x.shape[0]
        exposure = uniform(b, LOWLIGHT_EXPOSURE_RANGE, generator)[:, None, None, None]
        gamma_ = uniform(b, LOWLIGHT_GAMMA_RANGE, generator)[:, None, None, None]
        peak = log_uniform(b, LOWLIGHT_PEAK_RANGE, generator)
        read_sigma = uniform(b, LOWLIGHT_READ_SIGMA_RANGE, generator)
        return poisson_gaussian(exposure * x.clamp_min(0.0) ** gamma_, peak, read_sigma, generator)

    def micro_noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Photon-limited fluorescence noise (``slerir_core.degradations.microscopy.micro_noise``)."""
        b = x.shape[0]
        peak = log_uniform(b, MICRO_PEAK_RANGE, generator)
        return poisson_gaussian(x, peak, uniform(b, MICRO_READ_SIGMA_RANGE, generator), generator)

    def micro_blur(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Widefield Gaussian PSF (``slerir_core.degradations.microscopy.micro_blur``)."""
        sigma = uniform(x.shape[0], MICRO_PSF_SIGMA_RANGE, generator)
        return gaussian_blur(x, sigma, int(TRUNCATE * MICRO_PSF_SIGMA_RANGE[1] + 0.5))

    @staticmethod
    def _pick(n: int, b: int, generator: torch.Generator) -> torch.Tensor:
        """``b`` uniform indices into a bank of ``n``."""
        return torch.randint(n, (b,), generator=generator, device=generator.device)
