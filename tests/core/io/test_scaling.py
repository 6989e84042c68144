"""Value scaling: the fixed uint8 range, each array's own range otherwise, rounding, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core.errors import ImageError
from slerir_core.io.layout import make_layout
from slerir_core.io.scaling import Scaling


def scaling_for(array: np.ndarray, axes: str | None = None, channels: str = "auto") -> tuple[Scaling, np.ndarray]:
    layout = make_layout(array.shape, axes, channels, array.dtype)
    canon = layout.canonical(array)
    return Scaling.fit(canon, layout), canon


def test_uint8_uses_the_fixed_range():
    scaling, canon = scaling_for(np.array([[10, 20], [30, 40]], np.uint8))
    unit = scaling.to_unit(canon, (0, 1))
    assert unit.dtype == np.float32 and np.allclose(unit[..., 0], np.array([[10, 20], [30, 40]]) / 255)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_other_dtypes_use_their_own_range_and_round_trip(dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((6, 7, 3)) * 3000 - (1000 if dtype != np.uint16 else 0) + 500).astype(dtype)
    scaling, canon = scaling_for(a)
    unit = scaling.to_unit(canon, (0, 3))
    assert unit.min() == pytest.approx(0.0, abs=1e-6) and unit.max() == pytest.approx(1.0, abs=1e-6)
    back = scaling.from_unit(unit, (0, 3))
    assert back.dtype == dtype
    if np.dtype(dtype).kind == "f":
        assert np.allclose(back, a, rtol=1e-5, atol=1e-3)
    else:
        assert np.array_equal(back, a)


def test_floats_in_the_unit_range_are_used_as_they_are():
    dark = np.linspace(0.02, 0.2, 30, dtype=np.float32).reshape(5, 6)
    scaling, canon = scaling_for(dark)
    assert np.array_equal(scaling.to_unit(canon, (0, 1))[..., 0], dark)
    assert np.array_equal(scaling.from_unit(canon.astype(np.float32), (0, 1)), canon)


def test_integers_are_rounded_and_clipped_to_the_dtype_range():
    scaling, _ = scaling_for(np.array([[0, 1000]], np.uint16))
    back = scaling.from_unit(np.array([[[-0.5], [0.0004], [0.0006], [70.0]]], np.float32), (0, 1))
    assert back.tolist() == [[[0], [0], [1], [65535]]]


def test_channels_restored_one_by_one_get_their_own_range_and_rgb_shares_one():
    a = np.stack([np.linspace(0, 10, 20), np.linspace(100, 4000, 20)], axis=-1).reshape(4, 5, 2)
    separate, _ = scaling_for(a.astype(np.float32), "YXC")
    assert separate.offset.tolist() == [0, 100] and np.allclose(separate.scale, [10, 3900])
    rgb = np.stack([a[..., 0], a[..., 1], a[..., 1]], axis=-1).astype(np.uint16)
    shared, _ = scaling_for(rgb, channels="rgb")
    assert len(set(shared.offset.tolist())) == 1 and len(set(shared.scale.tolist())) == 1


def test_constant_images_do_not_divide_by_zero():
    scaling, canon = scaling_for(np.full((4, 4), 7.5, np.float32))
    unit = scaling.to_unit(canon, (0, 1))
    assert np.all(unit == 0) and np.all(scaling.from_unit(unit, (0, 1)) == 7.5)


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
    scaling, _ = scaling_for(np.array([[0, 200]], dtype))
    unit = np.full((1, 2, 1), 0.5, np.float32)
    unit[0, 1, 0] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        scaling.from_unit(unit, (0, 1))


def test_restored_values_that_overflow_a_float16_are_refused():
    scaling, _ = scaling_for(np.array([[0, 60000]], np.float16))
    with pytest.raises(ImageError, match="overflow float16"):
        scaling.from_unit(np.full((1, 2, 1), 1.5, np.float32), (0, 1))
