"""Clean images that need no download: procedural dead leaves and the photographs bundled with scikit-image.

Dead leaves (Matheron's model; Lee, Mumford & Huang 2001) are occluding random shapes whose radii follow
``p(r) ∝ r⁻³``, which makes the image statistically scale-invariant like natural photographs, with
edges and flat regions at every scale. Here each leaf also carries a texture (grating, smooth noise or
a linear gradient) and a sharp or soft rim, so restorers see texture as well as edges (as in Achddou,
Gousseau & Ladjal, "Synthetic images as a regularity prior for image restoration neural networks", 2021).

The scikit-image images ship inside the ``skimage`` wheel (``skimage/data``), so they load offline; the
ones fetched on demand through pooch are left out on purpose. :data:`SKIMAGE_SOURCES` lists each with
its provenance and licence as scikit-image documents them, and its train/test split.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage
import skimage.data
from scipy.ndimage import gaussian_filter
from skimage.color import hsv2rgb
from skimage.util import img_as_float32

__all__ = ["SKIMAGE_SOURCES", "SkimageSource", "dead_leaves", "random_crop", "skimage_images"]


# ----------------------------------------------------------------------------------------------------------
# Dead leaves
# ----------------------------------------------------------------------------------------------------------

_SHAPES = ("disc", "ellipse", "rectangle")
_SHAPE_PROBS = (0.5, 0.3, 0.2)
_TEXTURES = ("flat", "grating", "noise", "gradient")
_TEXTURE_PROBS = (0.35, 0.2, 0.3, 0.15)
_BATCH = 64


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int | np.integer) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Base and second colour of ``n`` leaves, as (n, 3) RGB.

    Drawn in HSV with saturation skewed low and value spread wide, closer to natural scenes than uniform
    RGB. The second colour is a neighbour of the first (hue ±0.05, value ±0.35): the texture contrast.
    """
    hsv = np.stack([rng.random(n), rng.beta(1.2, 2.0, n), rng.uniform(0.04, 1.0, n)], axis=-1)
    hsv2 = hsv + np.stack([rng.normal(0, 0.05, n), rng.normal(0, 0.1, n), rng.uniform(-0.35, 0.35, n)], -1)
    hsv2[:, 0] %= 1.0
    return hsv2rgb(hsv), hsv2rgb(np.clip(hsv2, 0.0, 1.0))


