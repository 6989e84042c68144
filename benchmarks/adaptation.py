"""Adapting to a user's noise: the blind model, the model adapted for N minutes, and the classical denoisers.

Eight grey held-out images (scikit-image's test split, then dead-leaves images; never trained on) under noise
models the shipped model never saw; the model adapts on the eight noisy images themselves, as a user would
(``Restorer.adapt``), and restores them. NL-means and BM3D get σ estimated from each image. PSNR / SSIM
against the clean images.

    python benchmarks/adaptation.py                                  # 5 and 15 minutes, every noise model
    python benchmarks/adaptation.py --minutes 1 --images 2 --noise poisson20   # a quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable

import numpy as np

NoiseModel = Callable[[np.ndarray, np.random.Generator], np.ndarray]


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
    counts = 1000.0 + 6000.0 * clean + rng.normal(0.0, 600.0, clean.shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


NOISE: dict[str, NoiseModel] = {"poisson20": poisson20, "scmos": scmos, "gaussian16": gaussian16}


def to_unit(noisy: np.ndarray) -> np.ndarray:
    """An image in [0, 1] as the metrics compare it (uint16 counts mapped back to the clean scale)."""
    if noisy.dtype == np.uint16:
        return ((noisy.astype(np.float64) - 1000.0) / 6000.0).astype(np.float32)
    return noisy.astype(np.float32)


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
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    import torch

    from slerir_core.restore import Restorer
    from training.datasets import held_out_clean_images

    torch.set_num_threads(args.threads)
    clean = [img.mean(axis=-1).astype(np.float32) for _, img in held_out_clean_images(args.images, args.size)]
    restorer = Restorer.from_pretrained(args.weights, device="cpu")
    print(f"{restorer.describe()}; {args.images} grey {args.size}² images, {args.threads} CPU threads")
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in args.noise:
        rng = np.random.default_rng(0)
        noisy = [NOISE[name](c, rng) for c in clean]
        noisy = [n if n.dtype == np.uint16 else np.clip(n, 0, 1).astype(np.float32) for n in noisy]
        rows = {"input": scores([to_unit(n) for n in noisy], clean)}
        rows.update({method: scores(out, clean) for method, out in classical(noisy).items()})
        rows["SLER-IR, blind"] = scores(restored_by(restorer, noisy), clean)
        for minutes in args.minutes:
            start = time.perf_counter()
            adapted, result = restorer.adapt(noisy, minutes=minutes)
            took = (time.perf_counter() - start) / 60
            label = f"SLER-IR, adapted {minutes:g} min ({result.steps} steps, {result.stopped}, {took:.1f} min)"
            rows[label] = scores(restored_by(adapted, noisy), clean)
        table[name] = rows
        print(f"\n{name}: {NOISE[name].__doc__.splitlines()[0]}")
        for method, (p, s) in rows.items():
            print(f"  {method:<64} {p:6.2f} dB  SSIM {s:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
