"""Evaluation: metrics, routing statistics, test sets, classical baselines and the table layout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.baselines import BASELINES, dark_channel_prior, non_local_means
from training.evaluate import (
    format_table,
    generated_test_set,
    grey_test_set,
    label_accuracy,
    mixed_test_set,
    order_columns,
    psnr_ssim,
    routing_summary,
    with_average,
)


def test_metrics_follow_the_protocol():
    rng = np.random.default_rng(0)
    clean = rng.random((32, 32, 3)).astype(np.float32)
    assert psnr_ssim(clean, clean) == (100.0, 1.0)
    p, s = psnr_ssim(np.clip(clean + 0.1, 0, 1), clean)
    assert 19 < p < 21 and 0 < s < 1
    assert math.isnan(psnr_ssim(clean, clean, ssim=False)[1])


def test_label_accuracy_names_the_family_and_counts_uncertain_as_wrong():
    tasks = ["noise", "micro_noise", "blur", "blur", "micro_blur"]
    labels = ["noise", "noise", None, "blur", "noise"]
    assert label_accuracy(tasks, labels) == {"noise": 1.0, "micro_noise": 1.0, "blur": 0.5, "micro_blur": 0.0}


def test_routing_summary_reports_most_common_path_and_purity():
    tasks = ["noise", "noise", "noise", "haze"]
    routes = [[0] * 8, [0] * 8, [0] * 7 + [1], [2] * 8]
    summary = routing_summary(tasks, routes)
    assert summary["noise"]["path"] == "0-0-0-0-0-0-0-0"
    assert summary["noise"]["purity"] == pytest.approx(2 / 3)
    assert summary["noise"]["stage_purity"] == pytest.approx([1] * 7 + [2 / 3])
    assert summary["haze"]["purity"] == 1.0
    assert summary["noise"]["stage_load"][7] == pytest.approx([2 / 3, 1 / 3, 0])
    assert routing_summary(tasks, routes, num_experts=4)["haze"]["stage_load"][0] == [0, 0, 1, 0]


def test_mixed_case_has_rain_left_and_noise_right():
    (case,) = mixed_test_set(images=1, size=64)
    left, right = (case.degraded - case.clean)[:, :32], (case.degraded - case.clean)[:, 32:]
    assert 20 / 255 < right.std() < 30 / 255  # σ = 25, a little less where clipped
    # Rain streaks brighten along lines: mostly positive, unlike zero-mean noise.
    assert left.mean() > 0.01 and (left > 0.01).mean() > (left < -0.01).mean() * 3


def test_grey_case_has_one_noise_in_every_channel():
    (case,) = grey_test_set(images=1, size=64)
    for image in (case.clean, case.degraded):
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    assert 20 / 255 < (case.degraded - case.clean).std() < 30 / 255  # σ = 25, a little less where clipped
    assert case.clean.std() > 0.05  # a picture, not a flat field


def test_table_layout_follows_the_paper():
    cols = order_columns(["micro_blur", "noise σ=50", "rain", "noise σ=15", "haze", "lowlight"])
    assert cols == ["haze", "rain", "noise σ=15", "noise σ=50", "lowlight", "micro_blur"]
    rows = {
        "A": with_average({c: {"psnr": 30.0, "ssim": 0.9} for c in cols}, cols),
        "B": with_average({"haze": {"psnr": 20.0, "ssim": 0.5}}, cols),
    }
    text = format_table(rows, cols)
    header = text.splitlines()[1]
    assert header.index("Dehazing") < header.index("Deraining") < header.index("Denoising σ=15")
    assert "Average" in header and "7×7 uniform window" in text.splitlines()[0]
    assert "30.00 / 0.900" in text and "20.00 / 0.500*" in text and "—" in text


def test_generated_set_is_reproducible_and_baselines_help():
    cases = generated_test_set(["noise", "haze"], images=2, size=48, sigmas=(25,))
    again = generated_test_set(["noise", "haze"], images=2, size=48, sigmas=(25,))
    assert all(np.array_equal(a.degraded, b.degraded) for a, b in zip(cases, again, strict=True))
    assert [c.column for c in cases] == ["noise σ=25"] * 2 + ["haze"] * 2
    noisy = [c for c in cases if c.task == "noise"]
    before = np.mean([psnr_ssim(c.degraded, c.clean, ssim=False)[0] for c in noisy])
    after = np.mean([psnr_ssim(BASELINES["noise"].run(c.degraded), c.clean, ssim=False)[0] for c in noisy])
    assert after > before


def test_non_local_means_uses_the_noise_level_it_is_given():
    (case,) = generated_test_set(["noise"], images=1, size=48, sigmas=(25,))
    given = [non_local_means(case.degraded, s) for s in (10 / 255, 25 / 255)]
    assert not np.array_equal(*given)  # the σ given sets the filter, not an estimate
    true, too_low = (psnr_ssim(out, case.clean, ssim=False)[0] for out in reversed(given))
    assert true > too_low


def test_dark_channel_prior_removes_haze():
    rng = np.random.default_rng(1)
    clean = (rng.random((64, 64, 3)) * 0.8).astype(np.float32)
    clean[::3, ::3] = 0.0  # a dark pixel in every patch, as the prior assumes of haze-free images
    t = np.linspace(0.05, 0.9, 64)[:, None, None]  # transmission falls with distance (top rows: dense haze)
    hazy = (clean * t + 0.9 * (1 - t)).astype(np.float32)
    restored = dark_channel_prior(hazy)
    assert psnr_ssim(restored, clean, ssim=False)[0] > psnr_ssim(hazy, clean, ssim=False)[0] + 4


def test_every_baseline_keeps_shape_and_range():
    img = np.random.default_rng(2).random((32, 32, 3)).astype(np.float32)
    for baseline in BASELINES.values():
        out = baseline.run(img)
        assert out.shape == img.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
