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
refuses a folder made with other settings or holding corrupt files (all of them listed;
``repair`` regenerates them).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from collections.abc import Collection, Sequence
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
from .phases import phase
from .prompts import Prompt
from .refine import refine_maps
from .tokens import NoClassInPromptError, class_positions
from .trace import generate, text_layout

FOLDERS = {"image": ("JPEGImages", ".jpg"), "label": ("SegmentationClass", ".png"),
           "reliability": ("Reliability", ".png"), "attention": ("Attention", ".npz")}


class DatasetError(RuntimeError):
    """A dataset folder that cannot be resumed or merged as asked."""


class OtherSettingsError(DatasetError):
    """A folder holding a dataset made with other settings, prompts, model or scheduler."""


class CorruptDatasetError(DatasetError):
    """Files of complete samples that are missing or differ from the hashes in their meta files;
    ``files`` lists every one."""

    def __init__(self, root: Path, files: Sequence[Path], fix: str) -> None:
        self.root, self.files, self.fix = Path(root), list(files), fix
        listing = "".join(f"\n  {f}" for f in self.files)
        super().__init__(f"{len(self.files)} file{'s' if len(self.files) != 1 else ''} of {root} "
                         f"{'are' if len(self.files) != 1 else 'is'} missing or corrupt (hash differs from "
                         f"its meta file):{listing}\n{fix}")


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
    precision: str = "fp32"  # sampling: "fp32" (the weights' dtype) or "bf16"/"fp16" autocast (trace.generate)

    def to_json(self) -> dict:
        return {**asdict(self), "kit_version": __version__}


def sample_id(index: int) -> str:
    return f"{index:07d}"


def png_bytes(array: np.ndarray, palette: bool) -> bytes:
    """A uint8 map as PNG bytes: a palette PNG in VOC's colours (labels), or greyscale."""
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


def usable_prompts(prompts: Sequence[Prompt], tokenizer, vocab: ClassVocab, attributes: Collection[str] = (),
                   skip_unknown: bool = False) -> tuple[list[Prompt], list[tuple[Prompt, NoClassInPromptError]]]:
    """The prompts whose classes the tokenizer keeps, and the others with their error: a prompt
    naming no class (or not its expected ones), or whose class word the tokenizer does not know
    or cuts off (``ClassWordLostError``). Raises the first error unless ``skip_unknown``."""
    kept, skipped = [], []
    for p in prompts:
        try:
            class_positions(p.text, tokenizer, vocab, expected=p.classes, attributes=attributes)
            kept.append(p)
        except NoClassInPromptError as err:
            if not skip_unknown:
                raise
            skipped.append((p, err))
    return kept, skipped


def fingerprint(settings: Settings, prompts: Sequence[Prompt], model: str | None = None,
                scheduler: dict | None = None) -> dict:
    """What ``dataset.json`` stores about a dataset (as stored: tuples become lists); without
    ``model`` and ``scheduler`` the part that can be checked before a pipeline is loaded."""
    digest = hashlib.sha256(json.dumps([asdict(p) for p in prompts]).encode()).hexdigest()
    info = {"settings": settings.to_json(), "prompts_sha256": digest, "num_samples": len(prompts)}
    if model is not None:
        info = {"settings": info["settings"], "model": model, "scheduler": scheduler, **info}
    return json.loads(json.dumps(info))


def settings_differ(root: str | Path, info: dict) -> dict:
    """The entries of ``info`` that ``root/dataset.json`` stores otherwise: name -> (stored, given);
    empty when the folder holds no dataset. The model's name is informational: not compared."""
    path = Path(root) / "dataset.json"
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is unreadable ({e}); choose another output folder") from e
    return {k: (old.get(k), v) for k, v in info.items() if old.get(k) != v}


def other_settings_message(root: Path, diff: dict) -> str:
    def brief(key, old, new):
        if key == "prompts_sha256":
            return "other prompts"
        if key == "model":
            return "another model (other weights or configuration)"
        if isinstance(old, dict) and isinstance(new, dict):
            keys = [k for k in {**old, **new} if old.get(k) != new.get(k)]
            return "; ".join(f"{key}.{k}: stored {old.get(k)!r}, requested {new.get(k)!r}" for k in keys)
        return f"{key}: stored {old!r}, requested {new!r}"
    return (f"{root} holds a dataset made with other settings or prompts ("
            + "; ".join(brief(k, *v) for k, v in diff.items()) + "); choose another output folder")


