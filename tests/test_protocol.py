import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from a2m_utils import protocol, segmentation
from a2m_utils.classes import IGNORE_INDEX, VOC, voc_palette
from a2m_utils.dataset import png_bytes
from a2m_utils.seg_data import VOCLayout
from a2m_utils.study import segmenters

# VOC's two common image sizes (height, width), and a small one
SIZES = [(375, 500), (500, 375), (375, 500), (333, 500), (500, 375), (120, 160)]
TINY = {"arch": "DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": None, "decoder_channels": 16,
        "decoder_aspp_dropout": 0.0}
SMALL = protocol.Protocol(scale=(96, 48), crop=(48, 48))  # a VOC image rescaled to about 64x48


def scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A VOC-like image and label: background, two objects in their palette colours with noise, and the
    5-pixel band of 255 that VOC draws around each object."""
    h, w = size
    label = np.zeros(size, np.uint8)
    for c in rng.choice(np.arange(1, VOC.num_classes), 2, replace=False):
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        label[top:top + h // 3, left:left + w // 3] = c
    edge = np.zeros(size, bool)
    for axis in (0, 1):
        edge |= np.abs(np.diff(label.astype(int), axis=axis, prepend=label.take([0], axis=axis))) > 0
    band = np.asarray(Image.fromarray(edge).filter(ImageFilter.MaxFilter(5)))
    image = np.clip(voc_palette()[label] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    return image, np.where(band, IGNORE_INDEX, label).astype(np.uint8)


def write_voc(root: Path, sizes=SIZES, seed: int = 0) -> Path:
    """A PASCAL VOC 2012 folder as distributed: JPEG images, palette PNG labels, train and val split files."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    ids = [f"2007_{i:06d}" for i in range(len(sizes))]
    for sid, size in zip(ids, sizes):
        image, label = scene(rng, size)
        Image.fromarray(image).save(root / "JPEGImages" / f"{sid}.jpg", quality=90)
        (root / "SegmentationClass" / f"{sid}.png").write_bytes(png_bytes(label, palette=True))
    for split in ("train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("VOC2012"))


# --- the training transforms


def test_rescaled_fits_the_base_scale_keeping_the_aspect():
    for size, scale in [((375, 500), (2048, 512)), ((500, 375), (2048, 512)), ((1024, 2048), (2048, 1024))]:
        h, w = protocol.rescaled(size, scale)
        assert min(h, w) <= min(scale) and max(h, w) <= max(scale)
        assert min(h, w) == min(scale) or max(h, w) == max(scale)  # as large as fits
        assert abs(h / w - size[0] / size[1]) < 2 / min(h, w)


def test_crop_box_keeps_any_class_under_cat_max_ratio():
    label = np.zeros((100, 100), np.uint8)
    label[:, 70:] = 1
    label[:, 65:70] = IGNORE_INDEX

    def share(box):
        top, left, h, w = box
        values, counts = np.unique(label[top:top + h, left:left + w], return_counts=True)
        counts = counts[values != IGNORE_INDEX]
        return counts.max() / counts.sum()

    capped = [share(protocol.crop_box(label, (40, 40), np.random.default_rng(s))) for s in range(20)]
    free = [share(protocol.crop_box(label, (40, 40), np.random.default_rng(s), cat_max_ratio=1.0)) for s in range(20)]
    assert max(capped) < 0.75 and max(free) >= 0.75
    assert protocol.crop_box(label[:30, :20], (40, 40), np.random.default_rng(0)) == (0, 0, 30, 20)  # all of it


def test_train_sample_is_the_crop_size_padded_with_255_and_seeded():
    rng = np.random.default_rng(0)
    label = np.zeros((20, 30), np.uint8)
    label[5:15, 10:25] = 3
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    p = protocol.Protocol(scale=(30, 20), crop=(32, 40), ratio=(1.0, 1.0))  # the image stays 20 x 30
    out_i, out_l, out_r = protocol.train_sample((image, label, label == 3), p, np.random.default_rng(1))
    assert out_i.shape == (32, 40, 3) and out_l.shape == (32, 40) and out_r.dtype == bool
    assert (out_l[20:] == IGNORE_INDEX).all() and (out_l[:, 30:] == IGNORE_INDEX).all()
    assert (out_l[:20, :30] != IGNORE_INDEX).all()
    assert (out_i[20:] == protocol.MEAN_COLOUR).all()
    assert np.array_equal(out_r[:20, :30], out_l[:20, :30] == 3)  # the maps stay in step
    for s in range(8):  # whatever the photometric distortion draws
        padded = protocol.train_sample((image, label), p, np.random.default_rng(s))[0]
        assert (padded[20:] == protocol.MEAN_COLOUR).all() and (padded[:, 30:] == protocol.MEAN_COLOUR).all()
    again = protocol.train_sample((image, label, label == 3), p, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(again, (out_i, out_l, out_r)))
    other = [protocol.train_sample((image, label), p, np.random.default_rng(s))[0] for s in range(2, 6)]
    assert any(not np.array_equal(o, out_i) for o in other)


def test_crop_batches_of_mixed_sizes_and_a_share_of_them(voc):
    items = VOCLayout(voc, "train", with_reliability=False)
    batches = protocol.crop_batches(items, 4, SMALL, seed=3)
    images, labels, reliable = batches(0)
    assert images.shape == (4, 48, 48, 3) and labels.shape == (4, 48, 48) and reliable.all()
    assert np.isin(labels, [*range(VOC.num_classes), IGNORE_INDEX]).all()
    second = protocol.crop_batches(items, 4, SMALL, seed=3, part=slice(2, 4))(0)
    assert all(np.array_equal(a[2:], b) for a, b in zip((images, labels, reliable), second))
    with pytest.raises(ValueError, match="unknown protocol fields"):
        protocol.protocol({"crop_size": [32, 32]})


# --- evaluation at each image's own size


def test_perfect_prediction_scores_one_at_original_resolution(voc):
    val = VOCLayout(voc, "val", with_reliability=False)
    truth = {item[0].tobytes(): item[1] for item in val}

    def perfect(images: np.ndarray) -> np.ndarray:
        return np.stack([truth[x.tobytes()] for x in images])

    score = segmenters.score(perfect, val, VOC.num_classes)
    assert score["miou"] == 1.0 and score["pixel_acc"] == 1.0
    images = [item[0] for item in val]
    assert all(np.array_equal(p, truth[x.tobytes()]) for p, x in zip(segmenters.predict_each(perfect, images), images))


def test_protocol_scores_equal_an_independent_count_at_original_resolution(voc):
    val = VOCLayout(voc, "val", with_reliability=False)
    model = segmentation.build(VOC.num_classes, **TINY, seed=1)
    with torch.no_grad():  # a net that labels something else than background
        model.segmentation_head[0].bias.copy_(torch.linspace(-1, 1, VOC.num_classes))
    predictions = [protocol.predict(model, item[0][None], SMALL)[0] for item in val]
    assert [p.shape for p in predictions] == SIZES
    pred = np.concatenate([p.ravel() for p in predictions])
    gt = np.concatenate([item[1].ravel() for item in val])
    keep = gt != IGNORE_INDEX
    ious = []
    for c in range(VOC.num_classes):
        inter = np.sum((pred == c) & (gt == c) & keep)
        union = np.sum(((pred == c) | (gt == c)) & keep)
        if union:
            ious.append(inter / union)
    score = segmenters.score(lambda images: protocol.predict(model, images, SMALL), val, VOC.num_classes)
    assert score["miou"] == pytest.approx(np.mean(ious))
    assert score["pixel_acc"] == pytest.approx(np.mean(pred[keep] == gt[keep]))


# --- the schedule and its parts


def test_poly_schedule_decays_to_its_floor():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = segmentation.poly_schedule(opt, 10, min_lr=1e-4)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.01 and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_aux_head_trains_on_stage_3_and_prediction_uses_the_main_head():
    net = segmentation.build(3, **TINY)
    model = segmentation.WithAuxHead(net, 3, weight=0.4)
    assert model.aux[0].in_channels == net.encoder.out_channels[-2]  # ResNet's stage 3
    x = torch.randn(2, 3, 64, 64)
    main, aux = model.train()(x)
    assert main.shape == aux.shape == (2, 3, 64, 64)
    model.eval()
    assert torch.equal(model(x), net(x))
    labels = np.zeros((2, 64, 64), np.uint8)
    images = np.zeros((2, 64, 64, 3), np.uint8)
    losses = segmentation.train_supervised(model, lambda s: (images, labels), 2, mixed_precision=False)
    assert len(losses) == 2 and not model.training


def test_imagenet_encoders_see_imagenet_normalised_input():
    x = torch.zeros(1, 3, 8, 8)  # the kit's mid-grey
    (y,) = segmentation.imagenet_input(None, (x,))
    expected = (0.5 - torch.tensor(segmentation.IMAGENET_MEAN)) / torch.tensor(segmentation.IMAGENET_STD)
    assert torch.allclose(y[0, :, 0, 0], expected)


def test_cpu_sync_batch_norm_is_batch_norm_over_all_processes(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        plain = torch.nn.BatchNorm2d(3)
        synced = segmentation.sync_batch_norm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))[0]
        assert isinstance(synced, segmentation.CpuSyncBatchNorm)
        x = torch.randn(4, 3, 5, 5, requires_grad=True)
        y_plain, y_synced = plain(x), synced(x)
        torch.testing.assert_close(y_synced, y_plain)
        (g_plain,) = torch.autograd.grad((y_plain * x).sum(), x)
        (g_synced,) = torch.autograd.grad((y_synced * x).sum(), x)
        torch.testing.assert_close(g_synced, g_plain)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(synced, name), getattr(plain, name))
    finally:
        torch.distributed.destroy_process_group()


