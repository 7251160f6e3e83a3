"""Segmentation datasets: PASCAL-VOC-layout folders (real VOC 2012, or attn2mask's generated
images with pseudo-labels and reliability maps R of Eq. 6), Cityscapes, an ImageNet-S
foreground/background layout (Table 3), and rendered toy scenes.

Images are (N, H, W, 3) uint8, labels (N, H, W) uint8 with 255 ignored, reliability (N, H, W)
bool. Folders are listed up front and read on demand: ``SegFiles.arrays()`` loads them,
``SegFiles.batches()`` serves seeded training batches (``segmentation.Batches``,
``beco.BecoBatches``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image

from .batches import batch_indices
from .classes import IGNORE_INDEX
from .phases import phase

Size = int | tuple[int, int] | None  # (height, width); an int is a square

# Cityscapes' 19 evaluated classes, name -> labelId; the train id is the position.
CITYSCAPES_LABEL_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17, "traffic light": 19,
    "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26,
    "truck": 27, "bus": 28, "train": 31, "motorcycle": 32, "bicycle": 33,
}
CITYSCAPES_TRAIN_IDS = np.full(256, IGNORE_INDEX, np.uint8)  # labelId -> train id, others 255
CITYSCAPES_TRAIN_IDS[list(CITYSCAPES_LABEL_IDS.values())] = np.arange(len(CITYSCAPES_LABEL_IDS))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HOLD_BYTES = 512 * 2**20  # SegFiles.batches keeps a set this small in memory (decoded)


def _resize(x: np.ndarray, size: Size, resample: Image.Resampling) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    return x if x.shape[:2] == (h, w) else np.asarray(Image.fromarray(x).resize((w, h), resample))


def resize(images: np.ndarray, *label_maps: np.ndarray, size: Size = None) -> tuple[np.ndarray, ...]:
    """Images (N, H, W, 3) resized bilinear and label or mask maps (N, H, W) nearest to ``size``
    (None: unchanged); boolean maps stay boolean."""
    if size is None:
        return images, *label_maps
    out = [np.stack([_resize(x, size, Image.Resampling.BILINEAR) for x in images])]
    for maps in label_maps:
        u8 = maps.astype(np.uint8)
        out.append(np.stack([_resize(x, size, Image.Resampling.NEAREST) for x in u8]).astype(maps.dtype))
    return tuple(out)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected {what}")
    return path


def _files(folder: Path, names: Sequence[str], what: str) -> list[Path]:
    """folder / name for every name; all must exist."""
    _require(folder, f"a folder of {what}")
    paths = [folder / n for n in names]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} {what} missing, e.g. {missing[0]}")
    return paths


def fg_bg(mask: np.ndarray) -> np.ndarray:
    """Foreground (1) for any class id other than 0 and 255, background 0, ignore 255 kept."""
    return np.where(mask == IGNORE_INDEX, IGNORE_INDEX, mask > 0).astype(np.uint8)


def _then(first: Callable[[np.ndarray], np.ndarray], second: Callable[[np.ndarray], np.ndarray],
          x: np.ndarray) -> np.ndarray:
    """``second(first(x))``: relabellings composed, picklable (``fit_all`` sends sets to worker processes)."""
    return second(first(x))


@dataclass
class SegFiles:
    """Paired image and label files, with optional reliability files (0/1 PNGs; a missing one means
    all reliable). ``to_labels`` maps a label file's array to training ids; ``size`` resizes
    (images bilinear, labels and reliability nearest)."""

    images: list[Path]
    labels: list[Path]
    reliability: list[Path] | None = None
    to_labels: Callable[[np.ndarray], np.ndarray] | None = None
    size: Size = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = np.asarray(Image.open(self.images[i]).convert("RGB"))
        label = np.asarray(Image.open(self.labels[i]))
        label = (self.to_labels(label) if self.to_labels else label).astype(np.uint8)
        rel = self.reliability[i] if self.reliability else None
        reliable = np.asarray(Image.open(rel)) > 0 if rel and rel.exists() else np.ones(label.shape, bool)
        for path, x in [(self.labels[i], label), (rel, reliable)]:
            if x.shape != image.shape[:2]:
                raise ValueError(f"{path} is {x.shape}, its image {self.images[i]} is {image.shape[:2]}")
        if self.size is not None:
            image = _resize(image, self.size, Image.Resampling.BILINEAR)
            label = _resize(label, self.size, Image.Resampling.NEAREST)
            reliable = _resize(reliable, self.size, Image.Resampling.NEAREST)
        return image, label, reliable

    def head(self, n: int | None) -> SegFiles:
        """The first ``n`` items (all for None); asking for more than there are is an error."""
        if n is not None and n > len(self):
            where = self.images[0].parent if self.images else "this set"
            raise ValueError(f"{where} has {len(self)} images, {n} were asked for")
        k = len(self) if n is None else n
        rel = None if self.reliability is None else self.reliability[:k]
        return SegFiles(self.images[:k], self.labels[:k], rel, self.to_labels, self.size)

    def relabelled(self, fn: Callable[[np.ndarray], np.ndarray]) -> SegFiles:
        """The same files with ``fn`` applied to their labels (after ``to_labels``)."""
        inner = self.to_labels
        return SegFiles(self.images, self.labels, self.reliability, fn if inner is None else partial(_then, inner, fn),
                        self.size)

    @phase("dataset I/O")
    def arrays(self, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images, labels and reliability of ``indices`` (default: all), stacked."""
        items = [self[i] for i in (range(len(self)) if indices is None else indices)]
        if len({x[0].shape for x in items}) > 1:
            raise ValueError(f"images differ in size ({sorted({x[0].shape[:2] for x in items})[:3]}, ...); "
                             f"set size=(height, width)")
        return tuple(np.stack(x) for x in zip(*items))

    def batches(self, batch_size: int, seed: int = 0, hold_bytes: int = HOLD_BYTES,
                ) -> Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """step -> (images, labels, reliability) of ``batches.batch_indices``. A set whose arrays take
        at most ``hold_bytes`` is read whole at the first step and served from memory (decoding 32
        toy images costs as much as a tenth of a training step); a larger one is read on demand."""
        indices = batch_indices(len(self), batch_size, seed)
        if sum(x.nbytes for x in self[0]) * len(self) > hold_bytes:
            return lambda step: self.arrays(indices(step))
        held = lru_cache(maxsize=1)(self.arrays)
        return lambda step: tuple(x[indices(step)] for x in held())


