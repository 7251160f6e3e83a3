import re

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import VOCSegmentation

from a2m_utils.classes import CITYSCAPES, IMAGENET_S_CLASSES, voc_palette
from a2m_utils.seg_data import (
    CITYSCAPES_LABEL_IDS,
    KINDS,
    VOCLayout,
    check,
    cityscapes,
    imagenet_s,
    main,
)
from a2m_utils.study import smoke
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
    with pytest.raises(FileNotFoundError, match="nowhere not found: expected a PASCAL VOC folder"):
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
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train not found; splits there: \['val'\]"):
        cityscapes(tmp_path, "train")
    (tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 2 Cityscapes labels"):
        cityscapes(tmp_path, "val")


def test_rendered_toy_is_seeded():
    images, labels = rendered_toy([1, 2], domain="target", size=24)
    assert images.shape == (2, 24, 24, 3) and labels.shape == (2, 24, 24) and labels.max() > 0
    np.testing.assert_array_equal(images, rendered_toy([1, 2], domain="target", size=24)[0])


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


def test_check_reports_each_split_and_fails_on_a_broken_one(voc, capsys):
    assert main(["check", "voc", str(voc)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"layout  {voc}" and out[1:3] == ["ok      train_aug: 1 samples", "ok      train: 2 samples"]
    assert out[3].startswith("absent  val: split file")  # a split the folder lacks is no error
    (voc / "JPEGImages" / "a.jpg").unlink()
    assert main(["check", "voc", str(voc)]) == 1
    assert capsys.readouterr().out.splitlines()[2].startswith("BROKEN  train: 1 of 2 images")


def test_one_table_of_dataset_kinds(voc):
    assert {name: kind.space for name, kind in KINDS.items()} == {
        "voc": "voc", "cityscapes": "cityscapes", "imagenet-s": "fgbg", "generated": None}
    assert KINDS["voc"].splits == ("train_aug", "train", "val")
    np.testing.assert_array_equal(KINDS["voc"].open(voc, "train").arrays()[1], [label_map(12)])  # SBD's, if there
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").unlink()
    np.testing.assert_array_equal(KINDS["voc"].open(voc, "train").arrays()[1], [label_map(1), label_map(2)])
    assert KINDS["generated"].open(voc, "train").reliability is not None  # generated sets keep their R maps
    with pytest.raises(ValueError, match="a generated dataset has no val split; it serves train"):
        KINDS["generated"].open(voc, "val")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The smoke world's datasets in their real formats: VOC and ImageNetS919 (4 images a split), Cityscapes."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    smoke.write_voc(root / "voc", 4, rng)
    smoke.write_cityscapes(root / "cityscapes", rng)
    smoke.write_imagenet_s(root / "imagenet-s", 4, rng)
    return root


def runs(mask):
    """Lengths of the runs of True along the rows of a boolean map."""
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    return np.flatnonzero(edges.ravel() == -1) - np.flatnonzero(edges.ravel() == 1)


def test_the_voc_fixture_loads_through_torchvision_as_through_the_kit(world):
    theirs = VOCSegmentation(world / "voc", year="2012", image_set="val")
    ours = KINDS["voc"].open(world / "voc", "val")
    assert len(theirs) == len(ours) == 4
    for k in range(4):
        image, target = theirs[k]
        assert target.mode == "P" and target.getpalette()[:63] == voc_palette(21).ravel().tolist()
        np.testing.assert_array_equal(ours[k][0], np.asarray(image))
        np.testing.assert_array_equal(ours[k][1], np.asarray(target))
    assert {theirs[k][0].size for k in range(4)} == {(500, 375), (375, 500), (500, 333), (486, 500)}
    band = np.concatenate([runs(ours[k][1] == 255) for k in range(4)] + [runs(ours[k][1].T == 255) for k in range(4)])
    assert band.min() == 5  # VOC's 255 band about each object, 5 pixels across


def test_the_cityscapes_fixture_is_named_and_sized_as_cityscapes(world):
    files = KINDS["cityscapes"].open(world / "cityscapes", "val")
    assert all(re.fullmatch(r"[a-z]+_\d{6}_\d{6}_leftImg8bit\.png", p.name) for p in files.images)
    image, label, _ = files[0]
    raw = np.asarray(Image.open(files.labels[0]))
    assert image.shape == (1024, 2048, 3) and raw.shape == label.shape == (1024, 2048)
    assert (label[raw == 1] == 255).all() and (label[raw == 7] == 0).all()  # ego vehicle ignored; road: train id 0


def test_an_imagenet_s_919_folder_passes_check_given_itself_or_its_parent(world, capsys):
    folder = world / "imagenet-s" / "ImageNetS919"
    for path in (folder, folder.parent):
        assert main(["check", "imagenet-s", str(path)]) == 0
        assert capsys.readouterr().out.splitlines() == [
            f"layout  {folder}", "ok      train-semi: 4 samples", "ok      validation: 4 samples"]


def rgb_ids(path):
    """An ImageNet-S mask's class ids, R + 256 G."""
    rgb = np.asarray(Image.open(path)).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


def test_the_fgbg_label_is_the_images_own_class(world):
    """The paper keeps the pixels of the image's class (its wnid): another class in the image is background, 1000
    ignored."""
    files = imagenet_s(world / "imagenet-s", "validation")
    k = next(k for k, p in enumerate(files.labels) if len(set(np.unique(rgb_ids(p))) - {0, 1000}) == 2)
    ids = rgb_ids(files.labels[k])
    own = next(c.ids[919] for c in IMAGENET_S_CLASSES if c.wnid == files.images[k].parent.name)
    (other,) = set(np.unique(ids)) - {0, 1000, own}
    label = files[k][1]
    assert (label[ids == own] == 1).all() and (label[ids == other] == 0).all() and (label[ids == 0] == 0).all()
    assert (label[ids == 1000] == 255).all() and (ids == 1000).any()


def imagenet_s_folder(root, subset, wnid, ids, rgb=True):
    """A one-image ImageNetS<subset> validation split of class ``wnid`` whose mask holds ``ids``, RGB-encoded as
    LUSSeg's masks are (else a grey PNG)."""
    folder, ids = root / f"ImageNetS{subset}", np.asarray(ids)
    write(folder / "validation" / wnid / "ILSVRC2012_val_00000001.JPEG", image(1, *ids.shape))
    mask = np.stack([ids % 256, ids // 256, 0 * ids], -1) if rgb else ids
    write(folder / "validation-segmentation" / wnid / "ILSVRC2012_val_00000001.png", mask.astype(np.uint8))
    return folder


def test_imagenet_s_ids_are_r_plus_256_g_in_the_folders_subset(tmp_path):
    tv = next(c for c in IMAGENET_S_CLASSES if c.names[0] == "television")  # id 794 in ImageNetS919 (G = 3), 40 in 50
    for subset in (919, 50):
        folder = imagenet_s_folder(tmp_path / str(subset), subset, tv.wnid, [[tv.ids[subset], 2, 0, 1000]])
        np.testing.assert_array_equal(imagenet_s(folder)[0][1], [[1, 0, 0, 255]])


@pytest.mark.parametrize(("ids", "rgb", "message"), [
    ([[1, 600]], True, r"holds class id 600, beyond ImageNetS50's 50 classes: is it another subset's mask\?"),
    ([[1, 0]], False, r"is a L PNG: ImageNet-S masks are RGB, class id = R \+ 256 G"),
])
def test_imagenet_s_masks_of_another_format_are_named(tmp_path, ids, rgb, message):
    with pytest.raises(ValueError, match=message):
        imagenet_s(imagenet_s_folder(tmp_path, 50, "n01443537", ids, rgb))[0]


def test_a_split_without_its_masks_is_broken_not_absent(tmp_path):
    folder = imagenet_s_folder(tmp_path, 919, "n01443537", [[2]])
    for p in (folder / "validation-segmentation").rglob("*.png"):
        p.unlink()
    lines = check("imagenet-s", folder)
    assert lines[1].startswith("absent  train-semi")
    assert lines[2].startswith("BROKEN  validation: 1 of 1 ImageNet-S masks") and "datapreparation_anno.sh" in lines[2]


def test_colour_rendered_labels_are_named(voc):
    write(voc / "SegmentationClass" / "a.png", voc_palette()[label_map(1)])
    assert "is a RGB image: expected a PNG of class ids (palette or grey)" in check("voc", voc)[2]


@pytest.mark.parametrize(("kind", "made", "given", "message"), [
    ("voc", ["x/data/SegmentationClass"], "x",
     r"x is not a PASCAL VOC folder .*: SegmentationClass is one level deeper \(found .*x/data/SegmentationClass\); "
     r"give .*x/data$"),
    ("voc", ["VOC2012/SegmentationClass"], "VOC2012/SegmentationClass",
     r"lies inside a PASCAL VOC folder .*: give .*VOC2012$"),
    ("voc", ["x"], "y", "y not found: expected a PASCAL VOC folder"),
    ("cityscapes", ["data/cityscapes/leftImg8bit"], "data",
     r"leftImg8bit is one level deeper \(found .*data/cityscapes/leftImg8bit\); give .*data/cityscapes$"),
    ("imagenet-s", ["a/b/ImageNetS919"], "",
     r"ImageNetS919 is 2 levels deeper \(found .*a/b/ImageNetS919\); give .*a/b$"),
    ("imagenet-s", ["ImageNetS50", "ImageNetS919"], "", "holds ImageNetS50, ImageNetS919: give one of them"),
    ("imagenet-s", ["val/validation-segmentation"], "val",
     "an ImageNet-S folder named 'val': name it ImageNetS50, ImageNetS300 or ImageNetS919 as distributed"),
])
def test_near_misses_say_what_is_wrong(tmp_path, kind, made, given, message):
    for folder in made:
        (tmp_path / folder).mkdir(parents=True)
    (line,) = check(kind, tmp_path / given)
    assert line.startswith("MISSING ") and re.search(message, line), line
