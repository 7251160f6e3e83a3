import numpy as np

from a2m_utils.toy import world as toyworld
from a2m_utils.toy.oracle import MIN_COMPONENT, augmented, check_generation, fidelity, object_counts


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


def test_check_generation_scores_masks_and_fidelity_by_hand():
    obj = toyworld.ToyObject("circle", "red", 0.5, 0.5, 0.2, 0.0)
    scenes = [toyworld.Scene((obj,), "source", 0)] * 2
    truth = np.zeros((2, 8, 8), np.uint8)
    truth[0, 2:6, 2:6] = 1  # image 0: the prompted circle, 16 pixels; image 1: nothing found
    pseudo = np.zeros_like(truth)
    pseudo[0, 2:6, 2:4] = 1  # half the circle on image 0
    got = check_generation(truth, pseudo, scenes)
    assert got["all_found"] == 0.5 and got["exact"] == 0.5
    # background: 8 hits in image 0's 56 + 64 truth pixels; circle: 8 of 16
    assert np.isclose(got["iou"][0], 112 / 120) and np.isclose(got["iou"][1], 0.5)
    assert np.isclose(got["miou"], (112 / 120 + 0.5) / 2)
    assert np.isclose(got["miou_where_all_found"], (48 / 56 + 0.5) / 2)