def _radii(n: int, rmin: float, rmax: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` radii with density ∝ r⁻³ on [rmin, rmax], by inverting the CDF."""
    u = rng.random(n)
    return (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5


def _noise_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth periodic noise in [0, 1]; periodic so that leaves can read it at any offset, modulo the size."""
    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap").astype(np.float32)
    return (field - field.min()) / max(np.ptp(field), 1e-8)


def dead_leaves(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    radius_range: tuple[float, float | None] = (3.0, None),
    soft_prob: float = 0.3,
    max_leaves: int = 5000,
) -> np.ndarray:
    """A textured dead-leaves image.

    Leaves are composited front to back (``over`` operator with a running transmittance), so painting
    stops once the image is covered, leaves hidden behind earlier ones cost only a bounding-box check,
    and each leaf touches only its bounding box. The last uncovered specks show a smooth textured
    background. Shapes: discs (50 %), ellipses with axis ratio 0.4–1 (30 %) and rectangles (20 %), at
    random orientation; rims are anti-aliased (one-pixel ramp) or, with probability ``soft_prob``, soft
    (ramp 1.5–4 px). Textures: flat (35 %), a sinusoidal grating at 0.04–0.3 cycles/pixel (20 %), smooth
    noise at one of two scales (30 %) or a linear gradient (15 %), each blending the leaf's two colours.

    Args:
        size: ``H`` or ``(H, W)``.
        rng: random source; the same seed gives the same image.
        radius_range: smallest and largest leaf radius in pixels; the largest defaults to
            ``max(H, W) / 3``.
        soft_prob: probability that a leaf has a soft rim.
        max_leaves: upper bound on the leaves drawn, reached only when ``radius_range`` is tiny.

    Returns:
        H×W×3 float32 image in [0, 1].
    """
    h, w = _pair(size)
    rmin = float(radius_range[0])
    rmax = float(radius_range[1]) if radius_range[1] is not None else max(h, w) / 3.0
    if not 0 < rmin <= rmax:
        raise ValueError(f"radius_range must satisfy 0 < min <= max, got {(rmin, rmax)}")
    fields = np.stack([_noise_field((h, w), 1.5, rng), _noise_field((h, w), 5.0, rng)])
    image = np.zeros((h, w, 3), np.float32)
    transmittance = np.ones((h, w), np.float32)
    drawn = 0
    while drawn < max_leaves and transmittance.mean() > 1e-2:
        n = min(_BATCH, max_leaves - drawn)
        drawn += n
        _paint_batch(image, transmittance, fields, n, rmin, rmax, soft_prob, rng)
    bg_lo, bg_hi = _colours(1, rng)
    background = bg_lo + (bg_hi - bg_lo) * fields[1][:, :, None]
    image += transmittance[:, :, None] * background.astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def _paint_batch(
    image: np.ndarray,
    transmittance: np.ndarray,
    fields: np.ndarray,
    n: int,
    rmin: float,
    rmax: float,
    soft_prob: float,
    rng: np.random.Generator,
) -> None:
    """Draw the parameters of ``n`` leaves at once, then composite them, in order, behind what is painted.

    The loop runs over leaves, never pixels: each leaf is drawn with array operations on its bounding
    box, and one that falls wholly behind earlier leaves is skipped after a single ``max``.
    """
    h, w = transmittance.shape
    radius = _radii(n, rmin, rmax, rng)
    shape = rng.choice(len(_SHAPES), size=n, p=_SHAPE_PROBS)
    aspect = np.where(shape == 0, 1.0, rng.uniform(0.4, 1.0, n))
    angle = rng.uniform(0.0, np.pi, n)
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    softness = np.where(rng.random(n) < soft_prob, rng.uniform(1.5, 4.0, n), 1.0)
    # A leaf touches the frame iff its centre lies within its radius of it; drawing centres there keeps
    # the model stationary up to the borders without wasting leaves outside.
    cy = rng.uniform(-radius, h + radius)
    cx = rng.uniform(-radius, w + radius)
    texture = rng.choice(len(_TEXTURES), size=n, p=_TEXTURE_PROBS)
    tex_angle = rng.uniform(0.0, np.pi, n)
    wavenumber = 2 * np.pi * rng.uniform(0.04, 0.3, n)
    ky, kx = wavenumber * np.sin(tex_angle), wavenumber * np.cos(tex_angle)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    field_id = rng.integers(0, len(fields), n)
    offset_y, offset_x = rng.integers(0, h, n), rng.integers(0, w, n)
    colour_a, colour_b = _colours(n, rng)
    extent = radius + softness
    y0s = np.clip(np.floor(cy - extent), 0, h).astype(int)
    y1s = np.clip(np.ceil(cy + extent) + 1, 0, h).astype(int)
    x0s = np.clip(np.floor(cx - extent), 0, w).astype(int)
    x1s = np.clip(np.ceil(cx + extent) + 1, 0, w).astype(int)
    for i in np.flatnonzero((y0s < y1s) & (x0s < x1s)):
        y0, y1, x0, x1 = y0s[i], y1s[i], x0s[i], x1s[i]
        t_box = transmittance[y0:y1, x0:x1]
        if t_box.max() < 1e-3:
            continue
        dy = (np.arange(y0, y1) - cy[i])[:, None]
        dx = (np.arange(x0, x1) - cx[i])[None, :]
        u, v = dx * cos_a[i] + dy * sin_a[i], dy * cos_a[i] - dx * sin_a[i]
        a, b = radius[i], radius[i] * aspect[i]
        if shape[i] == 2:
            inside = np.minimum(a - np.abs(u), b - np.abs(v))
        else:
            # (1 - q)·b under-estimates the distance to an ellipse's rim: close enough for a 1-4 px ramp.
            inside = (1.0 - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * b
        alpha = np.minimum(np.maximum(inside / softness[i] + 0.5, 0.0), 1.0)
        weight = (t_box * alpha)[:, :, None]
        kind = texture[i]
        if kind == 0:
            image[y0:y1, x0:x1] += weight * colour_a[i]
        else:
            if kind == 1:
                pattern = 0.5 + 0.5 * np.sin(dx * kx[i] + dy * ky[i] + phase[i])
            elif kind == 2:
                rows = (np.arange(y0, y1) + offset_y[i]) % h
                cols = (np.arange(x0, x1) + offset_x[i]) % w
                pattern = fields[field_id[i]][rows[:, None], cols[None, :]]
            else:
                pattern = np.minimum(np.maximum(0.5 + u / (2 * a), 0.0), 1.0)
            image[y0:y1, x0:x1] += weight * (colour_a[i] + (colour_b[i] - colour_a[i]) * pattern[:, :, None])
        t_box *= 1.0 - alpha


def random_crop(img: np.ndarray, size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed crop of ``size`` from an H×W(×C) image.

    Args:
        img: the image.
        size: ``S`` or ``(H, W)`` of the crop.
        rng: random source.

    Returns:
        A contiguous copy of the crop.

    Raises:
        ValueError: the image is smaller than the crop.
    """
    ch, cw = _pair(size)
    h, w = img.shape[:2]
    if ch > h or cw > w:
        raise ValueError(f"crop {(ch, cw)} is larger than the image {(h, w)}")
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(img[top : top + ch, left : left + cw])


# ----------------------------------------------------------------------------------------------------------
# scikit-image's bundled images
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkimageSource:
    """One image bundled with scikit-image.

    Attributes:
        name: the ``skimage.data`` function that loads it.
        filename: its file inside ``skimage/data``; checked before loading, so nothing is ever fetched.
        split: ``"train"`` or ``"test"``.
        provenance: where scikit-image says it comes from.
        licence: its licence as scikit-image documents it.
    """

    name: str
    filename: str
    split: str
    provenance: str
    licence: str

    @property
    def loader(self) -> Callable[[], np.ndarray]:
        """The ``skimage.data`` function."""
        return getattr(skimage.data, self.name)


# Left out: clock (already motion-blurred), colorwheel/checkerboard/logo/binary_blobs/horse/phantom (not
# photographs), lfw_subset (25×25 faces), stereo_motorcycle (Middlebury terms), microaneurysms (102×102),
# and everything fetched through pooch (brain, cells3d, eagle, human_mitosis, kidney, lily, skin, ...).
# JPEG sources (hubble_deep_field, retina, rocket) carry mild compression artefacts.
_PD, _NK = "public domain", "no known copyright restrictions"
_UNSTATED = "not stated by scikit-image; ships in its BSD-3-Clause wheel"
SKIMAGE_SOURCES: dict[str, SkimageSource] = {
    s.name: s
    for s in (
        SkimageSource("astronaut", "astronaut.png", "train", "NASA Great Images, Eileen Collins", _PD),
        SkimageSource("coffee", "coffee.png", "train", "Rachel Michetti, Pikolo Espresso Bar", "CC0"),
        SkimageSource("rocket", "rocket.jpg", "train", "SpaceX, DSCOVR launch on Falcon 9", _PD),
        SkimageSource(
            "hubble_deep_field",
            "hubble_deep_field.jpg",
            "train",
            "NASA HubbleSite, eXtreme Deep Field 2012",
            _PD,
        ),
        SkimageSource("immunohistochemistry", "ihc.png", "train", "CMMI, IHC staining of colonic glands", _NK),
        SkimageSource("brick", "brick.png", "train", "CC0Textures Bricks25", "CC0"),
        SkimageSource("grass", "grass.png", "train", "DeviantArt linolafett, Grass-01", "CC0"),
        SkimageSource("coins", "coins.png", "train", "Brooklyn Museum, Greek coins from Pompeii", _NK),
        SkimageSource("moon", "moon.png", "train", "scikit-image test image, surface of the moon", _UNSTATED),
        SkimageSource("cell", "cell.png", "train", "qpformat quantitative phase image of a cell", "CC0"),
        SkimageSource("page", "page.png", "train", "scikit-image test image, scanned page", _UNSTATED),
        SkimageSource("chelsea", "chelsea.png", "test", "Stefan van der Walt, Chelsea the cat", "CC0"),
        SkimageSource("retina", "retina.jpg", "test", "Wikimedia, Mikael Häggström, fundus photograph", "CC0"),
        SkimageSource("camera", "camera.png", "test", "Lav Varshney, cameraman", "CC0"),
        SkimageSource("gravel", "gravel.png", "test", "CC0Textures Gravel04", "CC0"),
        SkimageSource("text", "text.png", "test", "Wikipedia, File:Corner.png", _PD),
    )
}
"""Bundled scikit-image images by name; held-out test images have ``split == "test"``."""


@functools.cache
def _load(name: str) -> np.ndarray:
    """Load once as read-only H×W×3 float32 in [0, 1]."""
    image = img_as_float32(SKIMAGE_SOURCES[name].loader())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    image.flags.writeable = False
    return image


def skimage_images(split: str = "train") -> list[tuple[str, np.ndarray]]:
    """The bundled scikit-image photographs of one split, as RGB (grey ones repeated to 3 channels).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.

    Returns:
        ``(name, image)`` pairs, image H×W×3 float32 in [0, 1] (a fresh copy); images whose file is
        missing from this scikit-image install are skipped with a warning, never downloaded.

    Raises:
        ValueError: an unknown split.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    data_dir = Path(skimage.data.__file__).parent
    images = []
    for source in SKIMAGE_SOURCES.values():
        if split != "all" and source.split != split:
            continue
        if not (data_dir / source.filename).is_file():
            warnings.warn(
                f"scikit-image {skimage.__version__} does not bundle {source.filename!r}; skipping {source.name!r}",
                stacklevel=2,
            )
            continue
        images.append((source.name, _load(source.name).copy()))
    return images
