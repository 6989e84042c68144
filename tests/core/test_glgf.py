"""GLGF: sampling the prior for a tile, and an injection that treats two regions of one image differently."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slerir_core.model.glgf import PriorInjection, _axis_weights, sample_prior


def grid_sample_prior(prior: torch.Tensor, box: tuple[float, ...], size: tuple[int, int]) -> torch.Tensor:
    """The same sampling through ``grid_sample`` (pixel centres, border padding), as the oracle."""
    top, left, bottom, right = box
    ys = top + (bottom - top) * (torch.arange(size[0], dtype=torch.float64) + 0.5) / size[0]
    xs = left + (right - left) * (torch.arange(size[1], dtype=torch.float64) + 0.5) / size[1]
    grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), dim=-1)
    grid = grid.expand(prior.shape[0], *size, 2)
    return F.grid_sample(prior, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize(
    ("box", "size"),
    [((0.0, 0.0, 1.0, 1.0), (64, 48)), ((0.1, -0.2, 0.7, 1.3), (33, 50)), ((0.25, 0.5, 0.5, 0.75), (1, 9))],
)
def test_sample_prior_equals_grid_sample(box, size):
    prior = torch.randn(2, 5, 8, 7, dtype=torch.float64)
    sampled = sample_prior(prior, box, size)
    torch.testing.assert_close(sampled, grid_sample_prior(prior, box, size))
    assert sampled.is_contiguous(memory_format=torch.channels_last)  # the layout of the features it meets


def test_a_tile_samples_what_the_whole_image_samples():
    prior = torch.randn(1, 4, 8, 8)
    whole = sample_prior(prior, (0.0, 0.0, 1.0, 1.0), (40, 60))
    tile = sample_prior(prior, (10 / 40, 25 / 60, 30 / 40, 55 / 60), (20, 30))
    torch.testing.assert_close(tile, whole[..., 10:30, 25:55])


def test_one_box_per_sample_samples_each_as_alone():
    prior = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 0.75, 1.0], [-0.1, 0.2, 0.9, 1.2]], dtype=torch.float64)
    batched = sample_prior(prior, boxes, (20, 30))
    assert batched.shape == (3, 4, 20, 30) and batched.is_contiguous(memory_format=torch.channels_last)
    for i, box in enumerate(boxes.tolist()):
        torch.testing.assert_close(batched[i : i + 1], sample_prior(prior, tuple(box), (20, 30)))
        torch.testing.assert_close(batched[i : i + 1], grid_sample_prior(prior, tuple(box), (20, 30)))


def half_and_half_update(injection: PriorInjection) -> tuple[torch.Tensor, torch.Tensor]:
    """The injection's update on identical features under a prior whose left and right halves differ."""
    torch.manual_seed(0)
    pixel = torch.randn(1, 8, 1, 1)
    x = pixel.expand(1, 8, 16, 16).contiguous()
    prior = torch.cat([torch.randn(1, 6, 4, 1).expand(-1, -1, -1, 2), torch.randn(1, 6, 4, 1).expand(-1, -1, -1, 2)], 3)
    with torch.no_grad():
        update = injection(x, prior, (0.0, 0.0, 1.0, 1.0)) - x
    # Away from the middle, where the bilinear prior blends the halves, and from the borders, where the
    # zero padding of the 3x3 convolutions makes the features differ.
    return update[..., 2:14, 2:5], update[..., 2:14, 11:14]


def test_injection_updates_two_regions_differently():
    injection = PriorInjection(prior_dim=6, channels=8, heads=2)
    torch.nn.init.normal_(injection.film.weight, std=0.5)  # as after training; zero at initialisation
    left, right = half_and_half_update(injection)
    assert (left - right).abs().amax() > 1e-2


def test_channel_attention_alone_is_blind_to_the_layout():
    """Without the per-pixel FiLM (its initial state), identical features get one update everywhere:
    the check above can fail."""
    left, right = half_and_half_update(PriorInjection(prior_dim=6, channels=8, heads=2))
    torch.testing.assert_close(left, right)


def test_a_box_given_as_numbers_samples_as_the_same_box_as_a_tensor_and_is_built_once():
    prior = torch.randn(2, 5, 6, 7)
    box = (0.1, -0.05, 0.8, 1.1)
    as_tensor = sample_prior(prior, torch.tensor([box, box]), (9, 11))
    before = _axis_weights.cache_info()
    first, again = sample_prior(prior, box, (9, 11)), sample_prior(prior, box, (9, 11))
    torch.testing.assert_close(first, as_tensor, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    after = _axis_weights.cache_info()
    assert after.misses - before.misses <= 2 and after.hits - before.hits >= 2  # rows and columns, made once
