"""Clean sources: procedural dead leaves, scikit-image's bundled images, random crops."""

from __future__ import annotations

import numpy as np
import pytest

from slerir_core import clean_images
from slerir_core.clean_images import SKIMAGE_SOURCES, SkimageSource, dead_leaves, random_crop, skimage_images


@pytest.mark.parametrize("size, shape", [(32, (32, 32, 3)), ((24, 40), (24, 40, 3))])
def test_dead_leaves_shape_dtype_range(size, shape):
    image = dead_leaves(size, np.random.default_rng(0))
    assert image.shape == shape
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_dead_leaves_seed_reproduces_and_differs():
    a = dead_leaves(48, np.random.default_rng(3))
    np.testing.assert_array_equal(a, dead_leaves(48, np.random.default_rng(3)))
    assert np.abs(a - dead_leaves(48, np.random.default_rng(4))).mean() > 0.05


def test_dead_leaves_has_flat_regions_edges_and_colour():
    image = dead_leaves(128, np.random.default_rng(1))
    dy, dx = np.abs(np.diff(image, axis=0))[:, :-1], np.abs(np.diff(image, axis=1))[:-1]
    step = np.maximum(dy, dx).max(axis=-1)
    assert 0.05 < (step > 0.1).mean() < 0.6, "edges should be present but not everywhere"
    assert (step < 0.01).mean() > 0.15, "leaves should leave smooth regions"
    assert image.std(axis=(0, 1)).min() > 0.1
    chroma = image.max(axis=-1) - image.min(axis=-1)
    assert chroma.mean() > 0.1, "leaves should be coloured, not grey"


def test_dead_leaves_scale_with_the_radius_range():
    small = dead_leaves(96, np.random.default_rng(2), radius_range=(2.0, 6.0))
    large = dead_leaves(96, np.random.default_rng(2), radius_range=(12.0, 40.0))

    def edge_density(im):
        return (np.abs(np.diff(im, axis=1)).max(axis=-1) > 0.1).mean()

    assert edge_density(small) > 2 * edge_density(large)


def test_dead_leaves_rejects_bad_arguments():
    with pytest.raises(ValueError, match="radius_range"):
        dead_leaves(32, np.random.default_rng(0), radius_range=(5.0, 2.0))
    with pytest.raises(ValueError, match="size"):
        dead_leaves(0, np.random.default_rng(0))


def test_skimage_splits_are_disjoint_rgb_float_images():
    train, test = skimage_images("train"), skimage_images("test")
    assert len(train) >= 8 and len(test) >= 3
    names_train, names_test = {n for n, _ in train}, {n for n, _ in test}
    assert not names_train & names_test
    assert names_train | names_test == {n for n, _ in skimage_images("all")} == set(SKIMAGE_SOURCES)
    for name, image in train + test:
        assert image.ndim == 3 and image.shape[-1] == 3, name
        assert image.dtype == np.float32, name
        assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0.02, name
        assert min(image.shape[:2]) >= 128, name


def test_skimage_grey_images_are_stacked_and_copies_are_fresh():
    camera = dict(skimage_images("test"))["camera"]
    np.testing.assert_array_equal(camera[..., 0], camera[..., 2])
    camera[:] = 0
    assert dict(skimage_images("test"))["camera"].max() > 0


def test_skimage_sources_document_provenance_and_licence():
    for name, source in SKIMAGE_SOURCES.items():
        assert source.name == name and source.split in ("train", "test")
        assert source.provenance and source.licence


def test_skimage_missing_file_is_skipped_never_fetched(monkeypatch):
    # A loader that exists nowhere: calling it would raise, so passing means it was never called.
    ghost = SkimageSource("not_a_skimage_image", "ghost.tif", "test", "nowhere", "none")
    monkeypatch.setitem(clean_images.SKIMAGE_SOURCES, ghost.name, ghost)
    with pytest.warns(UserWarning, match="ghost.tif"):
        names = [n for n, _ in skimage_images("test")]
    assert ghost.name not in names and names


def test_skimage_unknown_split():
    with pytest.raises(ValueError, match="split"):
        skimage_images("val")


def test_random_crop_is_a_seeded_window_of_the_image():
    image = np.arange(20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    crop = random_crop(image, (8, 5), np.random.default_rng(0))
    assert crop.shape == (8, 5, 3) and crop.flags.c_contiguous
    top, left = np.argwhere(image[..., 0] == crop[0, 0, 0])[0]
    np.testing.assert_array_equal(crop, image[top : top + 8, left : left + 5])
    np.testing.assert_array_equal(crop, random_crop(image, (8, 5), np.random.default_rng(0)))
    corners = {random_crop(image, 8, np.random.default_rng(s))[0, 0, 0] for s in range(20)}
    assert len(corners) > 5
    assert random_crop(image[..., 0], 20, np.random.default_rng(0)).shape == (20, 20)


def test_random_crop_larger_than_image():
    with pytest.raises(ValueError, match="larger than the image"):
        random_crop(np.zeros((10, 10, 3), np.float32), 11, np.random.default_rng(0))
