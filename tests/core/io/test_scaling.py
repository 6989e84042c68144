"""Value scaling: the fixed uint8 range, robust percentiles or the minimum and maximum otherwise, the values
beyond the range kept, rounding, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core.errors import ImageError
from slerir_core.io.layout import make_layout
from slerir_core.io.scaling import Scaling, check_scaling


def scaling_for(
    array: np.ndarray, axes: str | None = None, channels: str = "auto", method: str = "percentile"
) -> tuple[Scaling, np.ndarray]:
    layout = make_layout(array.shape, axes, channels, array.dtype)
    canon = layout.canonical(array)
    return Scaling.fit(canon, layout, method), canon


def poisson_counts(hot: bool = True) -> np.ndarray:
    """16-bit counts of 100 to about 2,100, with two hot pixels and a dead one when ``hot``."""
    rng = np.random.default_rng(0)
    a = (100 + rng.poisson(np.linspace(0, 2000, 64 * 64)).reshape(64, 64)).astype(np.uint16)
    if hot:
        a[3, 4], a[40, 50], a[20, 20] = 65535, 60000, 0
    return a


def test_uint8_uses_the_fixed_range():
    scaling, canon = scaling_for(np.array([[10, 20], [30, 40]], np.uint8))
    unit = scaling.to_unit(canon, (0, 1))
    assert unit.dtype == np.float32 and np.allclose(unit[..., 0], np.array([[10, 20], [30, 40]]) / 255)
    assert scaling.describe(((0, 1),)) == "uint8 0-255"


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_minmax_uses_the_data_range_and_round_trips(dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((6, 7, 3)) * 3000 - (1000 if dtype != np.uint16 else 0) + 500).astype(dtype)
    scaling, canon = scaling_for(a, method="minmax")
    unit = scaling.to_unit(canon, (0, 3))
    assert unit.min() == pytest.approx(0.0, abs=1e-6) and unit.max() == pytest.approx(1.0, abs=1e-6)
    back = scaling.from_unit(unit, (0, 3), canon)
    assert back.dtype == dtype
    if np.dtype(dtype).kind == "f":
        assert np.allclose(back, a, rtol=1e-5, atol=1e-3)
    else:
        assert np.array_equal(back, a)


def test_percentiles_ignore_hot_and_dead_pixels():
    clean, _ = scaling_for(poisson_counts(hot=False))
    scaling, _ = scaling_for(poisson_counts())
    assert scaling.rule == "percentile"
    assert abs(scaling.offset[0] - clean.offset[0]) < 5 and abs(scaling.scale[0] - clean.scale[0]) < 20
    assert 1500 < scaling.scale[0] < 2100  # the signal's range, not the hot pixel's 65535
    minmax, _ = scaling_for(poisson_counts(), method="minmax")
    assert minmax.offset[0] == 0 and minmax.scale[0] == 65535
    assert scaling.describe(((0, 1),)).startswith("percentile 1-99.8: ")


def test_the_network_sees_0_to_1_and_values_beyond_come_back_exactly():
    scaling, canon = scaling_for(poisson_counts())
    unit = scaling.to_unit(canon, (0, 1))
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert (unit == 1.0).sum() > 2  # the hot pixels and the brightest 0.2 % saturate
    assert np.array_equal(scaling.from_unit(unit, (0, 1), canon), canon)


def test_values_beyond_the_range_keep_their_excess_over_the_restored_value():
    scaling, canon = scaling_for(poisson_counts())
    restored = np.full(canon.shape, 0.5, np.float32)
    back = scaling.from_unit(restored, (0, 1), canon)[..., 0].astype(np.float64)
    middle = scaling.offset[0] + 0.5 * scaling.scale[0]
    top = scaling.offset[0] + scaling.scale[0]
    assert back[3, 4] == pytest.approx(65535 - top + middle, abs=1)
    assert back[20, 20] == pytest.approx(middle - scaling.offset[0], abs=1)
    inside = (canon[..., 0] >= scaling.offset[0]) & (canon[..., 0] <= top)
    assert np.all(back[inside] == round(middle))


def test_floats_in_the_unit_range_are_used_as_they_are_and_results_stay_in_it():
    dark = np.linspace(0.02, 0.2, 30, dtype=np.float32).reshape(5, 6)
    scaling, canon = scaling_for(dark)
    assert scaling.rule == "unit" and scaling.describe(((0, 1),)) == "as is (float in [0, 1])"
    assert np.array_equal(scaling.to_unit(canon, (0, 1))[..., 0], dark)
    assert np.array_equal(scaling.from_unit(canon.astype(np.float32), (0, 1), canon), canon)
    overshoot = np.linspace(-0.1, 1.1, 30, dtype=np.float32).reshape(5, 6, 1)
    back = scaling.from_unit(overshoot, (0, 1), canon)
    assert back.min() == 0.0 and back.max() == 1.0


def test_integers_are_rounded_and_results_stay_in_the_range():
    scaling, canon = scaling_for(np.array([[0, 1000, 500, 500]], np.uint16), method="minmax")
    back = scaling.from_unit(np.array([[[-0.5], [0.0004], [0.0006], [70.0]]], np.float32), (0, 1), canon)
    assert back.tolist() == [[[0], [0], [1], [1000]]]


def test_channels_restored_one_by_one_get_their_own_range_and_rgb_shares_one():
    a = np.stack([np.linspace(0, 10, 20), np.linspace(100, 4000, 20)], axis=-1).reshape(4, 5, 2)
    separate, _ = scaling_for(a.astype(np.float32), "YXC", method="minmax")
    assert separate.offset.tolist() == [0, 100] and np.allclose(separate.scale, [10, 3900])
    rgb = np.stack([a[..., 0], a[..., 1], a[..., 1]], axis=-1).astype(np.uint16)
    shared, _ = scaling_for(rgb, channels="rgb")
    assert len(set(shared.offset.tolist())) == 1 and len(set(shared.scale.tolist())) == 1


def test_percentiles_that_meet_widen_to_the_minimum_and_maximum():
    sparse = np.zeros((32, 32), np.uint16)
    sparse[0, :2] = 1000  # fewer than 0.2 % of the pixels: both percentiles are 0
    scaling, _ = scaling_for(sparse)
    assert scaling.offset[0] == 0 and scaling.scale[0] == 1000


def test_a_dask_array_gets_the_scaling_of_the_same_data_in_memory():
    da = pytest.importorskip("dask.array")
    a = poisson_counts()
    in_memory, _ = scaling_for(a)
    layout = make_layout(a.shape, dtype=a.dtype)
    lazy = Scaling.fit(layout.canonical(da.from_array(a, chunks=32)), layout)
    assert lazy.offset[0] == in_memory.offset[0] and lazy.scale[0] == in_memory.scale[0]
    exact = np.percentile(a, (1, 99.8))
    assert abs(lazy.offset[0] - exact[0]) <= 2 and abs(lazy.offset[0] + lazy.scale[0] - exact[1]) <= 2


def test_unknown_scalings_are_refused():
    assert check_scaling("minmax") == "minmax"
    with pytest.raises(ImageError, match="scaling must be one of"):
        scaling_for(np.zeros((4, 4), np.uint16), method="auto")


def test_constant_images_do_not_divide_by_zero():
    scaling, canon = scaling_for(np.full((4, 4), 7.5, np.float32))
    unit = scaling.to_unit(canon, (0, 1))
    assert np.all(unit == 0) and np.all(scaling.from_unit(unit, (0, 1), canon) == 7.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    a = np.ones((5, 5), np.float32)
    a[2, 3] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        scaling_for(a)


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(ImageError, match="dtype"):
        scaling_for(np.zeros((4, 4), dtype))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_restored_values_are_refused_not_cast(dtype, bad):
    """NaN cast to uint8 is 0: an all-black image that looks like a result."""
    scaling, canon = scaling_for(np.array([[0, 200]], dtype))
    unit = np.full((1, 2, 1), 0.5, np.float32)
    unit[0, 1, 0] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        scaling.from_unit(unit, (0, 1), canon)
