"""``slerir demo``: restore a sample image and write it with a labelled before/after picture.

The image is ``--input`` if given, else one of the samples of :mod:`slerir_core.samples` (``--sample``,
default ``noisy``: scikit-image's chelsea, held out of training, with Gaussian noise of sigma 25).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from slerir_core.atomic import prepare_folder
from slerir_core.commands._drawing import font, line_height, to_uint8
from slerir_core.commands._model_args import add_model_arguments, build_restorer
from slerir_core.errors import ConfigError, ImageError, WeightsError
from slerir_core.io.files import read_image_file, write_image
from slerir_core.io.layout import make_layout
from slerir_core.samples import PHOTO_SAMPLES, degraded_photo

LABEL_FONT = 15
"""Text size of the before/after labels, in pixels."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``slerir demo``."""
    parser.add_argument("--input", metavar="PATH", help="a PNG, JPEG or TIFF image (default: a bundled sample)")
    parser.add_argument(
        "--sample", default="noisy", choices=list(PHOTO_SAMPLES), help="the bundled sample to restore (default: noisy)"
    )
    parser.add_argument("--out", default="slerir-demo", metavar="DIR", help="output folder (default: slerir-demo)")
    parser.add_argument("--tile", type=int, help="tile size in pixels (default: the config's)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Restore the sample; returns 0, or 2 when the model, the input or the output folder cannot be used."""
    out = Path(args.out)
    try:
        restorer = build_restorer(args)
        image, axes, channels, name, where = load_sample(args.input, args.sample)
        restorer.resolve_options(tile=args.tile)
        prepare_folder(out)  # before the work: --out may name a file or a read-only folder
    except (WeightsError, ConfigError, ImageError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write to the output folder {out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(restorer.describe())
    print(f"input: {where}, {image.shape} {image.dtype}" + (f" ({axes})" if axes else ""))
    start = time.perf_counter()
    try:
        plan = restorer.plan(image, axes=axes, channels=channels)
        restored = restorer.restore(image, plan=plan, tile=args.tile, axes=axes, channels=channels)
    except ImageError as err:  # NaN, too small, ... only known once the image is looked at
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    restored_path = write_image(out / f"{name}_restored.png", to_display(restored, axes, channels))
    model_name = f"SLER-IR {restorer.config.name}" + (" (UNTRAINED)" if restorer.untrained else "")
    picture = before_after(
        to_display(image, axes, channels), to_display(restored, axes, channels), ["before", f"after: {model_name}"]
    )
    pair_path = write_image(out / "before_after.png", picture)
    print(f"routes {','.join(map(str, plan.routes))}; label: {plan.verdict()}; restored in {seconds:.1f} s")
    print(f"wrote {restored_path} and {pair_path}")
    if restorer.untrained:
        print(
            "note: the weights are UNTRAINED, so the 'after' image is the input plus a random residual "
            "(colour casts, noise), not a restoration."
        )
    return 0


def load_sample(path: str | None, sample: str = "noisy") -> tuple[np.ndarray, str | None, str, str, str]:
    """The demo image, its axes (from a TIFF's metadata; None: guess from the shape), its ``channels``
    option (``rgb`` when the file stores colour, else ``auto``), a name for its output and a description of
    where it came from.

    Raises:
        ImageError: an input that cannot be read.
    """
    if path is not None:
        image = read_image_file(path)
        return image.array, image.axes, "rgb" if image.colour else "auto", Path(path).stem, str(path)
    recipe = PHOTO_SAMPLES[sample]
    where = f"sample {sample!r}: skimage.data.{recipe.source} with {recipe.task} {recipe.params}"
    return degraded_photo(sample), None, "auto", f"{recipe.source}_{sample}", where


def to_display(image: np.ndarray, axes: str | None = None, channels: str = "auto") -> np.ndarray:
    """A uint8 grey/RGB picture of a 2-D image (the middle slice of a stack, the first of several channels
    that are not RGB); data that is not uint8 is stretched for display (``_drawing.to_uint8``)."""
    layout = make_layout(image.shape, axes, channels, image.dtype)
    canon = layout.canonical(image)[tuple(n // 2 for n in layout.stack_shape)]
    picture = to_uint8(canon[..., :3] if layout.colour else canon[..., :1])
    return np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else np.ascontiguousarray(picture)


def before_after(before: np.ndarray, after: np.ndarray, labels: list[str], gap: int = 8) -> np.ndarray:
    """Two RGB uint8 pictures side by side on white, each with its label above it."""
    h, w = before.shape[:2]
    face = font(LABEL_FONT)
    header = line_height(face) + 6
    canvas = np.full((h + header, 2 * w + gap, 3), 255, np.uint8)
    canvas[header:, :w] = before
    canvas[header:, w + gap :] = after
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for i, text in enumerate(labels):
        draw.text((i * (w + gap) + 4, 3), text, fill=(0, 0, 0), font=face)
    return np.asarray(picture)
