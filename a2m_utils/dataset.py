"""Writing generated datasets: PASCAL VOC layout, resumable, deterministic, sharded.

For every prompt (with its seed) the writer generates the image, captures attention,
builds the pseudo-mask and writes, under one folder::

    JPEGImages/<id>.jpg              the generated image
    SegmentationClass/<id>.png       the pseudo-mask, VOC palette PNG (class ids)
    Reliability/<id>.png             Eq. 6's reliable-pixel map, 0/1
    Attention/<id>.npz               raw class maps of Eq. 4 (float16), their class ids and, when
                                     asked, the maps refined by self-attention (``refine``)
    meta/<id>.json                   the sample's manifest line, with the sha256 of its files
    dataset.json                     the settings every sample was made with
    ImageSets/Segmentation/train.txt and manifest.jsonl, written by ``merge``

Samples are generated in fixed batches (batch k holds indices [k*B, (k+1)*B)); a shard
takes whole batches, so results do not depend on the number of shards. Every file is
written atomically and a sample's ``meta`` file last: a sample is complete when its meta
file exists and its hashes match. A rerun skips complete batches, redoes partial ones and
refuses a folder made with other settings or holding a corrupt file.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import __version__
from .atomic import write_bytes
from .classes import ClassVocab, voc_palette
from .identity import model_identity, scheduler_identity
from .masks import class_maps, pseudo_mask
from .prompts import Prompt
from .refine import refine_maps
from .tokens import NoClassInPromptError, class_positions
from .trace import generate

FOLDERS = {"image": ("JPEGImages", ".jpg"), "label": ("SegmentationClass", ".png"),
           "reliability": ("Reliability", ".png"), "attention": ("Attention", ".npz")}


class DatasetError(RuntimeError):
    """A dataset folder that cannot be resumed or merged as asked."""


@dataclass(frozen=True)
class Settings:
    """Everything that determines a dataset's files, besides its prompts and the pipeline (its
    model and scheduler are identified separately, ``identity``). Defaults: the paper's."""

    vocab: str
    num_steps: int = 100
    guidance_scale: float = 7.5
    capture_steps: tuple[int, ...] | None = (50,)  # None: all steps
    method: str = "dcrf"
    beta: float = 0.2
    r: float = 0.5
    theta: float = 128
    attributes: tuple[str, ...] = ()
    batch_size: int = 8
    jpeg_quality: int = 95
    self_attention_res: int | None = None  # also store self-attention-refined maps (Dataset Diffusion)

    def to_json(self) -> dict:
        return {**asdict(self), "kit_version": __version__}


def sample_id(index: int) -> str:
    return f"{index:07d}"


