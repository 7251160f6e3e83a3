import math

import numpy as np
import pytest
import torch

from a2m_utils import segmentation
from a2m_utils.beco import (
    _mixed_batch,
    beco_loss,
    boundary_band,
    build_pair,
    class_mix,
    online_labels,
    photometric,
    predict_ensemble,
    train_beco,
)
from a2m_utils.images import to_tensor

TINY = {"arch": "Unet", "encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": (16, 8, 4)}
L3 = math.log(3)  # softmax([ln 3, 0]) = (3/4, 1/4)


def toy_batches(step, n=2, size=32):
    """Random images; class 1 or 2 in a square, class 3 in a corner; 70% of pixels reliable."""
    rng = np.random.default_rng(step)
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 4:16, 4:16] = 1 + step % 2
    labels[::2, 20:, 20:] = 3
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels, rng.random((n, size, size)) < 0.7


# --- BECO pieces, on values computed by hand


def test_boundary_band_is_dilation_minus_erosion():
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    mask[0, 2:5, 2:5] = True
    expected = torch.zeros(7, 7)
    expected[1:6, 1:6] = 1
    expected[3, 3] = 0  # the 3x3 square erodes to its centre
    assert torch.equal(boundary_band(mask)[0], expected)
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1
    assert torch.equal(boundary_band(dot)[0], torch.nn.functional.pad(torch.ones(3, 3), (1, 1, 1, 1)))
    assert not boundary_band(torch.ones(1, 4, 4)).any()  # the image border is no boundary


def test_beco_loss_terms():
    # four pixels: reliable label 0 on the boundary, reliable ignore, two unreliable
    logits_a = torch.tensor([[[L3, 0, 0, L3]], [[0, 0, L3, 0]]])[None]  # (1, 2, 1, 4)
    logits_b = torch.tensor([[[0, 0, L3, 0]], [[0, 0, 0, L3]]])[None]
    label = torch.tensor([[[0, 255, 1, 0]]])
    reliable = torch.tensor([[[True, True, False, False]]])
    boundary = torch.tensor([[[1.0, 0, 1, 0]]])
    terms = beco_loss(logits_a, logits_b, label, reliable, boundary)
    ln2, ln4 = math.log(2), math.log(4)
    expected = {
        "sup_a": 1.2 * math.log(4 / 3) / 4,  # only pixel 0, weight 1 + 0.2
        "sup_b": 1.2 * ln2 / 4,
        "cot_a": (ln4 + ln4) / 4,  # targets argmax b = (0, 1) on pixels 2, 3
        "cot_b": (ln4 + ln4) / 4,  # targets argmax a = (1, 0)
    }
    for k, v in expected.items():
        assert terms[k].item() == pytest.approx(v), k
    assert terms["total"].item() == pytest.approx(sum(expected.values()))


def test_online_labels_average_the_softmaxes():
    l99, l9 = math.log(99), math.log(9)
    logits_a = torch.tensor([[[l99, 0]], [[0, l9]]])[None]  # pixel 0: (.99, .01); pixel 1: (.1, .9)
    logits_b = torch.tensor([[[l99, 0]], [[0, 0]]])[None]  # pixel 1: (.5, .5) -> mean (.3, .7)
    label, confident = online_labels(logits_a, logits_b)
    assert label.tolist() == [[[0, 1]]] and confident.tolist() == [[[True, False]]]
    assert online_labels(logits_a, logits_b, threshold=0.6)[1].all()


def test_class_mix_pastes_half_the_reliable_foreground_classes_of_the_partner():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, :2, :2], labels[0, 2:, 2:] = 1, 2
    labels[1, :2, 2:] = 3
    reliable = torch.ones(2, 4, 4, dtype=torch.bool)
    reliable[0, 2:, 2:] = False  # class 2 is not confident: never pasted
    reliable[1, 0, 3] = False  # one unreliable pixel of class 3: pasted with it
    images = torch.arange(2.0)[:, None, None, None].expand(2, 3, 4, 4)
    mixed, mixed_labels, mixed_reliable, paste = class_mix(images, labels, reliable, np.random.default_rng(0), p=1)
    assert torch.equal(paste[0], labels[1] == 3) and torch.equal(paste[1], labels[0] == 1)
    assert torch.equal(mixed_labels[0], torch.where(labels[1] == 3, 3, labels[0]))
    assert torch.equal(mixed_labels[1], torch.where(labels[0] == 1, 1, labels[1]))
    assert torch.equal(mixed[0, 0], paste[0].float()) and torch.equal(mixed[1, 0], 1 - paste[1].float())
    assert torch.equal(mixed_reliable[0], reliable[0] & reliable[1]) and torch.equal(mixed_reliable[1], reliable[1])
    unmixed = class_mix(images, labels, reliable, np.random.default_rng(0), p=0)
    assert not unmixed[3].any() and torch.equal(unmixed[1], labels)
    quads = torch.tensor([[1, 2], [3, 4]]).repeat_interleave(2, 0).repeat_interleave(2, 1)
    labels = torch.stack([torch.zeros(4, 4, dtype=torch.long), quads])
    paste = class_mix(images, labels, torch.ones_like(reliable), np.random.default_rng(1), p=1)[3]
    assert paste[0].sum() == 8 and len(labels[1][paste[0]].unique()) == 2  # 2 of 4 classes
    assert not paste[1].any()  # image 0 has no foreground


