"""Filters of batched images with one kernel per sample, with the borders numpy and scipy use.

The CPU degradations blur with ``np.pad(mode="reflect")`` then FFT convolution, and with
``scipy.ndimage.gaussian_filter`` (``reflect`` borders, truncated at 4 sigma); these twins take a (B, C, H, W)
batch on any device and give each sample the CPU's result for its own kernel, up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRUNCATE = 4.0
"""Gaussian filters stop at this many sigmas, as ``scipy.ndimage.gaussian_filter`` does by default."""


def _mirror(n: int, pad: int, device: torch.device, repeat_edge: bool) -> torch.Tensor:
    """Source index of each position of an axis of length ``n`` padded by ``pad`` on both sides.

    ``repeat_edge=False`` mirrors about the edge pixels (``np.pad`` ``reflect``, ``a b c | b a``);
    ``True`` repeats them (``np.pad`` ``symmetric``, ``scipy.ndimage`` ``reflect``, ``a b c | c b a``). Pads
    wider than the axis keep mirroring, as numpy does.
    """
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * n if repeat_edge else 2 * (n - 1)
    m = torch.remainder(i, period)
    return torch.where(m >= n, period - m - (1 if repeat_edge else 0), m)


def mirror_pad(x: torch.Tensor, pad_h: int, pad_w: int, repeat_edge: bool = False) -> torch.Tensor:
    """Pad the last two axes by mirroring (see :func:`_mirror`), any width."""
    rows = _mirror(x.shape[-2], pad_h, x.device, repeat_edge)
    cols = _mirror(x.shape[-1], pad_w, x.device, repeat_edge)
    return x.index_select(-2, rows).index_select(-1, cols)


def valid_convolution(signal: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """True 2-D convolution of each signal with its kernel, ``valid`` part only, by FFT.

    Args:
        signal: (B, C, Hs, Ws).
        kernels: (B, C or 1, k, k), k <= Hs, Ws.

    Returns:
        (B, C, Hs - k + 1, Ws - k + 1): a circular convolution of the signal's size wraps around only in the
        first ``k - 1`` rows and columns, which the valid part leaves out.
    """
    k = kernels.shape[-1]
    size = signal.shape[-2:]
    spectrum = torch.fft.rfft2(signal.float()) * torch.fft.rfft2(kernels.float(), s=size)
    return torch.fft.irfft2(spectrum, s=size)[..., k - 1 :, k - 1 :]


def convolve(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of each sample with its own kernel, reflecting at the borders.

    The batched twin of ``slerir_core.degradations._common.convolve``: the same reflect padding (``np.pad``'s),
    the same true convolution, so a sample comes out as the CPU would blur it.

    Args:
        x: (B, C, H, W) images.
        kernels: (B, k, k) kernels of odd side k.
    """
    k = kernels.shape[-1]
    padded = mirror_pad(x, k // 2, k // 2)
    return valid_convolution(padded, kernels[:, None])


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Gaussian filter of H and W with one sigma per sample, as ``scipy.ndimage.gaussian_filter`` computes it.

    Each sample's kernel stops at ``int(4 sigma + 0.5)`` pixels and sums to 1 there; borders repeat the edge
    pixel (scipy's ``reflect``).

    Args:
        x: (B, C, H, W) images.
        sigma: (B,) standard deviations in pixels.
        radius: a bound on every sample's kernel radius (kernels are zero beyond their own).
    """
    b, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    own = torch.floor(TRUNCATE * sigma + 0.5)[:, None]
    taps = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2) * (offsets.abs() <= own)
    taps = (taps / taps.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B·C, 2r + 1)
    padded = mirror_pad(x.float(), radius, radius, repeat_edge=True).reshape(1, b * c, h + 2 * radius, -1)
    out = F.conv2d(padded, taps[:, None, :, None], groups=b * c)
    out = F.conv2d(out, taps[:, None, None, :], groups=b * c)
    return out.reshape(b, c, h, w)