def _png(array: np.ndarray, palette: bool) -> bytes:
    img = Image.fromarray(array, mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette(voc_palette().ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    """``np.savez_compressed`` bytes without timestamps, so equal arrays give equal files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), npy.getvalue(),
                        compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _path(root: Path, kind: str, sid: str) -> Path:
    folder, ext = FOLDERS[kind]
    return root / folder / f"{sid}{ext}"


class DatasetWriter:
    """Generates and writes the samples of ``prompts`` under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, pipe, vocab: ClassVocab, prompts: Sequence[Prompt],
                 settings: Settings, skip_unknown: bool = False, repair: bool = False) -> None:
        self.root, self.pipe, self.vocab, self.settings = Path(root), pipe, vocab, settings
        self.repair, self.model = repair, model_identity(pipe)
        self.model_name = str(getattr(pipe, "name_or_path", "") or type(pipe).__name__)
        self.prompts, self.skipped = self._usable(prompts, skip_unknown)
        self._claim()

    def _usable(self, prompts: Sequence[Prompt], skip_unknown: bool) -> tuple[list[Prompt], list[Prompt]]:
        """Prompts whose classes the tokenizer finds; the others raise, or are skipped and counted."""
        kept, skipped = [], []
        for p in prompts:
            try:
                class_positions(p.text, self.pipe.tokenizer, self.vocab, expected=p.classes,
                                attributes=self.settings.attributes)
                kept.append(p)
            except NoClassInPromptError:
                if not skip_unknown:
                    raise
                skipped.append(p)
        return kept, skipped

    @property
    def fingerprint(self) -> dict:
        digest = hashlib.sha256(json.dumps([asdict(p) for p in self.prompts]).encode()).hexdigest()
        info = {"settings": self.settings.to_json(), "model": self.model,
                "scheduler": scheduler_identity(self.pipe.scheduler), "prompts_sha256": digest,
                "num_samples": len(self.prompts)}
        return json.loads(json.dumps(info))  # as stored (tuples become lists)

    def _claim(self) -> None:
        """Create ``dataset.json``, or check that the folder's one matches these settings."""
        info = self.root / "dataset.json"
        if info.exists():
            old = json.loads(info.read_text())
            diff = {k: (old.get(k), v) for k, v in self.fingerprint.items() if old.get(k) != v}  # not the name
            if diff:
                raise DatasetError(f"{self.root} holds a dataset made with other settings or prompts "
                                   f"(stored, requested): {diff}; choose another output folder")
        else:
            write_bytes(info, json.dumps(self.fingerprint | {"model_name": self.model_name}, indent=1).encode())

    def batches(self, shard: int = 0, num_shards: int = 1) -> list[range]:
        """The index ranges of this shard's batches."""
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} out of range for {num_shards} shards")
        b, n = self.settings.batch_size, len(self.prompts)
        return [range(s, min(s + b, n)) for k, s in enumerate(range(0, n, b)) if k % num_shards == shard]

    def complete(self, index: int) -> bool:
        """True when the sample's meta file exists and every file matches its hash."""
        return check_sample(self.root, sample_id(index), repair=self.repair)

    def run(self, shard: int = 0, num_shards: int = 1, progress: bool = True) -> int:
        """Write this shard's missing samples; returns how many were generated."""
        todo = [b for b in self.batches(shard, num_shards) if not all(self.complete(i) for i in b)]
        bar = tqdm(total=sum(map(len, todo)), desc=f"dataset shard {shard}/{num_shards}", unit="img",
                   disable=not progress)
        for indices in todo:
            self.write_batch(indices)
            bar.update(len(indices))
        bar.close()
        return sum(map(len, todo))

    def write_batch(self, indices: range) -> None:
        s, batch = self.settings, [self.prompts[i] for i in indices]
        self.pipe.set_progress_bar_config(disable=True)
        t = generate(self.pipe, [p.text for p in batch], [p.seed for p in batch], steps=s.capture_steps,
                     self_attention_res=s.self_attention_res, num_inference_steps=s.num_steps,
                     guidance_scale=s.guidance_scale)
        attn, affinity = t.attention(), t.self_attention() if s.self_attention_res else None
        for k, (i, p) in enumerate(zip(indices, batch)):
            self.write_sample(i, p, t.images[k], attn[k], t.steps_used, None if affinity is None else affinity[k])

    def write_sample(self, index: int, prompt: Prompt, image: np.ndarray, attn: np.ndarray,
                     steps_used: list[tuple[int, int]], affinity: np.ndarray | None = None) -> None:
        s, sid = self.settings, sample_id(index)
        positions = class_positions(prompt.text, self.pipe.tokenizer, self.vocab, expected=prompt.classes,
                                    attributes=s.attributes)
        ids = [self.vocab.index(n) for n in positions]
        raw = class_maps(attn, positions).astype(np.float16)
        jpeg = _jpeg(image, s.jpeg_quality)
        stored = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        # the mask is built from the stored image and maps, so post-processing redone from them is exact
        pm = pseudo_mask(raw.astype(np.float32), ids, stored, s.method, s.beta, s.r, s.theta)
        extra = {} if affinity is None else {
            "refined": refine_maps(raw.astype(np.float32), affinity).astype(np.float16)}
        files = {
            "image": jpeg,
            "label": _png(pm.label, palette=True),
            "reliability": _png(pm.reliability.astype(np.uint8), palette=False),
            "attention": _npz(maps=raw, class_ids=np.asarray(ids, dtype=np.uint8), **extra),
        }
        hashes = {kind: write_bytes(_path(self.root, kind, sid), data) for kind, data in files.items()}
        meta = {"id": sid, "index": index, "prompt": prompt.text, "seed": prompt.seed,
                "classes": list(positions), "token_positions": positions, "model": self.model_name,
                "steps_used": steps_used, "post_processing": {"method": s.method, "beta": s.beta, "r": s.r,
                                                                "theta": s.theta},
                "kit_version": __version__, "sha256": hashes}
        write_bytes(self.root / "meta" / f"{sid}.json", json.dumps(meta).encode())