def test_photometric_is_seeded_and_identity_at_zero_strength():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.allclose(photometric(x, np.random.default_rng(0), 0.0), x, atol=1e-6)
    a, b = photometric(x, np.random.default_rng(0)), photometric(x, np.random.default_rng(0))
    assert torch.equal(a, b) and not torch.allclose(a, x)


def test_mixed_batch_uses_online_labels_only_where_mixed():
    net_a, net_b = build_pair(4, **TINY)
    images, labels, reliable = toy_batches(0, n=4)
    x, y, m = to_tensor(images), torch.from_numpy(labels).long(), torch.from_numpy(reliable)
    with torch.no_grad():
        y_on, m_on = online_labels(net_a.eval()(x), net_b.eval()(x), 0.0)
        xm, ym, mm, boundary = _mixed_batch(net_a, net_b, x, y, m, np.random.default_rng(0), True, 0.0)
    assert net_a.training and net_b.training
    x_mix, y_mix, m_mix, paste = class_mix(x, y_on, m_on, np.random.default_rng(0))  # the same draws
    mixed = paste.flatten(1).any(1)
    assert 0 < mixed.sum() < 4 and torch.equal(xm, x_mix) and torch.equal(boundary, boundary_band(paste))
    assert torch.equal(ym[mixed], y_mix[mixed]) and torch.equal(mm[mixed], m_mix[mixed])
    assert torch.equal(ym[~mixed], y[~mixed]) and torch.equal(mm[~mixed], m[~mixed])  # offline labels
    warm = _mixed_batch(net_a, net_b, x, y, m, np.random.default_rng(0), False, 0.0)
    assert not warm[3].any()


def test_build_pair_shares_the_encoder_init_only():
    net_a, net_b = build_pair(3, **TINY)
    for (k, va), vb in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        if k.startswith("encoder.") or not va.is_floating_point():
            assert torch.equal(va, vb), k
    assert not torch.equal(net_a.segmentation_head[0].weight, net_b.segmentation_head[0].weight)


def test_predict_ensemble_averages_logits():
    def const(bias):
        conv = torch.nn.Conv2d(3, 2, 1)
        torch.nn.init.zeros_(conv.weight)
        conv.bias.data = torch.tensor(bias)
        return conv

    images = np.zeros((3, 4, 4, 3), np.uint8)
    net_a, net_b = const([1.0, 0.0]), const([0.0, 3.0])  # mean (0.5, 1.5): class 1, though net_a says 0
    assert (segmentation.predict(net_a, images) == 0).all()
    pred = predict_ensemble(net_a, net_b, images, batch_size=2)
    assert pred.dtype == np.uint8 and pred.shape == (3, 4, 4) and (pred == 1).all()


def test_train_beco_resumes_exactly(tmp_path):
    def run(name, **kwargs):
        nets = build_pair(4, **TINY)
        history = train_beco(*nets, toy_batches, steps=4, warmup=2, threshold=0.0, jitter=0.3,
                             ckpt=tmp_path / name, ckpt_every=1, **kwargs)
        return nets, history

    (a, b), straight = run("straight.pt")
    run("paused.pt", stop_after=2)
    (a2, b2), resumed = run("paused.pt")
    assert len(straight) == 4 and set(straight[0]) == {"sup_a", "sup_b", "cot_a", "cot_b", "total"}
    assert resumed == straight
    for net, net2 in [(a, a2), (b, b2)]:
        for k, v in net.state_dict().items():
            assert torch.equal(v, net2.state_dict()[k]), k
    with pytest.raises(ValueError, match="was made with"):
        train_beco(*build_pair(4, **TINY), toy_batches, steps=5, warmup=2, ckpt=tmp_path / "paused.pt")


