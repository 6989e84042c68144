"""Where a region's tiles meet: a float32 band of rows on the network's device, in which each tile's output
adds up weighted by its raised-cosine ramps (``slerir_core.tiling.blend_weights``), and from which rows no later
tile touches go to the host as soon as they are complete. Beyond the input and output arrays, memory then does
not grow with the image.
"""

from __future__ import annotations

import numpy as np
import torch

Span = tuple[tuple[int, int], torch.Tensor]
"""One row (or column) of tiles: its (start, stop) and its blending weights."""


class BlendBand:
    """A float32 band of rows of a region on the device, where the weighted tile outputs add up.

    Args:
        region: (top, left, bottom, right) of the region in the image.
        channels: channels of the restored values.
        device: where the band lies (the network's device).
    """

    def __init__(self, region: tuple[int, int, int, int], channels: int, device: torch.device) -> None:
        self.region = region
        self.top = region[0]
        self.values = torch.zeros((0, region[3] - region[1], channels), dtype=torch.float32, device=device)

    def add(self, row: Span, col: Span, tile: torch.Tensor) -> None:
        """Add a tile's (h, w, k) output, weighted by its row's and column's ramps, where it meets the region."""
        (y0, y1), wy = row
        (x0, x1), wx = col
        top, left, bottom, right = self.region
        a0, a1, b0, b1 = max(y0, top), min(y1, bottom), max(x0, left), min(x1, right)
        grow = a1 - self.top - self.values.shape[0]
        if grow > 0:
            self.values = torch.cat([self.values, self.values.new_zeros((grow, *self.values.shape[1:]))])
        part = tile[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] * wy[a0 - y0 : a1 - y0, None, None]
        part *= wx[None, b0 - x0 : b1 - x0, None]
        self.values[a0 - self.top : a1 - self.top, b0 - left : b1 - left] += part

    def take(self, stop: int) -> tuple[int, np.ndarray]:
        """The rows above image row ``stop``, which no later tile touches, copied to the host and dropped from
        the band; with the image row of the first."""
        top, final = self.top, max(stop, self.top) - self.top
        rows = self.values[:final].cpu().numpy()
        self.values, self.top = self.values[final:], self.top + final
        return top, rows