def check_sample(root: Path, sid: str, repair: bool = False) -> bool:
    """Is the sample complete? A present meta file whose files are missing or differ from their
    hashes is corruption: an error, or (``repair``) an incomplete sample to redo."""
    meta_path = root / "meta" / f"{sid}.json"
    if not meta_path.exists():
        return False
    try:
        hashes = json.loads(meta_path.read_text())["sha256"]
    except (json.JSONDecodeError, KeyError) as e:
        if repair:
            return False
        raise DatasetError(f"{meta_path} is unreadable; rerun with repair to regenerate the sample") from e
    for kind, digest in hashes.items():
        path = _path(root, kind, sid)
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            if repair:
                return False
            raise DatasetError(f"{path} is missing or corrupt (its hash differs from {meta_path.name}); "
                               "rerun with repair to regenerate the sample")
    return True


def merge(root: str | Path, shards: Sequence[str | Path] = ()) -> int:
    """Bring the samples of shard folders (made on other machines) into ``root``, check that every
    sample is complete and made with the same settings, and write the image list and the
    manifest. Returns the number of samples."""
    root = Path(root)
    info = json.loads((root / "dataset.json").read_text())
    for shard in map(Path, shards):
        other = json.loads((shard / "dataset.json").read_text())
        if other != info:
            raise DatasetError(f"{shard} was made with other settings or prompts than {root}")
        for meta in sorted((shard / "meta").glob("*.json")):
            sid = meta.stem
            if check_sample(shard, sid) and not (root / "meta" / meta.name).exists():
                for kind in FOLDERS:
                    write_bytes(_path(root, kind, sid), _path(shard, kind, sid).read_bytes())
                write_bytes(root / "meta" / meta.name, meta.read_bytes())
    ids = [sample_id(i) for i in range(info["num_samples"])]
    missing = [sid for sid in ids if not check_sample(root, sid)]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(ids)} samples are missing or incomplete "
                           f"(first: {missing[:5]}); run the missing shards, then merge again")
    write_bytes(root / "ImageSets" / "Segmentation" / "train.txt", "".join(f"{s}\n" for s in ids).encode())
    manifest = "".join((root / "meta" / f"{sid}.json").read_text() + "\n" for sid in ids)
    write_bytes(root / "manifest.jsonl", manifest.encode())
    return len(ids)


def load_sample(root: str | Path, sid: str) -> dict:
    """Image, pseudo-mask, reliability, raw class maps and manifest line of one sample."""
    root = Path(root)
    with np.load(_path(root, "attention", sid)) as z:
        maps, ids = z["maps"].astype(np.float32), z["class_ids"].tolist()
        refined = z["refined"].astype(np.float32) if "refined" in z else None
    return {"image": np.asarray(Image.open(_path(root, "image", sid)).convert("RGB")),
            "label": np.asarray(Image.open(_path(root, "label", sid))),
            "reliability": np.asarray(Image.open(_path(root, "reliability", sid))).astype(bool),
            "maps": maps, "refined": refined, "class_ids": ids,
            "meta": json.loads((root / "meta" / f"{sid}.json").read_text())}