class DatasetWriter:
    """Generates and writes the samples of ``prompts`` under ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path, pipe, vocab: ClassVocab, prompts: Sequence[Prompt],
                 settings: Settings, skip_unknown: bool = False, repair: bool = False) -> None:
        self.root, self.pipe, self.vocab, self.settings = Path(root), pipe, vocab, settings
        self.repair, self.model = repair, model_identity(pipe)
        self.tokenizer = text_layout(pipe).tokenizer  # whose tokens index the captured maps (Eq. 4)
        self.model_name = str(getattr(pipe, "name_or_path", "") or type(pipe).__name__)
        kept, skipped = usable_prompts(prompts, self.tokenizer, vocab, settings.attributes, skip_unknown)
        self.prompts, self.skipped = kept, [p for p, _ in skipped]
        self.skip_reasons = Counter(err.reason for _, err in skipped)  # why prompts were skipped -> how many
        if not self.prompts:
            why = "".join(f", {n} {r}" for r, n in self.skip_reasons.items())
            raise DatasetError(f"no prompt to generate: {len(prompts)} given{why}; a dataset needs at least one")
        self._claim()

    @property
    def fingerprint(self) -> dict:
        return fingerprint(self.settings, self.prompts, self.model, scheduler_identity(self.pipe.scheduler))

    def _claim(self) -> None:
        """Create ``dataset.json``, or check that the folder's one matches these settings."""
        info = self.root / "dataset.json"
        if info.exists():
            diff = settings_differ(self.root, self.fingerprint)
            if diff:
                raise OtherSettingsError(other_settings_message(self.root, diff))
        else:
            write_bytes(info, json.dumps(self.fingerprint | {"model_name": self.model_name}, indent=1).encode())

    def batches(self, shard: int = 0, num_shards: int = 1) -> list[range]:
        """The index ranges of this shard's batches."""
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} out of range for {num_shards} shards")
        b, n = self.settings.batch_size, len(self.prompts)
        return [range(s, min(s + b, n)) for k, s in enumerate(range(0, n, b)) if k % num_shards == shard]

    def run(self, shard: int = 0, num_shards: int = 1, progress: bool = True) -> int:
        """Write this shard's missing samples; returns how many were generated. Corrupt files of
        the shard's samples raise ``CorruptDatasetError`` listing them all, unless ``repair``."""
        batches = self.batches(shard, num_shards)
        bad = {i: bad_files(self.root, sample_id(i)) for b in batches for i in b}
        corrupt = [f for files in bad.values() if files for f in files]
        if corrupt and not self.repair:
            raise CorruptDatasetError(self.root, corrupt, "rerun with --repair (DatasetWriter(..., repair=True)) "
                                                          "to regenerate those samples")
        todo = [b for b in batches if not all(bad[i] == [] for i in b)]
        bar = tqdm(total=sum(map(len, todo)), desc=f"dataset shard {shard}/{num_shards}", unit="img",
                   **({} if progress else {"disable": True}))  # unset: TQDM_DISABLE (headless runs) applies
        self.pipe.set_progress_bar_config(disable=True)  # the writer's bar counts images, not denoising steps
        try:
            for indices in todo:
                self.write_batch(indices)
                bar.update(len(indices))
        finally:
            bar.close()  # an interrupted run's next message starts on a line of its own
        return sum(map(len, todo))

    def write_batch(self, indices: range) -> None:
        s, batch = self.settings, [self.prompts[i] for i in indices]
        t = generate(self.pipe, [p.text for p in batch], [p.seed for p in batch], steps=s.capture_steps,
                     self_attention_res=s.self_attention_res, num_inference_steps=s.num_steps,
                     guidance_scale=s.guidance_scale, precision=s.precision)
        attn, affinity = t.attention(), t.self_attention() if s.self_attention_res else None
        for k, (i, p) in enumerate(zip(indices, batch)):
            self.write_sample(i, p, t.images[k], attn[k], t.steps_used, None if affinity is None else affinity[k])

    @phase("dataset I/O")
    def write_sample(self, index: int, prompt: Prompt, image: np.ndarray, attn: np.ndarray,
                     steps_used: list[tuple[int, int]], affinity: np.ndarray | None = None) -> None:
        s, sid = self.settings, sample_id(index)
        positions = class_positions(prompt.text, self.tokenizer, self.vocab, expected=prompt.classes,
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
            "label": png_bytes(pm.label, palette=True),
            "reliability": png_bytes(pm.reliability.astype(np.uint8), palette=False),
            "attention": _npz(maps=raw, class_ids=np.asarray(ids, dtype=np.uint8), **extra),
        }
        hashes = {kind: write_bytes(_path(self.root, kind, sid), data) for kind, data in files.items()}
        meta = {"id": sid, "index": index, "prompt": prompt.text, "seed": prompt.seed,
                "classes": list(positions), "token_positions": positions, "model": self.model_name,
                "steps_used": steps_used, "post_processing": {"method": s.method, "beta": s.beta, "r": s.r,
                                                                "theta": s.theta},
                "kit_version": __version__, "sha256": hashes}
        write_bytes(self.root / "meta" / f"{sid}.json", json.dumps(meta).encode())


