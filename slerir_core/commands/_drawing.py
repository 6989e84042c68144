"""Text and grey levels for the pictures the commands write (the demo's before/after, ``--save-maps``)."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

DISPLAY_PERCENTILES = (0.1, 99.9)
"""Grey levels of data that is not uint8 are stretched between these percentiles: a few hot pixels saturate
instead of darkening the whole picture."""


@cache
def font(size: int, bold: bool = False) -> Font:
    """DejaVu Sans at ``size`` pixels, else Pillow's own scalable font.

    Pillow looks for the TrueType file in the system's font folders (fonts-dejavu-core on Debian). Without it,
    ``load_default(size=...)`` (Pillow 10.1 and later, with FreeType) still scales; older Pillow or Pillow built
    without FreeType falls back to its fixed bitmap font, small but readable.

    Args:
        size: the font's size in pixels.
        bold: DejaVu Sans Bold where installed.
    """
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has no scalable default
        return ImageFont.load_default()


def text_size(text: str, face: Font) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn at the origin in ``face`` (its ink, including what lies
    below the baseline)."""
    _, _, right, bottom = face.getbbox(text)
    return int(np.ceil(right)), int(np.ceil(bottom))


def line_height(face: Font) -> int:
    """Pixels from one line of text to the next in ``face``."""
    height = text_size("Ag", face)[1]
    return height + max(2, height // 4)


def draw_label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, face: Font) -> None:
    """White text on a black box, legible over any picture."""
    width, height = text_size(text, face)
    x, y = xy
    draw.rectangle((x, y, x + width + 3, y + height + 3), fill=(0, 0, 0))
    draw.text((x + 2, y + 1), text, fill=(255, 255, 255), font=face)


def to_uint8(picture: np.ndarray) -> np.ndarray:
    """A picture for display as uint8: uint8 is kept, other data stretched between its ``DISPLAY_PERCENTILES``."""
    if picture.dtype == np.uint8:
        return picture
    values = picture.astype(np.float32)
    low, high = np.percentile(values, DISPLAY_PERCENTILES)
    return ((values - low) * (255.0 / max(float(high - low), 1e-12))).clip(0, 255).round().astype(np.uint8)
