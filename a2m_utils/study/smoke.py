"""The smoke-sd and smoke-sdxl profiles' world (CI): a tiny random Stable Diffusion (or XL) pipeline and
small datasets in the real ones' formats and layouts, with procedural content: PASCAL VOC as torchvision's root
(``voc/VOCdevkit/VOC2012``: JPEGs of VOC's sizes, palette PNG labels with 5-pixel 255 bands around objects),
Cityscapes (``cityscapes/``: 2048x1024 frames with ``*_gtFine_labelIds.png``), ImageNet-S
(``imagenet-s/ImageNetS919``: RGB-encoded masks, one image holding two classes) and the COCO-captions fixture
(``captions.json``, a copy of ``tests/data/captions_train2017.json``). Its numbers mean nothing; it proves that a
user with weights and data gets from the first cell of every notebook to every table.

``python -m a2m_utils.study.smoke OUT [--xl]`` writes them all under OUT (into OUT.partial, renamed when done).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..classes import IGNORE_INDEX, IMAGENET_S_CLASSES, VOC
from ..dataset import png_bytes
from ..sd import clip_tokenizer, random_sd, random_sdxl, sdxl_tokenizers
from ..seg_data import CITYSCAPES_LABEL_IDS, IMAGENET_S_IGNORE
from .report import REPO

SIZE = 64  # the tiny pipeline's images: 32x32 latents, so that self-attention at the sd preset's 32 exists
CAPTIONS = REPO / "tests" / "data" / "captions_train2017.json"  # COCO's format, captions of VOC's classes
VOC_SIZES = ((375, 500), (500, 375), (333, 500), (500, 486))  # (height, width): VOC's common sizes
IMAGENET_S_SIZES = ((375, 500), (500, 333), (500, 500), (333, 500))
IMAGENET_S_IDS = (2, 151, 402, 812)  # ImageNetS919 class ids of the fixture's wnids (two need the G channel)
CITYSCAPES_FRAMES = 2  # per split, 2048x1024


def shapes(rng: np.random.Generator, size: tuple[int, int], ids: list[int]) -> np.ndarray:
    """An (H, W) int32 map of 0 with one ellipse or polygon of each id, later ones on top."""
    h, w = size
    canvas = Image.new("I", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for c in ids:
        cx, cy, rx, ry = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, *rng.uniform(0.12, 0.3, 2) * (w, h)
        if rng.random() < 0.5:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(c))
        else:
            a = np.sort(rng.uniform(0, 2 * np.pi, 6))
            draw.polygon(list(zip(cx + rx * np.cos(a), cy + ry * np.sin(a))), fill=int(c))
    return np.asarray(canvas)


def paint(rng: np.random.Generator, ids: np.ndarray, colours: np.ndarray, grain: float) -> np.ndarray:
    """An RGB image of an id map: each id its colour, shaded smoothly, with ``grain`` (pixel noise) as texture."""
    h, w = ids.shape
    coarse = rng.normal(0, 1, (h // 48 + 2, w // 48 + 2)).astype(np.float32)
    shade = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    image = colours.astype(np.float32)[ids] + 28 * shade[..., None]
    if grain:
        image += rng.normal(0, grain, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def band(ids: np.ndarray, width: int) -> np.ndarray:
    """The pixels within a ``width``-pixel band across every border between ids."""
    return ndimage.maximum_filter(ids, width + 1) != ndimage.minimum_filter(ids, width + 1)


def write_voc(root: Path, n: int, rng: np.random.Generator) -> None:
    """``n`` images per split (train, val) in ``root/VOCdevkit/VOC2012``."""
    folder = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True)
    colours = rng.integers(40, 216, (VOC.num_classes, 3))
    for split, first in (("train", 0), ("val", n)):
        ids = [f"{2007 + k % 5}_{k:06d}" for k in range(first, first + n)]
        for k, sid in enumerate(ids):
            objects = shapes(rng, VOC_SIZES[k % len(VOC_SIZES)], list(rng.choice(np.arange(1, 21), rng.integers(1, 4))))
            label = np.where(band(objects, 5), IGNORE_INDEX, objects).astype(np.uint8)
            Image.fromarray(paint(rng, objects, colours, 12)).save(folder / "JPEGImages" / f"{sid}.jpg", quality=90)
            (folder / "SegmentationClass" / f"{sid}.png").write_bytes(png_bytes(label, palette=True))
        (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def street(rng: np.random.Generator) -> np.ndarray:
    """A 1024x2048 labelId map: sky, buildings, road and sidewalk, cars, people, poles, and the ego vehicle
    (labelId 1) and static objects (4), which no train id keeps."""
    ids = CITYSCAPES_LABEL_IDS
    label = np.full((1024, 2048), ids["sky"], np.int32)
    label[int(rng.integers(250, 400)):] = ids["building"]
    label[560:] = ids["sidewalk"]
    label[620:, 300:1750] = ids["road"]
    label[900:] = 1
    objects = shapes(rng, (1024, 2048), [ids["car"], ids["person"], ids["vegetation"], 4])
    label = np.where((objects > 0) & (label != 1), objects, label)
    for x in rng.integers(100, 1950, 3):
        label[300:620, x:x + 12] = ids["pole"]
    return label


def write_cityscapes(root: Path, rng: np.random.Generator) -> None:
    """``CITYSCAPES_FRAMES`` frames per split (train, val), named ``<city>_<sequence>_<frame>`` as Cityscapes' are."""
    colours = rng.integers(40, 216, (256, 3))
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for sub in ("leftImg8bit", "gtFine"):
            (root / sub / split / city).mkdir(parents=True)
        for i in range(CITYSCAPES_FRAMES):
            label, name = street(rng), f"{city}_{i:06d}_000019"
            Image.fromarray(paint(rng, label, colours, 0)).save(
                root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", compress_level=1)
            Image.fromarray(label.astype(np.uint8)).save(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")


def write_imagenet_s(root: Path, n: int, rng: np.random.Generator) -> None:
    """``n`` images per split (train-semi, validation) of ``IMAGENET_S_IDS``' classes in ``root/ImageNetS919``:
    JPEGs and RGB masks (class id R + 256 G, 0 others, a 1000 band around each object); the first image of each
    split also holds another fixture class."""
    folder = root / "ImageNetS919"
    colours = rng.integers(40, 216, (IMAGENET_S_IGNORE + 1, 3))
    for split in ("train-semi", "validation"):
        for k in range(n):
            own = IMAGENET_S_IDS[k % len(IMAGENET_S_IDS)]
            wnid = IMAGENET_S_CLASSES[own - 1].wnid
            name = f"ILSVRC2012_val_{k + 1:08d}" if split == "validation" else f"{wnid}_{k + 1}"
            objects = shapes(rng, IMAGENET_S_SIZES[k % len(IMAGENET_S_SIZES)],
                             [own, IMAGENET_S_IDS[(k + 1) % len(IMAGENET_S_IDS)]] if k == 0 else [own])
            ids = np.where(band(objects, 3), IMAGENET_S_IGNORE, objects)
            for sub in (split, f"{split}-segmentation"):
                (folder / sub / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(paint(rng, objects, colours, 12)).save(folder / split / wnid / f"{name}.JPEG", quality=90)
            rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
            Image.fromarray(rgb).save(folder / f"{split}-segmentation" / wnid / f"{name}.png")


def write_all(out: Path, n: int = 8, seed: int = 0, xl: bool = False) -> Path:
    """The tiny pipeline (``xl``: SDXL-shaped, ``tiny-sdxl``) and every fixture under ``out``; an existing
    ``out`` is an error."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it to rebuild the smoke-sd world")
    if not CAPTIONS.is_file():
        raise FileNotFoundError(f"{CAPTIONS} not found: the smoke world copies the kit's COCO-captions fixture; run "
                                "it from a checkout of the repository")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as files:
        if xl:  # SDXL attends first at half the latent size: 64x64 latents (128x128 images) for self-attention at 32
            random_sdxl(*sdxl_tokenizers(files), tiny=True, latent=SIZE, seed=seed).save_pretrained(tmp / "tiny-sdxl")
        else:
            random_sd(clip_tokenizer(files), tiny=True, latent=SIZE // 2, seed=seed).save_pretrained(tmp / "tiny-sd")
    write_voc(tmp / "voc", n, rng)
    write_cityscapes(tmp / "cityscapes", rng)
    write_imagenet_s(tmp / "imagenet-s", n, rng)
    shutil.copyfile(CAPTIONS, tmp / "captions.json")
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the smoke-sd profile's tiny pipeline and dataset fixtures.")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=8, help="VOC and ImageNet-S images per split")
    p.add_argument("--xl", action="store_true", help="an SDXL-shaped tiny pipeline (profile smoke-sdxl)")
    a = p.parse_args(argv)
    print(f"wrote {write_all(a.out, a.n, xl=a.xl)}")


if __name__ == "__main__":
    main()
