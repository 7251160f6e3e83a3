import pytest
import torch

from a2m_utils import registry, segmentation
from a2m_utils.toy import encoder, sets


def test_pretraining_is_deterministic_and_its_encoder_is_the_toy_segmenters(tmp_path):
    first, record = encoder.pretrain(n_images=32, steps=2, batch_size=8, n_val=16)
    again, _ = encoder.pretrain(n_images=32, steps=2, batch_size=8, n_val=16)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    path = encoder.save(first, record, tmp_path)
    loaded = segmentation.build(6, encoder_weights=str(path), **segmentation.TOY).encoder.state_dict()
    assert all(torch.equal(loaded[k], first[k]) for k in first)
    assert (tmp_path / "training.json").is_file()


def test_the_pretraining_scenes_belong_to_no_study_set():
    starts = sorted([sets.REAL_SEED0, sets.VAL_SEED0, sets.DEV_SEED0, encoder.PRETRAIN_SEED0])
    assert encoder.PRETRAIN_SEED0 == starts[-1] and encoder.PRETRAIN_SEED0 - sets.DEV_SEED0 >= 10**9


def test_the_toy_segmenter_starts_from_the_committed_encoder():
    weights = registry.segmenter("toy")["encoder_weights"]
    assert weights == str(encoder.WEIGHTS) and encoder.WEIGHTS.is_file()
    scratch = segmentation.build(6, **segmentation.TOY).encoder.state_dict()
    pretrained = segmentation.build(6, **registry.segmenter("toy")).encoder.state_dict()
    assert not torch.equal(scratch["conv1.weight"], pretrained["conv1.weight"])


def test_missing_encoder_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors not found"):
        segmentation.build(6, encoder_weights=str(tmp_path / "missing.safetensors"), **segmentation.TOY)


def test_the_stages_a_depth_leaves_unused_are_not_kept():
    model = segmentation.build(6, **segmentation.TOY)  # 3 stages of ResNet-18: layer3 and layer4 never run
    assert not any(k.startswith(("encoder.layer3", "encoder.layer4")) for k in model.state_dict())
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 6, 32, 32)
