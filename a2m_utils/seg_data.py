"""Segmentation datasets as distributed, known to the kit in one table of dataset kinds (``KINDS``): PASCAL VOC
(torchvision's ``VOCdevkit/VOC2012`` root, or the ``VOC2012`` folder itself), Cityscapes, ImageNet-S (an
``ImageNetS50/300/919`` folder with RGB-encoded masks, read for the foreground/background task of Table 3) and
attn2mask's generated datasets (VOC layout with the reliability maps R of Eq. 6).
``python -m a2m_utils.seg_data check KIND PATH`` says whether a folder reads, split by split, or what is wrong.

Images are (H, W, 3) uint8, labels (H, W) uint8 with 255 ignored, reliability (H, W) bool. Folders are listed up
front and read on demand, one image at a time at its own size (``SegFiles[i]``), or stacked (``SegFiles.arrays()``);
``SegFiles.batches()`` serves seeded training batches (``segmentation.Batches``, ``beco.BecoBatches``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image

from .batches import batch_indices
from .classes import IGNORE_INDEX, imagenet_s_ids
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
IMAGENET_S_FOLDER = re.compile(r"ImageNetS(919|300|50)")  # its name says whose class ids its masks hold
IMAGENET_S_IGNORE = 1000  # ImageNet-S's ignored pixels; 0 is "others" (none of the subset's classes)
HOLD_BYTES = 512 * 2**20  # SegFiles.batches keeps a set this small in memory (decoded)


class LayoutError(FileNotFoundError):
    """The path holds no layout of the kind (the message names the near miss)."""


class SplitNotFoundError(FileNotFoundError):
    """The layout is there, without this split."""


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


def read_ids(path: Path) -> np.ndarray:
    """A PNG of class ids, palette (VOC) or grey (Cityscapes' labelIds), as an (H, W) array."""
    label = Image.open(path)
    if label.mode not in ("P", "L"):
        raise ValueError(f"{path} is a {label.mode} image: expected a PNG of class ids (palette or grey), "
                         "not a colour rendering of them")
    return np.asarray(label)


def fg_bg(mask: np.ndarray) -> np.ndarray:
    """Foreground (1) for any class id other than 0 and 255, background 0, ignore 255 kept."""
    return np.where(mask == IGNORE_INDEX, IGNORE_INDEX, mask > 0).astype(np.uint8)


def _then(first: Callable, second: Callable[[np.ndarray], np.ndarray], x) -> np.ndarray:
    """``second(first(x))``: relabellings composed, picklable (``fit_all`` sends sets to worker processes)."""
    return second(first(x))


@dataclass
class SegFiles:
    """Paired image and label files, with optional reliability files (0/1 PNGs; a missing one means
    all reliable). ``read_label`` reads a label file as training ids; ``size`` resizes (images bilinear,
    labels and reliability nearest; None: each item at its own size)."""

    images: list[Path]
    labels: list[Path]
    reliability: list[Path] | None = None
    read_label: Callable[[Path], np.ndarray] = read_ids
    size: Size = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = np.asarray(Image.open(self.images[i]).convert("RGB"))
        label = self.read_label(self.labels[i]).astype(np.uint8)
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
        return SegFiles(self.images[:k], self.labels[:k], rel, self.read_label, self.size)

    def relabelled(self, fn: Callable[[np.ndarray], np.ndarray]) -> SegFiles:
        """The same files with ``fn`` applied to their labels (after ``read_label``)."""
        return SegFiles(self.images, self.labels, self.reliability, partial(_then, self.read_label, fn), self.size)

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


# ---------------------------------------------------------------------------------------------------------------
# Finding a layout in the path a user gives, and saying what is wrong when it is not there


def _subdirs(folder: Path) -> list[Path]:
    with suppress(OSError), os.scandir(folder) as entries:  # file types from the listing: no stat per file
        return sorted(Path(e.path) for e in entries if e.is_dir())
    return []


def _deeper(path: Path, marker: str, depth: int = 4, limit: int = 5000) -> Path | None:
    """The first directory named like ``marker`` (a glob) 2 to ``depth`` levels below ``path``, shallowest
    first, looking into at most ``limit`` directories."""
    level = _subdirs(path)
    seen = len(level)
    for _ in range(depth - 1):
        level = [d for p in level for d in _subdirs(p)]
        seen += len(level)
        if hit := next((d for d in level if fnmatch(d.name, marker)), None):
            return hit
        if seen > limit:
            return None
    return None


def _near_miss(path: Path, marker: str, what: str) -> LayoutError:
    """Why ``path`` is not ``what``, a folder holding ``marker``: it is missing, it lies inside one, or the marker
    is deeper."""
    if not path.is_dir():
        return LayoutError(f"{path} not found: expected {what}")
    if up := next((p for p in list(path.parents)[:3] if any(fnmatch(d.name, marker) for d in _subdirs(p))), None):
        return LayoutError(f"{path} lies inside {what}: give {up}")
    if found := _deeper(path, marker):
        n = len(found.relative_to(path).parts) - 1
        levels = "one level" if n == 1 else f"{n} levels"
        return LayoutError(f"{path} is not {what}: {found.name} is {levels} deeper (found {found}); "
                           f"give {found.parent}")
    return LayoutError(f"{path} is not {what}: no {marker}/ in it")


def _find(path: Path, marker: str, places: Sequence[str], what: str) -> Path:
    """The first of ``path / place`` that holds the directory ``marker``, else the near miss."""
    if folder := next((path / p for p in places if (path / p / marker).is_dir()), None):
        return folder
    raise _near_miss(path, marker, what)


def find_voc(path: str | Path) -> Path:
    """The ``VOC2012`` folder (the one holding ``SegmentationClass/``): ``path`` itself, ``path/VOC2012``, or
    ``path/VOCdevkit/VOC2012`` (torchvision's ``VOCSegmentation`` root, as the tar file unpacks)."""
    return _find(Path(path), "SegmentationClass", ("", "VOC2012", "VOCdevkit/VOC2012"),
                 "a PASCAL VOC folder (VOC2012/ with JPEGImages/, SegmentationClass/, ImageSets/)")


def find_cityscapes(path: str | Path) -> Path:
    """The Cityscapes root, the folder holding ``leftImg8bit/`` and ``gtFine/``."""
    return _find(Path(path), "leftImg8bit", ("",), "a Cityscapes folder (leftImg8bit/, gtFine/)")


def find_imagenet_s(path: str | Path) -> Path:
    """The ``ImageNetS50``, ``ImageNetS300`` or ``ImageNetS919`` folder: ``path`` itself, or the one such folder
    in ``path`` (the folder LUSSeg's scripts unpack into)."""
    path = Path(path)
    if IMAGENET_S_FOLDER.fullmatch(path.name) and path.is_dir():
        return path
    held = [p for p in _subdirs(path) if IMAGENET_S_FOLDER.fullmatch(p.name)]
    if len(held) == 1:
        return held[0]
    if held:
        raise LayoutError(f"{path} holds {', '.join(p.name for p in held)}: give one of them, e.g. {held[-1]}")
    if (path / "validation-segmentation").is_dir():
        raise LayoutError(f"{path} is an ImageNet-S folder named {path.name!r}: name it ImageNetS50, ImageNetS300 or "
                          "ImageNetS919 as distributed (the name says whose class ids its masks hold)")
    raise _near_miss(path, "ImageNetS*", "an ImageNet-S folder (ImageNetS50, ImageNetS300 or ImageNetS919)")


# ---------------------------------------------------------------------------------------------------------------
# Readers


def _image_files(folder: Path, ids: Sequence[str]) -> list[Path]:
    """``folder/<id>.jpg`` for every id, or ``<id>.png`` where no JPEG is there (lossless images)."""
    def name(i: str) -> str:
        return f"{i}.png" if not (folder / f"{i}.jpg").exists() and (folder / f"{i}.png").exists() else f"{i}.jpg"
    return _files(folder, [name(i) for i in ids], "images <id>.jpg (or .png)")


class VOCLayout(SegFiles):
    """A PASCAL VOC layout (``find_voc``: the ``VOC2012`` folder or a folder above it): ``JPEGImages/<id>.jpg``
    (or ``.png``), ``SegmentationClass/<id>.png`` (palette or grey PNG of class ids, 255 ignore),
    ``ImageSets/Segmentation/<split>.txt`` (one id a line) and, optionally, ``Reliability/<id>.png`` (0/1; absent:
    all reliable). Real VOC 2012 reads as is; its augmented training set, split ``train_aug``, takes labels
    from ``SegmentationClassAug/``. Generated datasets are written in this layout."""

    def __init__(self, root: str | Path, split: str = "train", with_reliability: bool = True,
                 size: Size = None) -> None:
        root = find_voc(root)
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.exists():
            found = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            raise SplitNotFoundError(f"split file {split_file} not found; splits there: {found}")
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


def cityscapes_train_ids(path: Path) -> np.ndarray:
    """A ``*_gtFine_labelIds.png`` as the 19 train ids (others 255)."""
    return CITYSCAPES_TRAIN_IDS[read_ids(path)]


def cityscapes(root: str | Path, split: str = "train", size: Size = None) -> SegFiles:
    """Cityscapes fine annotations (``find_cityscapes``), labelIds mapped to the 19 train ids (others 255):
    ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<name>_gtFine_labelIds.png``."""
    root = find_cityscapes(root)
    folder = root / "leftImg8bit" / split
    if not folder.is_dir():
        raise SplitNotFoundError(f"{folder} not found; splits there: {[p.name for p in _subdirs(folder.parent)]}")
    images = sorted(folder.glob("*/*_leftImg8bit.png"))
    if not images:
        raise FileNotFoundError(f"no <city>/*_leftImg8bit.png under {folder}")
    names = [f"{p.parent.name}/{p.name.removesuffix('_leftImg8bit.png')}_gtFine_labelIds.png" for p in images]
    labels = _files(root / "gtFine" / split, names, "Cityscapes labels <city>/<name>_gtFine_labelIds.png")
    return SegFiles(images, labels, read_label=cityscapes_train_ids, size=size)


def imagenet_s_fgbg(path: Path, subset: int) -> np.ndarray:
    """The foreground/background label (Table 3) of an ImageNet-S mask ``<split>-segmentation/<wnid>/<name>.png``:
    an RGB PNG of class ids R + 256 G of ImageNetS``subset``, 0 "others", 1000 ignored. The paper keeps "masks that
    have the same class labels as their whole images": foreground 1 is the pixels of the image's own class (its
    wnid's id), 1000 becomes 255 (ignored), and everything else is background 0, the pixels of any other class
    included: the task asks where the image's class is, and another class's object is not it (ignoring those pixels
    instead would leave a segmenter that marks every object unpenalised there)."""
    mask = Image.open(path)
    if mask.mode != "RGB":
        raise ValueError(f"{path} is a {mask.mode} PNG: ImageNet-S masks are RGB, class id = R + 256 G "
                         "(the masks LUSSeg distributes)")
    rgb = np.asarray(mask).astype(np.int32)
    ids, classes = rgb[..., 0] + 256 * rgb[..., 1], imagenet_s_ids(subset)
    stray = ids[(ids > len(classes)) & (ids != IMAGENET_S_IGNORE)]
    if stray.size:
        raise ValueError(f"{path} holds class id {stray.max()}, beyond ImageNetS{subset}'s {len(classes)} classes: "
                         "is it another subset's mask?")
    return np.where(ids == IMAGENET_S_IGNORE, IGNORE_INDEX, ids == classes[path.parent.name]).astype(np.uint8)


def imagenet_s(root: str | Path, split: str = "validation", size: Size = None) -> SegFiles:
    """ImageNet-S as distributed (``find_imagenet_s``), for the foreground/background task (``imagenet_s_fgbg``):
    ``<split>/<wnid>/<name>.JPEG`` with ``<split>-segmentation/<wnid>/<name>.png``; splits ``validation`` and
    ``train-semi`` (``test``'s masks are not published)."""
    folder = find_imagenet_s(root)
    subset = int(IMAGENET_S_FOLDER.fullmatch(folder.name).group(1))
    if not (folder / split).is_dir():
        raise SplitNotFoundError(f"{folder / split} not found; splits there: {[p.name for p in _subdirs(folder)]}")
    images = sorted((folder / split).glob("*/*.JPEG"))
    if not images:
        raise FileNotFoundError(f"no <wnid>/<name>.JPEG under {folder / split}")
    if unknown := sorted({p.parent.name for p in images} - imagenet_s_ids(subset).keys()):
        raise ValueError(f"{folder / split / unknown[0]} is not a class of {folder.name} ({len(unknown)} such "
                         "folders): is this folder another subset?")
    masks = _files(folder / f"{split}-segmentation", [f"{p.parent.name}/{p.stem}.png" for p in images],
                   "ImageNet-S masks <wnid>/<name>.png (LUSSeg's datapreparation_anno.sh downloads them)")
    return SegFiles(images, masks, read_label=partial(imagenet_s_fgbg, subset=subset), size=size)


# ---------------------------------------------------------------------------------------------------------------
# The dataset kinds


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset folder: how its layout is found in a given path (``find``: its folder, or a
    ``LayoutError`` naming the near miss), how a split is read (``read(folder, split, size=None)``), the
    splits that serve each role of a study ("train", "val"; preferred first) and the label space its labels
    are read in (``classes.LABEL_SPACES``; None: a generated set's own vocabulary). ``folder``: a named dataset
    a plugin writes on demand (``registry.DATASETS``), a function of a root folder that returns its folder."""

    name: str
    space: str | None
    find: Callable[[Path], Path]
    read: Callable[..., SegFiles]
    roles: dict[str, tuple[str, ...]]
    folder: Callable[[Path], Path] | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for splits in self.roles.values() for s in splits))

    def open(self, path: str | Path, role: str, size: Size = None) -> SegFiles:
        """The ``role`` of the dataset at ``path``: the first of its splits that the folder has."""
        if role not in self.roles:
            raise ValueError(f"a {self.name} dataset has no {role} split; it serves {' and '.join(self.roles)}")
        folder = self.find(Path(path))
        *preferred, last = self.roles[role]
        for split in preferred:
            with suppress(SplitNotFoundError):
                return self.read(folder, split, size=size)
        return self.read(folder, last, size=size)


KINDS: dict[str, DatasetKind] = {k.name: k for k in (
    DatasetKind("voc", "voc", find_voc, partial(VOCLayout, with_reliability=False),
                {"train": ("train_aug", "train"), "val": ("val",)}),  # train_aug: SBD's 10,582 images
    DatasetKind("cityscapes", "cityscapes", find_cityscapes, cityscapes, {"train": ("train",), "val": ("val",)}),
    DatasetKind("imagenet-s", "fgbg", find_imagenet_s, imagenet_s, {"train": ("train-semi",), "val": ("validation",)}),
    DatasetKind("generated", None, find_voc, VOCLayout, {"train": ("train",)}),
)}


def check(kind: str, path: str | Path) -> list[str]:
    """The layout folder found at ``path`` (or what is wrong), then one line per split: its sample count
    (its first sample read), absent, or what is broken."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(KINDS)}")
    try:
        folder = KINDS[kind].find(Path(path))
    except LayoutError as err:
        return [f"MISSING {err}"]
    lines = [f"layout  {folder}"]
    for split in KINDS[kind].splits:
        try:
            files = KINDS[kind].read(folder, split)
            files[0]
            lines.append(f"ok      {split}: {len(files)} samples")
        except SplitNotFoundError as err:
            lines.append(f"absent  {split}: {err}")
        except (FileNotFoundError, ValueError) as err:
            lines.append(f"BROKEN  {split}: {err}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m a2m_utils.seg_data check KIND PATH``: exit 1 unless the layout is there, no split is broken and
    at least one reads."""
    import argparse

    p = argparse.ArgumentParser(description="Check that a dataset folder has the layout the kit reads.")
    p.add_argument("command", choices=["check"])
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("path", type=Path)
    a = p.parse_args(argv)
    lines = check(a.kind, a.path)
    print("\n".join(lines))
    fine = all(not line.startswith(("MISSING", "BROKEN")) for line in lines)
    return 0 if fine and any(line.startswith("ok") for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
