import numpy as np
import pytest

from a2m_utils import masks
from a2m_utils.metrics import confusion_matrix, scores
from a2m_utils.toy import world as toyworld
from a2m_utils.toy.world import TOY


def test_eq4_class_map_is_mean_over_its_tokens():
    attn = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2)
    got = masks.class_maps(attn, {"circle": [1, 3], "star": [2]})
    np.testing.assert_allclose(got[0], [[8, 9], [10, 11]])  # mean of tokens 1 (4..7) and 3 (12..15)
    np.testing.assert_allclose(got[1], attn[2])
    with pytest.raises(ValueError, match="names no class"):
        masks.class_maps(attn, {})


def test_normalize_per_map_and_joint():
    maps = np.array([[[0, 1], [2, 4]], [[1, 1], [1, 2]]], dtype=np.float32)
    np.testing.assert_allclose(masks.normalize(maps), [[[0, .25], [.5, 1]], [[0, 0], [0, 1]]])
    np.testing.assert_allclose(masks.normalize(maps, joint=True), maps / 4)


def test_eq5_background_and_eq6_reliability():
    maps = np.array([[[0.9, 0.1]], [[0.2, 0.3]]], dtype=np.float32)  # 2 classes, 1x2 pixels
    np.testing.assert_allclose(masks.background(maps, beta=0.2), [[1 - 0.9 - 0.2, 1 - 0.3 - 0.2]], atol=1e-6)
    stack = masks.with_background(maps, beta=0.0)
    np.testing.assert_allclose(stack[0], [[0.1, 0.7]], atol=1e-6)
    np.testing.assert_array_equal(masks.reliability(stack, r=0.5), [[True, True]])
    np.testing.assert_array_equal(masks.reliability(masks.with_background(maps, 0.2), r=0.6), [[True, False]])


def test_label_maps_use_vocabulary_ids():
    maps = np.array([[[0.9, 0.1, 0.3]], [[0.2, 0.6, 0.2]]], dtype=np.float32)
    ids = [TOY.index("star"), TOY.index("cross")]
    np.testing.assert_array_equal(masks.label_map(maps, ids, "argmax", beta=0.2), [[4, 5, 0]])
    # threshold on the [0, 255] scale: 0.6 * 255 = 153 >= 128, 0.3 * 255 = 76.5 < 128
    np.testing.assert_array_equal(masks.label_map(maps, ids, "threshold", theta=128), [[4, 5, 0]])
    np.testing.assert_array_equal(masks.label_map(maps, ids, "threshold", theta=64), [[4, 5, 4]])


def test_otsu_splits_a_bimodal_map():
    peak = np.zeros((1, 8, 8), dtype=np.float32)
    peak[0, 2:6, 2:6] = 0.8
    peak += np.random.default_rng(0).uniform(0, 0.1, peak.shape).astype(np.float32)
    np.testing.assert_array_equal(masks.label_map(peak, [1], "otsu") == 1, peak[0] > 0.5)


def test_bad_method_and_mismatched_ids():
    maps = np.zeros((1, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown post-processing 'crf'"):
        masks.label_map(maps, [1], "crf")
    with pytest.raises(ValueError, match="2 class ids for 1 class maps"):
        masks.label_map(maps, [1, 2], "argmax")
    with pytest.raises(ValueError, match="needs the image"):
        masks.label_map(maps, [1], "dcrf")


def test_dense_crf_cleans_noisy_probabilities():
    sample = toyworld.make_sample(7, size=32)
    ids = sorted(set(np.unique(sample.label)) - {0})
    rng = np.random.default_rng(0)
    onehot = np.stack([(sample.label == i) for i in [0, *ids]]).astype(np.float32)
    noisy = np.clip(0.25 * onehot + rng.uniform(0, 0.6, onehot.shape), 1e-3, None).astype(np.float32)
    noisy /= noisy.sum(0, keepdims=True)
    before = masks.label_argmax(noisy, ids)
    after = masks.label_dcrf(noisy, ids, sample.image)
    def miou(p):
        return scores(confusion_matrix(p, sample.label, TOY.num_classes))["miou"]
    assert miou(after) > miou(before) + 0.1
    np.testing.assert_array_equal(after, masks.label_dcrf(noisy, ids, sample.image))  # deterministic


def test_pseudo_mask_from_token_attention():
    from a2m_utils.tokens import class_positions
    from a2m_utils.toy.pipeline import build_tokenizer

    tok = build_tokenizer()
    prompt = "a red circle and a blue star"  # [BOS] a red circle and a blue star [EOS]
    attn = np.full((24, 8, 8), 0.01, dtype=np.float32)
    attn[3, :4, :4] = 1.0
    attn[7, 4:, 4:] = 1.0
    positions = class_positions(prompt, tok, TOY)
    assert positions == {"circle": [3], "star": [7]}
    pm = masks.pseudo_mask(masks.class_maps(attn, positions), [TOY.index(n) for n in positions],
                           np.zeros((16, 16, 3), np.uint8), method="argmax", beta=0.2)
    assert pm.class_ids == [1, 4]
    assert pm.label.shape == (16, 16) and pm.maps.shape == (2, 16, 16)
    assert (pm.label[:6, :6] == 1).all() and (pm.label[10:, 10:] == 4).all()
    assert (pm.label[:6, 10:] == 0).all() and (pm.label[10:, :6] == 0).all()
    assert pm.reliability[:6, :6].all() and pm.reliability[:6, 10:].all()  # A_c = 1 / A_0 = 0.8 >= 0.5
