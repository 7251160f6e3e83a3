import numpy as np
import pytest
import torch

from a2m_utils import segmentation
from a2m_utils.batches import array_batches, batch_indices


def test_each_epoch_visits_every_item_once_in_a_seeded_order():
    indices = batch_indices(10, 4, seed=3)
    steps = np.concatenate([indices(s) for s in range(5)])  # 20 draws: two epochs
    assert sorted(steps[:10]) == list(range(10)) and sorted(steps[10:]) == list(range(10))
    assert not np.array_equal(steps[:10], steps[10:])  # epochs are shuffled apart
    np.testing.assert_array_equal(indices(2), batch_indices(10, 4, seed=3)(2))  # a step's batch depends on (seed, step)
    assert not np.array_equal(steps[:10], np.concatenate([batch_indices(10, 4, seed=4)(s) for s in range(3)])[:10])


def test_batches_larger_than_the_set_wrap_into_the_next_epoch():
    assert sorted(batch_indices(3, 6, seed=0)(0)) == [0, 0, 1, 1, 2, 2]


def test_array_batches_keep_items_paired():
    images, labels = np.arange(8) * 10, np.arange(8)
    x, y = array_batches((images, labels), 3, seed=1)(4)
    np.testing.assert_array_equal(x, y * 10)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="batch_size=0"):
        batch_indices(5, 0)


def test_training_leaves_the_global_torch_generator_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    model = segmentation.build(3, arch="Unet", encoder_name="resnet18", encoder_depth=3,
                               decoder_channels=(16, 8, 4), encoder_weights=None)
    data = (np.zeros((4, 32, 32, 3), np.uint8), np.zeros((4, 32, 32), np.uint8))
    segmentation.train_supervised(model, array_batches(data, 2), 2, optimizer="adam", lr=1e-3)
    assert torch.equal(torch.random.get_rng_state(), before)
