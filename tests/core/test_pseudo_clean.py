"""Pseudo-clean pairs: the targets are the restoration a user gets blind, the network sees a fresh noisy draw of
them, and with the shipped weights adapting on photon noise restores better."""

from __future__ import annotations

import numpy as np
import torch
from restoring import drain, noisy_image
from skimage.metrics import peak_signal_noise_ratio

from slerir_core.adaptation.adapt import restorations, user_planes
from slerir_core.adaptation.noise_model import NoiseModel
from slerir_core.adaptation.pseudo_clean import pseudo_clean_case
from slerir_core.config import load_config
from slerir_core.model import SLERIR
from slerir_core.restore import Restorer


def test_the_targets_are_the_restoration_a_user_gets_blind():
    torch.manual_seed(0)
    restorer = Restorer(SLERIR(load_config("tiny")), device="cpu", weights="tiny.safetensors")
    grey = noisy_image(160)
    colour = (np.stack([noisy_image(144, seed=s) for s in range(3)], axis=-1) * 255).astype(np.uint8)
    planes = user_planes(restorer, [grey, colour], None, "auto")
    tiles, targets = drain(restorations(restorer, planes))
    assert tiles and all(t > 0 for t in tiles)
    # The restorer returns float images as they come out, and rounds uint8 ones to the nearest level.
    for target, image, step in zip(targets, (grey, colour), (0.0, 1 / 255), strict=True):
        blind = restorer.restore(image).astype(np.float32) / (255 if step else 1)
        expected = torch.from_numpy(blind if blind.ndim == 3 else blind[..., None]).permute(2, 0, 1)
        assert target.shape == (1, 3, *image.shape[:2])
        torch.testing.assert_close(target[0, : expected.shape[0]], expected, atol=step / 2 + 1e-6, rtol=0)


def test_the_network_sees_a_fresh_noisy_draw_and_is_scored_against_the_restoration():
    restored = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    case = pseudo_clean_case(restored, torch.Generator().manual_seed(1), NoiseModel(0.02, 0.01**2))
    seen = []

    def identity(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x

    noise_power = float(case(identity))
    assert abs(noise_power - float(0.02 * restored.mean() + 0.01**2)) < 0.1 * noise_power
    assert case(identity) == noise_power and torch.equal(seen[0], seen[1])  # one draw per case
    assert not torch.equal(seen[0], restored)
    assert case(lambda x: restored) == 0.0


def test_adapting_the_shipped_weights_on_photon_noise_restores_it_better():
    """One grey 256² picture the model never trained on, with Poisson noise at 20 photons at the brightest (noise
    the shipped model never saw): 40 steps gain about 1 dB; the test asks for half."""
    from training.datasets import held_out_clean_images

    ((_, picture),) = held_out_clean_images(1, 256)
    clean = picture.mean(axis=-1).astype(np.float32)
    noisy = np.clip(np.random.default_rng(0).poisson(clean * 20.0) / 20.0, 0, 1).astype(np.float32)
    restorer = Restorer.from_pretrained(device="cpu")
    adapted, result = restorer.adapt([noisy], max_steps=40, eval_every=10)
    assert result.loss == "pseudo-clean" and result.curve[-1][1] < result.curve[0][1]
    blind, after = (peak_signal_noise_ratio(clean, r.restore(noisy), data_range=1.0) for r in (restorer, adapted))
    assert after > blind + 0.5, (blind, after)
