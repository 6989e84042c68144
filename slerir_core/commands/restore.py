"""``slerir restore INPUT... -o OUTDIR``: restore image files, folders and globs (TIFF stacks, PNG, JPEG).

Each input ``<stem>.<ext>`` is written to ``OUTDIR/<stem>_restored.<ext>`` (with ``--save-maps`` also
``<stem>_degradation_map``, ``<stem>_routes`` and ``<stem>_report.json``), atomically (a temporary file in
OUTDIR, then ``os.replace``), with the input's calibration (TIFF resolution, ImageJ and OME-TIFF pixel
sizes, PNG/JPEG dpi). An input whose outputs would overwrite one of the inputs, or another input's
outputs, is refused. An input whose output already exists is skipped, so a second run over the same
folders only does what is left; ``--overwrite`` restores it again. Folders and globs leave out files named
like this command's outputs (``*_restored``, ``*_degradation_map``, ``*_routes``), so OUTDIR may be the
input folder; name such a file to restore it. A file that cannot be read or restored is reported and
skipped; the others still run. A grey PNG with alpha (2 channels) has its grey restored and its alpha
copied, as RGBA images do.

OUTDIR is checked to be writable before anything is restored, temporary files that a killed run left there
are removed, and a full or read-only OUTDIR found mid-run stops the run rather than restoring images that
cannot be written.

Exit codes: 0 all restored (or skipped, their outputs existing); 1 some inputs failed (reported, the rest
written); 2 nothing ran (bad options, config or weights, no input file found, or OUTDIR not writable).
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from slerir_core.atomic import prepare_folder
from slerir_core.commands._model_args import add_model_arguments, build_restorer
from slerir_core.commands.maps import save_maps
from slerir_core.errors import ConfigError, ImageError, WeightsError
from slerir_core.heap import reuse_freed_memory
from slerir_core.io.files import IMAGE_SUFFIXES, MAX_PIXELS_ENV, pixel_limit, read_image_file, write_image
from slerir_core.io.layout import CHANNEL_OPTIONS, describe_channels, infer_axes, make_layout
from slerir_core.io.scaling import SCALINGS
from slerir_core.plan import Plan
from slerir_core.restore import PLAN_PER, RestoreOptions, Restorer
from slerir_core.tiling import SmallTileWarning

OUTPUT_STEM = re.compile(r"_(restored|degradation_map|routes)$")
"""Stems of the files this command writes, which folders and globs leave out."""


class OutputError(OSError):
    """An output that could not be written: the folder is full, read-only or gone."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``slerir restore``."""
    parser.epilog = (
        "Each INPUT is written to OUTDIR/<stem>_restored.<ext>, atomically, with its calibration; an output "
        "that would overwrite an input is refused, and one that exists is skipped unless --overwrite. "
        "Folders and globs leave out files named like outputs (*_restored, *_degradation_map, *_routes). "
        "Exit codes: 0 all restored or skipped, 1 some inputs failed (reported; the others were written), "
        "2 nothing ran (bad options, config or weights, no input file found, or OUTDIR not writable)."
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the restored files")
    parser.add_argument(
        "--routes", metavar="R,R,...", help="8 expert indices overriding the router, e.g. 0,2,1,1,0,2,2,1"
    )
    parser.add_argument(
        "--tile", type=int, help="tile size in pixels, 0 (no tiling) or at least 64 (default: the config's)"
    )
    parser.add_argument("--overlap", type=int, help="overlap of neighbouring tiles (default: the config's)")
    parser.add_argument(
        "--plan-per",
        choices=PLAN_PER,
        default="slice",
        help="route every 2-D slice, or once per stack on its middle slice (default: slice)",
    )
    parser.add_argument("--axes", help="axes of every input, e.g. TZYX, ZYXC (default: TIFF metadata or the shape)")
    parser.add_argument(
        "--channels",
        choices=CHANNEL_OPTIONS,
        default="auto",
        help="auto: RGB/RGBA for files that store colour (PNG, JPEG, RGB TIFF) and 8-bit data with 3 or 4 "
        "channels last, every other multichannel image one channel at a time; rgb: 3 channels RGB, 4 RGBA; "
        "grey: always one channel at a time",
    )
    parser.add_argument(
        "--scaling",
        choices=SCALINGS,
        default="percentile",
        help="how data that is neither 8-bit nor float in [0, 1] is scaled for the network: percentile: its 1st "
        "to 99.8th percentile (hot and dead pixels keep their values); minmax: its minimum and maximum "
        "(default: percentile)",
    )
    parser.add_argument(
        "--grey-noise-as-is",
        action="store_true",
        help="plan noisy grey images on their three equal channels instead of with the noise spread over the "
        "channels as the network was trained to see it (default: spread; see slerir_core.grey_noise)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="restore inputs whose outputs exist again (default: skip them)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help=f"largest PNG/JPEG to read, in pixels, against decompression bombs (0: no limit; default: "
        f"${MAX_PIXELS_ENV} or 178956970)",
    )
    parser.add_argument(
        "--save-maps",
        action="store_true",
        help="also write <stem>_degradation_map, <stem>_routes images and a <stem>_report.json",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (they are drawn only when stderr is a terminal)"
    )
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Restore every input; returns the exit code."""
    try:
        pixel_limit(args.max_pixels)
        restorer = build_restorer(args)
        routes = parse_routes(args.routes)
        options = restorer.resolve_options(
            routes=routes,
            tile=args.tile,
            overlap=args.overlap,
            plan_per=args.plan_per,
            scaling=args.scaling,
            spread_grey_noise=not args.grey_noise_as_is,
        )
    except (WeightsError, ConfigError, ImageError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(restorer.describe())
    files, failures, outputs_left_out = collect_inputs(args.inputs)
    for problem in failures:
        print(f"error: {problem}", file=sys.stderr)
    if outputs_left_out:
        print(
            f"note: left out {len(outputs_left_out)} file(s) named like outputs of this command "
            f"({', '.join(p.name for p in outputs_left_out[:3])}{', ...' if len(outputs_left_out) > 3 else ''}); "
            "name them on the command line to restore them",
            file=sys.stderr,
        )
    if not files:
        print("error: no input files found; nothing to restore", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    try:
        stale = prepare_folder(out_dir)
    except OSError as err:
        print(f"error: cannot write to the output folder {out_dir}: {err.strerror or err}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"note: removed {path.name}, a temporary file an interrupted run left", file=sys.stderr)
    jobs, refused = output_pairs(files, out_dir, args.save_maps)
    for problem in refused:
        print(f"error: {problem}", file=sys.stderr)
    jobs, existing = skip_existing(jobs, out_dir, args.save_maps, args.overwrite)
    for source, output in existing:
        print(f"note: {source}: {output} exists; skipped (--overwrite restores it again)", file=sys.stderr)
    # One heap for the batch: each file reuses the pages the one before it faulted in.
    with reuse_freed_memory():
        restored, failed = restore_jobs(restorer, jobs, args, options)
    failed += len(failures) + len(refused)
    skipped = f"; {len(existing)} skipped (outputs exist)" if existing else ""
    print(
        f"restored {restored} of {restored + failed + len(existing)} inputs into {out_dir}"
        + (f"; {failed} failed" if failed else "")
        + skipped
    )
    return 1 if failed else 0


def restore_jobs(
    restorer: Restorer, jobs: list[tuple[Path, Path]], args: argparse.Namespace, options: RestoreOptions
) -> tuple[int, int]:
    """Restore each (source, target) job, reporting as it goes; returns (restored, failed) counts."""
    failed, restored = 0, 0
    for number, (source, target) in enumerate(
        tqdm(jobs, unit="file", disable=not show_progress(args) or len(jobs) < 2, desc="files")
    ):
        try:
            report = restore_file(restorer, source, target, args, options)
        # Out-of-memory on one huge file must not stop the batch: the smaller files after it can still run.
        except (ImageError, ValueError, OSError, MemoryError, torch.OutOfMemoryError) as err:
            message = str(err) or type(err).__name__
            where = "" if str(source) in message else f"{source}: "
            failed += 1
            # A folder that took no output (full, read-only, over quota) would fail every later file too:
            # stop rather than restore images that cannot be written.
            if isinstance(err, OutputError):
                left = len(jobs) - number - 1
                tqdm.write(f"error: {where}{message}; stopping, {left} more input(s) not attempted", file=sys.stderr)
                failed += left
                break
            tqdm.write(f"error: {where}{message} (skipped)", file=sys.stderr)
            continue
        restored += 1
        tqdm.write(f"{source} -> {target} ({report})")
    return restored, failed


def parse_routes(text: str | None) -> list[int] | None:
    """``"0,2,1,1,0,2,2,1"`` -> a list of ints (range and length are checked against the model later).

    Raises:
        ValueError: something other than comma-separated integers.
    """
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise ValueError(
            f"--routes takes comma-separated expert indices such as 0,2,1,1,0,2,2,1, not {text!r}"
        ) from None


def collect_inputs(patterns: list[str]) -> tuple[list[Path], list[str], list[Path]]:
    """Expand files, folders (their image files, not recursive) and glob patterns; drop duplicates.

    Folders and globs leave out files whose names end like this command's outputs (``is_output_name``);
    files named one by one are always kept.

    Returns:
        The files in order, a message for each pattern that matched nothing, and the files left out.
    """
    files: list[Path] = []
    problems: list[str] = []
    left_out: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            problem = f"{pattern}: the folder holds no {'/'.join(IMAGE_SUFFIXES)} files"
        elif path.is_file():
            files.append(path)
            continue
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            problem = f"{pattern}: matches no files"
        else:
            problems.append(f"{pattern}: no such file or folder")
            continue
        kept = [p for p in found if not is_output_name(p)]
        left_out.extend(p for p in found if is_output_name(p))
        if not found:
            problems.append(problem)
        files.extend(kept)
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), problems, left_out


def is_output_name(path: Path) -> bool:
    """Whether ``path`` is named like an output of this command (``x_restored.png``, ``x_routes.tif``)."""
    return OUTPUT_STEM.search(path.stem) is not None


def output_path(source: Path, out_dir: Path) -> Path:
    """``OUTDIR/<stem>_restored<suffix>``."""
    return out_dir / f"{source.stem}_restored{source.suffix}"


def map_paths(source: Path, out_dir: Path) -> list[Path]:
    """Every file ``--save-maps`` may write for ``source`` (PNG for one plan, TIFF for several, the report)."""
    stem = source.stem
    return [out_dir / f"{stem}_{name}{ext}" for name in ("degradation_map", "routes") for ext in (".png", ".tif")] + [
        out_dir / f"{stem}_report.json"
    ]


def output_pairs(
    files: list[Path], out_dir: Path, save_maps: bool = False
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair each input with its output, refusing an input any of whose outputs (the restored image and, with
    ``save_maps``, its maps and report) is an input or another input's output."""
    inputs = {f.resolve() for f in files}
    taken: dict[Path, Path] = {}
    jobs, refused = [], []
    for source in files:
        target = output_path(source, out_dir)
        outputs = [target, *(map_paths(source, out_dir) if save_maps else [])]
        clash = next((o for o in outputs if o.resolve() in inputs), None)
        if clash is not None:
            refused.append(f"{source}: its output {clash} is one of the inputs; refusing to overwrite it")
            continue
        clash = next((o for o in outputs if o.resolve() in taken), None)
        if clash is not None:
            owner = taken[clash.resolve()]
            refused.append(f"{source}: its output {clash} is also {owner}'s output; rename one of them")
            continue
        taken.update((o.resolve(), source) for o in outputs)
        jobs.append((source, target))
    return jobs, refused


def skip_existing(
    jobs: list[tuple[Path, Path]], out_dir: Path, save_maps: bool, overwrite: bool
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Split jobs into those to run and ``(input, existing output)`` for those whose outputs exist.

    With ``overwrite`` every job runs.
    """
    if overwrite:
        return jobs, []
    run, existing = [], []
    for source, target in jobs:
        outputs = [target, *(map_paths(source, out_dir) if save_maps else [])]
        found = next((o for o in outputs if o.exists()), None)
        if found is None:
            run.append((source, target))
        else:
            existing.append((source, found))
    return run, existing


def restore_file(
    restorer: Restorer,
    source: Path,
    target: Path,
    args: argparse.Namespace,
    options: RestoreOptions,
) -> str:
    """Read, restore and write one file (and its maps); returns a short description for the log.

    Raises:
        ImageError, ValueError, OSError: the file cannot be read or restored.
        OutputError: its outputs cannot be written.
    """
    image = read_image_file(source, args.max_pixels)
    array = image.array
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        axes = args.axes or image.axes or infer_axes(array.shape)
    for warning in caught:
        tqdm.write(f"warning: {source}: {warning.message}", file=sys.stderr)
    grey_alpha = is_grey_alpha_png(source, array) and args.axes is None
    # A file that stores colour says what its channels are; other data is restored channel by channel.
    channels = "rgb" if args.channels == "auto" and image.colour and not grey_alpha else args.channels
    layout = make_layout(
        array.shape[:-1] if grey_alpha else array.shape, "YX" if grey_alpha else axes, channels, array.dtype
    )
    plans: list[tuple[str, Plan]] = []
    scalings: list[str] = []
    start = time.perf_counter()
    with (
        tqdm(unit="tile", leave=False, disable=not show_progress(args), desc=source.name) as bar,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        restored = restorer.restore(
            array[..., 0] if grey_alpha else array,
            options,
            progress=_bar_updater(bar),
            axes=layout.axes,
            channels=channels,
            on_plan=lambda what, plan: plans.append((what, plan)),
            on_scaling=scalings.append,
        )
    for warning in caught:
        kind = "note" if issubclass(warning.category, SmallTileWarning) else "warning"
        tqdm.write(f"{kind}: {source}: {warning.message}", file=sys.stderr)
    if grey_alpha:
        restored = np.stack([restored, array[..., 1]], axis=-1)
    seconds = time.perf_counter() - start
    channels_text = "grey (alpha copied)" if grey_alpha else describe_channels(layout)
    try:
        write_image(target, restored, axes, colour=layout.colour, calibration=image.calibration)
        if args.save_maps:
            save_maps(
                target.parent,
                source,
                array[..., 0] if grey_alpha else array,
                layout,
                plans,
                restorer,
                {
                    "output": str(target),
                    "axes": axes,
                    "channels": channels_text,
                    "scaling": scalings[0],
                    "tile": options.tile,
                    "overlap": options.overlap,
                    "plan_per": args.plan_per,
                    "seconds": round(seconds, 2),
                },
            )
    except OSError as err:  # numpy reports a short write on a full disk without an errno
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from err
    first = plans[0][1]
    more = f" (+{len(plans) - 1} more plans)" if len(plans) > 1 else ""
    return (
        f"{array.shape} {array.dtype} {axes}, channels: {channels_text}, scaling: {scalings[0]}, {seconds:.1f} s, "
        f"routes {','.join(map(str, first.routes))}{more}, label: {first.verdict()}"
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: in a pipeline or a log file their carriage returns would run into
    the result lines (tqdm draws on stderr)."""
    return not args.quiet and sys.stderr.isatty()


def is_grey_alpha_png(source: Path, array: np.ndarray) -> bool:
    """A PNG read as (H, W, 2) is grey plus alpha (PNG has no other two-channel kind): the alpha must pass
    through untouched, as for RGBA, not be restored as a second grey channel."""
    return source.suffix.lower() == ".png" and array.ndim == 3 and array.shape[-1] == 2


def _bar_updater(bar: tqdm) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update
