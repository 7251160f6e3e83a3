import numpy as np
import pytest

from a2m_utils.metrics import confusion_matrix, scores


def test_confusion_iou_and_ignore():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    conf = confusion_matrix(pred, gt, 3)
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    s = scores(conf)
    np.testing.assert_allclose(s["iou"], [1 / 3, 2 / 3, 1 / 2])
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_acc"] == pytest.approx(4 / 6)


def test_absent_classes_do_not_count():
    s = scores(confusion_matrix(np.zeros(4, int), np.zeros(4, int), 3))
    assert s["miou"] == 1.0 and np.isnan(s["iou"][1:]).all()


def test_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_label_spaces_map_vocabulary_ids_and_refuse_a_mismatch():
    from a2m_utils.classes import CITYSCAPES, VOC, to_eval_ids
    from a2m_utils.toy.world import TOY

    assert (to_eval_ids(VOC, "voc")[:21] == np.arange(21)).all() and to_eval_ids(VOC, "voc")[255] == 255
    city = to_eval_ids(CITYSCAPES, "cityscapes")
    assert city[0] == 255 and city[CITYSCAPES.index("road")] == 0 and city[CITYSCAPES.index("bicycle")] == 18
    assert list(to_eval_ids(TOY, "fgbg")[:6]) == [0, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="is not the voc label space"):
        to_eval_ids(TOY, "voc")
