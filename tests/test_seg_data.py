import numpy as np
import pytest
from PIL import Image

from a2m_utils.classes import CITYSCAPES, voc_palette
from a2m_utils.seg_data import (
    CITYSCAPES_LABEL_IDS,
    VOCLayout,
    cityscapes,
    imagenet_s_fgbg,
)
from a2m_utils.toy.world import rendered as rendered_toy


def write(path, array, palette=False):
    """An image file of any suffix; ``palette``: a VOC palette PNG of class ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if palette:
        img = img.convert("P")
        img.putpalette(voc_palette().ravel().tolist())
    img.save(path)


def label_map(k, h=8, w=12):
    label = np.zeros((h, w), np.uint8)
    label[2:6, 3:9] = k
    label[0, 0] = 255
    return label


def image(k, h=8, w=12):
    return np.full((h, w, 3), 40 * k, np.uint8)


@pytest.fixture
def voc(tmp_path):
    """ids a, b in train; a has a reliability map, b none; labels are palette PNGs."""
    root = tmp_path / "VOC2012"
    for k, name in enumerate(["a", "b"], start=1):
        write(root / "JPEGImages" / f"{name}.jpg", image(k))
        write(root / "SegmentationClass" / f"{name}.png", label_map(k), palette=True)
        write(root / "SegmentationClassAug" / f"{name}.png", label_map(k + 10))
    rel = np.zeros((8, 12), np.uint8)
    rel[:4] = 1
    write(root / "Reliability" / "a.png", rel)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("b\n")
    return root


def test_voc_layout_reads_palette_labels_and_reliability(voc):
    ds = VOCLayout(voc)
    assert len(ds) == 2
    images, labels, reliable = ds.arrays()
    assert images.shape == (2, 8, 12, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [label_map(1), label_map(2)])
    assert reliable.dtype == bool and reliable[0, :4].all() and not reliable[0, 4:].any()
    assert reliable[1].all()  # no reliability file: all reliable
    assert VOCLayout(voc, with_reliability=False).arrays()[2].all()


def test_voc_train_aug_uses_segmentation_class_aug(voc):
    np.testing.assert_array_equal(VOCLayout(voc, "train_aug").arrays()[1], [label_map(12)])


def test_resize_keeps_label_values(voc):
    images, labels, reliable = VOCLayout(voc, size=(16, 24)).arrays()
    assert images.shape == (2, 16, 24, 3) and labels.shape == reliable.shape == (2, 16, 24)
    assert set(np.unique(labels)) == {0, 1, 2, 255}
    np.testing.assert_array_equal(labels[0, ::2, ::2], label_map(1))


def test_batches_visit_every_item_once_per_epoch(voc):
    batch = VOCLayout(voc).batches(batch_size=1, seed=3)
    classes = [batch(s)[1][0, 3, 4] for s in range(4)]
    assert sorted(classes[:2]) == [1, 2] and sorted(classes[2:]) == [1, 2]
    assert np.array_equal(batch(1)[0], VOCLayout(voc).batches(1, seed=3)(1)[0])


def test_a_small_set_is_held_in_memory_and_serves_the_same_batches(voc):
    ds = VOCLayout(voc)
    held, streamed = ds.batches(2, seed=1), ds.batches(2, seed=1, hold_bytes=0)  # 2 items: too large for 0 bytes
    for step in range(3):
        for x, y in zip(held(step), streamed(step)):
            np.testing.assert_array_equal(x, y)
    expected = streamed(3)
    for p in ds.images:
        p.unlink()
    for x, y in zip(held(3), expected):  # read once, at its first step
        np.testing.assert_array_equal(x, y)
    with pytest.raises(FileNotFoundError):
        streamed(3)


def test_voc_errors_name_what_is_missing(voc, tmp_path):
    with pytest.raises(FileNotFoundError, match="PASCAL VOC layout"):
        VOCLayout(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"val.txt not found; splits there: \['train', 'train_aug'\]"):
        VOCLayout(voc, "val")
    (voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images .* missing, e.g. .*b.jpg"):
        VOCLayout(voc)
    write(voc / "SegmentationClass" / "a.png", np.zeros((5, 5), np.uint8))
    (voc / "ImageSets" / "Segmentation" / "one.txt").write_text("a\n")
    with pytest.raises(ValueError, match=r"a.png is \(5, 5\), its image .* is \(8, 12\)"):
        VOCLayout(voc, "one").arrays()


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[7, 8, 26, 0], [33, 1, 24, 255]], np.uint8)  # road sidewalk car unlabeled / bicycle ego person
    for split, city in [("val", "lindau"), ("val", "munster")]:
        name = f"{city}_000000_000019"
        write(tmp_path / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", image(1, 2, 4))
        write(tmp_path / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", ids)
    images, labels, reliable = cityscapes(tmp_path, "val").arrays()
    assert images.shape == (2, 2, 4, 3) and reliable.all() and list(CITYSCAPES_LABEL_IDS) == list(CITYSCAPES.names[1:])
    np.testing.assert_array_equal(labels[1], [[0, 1, 13, 255], [18, 255, 11, 255]])
    with pytest.raises(FileNotFoundError, match="leftImg8bit/<split>"):
        cityscapes(tmp_path, "train")
    (tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 2 Cityscapes labels"):
        cityscapes(tmp_path, "val")


def test_imagenet_s_fgbg_binarises_classes(tmp_path):
    mask = np.array([[0, 3, 150], [255, 0, 1]], np.uint8)
    write(tmp_path / "validation" / "images" / "n01_1.JPEG", image(2, 2, 3))
    write(tmp_path / "validation" / "masks" / "n01_1.png", mask)
    images, labels, _ = imagenet_s_fgbg(tmp_path, size=4).arrays()
    assert images.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(labels[0, ::2, ::2], [[0, 1], [255, 0]])
    (tmp_path / "validation" / "masks" / "n01_1.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 1 masks <name>.png missing"):
        imagenet_s_fgbg(tmp_path)


def test_rendered_toy_is_seeded():
    images, labels = rendered_toy([1, 2], domain="target", size=24)
    assert images.shape == (2, 24, 24, 3) and labels.shape == (2, 24, 24) and labels.max() > 0
    np.testing.assert_array_equal(images, rendered_toy([1, 2], domain="target", size=24)[0])


def test_check_command_reports_each_split_and_fails_on_a_broken_required_one(voc, capsys):
    from a2m_utils.seg_data import main

    assert main(["check", "voc", str(voc)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok      train:") and any(line.startswith("ok      train_aug") for line in out)
    next((voc / "JPEGImages").iterdir()).unlink()
    assert main(["check", "voc", str(voc)]) == 1
    assert capsys.readouterr().out.startswith("MISSING train: 1 of ")


def test_voc_layout_reads_lossless_png_images(voc):
    (voc / "JPEGImages" / "b.jpg").unlink()
    noise = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)  # JPEG would alter it
    write(voc / "JPEGImages" / "b.png", noise)
    np.testing.assert_array_equal(VOCLayout(voc).arrays()[0][1], noise)


def test_head_and_relabelled_read_on_demand(voc):
    ds = VOCLayout(voc)
    first = ds.head(1).relabelled(lambda x: np.where(x == 1, 7, x))
    assert len(first) == 1
    np.testing.assert_array_equal(first.arrays()[1][0], np.where(label_map(1) == 1, 7, label_map(1)))
    with pytest.raises(ValueError, match="has 2 images, 3 were asked for"):
        ds.head(3)
