"""The blind-spot self-supervised loss (after Noise2Void and Noise2Self): learn to denoise from noisy images alone.

A few pixels of each noisy crop are hidden: each is replaced by the value of a random pixel around it that is
not hidden itself (in a 5×5 window without its centre), and the network is scored on how well it predicts the
hidden pixels' noisy values. A network cannot predict a pixel's own noise from its neighbours, so the best it
can do is predict its clean value: the expected loss is the clean-image error plus the noise variance. This
holds only for noise that is independent from pixel to pixel (shot noise, read noise, per-pixel gain); noise
correlated across pixels (demosaicked camera noise, compression artefacts, stripes) is learnt as signal.

No value of a hidden pixel reaches the network's input, at that pixel or, through the replacements, at any
other: the replacements read visible pixels only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Restore = Callable[[torch.Tensor], torch.Tensor]
"""The network as a loss sees it: noisy crops in, restored crops out."""

HIDDEN_SHARE = 0.02
"""Share of each crop's pixels hidden per step: enough masked pixels for a steady gradient, few enough that
the replacements rarely fill a neighbourhood."""
WINDOW = 5
"""Side of the neighbourhood a hidden pixel's replacement comes from."""
TRIES = 4
"""Random neighbours tried for a visible one (at 2 % hidden, all four are hidden or outside one time in 10⁵)."""


def hidden_mask(
    shape: tuple[int, int, int, int], generator: torch.Generator, share: float = HIDDEN_SHARE
) -> torch.Tensor:
    """(B, 1, H, W) bool: the pixels to hide, about ``share`` of each crop, the same in every channel."""
    b, _, h, w = shape
    return torch.rand((b, 1, h, w), generator=generator, device=generator.device) < share


def blind_spot_input(x: torch.Tensor, hidden: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` with every hidden pixel replaced by the value of a random visible pixel of its ``WINDOW``²
    neighbourhood (Noise2Void's replacement), or, if the tries all land on hidden or outside pixels, the mean
    of its visible neighbours.

    A neighbour's value keeps the statistics of a noisy pixel, so the network cannot tell the hidden pixels
    apart and learns to restore a pixel from its context, which is what it does to every pixel afterwards.
    (A smooth stand-in such as the neighbours' mean marks the hidden pixels, and what a network with a skip
    from input to output learns there does not carry over to the visible pixels it restores later.)

    Args:
        x: (B, C, H, W) noisy crops.
        hidden: (B, 1, H, W) bool (``hidden_mask``).
        generator: draws the neighbours, on ``x``'s device.
    """
    b, c, h, w = x.shape
    pad = WINDOW // 2
    visible = (~hidden).to(x.dtype)
    padded = F.pad(x, (pad,) * 4).reshape(b, c, -1)
    # Outside the crop counts as hidden: a reflected border would hand a pixel near the edge its own value.
    seen = F.pad(visible, (pad,) * 4).reshape(b, 1, -1)
    rows = torch.arange(h, device=x.device)[:, None] + pad
    cols = torch.arange(w, device=x.device)[None, :] + pad
    offsets = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1) if dy or dx]
    table = torch.tensor(offsets, device=x.device)
    out = _visible_mean(x, visible)
    found = torch.zeros_like(hidden)
    for _ in range(TRIES):
        pick = table[torch.randint(len(offsets), (b, 1, h, w), generator=generator, device=x.device)]
        index = ((rows + pick[..., 0]) * (w + 2 * pad) + cols + pick[..., 1]).reshape(b, 1, -1)
        ok = (seen.gather(2, index).reshape(b, 1, h, w) > 0) & ~found
        values = padded.gather(2, index.expand(b, c, -1)).reshape(b, c, h, w)
        out = torch.where(ok, values, out)
        found = found | ok
    return torch.where(hidden, out, x)


def _visible_mean(x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Each pixel's mean over the visible pixels of its ``WINDOW``² neighbourhood (itself left out); the crop's
    mean where none is visible."""
    ring = torch.ones(1, 1, WINDOW, WINDOW, dtype=x.dtype, device=x.device)
    ring[..., WINDOW // 2, WINDOW // 2] = 0.0
    pad = WINDOW // 2
    sums = F.conv2d(F.pad(x * visible, (pad,) * 4), ring.expand(x.shape[1], 1, -1, -1), groups=x.shape[1])
    counts = F.conv2d(F.pad(visible, (pad,) * 4), ring)
    fallback = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return torch.where(counts > 0, sums / counts.clamp_min(1.0), fallback)


def blind_spot_loss(predicted: torch.Tensor, noisy: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared error at the hidden pixels only, against their noisy values."""
    mask = hidden.expand_as(noisy).to(predicted.dtype)
    return ((predicted.float() - noisy.float()).square() * mask).sum() / mask.sum().clamp_min(1.0)


def blind_spot_case(x: torch.Tensor, generator: torch.Generator) -> Callable[[Restore], torch.Tensor]:
    """One draw of the loss on crops ``x``: a function of the network (``restore(crops) -> restored``).

    The hidden pixels and their stand-ins are drawn once, so calling it again with another network scores that
    one on the same draw.
    """
    hidden = hidden_mask(tuple(x.shape), generator)
    masked = blind_spot_input(x, hidden, generator)
    return lambda restore: blind_spot_loss(restore(masked), x, hidden)