def _image_files(folder: Path, ids: Sequence[str]) -> list[Path]:
    """``folder/<id>.jpg`` for every id, or ``<id>.png`` where no JPEG is there (lossless images)."""
    def name(i: str) -> str:
        return f"{i}.png" if not (folder / f"{i}.jpg").exists() and (folder / f"{i}.png").exists() else f"{i}.jpg"
    return _files(folder, [name(i) for i in ids], "images <id>.jpg (or .png)")


class VOCLayout(SegFiles):
    """A PASCAL VOC layout folder: ``JPEGImages/<id>.jpg`` (or ``.png``), ``SegmentationClass/<id>.png``
    (palette or grey PNG of class ids, 255 ignore), ``ImageSets/Segmentation/<split>.txt`` (one id a
    line) and, optionally, ``Reliability/<id>.png`` (0/1; absent: all reliable). Real VOC 2012 reads
    as is; its augmented training set, split ``train_aug``, takes labels from ``SegmentationClassAug/``."""

    def __init__(self, root: str | Path, split: str = "train", with_reliability: bool = True,
                 size: Size = None) -> None:
        root = _require(Path(root), "a PASCAL VOC layout folder (JPEGImages/, SegmentationClass/, ImageSets/)")
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.exists():
            found = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            raise FileNotFoundError(f"split file {split_file} not found; splits there: {found}")
        ids = split_file.read_text().split()
        if not ids:
            raise ValueError(f"split file {split_file} lists no ids")
        label_dir = "SegmentationClassAug" if split == "train_aug" else "SegmentationClass"
        super().__init__(
            images=_image_files(root / "JPEGImages", ids),
            labels=_files(root / label_dir, [f"{i}.png" for i in ids], "label PNGs <id>.png"),
            reliability=[root / "Reliability" / f"{i}.png" for i in ids] if with_reliability else None,
            size=size,
        )