# --- segmentation: augmentation, supervised training with checkpoints, evaluation


def test_augment_crops_and_flips_images_labels_and_extra_alike():
    blocks = np.kron(np.arange(16).reshape(4, 4) % 5, np.ones((8, 8), int)).astype(np.uint8)
    labels = np.stack([blocks, blocks.T])
    images = np.repeat(labels[..., None] * 40, 3, axis=3)
    extra = labels % 2 == 1
    out_i, out_l, out_e = segmentation.augment(images, labels, np.random.default_rng(0), extra=extra)
    assert out_i.shape == images.shape and out_l.shape == labels.shape and out_e.dtype == bool
    assert not np.array_equal(out_l, labels)
    assert np.array_equal(out_e, out_l % 2 == 1)  # nearest for both maps
    assert (out_i[..., 0] == out_l * 40).mean() > 0.7  # bilinear images agree away from the edges
    again = segmentation.augment(images, labels, np.random.default_rng(0), extra=extra)
    assert all(np.array_equal(u, v) for u, v in zip(again, (out_i, out_l, out_e)))
    whole = segmentation.augment(images, labels, np.random.default_rng(1), scale=(1, 1), ratio=(1, 1))
    for img, lab, img0, lab0 in zip(*whole[:2], images, labels):  # whole image: kept or mirrored
        assert (np.array_equal(lab, lab0) and np.array_equal(img, img0)) or (
            np.array_equal(lab, lab0[:, ::-1]) and np.array_equal(img, img0[:, ::-1]))
    assert whole[2] is None


def test_train_supervised_resumes_exactly(tmp_path):
    def run(ckpt, **kwargs):
        model = segmentation.build(4, **TINY)
        return model, segmentation.train_supervised(model, lambda s: toy_batches(s)[:2], 3, augmentation=True,
                                                    seed=2, ckpt=ckpt, **kwargs)

    model, straight = run(None)
    run(tmp_path / "ckpt.pt", stop_after=1)
    model2, resumed = run(tmp_path / "ckpt.pt")
    assert resumed == straight and len(straight) == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    with pytest.raises(ValueError, match="was made with"):
        segmentation.train_supervised(segmentation.build(4, **TINY), toy_batches, 3, ckpt=tmp_path / "ckpt.pt")


def test_evaluate_a_model_or_a_function():
    images, labels, _ = toy_batches(0)
    perfect = segmentation.evaluate(lambda x: labels, images, labels, 4)
    assert perfect["miou"] == 1.0 and perfect["pixel_acc"] == 1.0
    zero = torch.nn.Conv2d(3, 4, 1)
    torch.nn.init.zeros_(zero.weight)
    zero.bias.data = torch.tensor([1.0, 0, 0, 0])  # always background
    s = segmentation.evaluate(zero, images, labels, 4)
    assert s["pixel_acc"] == pytest.approx((labels == 0).mean())
    assert s["iou"][0] == pytest.approx((labels == 0).mean()) and (s["iou"][[1, 3]] == 0).all()
    assert np.isnan(s["iou"][2])  # class 2 is absent from both


def test_paper_segmenter_offline_says_which_weights_to_place(monkeypatch):
    from segmentation_models_pytorch import encoders

    def offline(*args, **kwargs):
        raise OSError("no connection")

    monkeypatch.setattr(encoders, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match=r"huggingface-cli download smp-hub/resnet50\.imagenet"):
        segmentation.build(21, **segmentation.PAPER)


def test_build_keeps_the_global_random_state_and_is_seeded():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = segmentation.build(3, **segmentation.TOY, seed=4)
    assert torch.equal(torch.rand(1), before)
    b = segmentation.build(3, **segmentation.TOY, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_mixed_precision_is_bf16_on_cpu_fp32_when_off_and_the_weights_stay_fp32():
    x, conv = torch.randn(1, 3, 8, 8), torch.nn.Conv2d(3, 4, 3)
    with segmentation.Precision("cpu").autocast():
        assert conv(x).dtype == torch.bfloat16
    with segmentation.Precision("cpu", mixed=False).autocast():
        assert conv(x).dtype == torch.float32
    assert segmentation.Precision("cpu").parts() == {}  # no gradient scaler off CUDA
    model = segmentation.build(3, **segmentation.TOY)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