def test_a_protocol_is_a_training_setting_of_its_own(voc):
    files = VOCLayout(voc, "train", with_reliability=False)  # images of several sizes
    config = segmenters.SegConfig(steps=1, batch_size=2, arch=tuple(TINY.items()))
    keys = {segmenters.training_key("supervised", files, 21, 0, c, "cpu")
            for c in (config, config.with_protocol("voc"), config.with_protocol({"crop": [256, 256]}))}
    assert len(keys) == 3
    with pytest.raises(ValueError, match="set seg_augmentation = False"):
        segmenters.SegConfig(augmentation=True, arch=()).with_protocol("voc")


# --- data-parallel training under accelerate launch

SCRIPT = """
import sys
from a2m_utils import registry
from a2m_utils.study import segmenters
registry.SEGMENTERS["tiny"] = {tiny!r}
segmenters.main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 40-80 s per method on 2 shared cores: starting the processes dominates
@pytest.mark.parametrize("method", ["supervised", "beco"])
def test_two_processes_train_as_one_at_the_same_batch(method, voc, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tiny=TINY))
    spec = json.dumps({"scale": [96, 48], "crop": [48, 48], "aux_dropout": 0.0})  # dropout off: drawn per process
    results = {}
    for n in (1, 2):
        out = tmp_path / f"{n}.json"
        # --multi_gpu starts them through torchrun; --device cpu makes them CPU (gloo) processes
        launcher = ["--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                    "no", "--main_process_port", str(_free_port()), *(["--multi_gpu"] if n > 1 else [])]
        kit = [f"voc:{voc}", f"voc:{voc}", "--method", method, "--segmenter", "tiny", "--protocol", spec,
               "--steps", "3", "--batch-size", "4", "--no-mixed-precision", "--device", "cpu",
               "--cache", str(tmp_path / f"cache{n}"), "--out", str(out)]
        command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, str(script), *kit]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[n] = json.loads(out.read_text())
    one, two = results[1], results[2]
    assert len(one["losses"]) == 3 and one["processes"] == 1 and two["processes"] == 2
    totals = [[step["total"] if method == "beco" else step for step in r["losses"]] for r in (one, two)]
    np.testing.assert_allclose(totals[1], totals[0], rtol=2e-4)  # without SyncBN: 1e-3 and more
    assert two["scores"]["miou"] == pytest.approx(one["scores"]["miou"], abs=1e-3)
