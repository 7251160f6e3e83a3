import numpy as np

from a2m_utils.oracle import MIN_COMPONENT, augmented, fidelity, object_counts


def test_object_counts_and_fidelity():
    label = np.zeros((16, 16), np.uint8)
    label[1:4, 1:4] = 1  # a circle
    label[10:14, 10:14] = 1  # another circle
    label[1:5, 10:14] = 4  # a star
    label[8, 0] = 5  # a one-pixel speck of cross: not an object
    assert MIN_COMPONENT > 1
    assert object_counts(label) == {"circle": 2, "star": 1}
    assert fidelity(label, {"circle": 2, "star": 1}) == (True, True)
    assert fidelity(label, {"circle": 1, "star": 1}) == (True, False)
    assert fidelity(label, {"circle": 2, "square": 1}) == (False, False)


def test_augmentation_keeps_the_labels():
    image, label = augmented(3)
    image2, label2 = augmented(3)
    assert np.array_equal(image, image2) and np.array_equal(label, label2)
    assert image.dtype == np.uint8 and label.max() > 0
