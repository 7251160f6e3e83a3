import numpy as np
import pytest

from a2m_utils.refine import label_refined, refine, refine_maps


def test_identity_affinity_leaves_maps_unchanged(rng):
    maps = rng.random((3, 4, 4)).astype(np.float32)
    refined = refine_maps(maps, np.eye(16))
    lo, hi = maps.min((1, 2), keepdims=True), maps.max((1, 2), keepdims=True)
    np.testing.assert_allclose(refined, (maps - lo) / (hi - lo), atol=1e-6)


def test_maps_are_upsampled_to_the_affinity_resolution(rng):
    assert refine_maps(rng.random((2, 2, 2)), np.eye(64)).shape == (2, 8, 8)


def test_block_averaging_spreads_a_map_within_its_block():
    """Two blocks, the top and bottom halves of a 4x4 map: a peak spreads over its half only."""
    affinity = np.kron(np.eye(2), np.full((8, 8), 1 / 8))
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 0, 1] = 1.0
    label, refined = refine(maps, affinity, class_ids=[7], size=(8, 8))
    np.testing.assert_allclose(refined[0, :2], 1, atol=1e-6)
    np.testing.assert_allclose(refined[0, 2:], 0, atol=1e-6)
    assert label.shape == (8, 8) and label.dtype == np.uint8
    assert (label[:4] == 7).all() and (label[4:] == 0).all()


def test_rows_attend_to_columns_in_row_major_order():
    """Row i of the affinity attending to pixel i + 1 moves the map one pixel left."""
    affinity = np.eye(16, k=1)
    affinity[-1, -1] = 1
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 1, 2] = 1.0
    refined = refine_maps(maps, affinity, power=1)
    assert np.argwhere(refined[0] == 1).tolist() == [[1, 1]]
    assert np.argwhere(refine_maps(maps, affinity, power=2)[0] == 1).tolist() == [[1, 0]]


def test_thresholds_give_class_ignore_and_background():
    maps = np.array([[[0.9, 0.55, 0.3], [0.1, 0.6, 0.59]],
                     [[0.2, 0.1, 0.2], [0.8, 0.5, 0.49]]], np.float32)
    label = label_refined(maps, [3, 5], size=(2, 3))
    assert label.tolist() == [[3, 255, 0], [5, 3, 255]]
    assert label_refined(maps, [3, 5], size=(4, 6))[::2, ::2].tolist() == label.tolist()


def test_bad_input(rng):
    with pytest.raises(ValueError, match="N a square"):
        refine_maps(rng.random((1, 4, 4)), np.eye(15))
    with pytest.raises(ValueError, match="1 class ids for 2 class maps"):
        refine(rng.random((2, 4, 4)), np.eye(16), [1], (4, 4))
