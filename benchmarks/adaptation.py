"""Adapting to a user's noise: the blind model, the model adapted for N minutes, and the classical denoisers.

Eight grey held-out images (scikit-image's test split, then dead-leaves images; never trained on) under noise
models the shipped model never saw; the model adapts on the eight noisy images themselves, as a user would
(``Restorer.adapt``, pseudo-clean pairs unless ``--loss`` says otherwise), and restores them. NL-means and BM3D
get σ estimated from each image. With ``n2v``, Noise2Void from CAREamics trains from scratch on the same noisy
images for the same minutes (``benchmarks/n2v_careamics.py``, in a virtual environment of its own that this
script creates on first use: careamics 0.3.5 needs torch < 2.14, about 5 GB with Lightning). PSNR / SSIM against
the clean images.

    python benchmarks/adaptation.py --threads 1 --methods classical blind adapted n2v   # 5 and 15 minutes
    python benchmarks/adaptation.py --minutes 1 --images 2 --noise poisson20   # a quick look
    python benchmarks/adaptation.py --methods blind adapted --loss blind-spot --images 4   # another loss
    python benchmarks/adaptation.py --methods blind ceiling --minutes 5   # what clean targets would reach

``ceiling`` is no method a user has: the same experts fine-tuned for the same minutes with the clean images as
targets (mean squared error, the adaptation's crops, batch and learning rate: ``--lr``, or pseudo-clean pairs').
No self-supervised loss can teach more than the clean images themselves, so it bounds what adapting can gain in
that time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tempfile
import time
import venv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slerir_core.adaptation.adapt import LOSSES, AdaptSettings

NoiseModel = Callable[[np.ndarray, np.random.Generator], np.ndarray]

CAREAMICS = ["torch==2.11.0", "torchvision==0.26.0", "careamics==0.3.5", "microssim==0.0.5", "lightning==2.6.6"]
"""What the Noise2Void environment installs: careamics 0.3.5 with a torch it supports, pinned so that pip does
not backtrack through Lightning and torchvision releases."""
N2V_SCRIPT = Path(__file__).with_name("n2v_careamics.py")
METHODS = ("classical", "blind", "adapted", "n2v", "ceiling")


COUNTS_OFFSET, COUNTS_SPAN = 1000.0, 6000.0
"""``gaussian16``'s dim signal: the clean images' 0 and 1 in camera counts."""


def unit_to_counts(clean: np.ndarray) -> np.ndarray:
    """Clean images in [0, 1] as ``gaussian16``'s camera counts, before noise."""
    return COUNTS_OFFSET + COUNTS_SPAN * clean


