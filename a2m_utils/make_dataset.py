"""Command line for big dataset runs: one process, ``--shard i/n`` per machine, or ``accelerate launch``.

    python -m a2m_utils.make_dataset --out data/toy-2k --prompts toy --n 2000
    accelerate launch --num_processes 4 -m a2m_utils.make_dataset --out data/voc --preset sd \\
        --model CompVis/stable-diffusion-v1-4 --prompts voc-coco --coco-json captions_train2017.json
    python -m a2m_utils.make_dataset --out data/voc --merge data/voc-shard1 data/voc-shard2

Under accelerate every process takes its share of the batches (and its own GPU); with
``--shard i/n`` too, machine i's processes split that machine's share. Rerun the same
command to resume. ``--merge`` checks the shards and writes the image list and manifest.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import PartialState

from . import registry
from .dataset import DatasetWriter, Settings, merge
from .registry import PRESETS


def shard_of(text: str, state: PartialState) -> tuple[int, int]:
    """Machine shard ``i/n`` split further among this machine's accelerate processes."""
    try:
        i, n = map(int, text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise SystemExit(f"--shard {text}: need 0 <= i < n")
    return i * state.num_processes + state.process_index, n * state.num_processes


def parse(argv: list[str] | None) -> argparse.Namespace:
    registry.load_plugins()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", choices=sorted(PRESETS), default="toy")
    p.add_argument("--model", help="pipeline folder or hub id (default: the preset's)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the preset's)")
    p.add_argument("--prompts", choices=sorted(registry.PROMPT_SETS), default="toy")
    p.add_argument("--n", type=int, default=0, help="prompts (toy, cityscapes), per class (templates), at most (coco)")
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
    p.add_argument("--skip-unknown", action="store_true", help="skip (and count) prompts naming no class")
    p.add_argument("--repair", action="store_true", help="regenerate samples whose files are corrupt")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--merge", nargs="*", type=Path, help="merge these shard folders into --out and index it")
    return p.parse_args(argv)


def capture_steps(text: str | None, default):
    if text is None:
        return default
    if text == "all":
        return None
    if ":" in text:
        a, b = map(int, text.split(":"))
        return tuple(range(a, b))
    return (int(text),)


def settings_from(a: argparse.Namespace) -> Settings:
    base = PRESETS[a.preset].settings
    given = {"num_steps": a.steps, "guidance_scale": a.guidance, "method": a.method, "beta": a.beta,
             "batch_size": a.batch_size}
    return replace(base, vocab=registry.PROMPT_SETS[a.prompts][0],
                   capture_steps=capture_steps(a.capture, base.capture_steps),
                   **{k: v for k, v in given.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.merge is not None:
        print(f"{merge(a.out, a.merge)} samples indexed in {a.out}")
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    state = PartialState()
    shard, num_shards = shard_of(a.shard, state)
    preset = PRESETS[a.preset]
    pipe = registry.load_pipeline(a.model or preset.model, str(state.device), scheduler=a.scheduler or preset.scheduler)
    settings = settings_from(a)
    writer = DatasetWriter(a.out, pipe, registry.VOCABS[settings.vocab], registry.PROMPT_SETS[a.prompts][1](a),
                           settings, skip_unknown=a.skip_unknown, repair=a.repair)
    if writer.skipped:
        print(f"skipped {len(writer.skipped)} prompts naming no class, e.g. {writer.skipped[0].text!r}")
    done = writer.run(shard, num_shards)
    print(f"shard {shard}/{num_shards}: {done} samples generated; {len(writer.prompts)} in the dataset")
    state.wait_for_everyone()
    if state.is_main_process and num_shards == state.num_processes:
        print(f"{merge(a.out)} samples indexed in {a.out}")


if __name__ == "__main__":
    main()