def bad_files(root: Path, sid: str) -> list[Path] | None:
    """None when the sample has no meta file (not written yet), else its files that are missing
    or differ from their hashes (the meta file itself when it is unreadable): [] when complete."""
    meta_path = Path(root) / "meta" / f"{sid}.json"
    if not meta_path.exists():
        return None
    try:
        hashes = json.loads(meta_path.read_text())["sha256"]
        assert isinstance(hashes, dict) and set(hashes) <= set(FOLDERS)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AssertionError):
        return [meta_path]
    return [path for kind, digest in hashes.items()
            if not (path := _path(Path(root), kind, sid)).exists()
            or hashlib.sha256(path.read_bytes()).hexdigest() != digest]


def check_sample(root: Path, sid: str, repair: bool = False) -> bool:
    """Is the sample complete? A present meta file whose files are missing or differ from their
    hashes is corruption: an error, or (``repair``) an incomplete sample to redo."""
    bad = bad_files(root, sid)
    if bad and not repair:
        raise CorruptDatasetError(root, bad, "rerun with --repair (repair=True) to regenerate the sample")
    return bad == []


def merge(root: str | Path, shards: Sequence[str | Path] = ()) -> int:
    """Bring the samples of shard folders (made on other machines) into ``root``, check that every
    sample is complete and made with the same settings, and write the image list and the
    manifest. ``root`` may be a new folder: it takes the shards' ``dataset.json``. Returns the
    number of samples. Corrupt files are all listed (``CorruptDatasetError``) before anything is copied."""
    root, shards = Path(root), [Path(s) for s in shards]

    def info_of(folder: Path, role: str) -> tuple[bytes, dict]:
        path = folder / "dataset.json"
        if not folder.is_dir():
            raise DatasetError(f"the {role} folder {folder} does not exist" if not folder.exists()
                               else f"the {role} {folder} is a file, not a dataset folder")
        if not path.is_file():
            raise DatasetError(f"the {role} folder {folder} holds no dataset (no dataset.json); "
                               "give the folders that make_dataset --shard i/n wrote")
        try:
            raw = path.read_bytes()
            return raw, json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path} is unreadable ({e})") from e

    def comparable(info: dict) -> dict:
        return {k: v for k, v in info.items() if k != "model_name"}  # the name is informational

    found = [info_of(s, "shard") for s in shards]
    if (root / "dataset.json").exists() or not found:
        own, info = info_of(root, "output")
    else:
        own, info = found[0]
    for shard, (_, other) in zip(shards, found):
        if comparable(other) != comparable(info):
            diff = {k: (info.get(k), v) for k, v in comparable(other).items() if info.get(k) != v}
            raise DatasetError(f"{shard} was made with other settings or prompts than {root} "
                               f"({', '.join(diff) or 'entries missing'} differ); merge only the shards of one run")
    corrupt = [f for folder in [root, *shards] if (folder / "meta").is_dir()
               for meta in sorted((folder / "meta").glob("*.json")) for f in bad_files(folder, meta.stem) or []]
    if corrupt:
        raise CorruptDatasetError(root, corrupt, "rerun the command that wrote them with --repair, then merge again")
    if not (root / "dataset.json").exists():
        write_bytes(root / "dataset.json", own)
    for shard in shards:
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
