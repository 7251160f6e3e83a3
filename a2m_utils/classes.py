"""Class vocabularies: names, synonyms and the VOC colour palette, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassVocab:
    """Label ids are positions in ``names``; id 0 is the background."""

    names: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.names[0] != "background":
            raise ValueError(f"names[0] must be 'background', got {self.names[0]!r}")
        unknown = set(self.synonyms) - set(self.names)
        if unknown:
            raise ValueError(f"synonyms given for unknown classes: {sorted(unknown)}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def phrases(self, name: str) -> tuple[str, ...]:
        """The class name and its synonyms, each a phrase of one or more words."""
        return (name,) + self.synonyms.get(name, ())


def voc_palette(n: int = 256) -> np.ndarray:
    """PASCAL VOC colour map (label id -> RGB), as used by its palette PNGs."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


VOC = ClassVocab(
    names=(
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
        "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
        "sheep", "sofa", "train", "tvmonitor",
    ),
    synonyms={
        "aeroplane": ("airplane", "plane", "jet", "aircraft"),
        "bicycle": ("bike", "cycle"),
        "bird": ("parrot", "duck", "pigeon", "seagull"),
        "boat": ("ship", "sailboat", "kayak", "canoe"),
        "bottle": ("wine bottle", "water bottle"),
        "bus": ("double decker",),
        "car": ("taxi", "sedan", "suv"),
        "cat": ("kitten", "kitty"),
        "chair": ("bench", "stool"),
        "cow": ("cattle", "bull", "calf", "ox"),
        "diningtable": ("dining table", "table", "desk"),
        "dog": ("puppy", "pup"),
        "horse": ("pony", "foal"),
        "motorbike": ("motorcycle", "scooter", "moped"),
        "person": ("man", "woman", "people", "boy", "girl", "child", "kid", "player", "guy", "lady"),
        "pottedplant": ("potted plant", "house plant", "plant", "flower pot"),
        "sheep": ("lamb", "ram"),
        "sofa": ("couch",),
        "train": ("locomotive", "tram", "subway"),
        "tvmonitor": ("tv", "television", "monitor", "computer screen"),
    },
)

# Cityscapes' 19 evaluation classes (train ids = vocabulary id - 1; background -> 255). The
# paper's prompts say "sand" for terrain and "plant" for vegetation (household words).
CITYSCAPES = ClassVocab(
    names=(
        "background", "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
        "train", "motorcycle", "bicycle",
    ),
    synonyms={"vegetation": ("plant",), "terrain": ("sand",), "person": ("pedestrian",)},
)
CITYSCAPES_PROMPT_WORDS = {"terrain": "sand", "vegetation": "plant"}


@dataclass(frozen=True)
class ImageNetSClass:
    """One ImageNet-S class: its WordNet id (the folder of its images), its class id in the masks of each
    subset that holds it (919, 300, 50: ImageNetS919, ...), and its name followed by its synonyms."""

    wnid: str
    ids: dict[int, int]
    names: tuple[str, ...]


IMAGENET_S_SUBSETS = (919, 300, 50)


def _imagenet_s_classes(path: Path) -> tuple[ImageNetSClass, ...]:
    """The classes of the committed list (its header names the sources), in ImageNetS919's class-id order."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")][1:]
    return tuple(ImageNetSClass(wnid, {s: int(i) for s, i in zip(IMAGENET_S_SUBSETS, (i919, i300, i50)) if int(i)},
                                tuple(n.strip() for n in names.split(",")))
                 for i919, wnid, i300, i50, names in rows)


IMAGENET_S_CLASSES = _imagenet_s_classes(Path(__file__).with_name("imagenet_s_classes.tsv"))


@cache
def imagenet_s_ids(subset: int) -> dict[str, int]:
    """WordNet id -> class id in the masks of ImageNetS``subset`` (50, 300 or 919)."""
    if subset not in IMAGENET_S_SUBSETS:
        raise ValueError(f"ImageNet-S comes in subsets {sorted(IMAGENET_S_SUBSETS)}, not {subset}")
    return {c.wnid: c.ids[subset] for c in IMAGENET_S_CLASSES if subset in c.ids}


# ImageNet-S's 919 classes by ImageNetS919 id (the template prompts' classes and synonyms, Sec. 4.1; two share
# the name "crane", the bird and the machine, with the same synonyms), and the vocabulary its template images
# are labelled with: the foreground/background task of Table 3, where any class's name or synonym is the
# foreground (ids above 255 would not fit the generated dataset's label PNGs).
IMAGENET_S = ClassVocab(names=("background", *(c.names[0] for c in IMAGENET_S_CLASSES)),
                        synonyms={c.names[0]: c.names[1:] for c in IMAGENET_S_CLASSES})
IMAGENET_S_FGBG = ClassVocab(names=("background", "foreground"), synonyms={"foreground": tuple(dict.fromkeys(
    p for c in IMAGENET_S_CLASSES for p in c.names))})

# Evaluation label spaces: what each validation set's ids mean, and the vocabularies that map onto it
# (a plugin adds its own, e.g. the toy world's).
LABEL_SPACES = {"voc": VOC, "cityscapes": CITYSCAPES, "fgbg": None}


def to_eval_ids(vocab: ClassVocab, space: str) -> np.ndarray:
    """A lookup table (256,) from a generated dataset's vocabulary ids to an evaluation set's ids.

    - ``voc``: the 21 VOC ids (background 0), the identity for the VOC vocabulary;
    - ``cityscapes``: the 19 train ids (id - 1). Every Cityscapes pixel has a class, so Eq. 5's
      background means "no named class won here", not a class: it becomes 255 (ignored in
      training), rather than being forced onto some class;
    - ``fgbg``: ImageNet-S foreground/background, any class 1, background 0 (Table 3);
    - a space a plugin registers (e.g. ``toy``): the identity for its own vocabulary.
    255 (ignore) stays 255. A vocabulary that is not the space's raises, naming both."""
    if space not in LABEL_SPACES:
        raise ValueError(f"unknown label space {space!r}; expected one of {sorted(LABEL_SPACES)}")
    table = np.full(256, IGNORE_INDEX, np.uint8)
    n = vocab.num_classes
    if space == "fgbg":
        table[:n] = np.arange(n) > 0
        return table
    if vocab.names != LABEL_SPACES[space].names:
        raise ValueError(f"the dataset's vocabulary ({', '.join(vocab.names[1:4])}, ... {n} ids) is not the "
                         f"{space} label space ({', '.join(LABEL_SPACES[space].names[1:4])}, ...): generate with "
                         f"the {space} vocabulary or evaluate on a matching set")
    table[:n] = np.r_[IGNORE_INDEX, np.arange(n - 1)] if space == "cityscapes" else np.arange(n)
    return table