def poisson20(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon-limited: 20 photons at the brightest, plus read noise σ = 0.01."""
    return rng.poisson(clean * 20.0) / 20.0 + rng.normal(0.0, 0.01, clean.shape)


def scmos(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """sCMOS-like: per-pixel gain (σ 10 %) and offset (σ 0.02) maps, 30 photons at the brightest, read noise
    σ = 0.02; the maps are one camera's, the same for every image."""
    maps = np.random.default_rng(1234)
    gain, offset = maps.normal(1.0, 0.1, clean.shape), maps.normal(0.0, 0.02, clean.shape)
    return gain * rng.poisson(clean * 30.0) / 30.0 + offset + rng.normal(0.0, 0.02, clean.shape)


def gaussian16(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16-bit fluorescence-like: a dim signal on an offset, Gaussian noise, stored as uint16."""
    counts = unit_to_counts(clean) + rng.normal(0.0, 600.0, clean.shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


NOISE: dict[str, NoiseModel] = {"poisson20": poisson20, "scmos": scmos, "gaussian16": gaussian16}


def counts_to_unit(counts: np.ndarray) -> np.ndarray:
    """``gaussian16``'s counts mapped back to the clean images' scale."""
    return ((counts.astype(np.float64) - COUNTS_OFFSET) / COUNTS_SPAN).astype(np.float32)


def to_unit(noisy: np.ndarray) -> np.ndarray:
    """An image in [0, 1] as the metrics compare it (uint16 counts mapped back to the clean scale)."""
    return counts_to_unit(noisy) if noisy.dtype == np.uint16 else noisy.astype(np.float32)


def scores(restored: list[np.ndarray], clean: list[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR and SSIM (data range 1) over the images."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    p = [peak_signal_noise_ratio(c, np.clip(r, 0, 1), data_range=1.0) for r, c in zip(restored, clean, strict=True)]
    s = [structural_similarity(c, np.clip(r, 0, 1), data_range=1.0) for r, c in zip(restored, clean, strict=True)]
    return float(np.mean(p)), float(np.mean(s))


def classical(noisy: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """NL-means, and BM3D when the ``bm3d`` package is there, each with σ estimated from the image."""
    from skimage.restoration import denoise_nl_means

    from slerir_core.noise_level import estimate_noise_sigma

    out: dict[str, list[np.ndarray]] = {"NL-means (σ estimated)": []}
    if importlib.util.find_spec("bm3d") is not None:
        out["BM3D (σ estimated)"] = []
    for image in (to_unit(n) for n in noisy):
        sigma = estimate_noise_sigma(image[..., None])
        out["NL-means (σ estimated)"].append(
            denoise_nl_means(image, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6)
        )
        if "BM3D (σ estimated)" in out:
            import bm3d

            out["BM3D (σ estimated)"].append(bm3d.bm3d(image, sigma_psd=sigma))
    return out


def careamics_python(env: Path) -> Path:
    """The Python of the CAREamics virtual environment at ``env``, created there first if it is not."""
    python = env / "bin" / "python"
    if not python.exists():
        print(f"creating the CAREamics environment in {env} (about 5 GB)", flush=True)
        venv.create(env, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *CAREAMICS], check=True)
    return python


def noise2void(python: Path, noisy: list[np.ndarray], minutes: float, threads: int, log: Path) -> tuple[list, dict]:
    """Noise2Void trained on the noisy images for ``minutes`` and applied to them, in [0, 1], and its summary
    (seconds, epochs, steps); CAREamics' own output goes to ``log``."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "noisy.npz"), Path(tmp, "restored.npz")
        np.savez(source, noisy=np.stack([n.astype(np.float32) for n in noisy]))
        cmd = [python, N2V_SCRIPT, source, target, "--minutes", str(minutes), "--threads", str(threads)]
        with log.open("a") as out:
            subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
        with np.load(target) as result:
            restored, summary = result["restored"], json.loads(str(result["summary"]))
    return [counts_to_unit(r) if n.dtype == np.uint16 else r for r, n in zip(restored, noisy, strict=True)], summary


def supervised_ceiling(restorer, noisy: list[np.ndarray], clean: list[np.ndarray], minutes: float, lr: float):
    """A restorer whose path experts were fine-tuned for ``minutes`` on the noisy images with the clean ones as
    targets, in the adaptation's setting (``slerir_core.adaptation.adapt``), and its step count."""
    import copy

    import torch
    import torch.nn.functional as F

    from slerir_core.adaptation.adapt import CROP, trainable_experts, user_planes
    from slerir_core.device import autocast
    from slerir_core.restore import Restorer, prepare_image

    settings = AdaptSettings(minutes=minutes, lr=lr)
    planes = user_planes(restorer, noisy, None, "auto")
    targets = []
    for image, target in zip(noisy, clean, strict=True):  # the clean image on the noisy one's network scale
        _, _, scaling = prepare_image(image, None, "auto", "percentile")
        raw = unit_to_counts(target) if image.dtype == np.uint16 else target
        targets.append(restorer.network_input(scaling.to_unit(raw[..., None].astype(np.float32), (0, 1))))
    model = copy.deepcopy(restorer.model).train()
    optimizer = torch.optim.Adam(trainable_experts(model), lr=settings.learning_rate("pseudo-clean"))
    rng, steps, start = np.random.default_rng(settings.seed), 0, time.monotonic()
    while time.monotonic() - start < 60.0 * minutes:
        i = int(rng.integers(len(planes)))
        plane, target = planes[i], targets[i]
        h, w = plane.pixels.shape[-2:]
        corners = [(int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))) for _ in range(settings.batch)]
        x, y = (torch.cat([t[..., a : a + CROP, b : b + CROP] for a, b in corners]) for t in (plane.pixels, target))
        box = torch.tensor([[a / h, b / w, (a + CROP) / h, (b + CROP) / w] for a, b in corners])
        routes = torch.tensor(plane.routes).expand(len(x), -1)
        with autocast(restorer.device, restorer.bf16):
            restored = model.restore_features(x, routes, prior=plane.prior, box=box)
        loss = F.mse_loss(restored.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return Restorer(model.eval(), restorer.device, precision=restorer.precision), steps


def restored_by(restorer, noisy: list[np.ndarray]) -> list[np.ndarray]:
    """Each noisy image restored, back in [0, 1] (uint16 counts mapped as ``to_unit`` maps the input)."""
    return [to_unit(restorer.restore(n)) for n in noisy]


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run every method on every noise model, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="weights to start from (default: the shipped ones)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0], help="adaptation budgets")
    parser.add_argument("--noise", nargs="+", choices=sorted(NOISE), default=list(NOISE))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=["classical", "blind", "adapted"],
        help="rows to measure (n2v: CAREamics Noise2Void for each of --minutes)",
    )
    parser.add_argument(
        "--n2v-env",
        type=Path,
        default=Path.home() / ".cache" / "slerir" / "careamics-venv",
        help="the CAREamics virtual environment (created if missing)",
    )
    parser.add_argument("--loss", choices=LOSSES, default=AdaptSettings.loss, help="the adaptation's loss")
    parser.add_argument("--lr", type=float, help="the adaptation's learning rate (default: the loss's own)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    import torch

    from slerir_core.restore import Restorer
    from training.datasets import held_out_clean_images

    torch.set_num_threads(args.threads)
    clean = [img.mean(axis=-1).astype(np.float32) for _, img in held_out_clean_images(args.images, args.size)]
    restorer = Restorer.from_pretrained(args.weights, device="cpu")
    n2v_python = careamics_python(args.n2v_env) if "n2v" in args.methods else None
    n2v_log = Path(tempfile.gettempdir(), "slerir-n2v-benchmark.log")
    print(f"{restorer.describe()}; {args.images} grey {args.size}² images, {args.threads} CPU threads")
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in args.noise:
        rng = np.random.default_rng(0)
        noisy = [NOISE[name](c, rng) for c in clean]
        noisy = [n if n.dtype == np.uint16 else np.clip(n, 0, 1).astype(np.float32) for n in noisy]
        rows = {"input": scores([to_unit(n) for n in noisy], clean)}
        if "classical" in args.methods:
            rows.update({method: scores(out, clean) for method, out in classical(noisy).items()})
        if "blind" in args.methods:
            rows["SLER-IR, blind"] = scores(restored_by(restorer, noisy), clean)
        for minutes in args.minutes if "adapted" in args.methods else []:
            start = time.perf_counter()
            adapted, result = restorer.adapt(noisy, minutes=minutes, loss=args.loss, lr=args.lr)
            took = (time.perf_counter() - start) / 60
            label = f"SLER-IR, adapted ({args.loss}) {minutes:g} min "
            label += f"({result.steps} steps, {result.stopped}, {took:.1f} min)"
            rows[label] = scores(restored_by(adapted, noisy), clean)
        for minutes in args.minutes if "ceiling" in args.methods else []:
            ceiling, steps = supervised_ceiling(restorer, noisy, clean, minutes, args.lr)
            rows[f"ceiling: clean targets, {minutes:g} min ({steps} steps)"] = scores(
                restored_by(ceiling, noisy), clean
            )
        for minutes in args.minutes if n2v_python else []:
            out, summary = noise2void(n2v_python, noisy, minutes, args.threads, n2v_log)
            label = f"Noise2Void (CAREamics), {minutes:g} min ({summary['steps']} steps, {summary['epochs']} epochs)"
            rows[label] = scores(out, clean)
        table[name] = rows
        print(f"\n{name}: {NOISE[name].__doc__.splitlines()[0]}")
        for method, (p, s) in rows.items():
            print(f"  {method:<64} {p:6.2f} dB  SSIM {s:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
