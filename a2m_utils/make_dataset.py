"""Command line for big dataset runs: one process, ``--shard i/n`` per machine, or ``accelerate launch``.

    python -m a2m_utils.make_dataset --out data/toy-2k --prompts toy --n 2000
    accelerate launch --num_processes 4 -m a2m_utils.make_dataset --out data/voc --preset sd \\
        --model CompVis/stable-diffusion-v1-4 --prompts voc-coco --coco-json captions_train2017.json
    python -m a2m_utils.make_dataset --out data/voc --merge data/voc-shard1 data/voc-shard2

Under accelerate every process takes its share of the batches (and its own GPU); with
``--shard i/n`` too, machine i's processes split that machine's share. Rerun the same
command to resume. ``--merge`` checks the shards and writes the image list and manifest.

Inputs are checked before any model is loaded: the counts, the shard, the output folder
(a folder that can be made and written, holding no dataset made with other settings) and the
prompts (with the model's tokenizer: every class word must be a token the text encoder sees).
An error is one line on stderr (``--debug`` shows the traceback). Exit status: 0 done,
2 bad input found before generating, 1 an error while loading, generating or merging,
130 interrupted (Ctrl-C; rerunning the same command resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import PartialState

from . import registry
from .dataset import (
    CorruptDatasetError,
    DatasetError,
    DatasetWriter,
    OtherSettingsError,
    Settings,
    fingerprint,
    merge,
    other_settings_message,
    sample_id,
    settings_differ,
    usable_prompts,
)
from .fast import fast
from .prompts import Prompt
from .registry import PRESETS
from .tokens import NoClassInPromptError

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
COMMAND = "python -m a2m_utils.make_dataset"


class InputError(ValueError):
    """A bad command-line input, found before anything is loaded or written."""


def shard_of(text: str, state: PartialState) -> tuple[int, int]:
    """Machine shard ``i/n`` split further among this machine's accelerate processes."""
    try:
        i, n = map(int, text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {text}: need 0 <= i < n (shards are numbered from 0)")
    return i * state.num_processes + state.process_index, n * state.num_processes


def parse(argv: list[str] | None) -> argparse.Namespace:
    registry.load_plugins()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="toy")
    p.add_argument("--model", help="pipeline folder or hub id (default: the preset's)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the preset's)")
    p.add_argument("--prompts", choices=sorted(registry.PROMPT_SETS), default="toy")
    p.add_argument("--n", type=int, help="prompts (toy, cityscapes), per class (templates), at most (coco; "
                                         "default: every caption naming a class)")
    p.add_argument("--seeds-per-prompt", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coco-json", type=Path)
    p.add_argument("--domain", default="source", help="toy world domain")
    p.add_argument("--domain-token", help='e.g. "sks" for the adapted Cityscapes template')
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--capture", help="'all', a step index, or a window a:b")
    p.add_argument("--method", choices=("argmax", "threshold", "otsu", "dcrf"))
    p.add_argument("--beta", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--shard", default="0/1", help="this machine's share i/n")
    p.add_argument("--skip-unknown", action="store_true",
                   help="skip (and count) prompts naming no class, or whose class words the tokenizer does not "
                        "know or cuts off (default: stop with an error naming the prompt)")
    p.add_argument("--repair", action="store_true", help="regenerate samples whose files are corrupt")
    p.add_argument("--fast", action="store_true", help="channels-last, fused q/k/v and torch.compile "
                   "(a2m_utils.fast; for GPUs: the first batch compiles)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--merge", nargs="*", type=Path, help="merge these shard folders into --out and index it")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p.parse_args(argv)


def capture_steps(text: str | None, default):
    if text is None:
        return default
    if text == "all":
        return None
    try:
        if ":" in text:
            a, b = map(int, text.split(":"))
            return tuple(range(a, b))
        return (int(text),)
    except ValueError:
        raise InputError(f"--capture takes 'all', a step index (e.g. 10) or a window a:b (e.g. 5:15), "
                         f"got {text!r}") from None


def settings_from(a: argparse.Namespace) -> Settings:
    base = PRESETS[a.preset].settings
    given = {"num_steps": a.steps, "guidance_scale": a.guidance, "method": a.method, "beta": a.beta,
             "batch_size": a.batch_size}
    return replace(base, vocab=registry.PROMPT_SETS[a.prompts][0],
                   capture_steps=capture_steps(a.capture, base.capture_steps),
                   **{k: v for k, v in given.items() if v is not None})


# ---------------------------------------------------------------------------------------------
# checks before anything is loaded


def check_counts(a: argparse.Namespace, settings: Settings) -> None:
    if a.n is None and a.prompts != "voc-coco":
        raise InputError(f"--n is required with --prompts {a.prompts}: how many prompts (per class for the "
                         "templates), e.g. --n 16")
    if a.n is not None and a.n < 1:
        raise InputError(f"--n must be at least 1, got {a.n}" + (
            " (leave --n out to take every caption)" if a.prompts == "voc-coco" else ""))
    for flag, value in (("--seeds-per-prompt", a.seeds_per_prompt), ("--steps", settings.num_steps),
                        ("--batch-size", settings.batch_size)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if a.threads < 0:
        raise InputError(f"--threads must be 0 (torch's default) or more, got {a.threads}")
    if not 0 <= settings.beta <= 1:
        raise InputError(f"--beta is the background threshold of Eq. 5, in [0, 1]; got {settings.beta}")
    steps = settings.capture_steps
    if steps is not None and (not steps or min(steps) < 0 or max(steps) >= settings.num_steps):
        raise InputError(f"--capture {a.capture or steps}: steps are numbered 0 .. {settings.num_steps - 1} "
                         f"for {settings.num_steps} steps (a window a:b needs a < b)")
    if a.prompts == "voc-coco" and a.coco_json is None:
        raise InputError("--prompts voc-coco needs --coco-json FILE (a COCO captions file, e.g. "
                         "captions_train2017.json)")


def check_scheduler(name: str) -> None:
    import diffusers

    if not name.endswith("Scheduler") or not hasattr(diffusers, name):
        common = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
                  "PNDMScheduler")
        raise InputError(f"--scheduler {name!r} is not a diffusers scheduler class; e.g. {', '.join(common)}")


def local_model(model: str) -> Path | None:
    """The model's folder when ``model`` names a local path; None for a hub id."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            what = "a file" if path.is_file() else "the folder holds no model_index.json"
            raise InputError(f"--model {model}: {what}; give a pipeline folder in diffusers layout or a hub id")
        return path
    first = Path(model).parts[0] if Path(model).parts else ""
    hub_like = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model) and not Path(first).is_dir()
    if not hub_like:
        raise InputError(f"--model {model}: no such folder; give a pipeline folder in diffusers layout or a hub id "
                         "(e.g. CompVis/stable-diffusion-v1-4)")
    return None


def load_tokenizer(model: str):
    """The pipeline's tokenizer alone (cheap), or None when it cannot be had without downloading."""
    import transformers

    folder = local_model(model)
    try:
        if folder is not None:
            entry = json.loads((folder / "model_index.json").read_text()).get("tokenizer")
            cls = getattr(transformers, entry[1], None) if entry and entry[0] == "transformers" else None
            if not (folder / "tokenizer").is_dir():
                return None
            return (cls or transformers.AutoTokenizer).from_pretrained(str(folder / "tokenizer"))
        return transformers.AutoTokenizer.from_pretrained(model, subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None  # the pipeline's own loading reports it (or, for a hub id, downloads it)


def skipped_text(reasons: Counter) -> str:
    return ", ".join(f"{n} {r}" for r, n in reasons.most_common())


def check_prompts(a: argparse.Namespace, settings: Settings, tokenizer) -> tuple[list[Prompt], list[Prompt]]:
    """The prompts and those of them that are usable, checked with the tokenizer when there is one
    (else all): at least one."""
    vocab = registry.VOCABS[settings.vocab]
    try:
        prompts = registry.PROMPT_SETS[a.prompts][1](n=a.n, seed=a.seed, seeds_per_prompt=a.seeds_per_prompt,
                                                     coco_json=a.coco_json, domain=a.domain,
                                                     domain_token=a.domain_token)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"--prompts {a.prompts}: {err}") from err
    if not prompts:
        where = f"no caption of {a.coco_json} names" if a.prompts == "voc-coco" else "no prompt names"
        raise InputError(f"--prompts {a.prompts} gives no prompt: {where} a class of the {settings.vocab!r} "
                         "vocabulary; nothing to generate")
    if tokenizer is None:
        return prompts, prompts
    kept, skipped = usable_prompts(prompts, tokenizer, vocab, settings.attributes, skip_unknown=True)
    if skipped and not a.skip_unknown:
        first = skipped[0][1]
        raise InputError(f"{first} ({len(skipped)} of {len(prompts)} prompts cannot be labelled: "
                         f"{skipped_text(Counter(e.reason for _, e in skipped))}); rerun with --skip-unknown to "
                         "skip and count them, or use prompts and a model whose tokenizer knows their class words")
    if not kept:
        raise InputError(f"no usable prompt: all {len(prompts)} prompts of --prompts {a.prompts} are skipped "
                         f"({skipped_text(Counter(e.reason for _, e in skipped))}), e.g. {skipped[0][1]}")
    return prompts, kept


def check_out(out: Path, info: dict) -> None:
    """The output folder exists and is a folder or can be made, is writable, and holds no dataset
    made with other settings (those of ``info`` that are known before the model is loaded)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; give a folder (new or holding this dataset)")
    diff = settings_differ(out, info)
    if diff:
        raise InputError(other_settings_message(out, diff).replace(
            "choose another output folder", "choose another --out, or rerun the command that made it"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {out}: {err.strerror or err}; choose another --out") from err
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"cannot write in the output folder {out}: {err.strerror or err}; make it writable "
                         "or choose another --out") from err


def check_shards(out: Path, shards: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    if not shards and not (out / "dataset.json").is_file():
        raise InputError(f"--out {out} holds no dataset to index; give the shard folders: "
                         f"--out {out} --merge SHARD_FOLDER ...")
    for s in shards:
        if not s.is_dir():
            raise InputError(f"shard folder {s} {'is a file' if s.exists() else 'does not exist'}; give the "
                             "folders that the --shard i/n runs wrote")
        if not (s / "dataset.json").is_file():
            raise InputError(f"shard folder {s} holds no dataset (no dataset.json); give the folders that the "
                             "--shard i/n runs wrote")


# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the Ctrl-C message needs: the output folder and this process's sample indices."""

    out: Path
    indices: list[int] = field(default_factory=list)

    def complete(self) -> int:
        meta = self.out / "meta"
        if not self.indices:
            return len(list(meta.glob("*.json"))) if meta.is_dir() else 0
        return sum((meta / f"{sample_id(i)}.json").exists() for i in self.indices)


def generate(a: argparse.Namespace, progress: Progress) -> str:
    """Check the inputs, load the model, write this process's samples; returns the summary line."""
    settings = settings_from(a)
    check_counts(a, settings)
    state = PartialState()
    shard, num_shards = shard_of(a.shard, state)
    preset = PRESETS[a.preset]
    model, scheduler = a.model or preset.model, a.scheduler or preset.scheduler
    check_scheduler(scheduler)
    tokenizer = load_tokenizer(model)
    prompts, usable = check_prompts(a, settings, tokenizer)
    known = fingerprint(settings, usable)
    if tokenizer is None and a.skip_unknown:  # which prompts stay is known once the model is loaded
        known = {"settings": known["settings"]}
    check_out(a.out, known)

    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = registry.load_pipeline(model, str(state.device), scheduler=scheduler)
    writer = DatasetWriter(a.out, pipe, registry.VOCABS[settings.vocab], prompts, settings,
                           skip_unknown=a.skip_unknown, repair=a.repair)
    if a.fast:  # after the writer has read the model's identity: the same model, faster kernels
        fast(pipe)
    progress.indices = [i for b in writer.batches(shard, num_shards) for i in b]
    start = time.perf_counter()
    done = writer.run(shard, num_shards)
    seconds = time.perf_counter() - start
    skipped = (f"{len(writer.skipped)} prompts skipped ({skipped_text(writer.skip_reasons)})"
               if writer.skipped else "0 skipped")
    line = (f"{done} samples generated, {len(progress.indices) - done} already complete, {skipped}; "
            f"{seconds:.1f} s, {done / seconds if seconds > 0 and done else 0:.2f} images/s; in {a.out}")
    state.wait_for_everyone()
    if num_shards == state.num_processes:
        if state.is_main_process:
            line += f"; {merge(a.out)} samples indexed"
        return line
    machine, machines = shard // state.num_processes, num_shards // state.num_processes
    return (f"{line}; shard {machine}/{machines}: when all {machines} shards are done, merge them: "
            f"{COMMAND} --out MERGED_FOLDER --merge {a.out} OTHER_SHARD_FOLDERS...")


def one_line(err: BaseException) -> str:
    if isinstance(err, CorruptDatasetError):
        return str(err)  # every corrupt file, one a line
    text = " ".join(str(err).split())
    return text if isinstance(err, (InputError, RuntimeError, ValueError, OSError)) and text \
        else f"{type(err).__name__}: {text}"


def exit_with(message: str, code: int) -> SystemExit:
    print(message, file=sys.stderr, flush=True)
    exc = SystemExit(message)
    exc.code = code
    return exc


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    progress = Progress(a.out)
    try:
        if a.merge is not None:
            check_shards(a.out, a.merge)
            print(f"{merge(a.out, a.merge)} samples indexed in {a.out}")
            return
        print(generate(a, progress), flush=True)
    except KeyboardInterrupt:
        if a.debug:
            raise
        done = progress.complete()
        of = f" of {len(progress.indices)}" if progress.indices else ""
        raise exit_with(f"interrupted: {done}{of} samples are complete in {a.out}; rerun the same command to "
                        "resume", EXIT_INTERRUPTED) from None
    except Exception as err:  # every error reaches the user as one line
        if a.debug:
            raise
        code = EXIT_BAD_INPUT if isinstance(err, (InputError, OtherSettingsError)) else EXIT_FAILED
        explained = (InputError, DatasetError, NoClassInPromptError, FileNotFoundError)
        hint = "" if isinstance(err, explained) else " (--debug shows the traceback)"
        raise exit_with(f"error: {one_line(err)}{hint}", code) from None


if __name__ == "__main__":
    main()
