import re

import numpy as np
import pytest
from PIL import Image

from a2m_utils import seg_data
from a2m_utils.classes import IMAGENET_S_CLASSES, voc_palette
from a2m_utils.prompts import IMAGENET_S_TEMPLATE
from a2m_utils.study.combination import Study, open_set, parse_set
from a2m_utils.tokens import class_positions
from a2m_utils.toy import sets
from a2m_utils.toy.world import make_sample, rendered


def voc_folder(root, labels):
    """A tiny PASCAL VOC folder: one train and one val image per label map, no captions."""
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for split in ("train", "val"):
        ids = [f"{split}{k}" for k in range(len(labels))]
        for sid, label in zip(ids, labels):
            Image.fromarray(np.full((*label.shape, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{sid}.jpg")
            img = Image.fromarray(label, mode="P")
            img.putpalette(voc_palette().ravel().tolist())
            img.save(root / "SegmentationClass" / f"{sid}.png")
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids))
    return root


def test_the_toy_sets_are_the_rendered_scenes_read_back_losslessly():
    study = Study(device="cpu")
    images, labels, reliable = study.real(7).arrays()
    want = rendered(range(sets.REAL_SEED0, sets.REAL_SEED0 + 7))
    np.testing.assert_array_equal(images, want[0])
    np.testing.assert_array_equal(labels, want[1])
    assert reliable.all()
    np.testing.assert_array_equal(study.val(3)[1], rendered(range(sets.VAL_SEED0, sets.VAL_SEED0 + 3))[1])
    assert study.captions(2, "val")[0].startswith("a ")  # the scenes' own captions (captions.json)


def test_an_interrupted_toy_set_is_rewritten_not_reused(tmp_path, monkeypatch):
    calls = []

    def failing(seed, **kw):
        calls.append(seed)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return make_sample(seed, **kw)

    monkeypatch.setattr(sets, "make_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        sets.voc_folder("toy-one-object", tmp_path)
    assert [p.name for p in tmp_path.iterdir()][0].endswith(".partial")  # no folder under the final name
    monkeypatch.setattr(sets, "make_sample", make_sample)
    folder = sets.voc_folder("toy-one-object", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert len((folder / "ImageSets/Segmentation/train.txt").read_text().split()) == sets.SETS["toy-one-object"].n_train


def test_real_datasets_are_named_by_kind_and_path(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 12  # dog
    label[6:, 6:] = 8  # cat
    root = voc_folder(tmp_path / "voc", [label])
    study = Study(prompt_set="imagenet-s", train_set=f"voc:{root}", val_set=f"voc:{root}", device="cpu")
    assert study.space == "voc" and study.num_classes == 21
    np.testing.assert_array_equal(study.val()[1][0], label)
    assert study.captions(1) == ["a photo of a cat and a dog"]  # no captions.json: the label's classes
    with pytest.raises(ValueError, match="has 1 images, 2 were asked for"):
        study.real(2)


def test_bad_specs_and_mismatched_vocabularies_are_named():
    with pytest.raises(ValueError, match=r"unknown dataset 'pascal'.*'<kind>:<path>'"):
        Study(val_set="pascal")
    with pytest.raises(ValueError, match="unknown prompt_set 'coco'"):
        Study(prompt_set="coco")
    with pytest.raises(FileNotFoundError, match="PASCAL VOC folder"):
        open_set("voc:/nowhere", "val")
    study = Study(val_set="voc:/nowhere", device="cpu")  # the toy vocabulary scored in VOC's label space
    with pytest.raises(ValueError, match=r"vocabulary \(circle, square, triangle.*is not the voc label space"):
        study.to_eval(np.zeros((2, 2), np.uint8))


def test_cityscapes_background_is_ignored_not_a_class(tmp_path):
    study = Study(prompt_set="cityscapes", val_set=f"cityscapes:{tmp_path}", device="cpu")
    np.testing.assert_array_equal(study.to_eval(np.array([0, 1, 19, 255], np.uint8)), [255, 0, 18, 255])


def test_dataset_specs_resolve_through_the_one_table_of_kinds(tmp_path):
    assert parse_set(f"cityscapes:{tmp_path}") == (seg_data.KINDS["cityscapes"], tmp_path)
    toy, path = parse_set("toy-one-object")  # a registered name: a VOC-layout kind in the toy label space
    assert path is None and toy.space == "toy" and toy.read is seg_data.KINDS["voc"].read and toy.folder
    assert Study(val_set=f"imagenet-s:{tmp_path}", device="cpu").space == "fgbg"
    with pytest.raises(ValueError, match=r"'generated:.*' with kind one of \['cityscapes', 'imagenet-s', 'voc'\]"):
        parse_set(f"generated:{tmp_path}")  # no label space: not a study's dataset


def test_the_imagenet_s_prompt_set_labels_imagenet_s_classes_as_foreground(clip, tmp_path):
    study = Study(prompt_set="imagenet-s", val_set=f"imagenet-s:{tmp_path}", device="cpu")
    assert study.vocab.names == ("background", "foreground") and study.num_classes == 2
    prompts = study.prompt_list(8)  # n prompts per class of the vocabulary (notebook 06's arithmetic)
    named = [re.fullmatch(IMAGENET_S_TEMPLATE.format(class_name="(.+)"), p.text).group(1) for p in prompts]
    assert all(name in c.names for name, c in zip(named, IMAGENET_S_CLASSES[:8], strict=True))  # the classes in turn
    assert {p.classes for p in prompts} == {("foreground",)}
    odd = [n for c in IMAGENET_S_CLASSES for n in c.names if not re.fullmatch(r"[A-Za-z ]+", n)]  # "jack-o'-lantern"
    for name in [*IMAGENET_S_CLASSES[0].names, *odd]:  # its word tokens, after <start> "a photo of"
        text = IMAGENET_S_TEMPLATE.format(class_name=name)
        tokens = clip.convert_ids_to_tokens(clip(name, add_special_tokens=False).input_ids)
        words = [4 + k for k, t in enumerate(tokens) if re.search("[a-z]", t.removesuffix("</w>"))]  # not "-"
        assert class_positions(text, clip, study.vocab, expected=("foreground",)) == {"foreground": words}, text
    np.testing.assert_array_equal(study.to_eval(np.array([0, 1, 255], np.uint8)), [0, 1, 255])