def cityscapes(root: str | Path, split: str = "train", size: Size = None) -> SegFiles:
    """Cityscapes fine annotations, labelIds mapped to the 19 train ids (others 255):
    ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``."""
    folder = _require(Path(root) / "leftImg8bit" / split, "Cityscapes images leftImg8bit/<split>/<city>/")
    images = sorted(folder.glob("*/*_leftImg8bit.png"))
    if not images:
        raise FileNotFoundError(f"no <city>/*_leftImg8bit.png under {folder}")
    names = [f"{p.parent.name}/{p.name.removesuffix('_leftImg8bit.png')}_gtFine_labelIds.png" for p in images]
    labels = _files(Path(root) / "gtFine" / split, names, "Cityscapes labels <city>/<name>_gtFine_labelIds.png")
    return SegFiles(images, labels, to_labels=partial(np.take, CITYSCAPES_TRAIN_IDS), size=size)


def imagenet_s_fgbg(root: str | Path, split: str = "validation", size: Size = None) -> SegFiles:
    """The ImageNet-S foreground/background task (Table 3) in a simple layout: ``<root>/<split>/images/<name>``
    (.jpg, .jpeg or .png) with ``<root>/<split>/masks/<name>.png``, single-channel class ids; any
    id other than 0 and 255 becomes foreground 1, 0 stays background, 255 ignore (``fg_bg``)."""
    folder = _require(Path(root) / split / "images", "ImageNet-S images <root>/<split>/images/")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    masks = _files(Path(root) / split / "masks", [f"{p.stem}.png" for p in images], "masks <name>.png")
    return SegFiles(images, masks, to_labels=fg_bg, size=size)


# What each reader expects, split by split: (split, reader); the first split of each is required.
LAYOUTS: dict[str, list[tuple[str, Callable[[Path], SegFiles]]]] = {
    "voc": [("train", partial(VOCLayout, split="train")), ("val", partial(VOCLayout, split="val")),
            ("train_aug", partial(VOCLayout, split="train_aug"))],
    "cityscapes": [("train", partial(cityscapes, split="train")), ("val", partial(cityscapes, split="val"))],
    "imagenet-s": [("validation", partial(imagenet_s_fgbg, split="validation"))],
    "generated": [("train", partial(VOCLayout, split="train"))],
}


def check(kind: str, root: str | Path) -> list[str]:
    """One line per split of a dataset folder: how many samples it has, or what is missing."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    lines = []
    for k, (split, reader) in enumerate(LAYOUTS[kind]):
        try:
            lines.append(f"ok      {split}: {len(reader(Path(root)))} samples")
        except (FileNotFoundError, ValueError) as err:
            lines.append(f"{'MISSING' if k == 0 else 'absent '} {split}: {err}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m a2m_utils.seg_data check voc|cityscapes|imagenet-s|generated PATH``: exit 1 if a
    required split is unusable."""
    import argparse

    p = argparse.ArgumentParser(description="Check that a dataset folder has the layout the kit reads.")
    p.add_argument("command", choices=["check"])
    p.add_argument("kind", choices=sorted(LAYOUTS))
    p.add_argument("root", type=Path)
    a = p.parse_args(argv)
    lines = check(a.kind, a.root)
    print("\n".join(lines))
    return 1 if lines[0].startswith("MISSING") else 0


if __name__ == "__main__":
    raise SystemExit(main())
