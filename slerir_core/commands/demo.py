"""``slerir demo``: restore a sample image and write it with a labelled before/after picture.

The sample is ``--input`` if given, else the bundled ``slerir_core/samples/sample.png``, else (no sample
shipped yet) scikit-image's astronaut, halved to 256 x 256, with Gaussian noise (sigma 25, seed 0).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from slerir_core.checkpoint import WeightsError
from slerir_core.commands._model_args import add_model_arguments, build_restorer
from slerir_core.config import ConfigError
from slerir_core.io import ImageError, make_layout, read_image, write_image

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.png"
NOISE_SIGMA = 25.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``slerir demo``."""
    parser.add_argument("--input", metavar="PATH", help="a PNG, JPEG or TIFF image (default: the bundled sample)")
    parser.add_argument("--out", default="slerir-demo", metavar="DIR", help="output folder (default: slerir-demo)")
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the config's)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Restore the sample; returns 0, or 2 when the model or the input cannot be used."""
    try:
        restorer = build_restorer(args)
        image, name, where = load_sample(args.input)
    except (WeightsError, ConfigError, ImageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(restorer.describe())
    print(f"input: {where}, {image.shape} {image.dtype}")
    start = time.perf_counter()
    plan = restorer.plan(image)
    restored = restorer.restore(image, plan=plan, tile=args.tile)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    restored_path = write_image(out / f"{name}_restored.png", to_display(restored))
    model_name = f"SLER-IR {restorer.config.name}" + (" (UNTRAINED)" if restorer.untrained else "")
    picture = before_after(to_display(image), to_display(restored), ["before", f"after: {model_name}"])
    pair_path = write_image(out / "before_after.png", picture)
    label = f"; degradation: {plan.label} ({plan.confidence:.0%})" if plan.label else ""
    print(f"routes {','.join(map(str, plan.routes))}{label}; restored in {seconds:.1f} s")
    print(f"wrote {restored_path} and {pair_path}")
    if restorer.untrained:
        print("note: the weights are UNTRAINED, so the 'after' image is the input plus noise, not a restoration.")
    return 0


def load_sample(path: str | None) -> tuple[np.ndarray, str, str]:
    """The demo image, a name for its output and a description of where it came from.

    Raises:
        ImageError: an input that cannot be read.
    """
    if path is not None:
        image, _ = read_image(path)
        return image, Path(path).stem, str(path)
    if SAMPLE.is_file():
        image, _ = read_image(SAMPLE)
        return image, "sample", str(SAMPLE)
    return noisy_astronaut(), "sample", f"scikit-image astronaut, 256 x 256, Gaussian noise sigma {NOISE_SIGMA:g}"


def noisy_astronaut(sigma: float = NOISE_SIGMA, seed: int = 0) -> np.ndarray:
    """scikit-image's astronaut, block-averaged to 256 x 256, plus Gaussian noise, as uint8 RGB."""
    from skimage import data

    clean = data.astronaut().astype(np.float32).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    noisy = clean + np.random.default_rng(seed).normal(0.0, sigma, clean.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def to_display(image: np.ndarray) -> np.ndarray:
    """A uint8 grey/RGB picture of a 2-D image (the middle slice of a stack), stretched to its own range."""
    layout = make_layout(image.shape)
    canon = layout.canonical(image)[tuple(n // 2 for n in layout.stack_shape)]
    picture = canon[..., :3] if layout.mode in ("rgb", "rgba") else canon[..., :1]
    if picture.dtype != np.uint8:
        low, high = float(picture.min()), float(picture.max())
        picture = ((picture.astype(np.float32) - low) * (255.0 / max(high - low, 1e-12))).round().astype(np.uint8)
    return np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else np.ascontiguousarray(picture)


def before_after(
    before: np.ndarray, after: np.ndarray, labels: list[str], gap: int = 8, header: int = 22
) -> np.ndarray:
    """Two RGB uint8 pictures side by side on white, each with its label above it."""
    from PIL import Image, ImageDraw

    h, w = before.shape[:2]
    canvas = np.full((h + header, 2 * w + gap, 3), 255, np.uint8)
    canvas[header:, :w] = before
    canvas[header:, w + gap :] = after
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for i, text in enumerate(labels):
        draw.text((i * (w + gap) + 4, 4), text, fill=(0, 0, 0))
    return np.asarray(picture)
