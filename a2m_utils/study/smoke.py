"""The smoke-sd profile's world (CI): a tiny random Stable Diffusion pipeline and small datasets in
the real ones' layouts, with random content: PASCAL VOC (``voc/``), Cityscapes (``cityscapes/``),
ImageNet-S (``imagenet-s/``) and a COCO-captions file (``captions.json``). Its numbers mean nothing;
it proves that a user with weights and data gets from the first cell of every notebook to every table.

``python -m a2m_utils.study.smoke OUT`` writes them all under OUT (into OUT.partial, renamed when done).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import VOC
from ..dataset import png_bytes
from ..sd import clip_tokenizer, random_sd
from ..seg_data import CITYSCAPES_LABEL_IDS

SIZE = 64  # the tiny pipeline's images: 32x32 latents, so that self-attention at the sd preset's 32 exists
CAPTIONS = ["a dog on a sofa", "a cat and a dog", "a person riding a horse", "an aeroplane above a boat",
            "a bus next to a car", "a bird on a pottedplant", "a sheep and a cow", "a person on a motorbike"]


def scene(rng: np.random.Generator, classes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A noise image with up to ``k`` flat rectangles, and its label map of ``classes`` (0 elsewhere)."""
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    label = np.zeros((SIZE, SIZE), np.uint8)
    for c in rng.choice(classes, size=k, replace=False):
        y, x = rng.integers(0, SIZE // 2, 2)
        h, w = rng.integers(SIZE // 4, SIZE // 2, 2)
        image[y:y + h, x:x + w] = rng.integers(0, 256, 3)
        label[y:y + h, x:x + w] = c
    return image, label


def write_voc(root: Path, n: int, rng: np.random.Generator) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for split in ("train", "val"):
        ids = [f"2007_{split}{i:03d}" for i in range(n)]
        for sid in ids:
            image, label = scene(rng, np.arange(1, VOC.num_classes), 2)
            Image.fromarray(image).save(root / "JPEGImages" / f"{sid}.jpg", quality=95)
            (root / "SegmentationClass" / f"{sid}.png").write_bytes(png_bytes(label, palette=True))
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def write_cityscapes(root: Path, n: int, rng: np.random.Generator) -> None:
    label_ids = np.array(list(CITYSCAPES_LABEL_IDS.values()), np.uint8)
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for sub in ("leftImg8bit", "gtFine"):
            (root / sub / split / city).mkdir(parents=True)
        for i in range(n):
            image, label = scene(rng, label_ids, 3)
            label[label == 0] = label_ids[0]  # every pixel has a class: road
            name = f"{city}_{i:06d}_000019"
            Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png")
            Image.fromarray(label).save(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")


def write_imagenet_s(root: Path, n: int, rng: np.random.Generator) -> None:
    for split in ("train", "validation"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            image, label = scene(rng, np.arange(1, 51), 1)
            Image.fromarray(image).save(root / split / "images" / f"ILSVRC2012_{split}_{i:08d}.jpg", quality=95)
            Image.fromarray(label).save(root / split / "masks" / f"ILSVRC2012_{split}_{i:08d}.png")


def write_all(out: Path, n: int = 8, seed: int = 0) -> Path:
    """The tiny pipeline and every fixture under ``out``; an existing ``out`` is an error."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it to rebuild the smoke-sd world")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as files:
        random_sd(clip_tokenizer(files), tiny=True, latent=SIZE // 2, seed=seed).save_pretrained(tmp / "tiny-sd")
    write_voc(tmp / "voc", n, rng)
    write_cityscapes(tmp / "cityscapes", n, rng)
    write_imagenet_s(tmp / "imagenet-s", n, rng)
    (tmp / "captions.json").write_text(json.dumps({"annotations": [{"caption": c} for c in CAPTIONS]}))
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the smoke-sd profile's tiny pipeline and dataset fixtures.")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=8, help="images per split")
    a = p.parse_args(argv)
    print(f"wrote {write_all(a.out, a.n)}")


if __name__ == "__main__":
    main()
