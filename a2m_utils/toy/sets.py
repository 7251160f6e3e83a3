"""The toy world's "real" training and validation sets, written once as PASCAL VOC layout folders
(lossless PNG images, palette PNG labels, and ``captions.json``: id -> the scene's caption) and
read by the same reader as PASCAL VOC (``seg_data.VOCLayout``).

Seeds are split into disjoint ranges so that no rendered image is both trained on and evaluated:
the toy model and the oracle train below ``10**9``; "real" training images come from
``REAL_SEED0`` on, validation images from ``VAL_SEED0`` on, and the toy preset was chosen on
``DEV_SEED0`` (``benchmarks/toy_preset.py``). A sample's id is its seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from ..dataset import png_bytes
from ..phases import phase
from .world import make_sample

REAL_SEED0 = 6 * 10**9
VAL_SEED0 = 7 * 10**9
DEV_SEED0 = 8 * 10**9
FORMAT = 1  # bump when the renderer or the layout changes: the folders' names change with it


@dataclass(frozen=True)
class ToySet:
    """Splits ``train`` and ``val`` of ``n_train`` and ``n_val`` scenes from ``REAL_SEED0 + offset``
    and ``VAL_SEED0 + offset``."""

    offset: int
    n_train: int
    n_val: int
    domain: str = "source"
    max_objects: int = 2

    def seeds(self, split: str) -> range:
        start = (REAL_SEED0 if split == "train" else VAL_SEED0) + self.offset
        return range(start, start + (self.n_train if split == "train" else self.n_val))


SETS = {  # the study's: scenes of 1-2 objects; one object (Table 3); the target domain (Table 4)
    "toy": ToySet(0, 500, 500),
    "toy-one-object": ToySet(10**8, 250, 500, max_objects=1),
    "toy-target": ToySet(2 * 10**8, 256, 300, domain="target"),
}


@phase("toy sets")
def _write(folder: Path, spec: ToySet) -> None:
    captions = {}
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True)
    for split in ("train", "val"):
        ids = []
        for seed in spec.seeds(split):
            s = make_sample(seed, domain=spec.domain, max_objects=spec.max_objects)
            ids.append(sid := str(seed))
            Image.fromarray(s.image).save(folder / "JPEGImages" / f"{sid}.png")
            (folder / "SegmentationClass" / f"{sid}.png").write_bytes(png_bytes(s.label, palette=True))
            captions[sid] = s.caption
        (folder / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (folder / "captions.json").write_text(json.dumps(captions, indent=0) + "\n")


def voc_folder(name: str, root: Path) -> Path:
    """The VOC-layout folder of toy set ``name`` under ``root``, rendered the first time (into a
    temporary folder, renamed when complete, so an interrupted write leaves nothing half-made)."""
    if name not in SETS:
        raise ValueError(f"unknown toy set {name!r}; expected one of {sorted(SETS)}")
    key = hashlib.sha256(json.dumps([FORMAT, asdict(SETS[name])]).encode()).hexdigest()[:10]
    folder = Path(root) / f"{name}-set-{key}"
    if not folder.is_dir():
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _write(tmp, SETS[name])
        tmp.rename(folder)
    return folder
