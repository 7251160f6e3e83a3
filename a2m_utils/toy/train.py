"""Train the toy text-to-image model from scratch on rendered toy-world images.

DDPM epsilon loss, AdamW with warm-up and cosine decay, EMA of the weights, caption
dropout (the empty prompt, for classifier-free guidance and null-text inversion).
Every batch is rendered from seeds fixed by (seed, step), and every random draw of a
step comes from a generator seeded the same way, so a run resumed from a checkpoint
continues exactly as an uninterrupted one. Held-out attention quality
(``attention_probe``) is logged as training goes; the EMA weights that score best are
exported as the model folder.

    python -m a2m_utils.toy.train --out models/toy-t2i --run data/toy-t2i --steps 2400 --threads 2

The committed model's four stages: ``models/toy-t2i/stages/`` (each folder's ``command.txt`` and
``log.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from .. import checkpoint
from ..images import to_tensor
from ..latents import embed
from . import world as toyworld
from .pipeline import load_toy, new_toy
from .probe import rendered_attention_variants

TOY_RUNS = [Path(__file__).resolve().parents[2] / "models" / "toy-t2i" / "stages" / name
            for name in ("toy-t2i-stage1", "toy-t2i-stage2", "toy-t2i-stage3", "toy-t2i")]
VAL_SEED0 = 10**9  # held-out seeds for model selection; training seeds stay below
TRAIN_SEED_STRIDE = 10**6


def batch(seed: int, step: int, size: int, p_uncond: float, colour_p: float = 1.0) -> tuple[torch.Tensor, list[str]]:
    """The rendered images and captions of one step; captions dropped to "" with ``p_uncond``;
    below ``colour_p`` = 1 they are redrawn, naming each object's colour with that chance."""
    rng = np.random.default_rng([seed, step])
    base = seed * TRAIN_SEED_STRIDE + step * size
    samples = [toyworld.make_sample(base + i) for i in range(size)]
    if colour_p < 1.0:
        samples = [replace(s, caption=toyworld.caption(s.scene, rng, colour_p=colour_p)) for s in samples]
    captions = [("" if rng.random() < p_uncond else s.caption) for s in samples]
    return to_tensor(np.stack([s.image for s in samples])), captions


class _Batches(torch.utils.data.Dataset):
    """The batches of steps ``start``, ``start + 1``, ... (``batch``), for rendering in worker processes."""

    def __init__(self, seed: int, start: int, stop: int, size: int, p_uncond: float, colour_p: float) -> None:
        self.seed, self.start, self.stop, self.args = seed, start, stop, (size, p_uncond, colour_p)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)  # none when training is already past ``stop``

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[str]]:
        return batch(self.seed, self.start + i, *self.args)


class Trainer:
    def __init__(self, run: Path, out: Path, steps: int, seed: int, batch_size: int, lr: float,
                 p_uncond: float, ema_decay: float, warmup: int, init_from: Path | None = None,
                 text_layers: int = 1, text_window: int | None = 3, device: str = "cpu",
                 colour_p: float = 1.0) -> None:
        self.run, self.out, self.steps, self.seed, self.device = run, out, steps, seed, torch.device(device)
        self.batch_size, self.p_uncond, self.init_from = batch_size, p_uncond, init_from
        self.text_layers, self.text_window, self.colour_p = text_layers, text_window, colour_p
        self.model = new_toy(seed, text_layers, text_window)
        self.model.unet.to(self.device)
        self.model.text_encoder.to(self.device)
        if init_from is not None:
            run.mkdir(parents=True, exist_ok=True)
            step = self._init_weights(init_from)
            (run / "init.json").write_text(json.dumps({"init_from": str(init_from), "step": step}) + "\n")
        self.params = [*self.model.unet.parameters(), *self.model.text_encoder.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=1e-2)
        self.sched = get_cosine_schedule_with_warmup(self.opt, warmup, steps)
        self.ema = EMAModel(self.params, decay=ema_decay)
        self.step, self.best, self.wall_s = 0, -1.0, 0.0
        run.mkdir(parents=True, exist_ok=True)
        self.ckpt, self.log = run / "checkpoint.pt", run / "log.jsonl"
        if self.ckpt.exists():
            self._resume()
        self._check_out()

    @property
    def parts(self) -> dict:
        return {"unet": self.model.unet, "text_encoder": self.model.text_encoder, "opt": self.opt,
                "sched": self.sched, "ema": self.ema}

    def _resume(self) -> None:
        state = checkpoint.load(self.ckpt, self.parts, self.config)
        self.ema.to(self.device)
        self.step, self.best, self.wall_s = state["step"], state["best"], state.get("wall_s", 0.0)
        if self.log.exists():  # drop records written after the checkpoint, so none is duplicated
            kept = [line for line in self.log.read_text().splitlines() if json.loads(line)["step"] <= self.step]
            self.log.write_text("".join(line + "\n" for line in kept))

    def _check_out(self) -> None:
        """Refuse to overwrite a model exported by another run."""
        made = self.out / "training.json"
        if made.exists():
            other = json.loads(made.read_text())
            if {k: other.get(k) for k in self.config} != self.config:
                raise FileExistsError(f"{self.out} holds a model exported by another run "
                                      f"({ {k: other.get(k) for k in self.config} }); choose another --out")

    def _init_weights(self, source: Path) -> int:
        """Start from another run's ``checkpoint.pt`` or exported model folder; returns its step."""
        if source.is_dir():
            model = load_toy(source)
            self._load_weights({"unet": model.unet.state_dict(), "text_encoder": model.text_encoder.state_dict()})
            return json.loads((source / "training.json").read_text())["step"]
        state = torch.load(source, weights_only=False, map_location="cpu")
        self._load_weights(state)
        return state["step"]

    def _load_weights(self, state: dict) -> None:
        self.model.unet.load_state_dict(state["unet"])
        self.model.text_encoder.load_state_dict(state["text_encoder"])

    @property
    def config(self) -> dict:
        return {"steps": self.steps, "seed": self.seed, "batch_size": self.batch_size,
                "p_uncond": self.p_uncond, "lr": self.opt.defaults["lr"],
                "init_from": str(self.init_from) if self.init_from else None,
                "text_layers": self.text_layers, "text_window": self.text_window, "colour_p": self.colour_p}

    def checkpoint(self) -> None:
        checkpoint.save(self.ckpt, self.parts, self.config, step=self.step, best=self.best, wall_s=self.wall_s)

    def batches(self, stop: int, workers: int) -> torch.utils.data.DataLoader:
        """The batches of the steps from the current one to ``stop``, rendered by ``workers``
        processes ahead of training (0: in this process); the same batches for any ``workers``."""
        steps = _Batches(self.seed, self.step, stop, self.batch_size, self.p_uncond, self.colour_p)
        return torch.utils.data.DataLoader(steps, batch_size=None, num_workers=workers,
                                           prefetch_factor=4 if workers else None)

    def train_step(self, x0: torch.Tensor, captions: list[str]) -> float:
        gen = torch.Generator().manual_seed(self.seed * TRAIN_SEED_STRIDE + self.step)
        noise = torch.randn(x0.shape, generator=gen)  # drawn on the CPU: the same draws on any device
        t = torch.randint(0, self.model.scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
        x0, noise, t = x0.to(self.device), noise.to(self.device), t.to(self.device)
        pred = self.model.unet(self.model.scheduler.add_noise(x0, noise, t), t, embed(self.model, captions)).sample
        loss = F.mse_loss(pred, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.sched.step()
        self.ema.step(self.params)
        self.step += 1
        return loss.item()

    def evaluate(self, n_images: int) -> dict:
        """Held-out attention mIoU of the EMA weights; exports them when they are the best so far."""
        self.ema.store(self.params)
        self.ema.copy_to(self.params)
        seeds = list(range(VAL_SEED0, VAL_SEED0 + n_images))
        with torch.no_grad():
            cls, att = rendered_attention_variants(self.model, seeds, timesteps=(300, 500)).values()
        result = {"val_miou": cls["miou"], "val_miou_attributes": att["miou"],
                  "val_iou": [round(float(v), 4) for v in cls["iou"]]}
        if cls["miou"] > self.best:
            self.best = cls["miou"]
            self.model.save_pretrained(self.out)
            (self.out / "training.json").write_text(json.dumps({**self.config, "step": self.step, **result}, indent=1))
            result["exported"] = True
        self.ema.restore(self.params)
        return result

    def fit(self, eval_every: int, ckpt_every: int, n_val: int, stop_after: int | None = None,
            workers: int = 0) -> None:
        """Train to ``steps`` (or pause after step ``stop_after``, checkpointed, to resume later),
        with the batches rendered by ``workers`` processes."""
        t0, done0, wall0 = time.time(), self.step, self.wall_s
        last = min(self.steps, stop_after or self.steps)
        bar = tqdm(total=self.steps, initial=self.step, desc="toy model", smoothing=0.05)
        with self.log.open("a") as log:
            for x0, captions in self.batches(last, workers):
                loss = self.train_step(x0, captions)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                self.wall_s = wall0 + time.time() - t0
                record = {"step": self.step, "loss": round(loss, 5), "lr": self.sched.get_last_lr()[0]}
                if self.step % eval_every == 0 or self.step == self.steps:
                    record |= self.evaluate(n_val)
                    record["images_per_s"] = (self.step - done0) * self.batch_size / (time.time() - t0)
                if self.step % ckpt_every == 0 or self.step == last or "val_miou" in record:
                    self.checkpoint()
                record["wall_s"] = round(self.wall_s, 1)
                if "val_miou" in record or self.step % 50 == 0:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
        bar.close()


def stage_offsets(runs: list[Path]) -> list[int]:
    """Steps before each of consecutive stages: a stage started with ``--init-from`` has an
    ``init.json`` with the step, within the previous stage, of the weights it started from."""
    offsets, offset = [], 0
    for run in runs:
        if (run / "init.json").exists():
            offset += json.loads((run / "init.json").read_text())["step"]
        offsets.append(offset)
    return offsets


def training_log(runs: list[Path]) -> list[dict]:
    """The logs of consecutive stages as one record: a later stage's steps and wall time continue
    from the step it started from, and the earlier stage's records past that step are dropped."""
    log: list[dict] = []
    for run, offset in zip(runs, stage_offsets(runs), strict=True):
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        if (run / "init.json").exists():
            log = [r for r in log if r["step"] <= offset]
            wall0 = log[-1]["wall_s"] if log else 0.0
            records = [r | {"step": r["step"] + offset, "wall_s": r["wall_s"] + wall0} for r in records]
        log += records
    return log


def stages(runs: list[Path]) -> list[dict]:
    """One line per training stage: its steps, wall time, device (from its command) and start."""
    out = []
    for run in runs:
        last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
        words = (run / "command.txt").read_text().split("\n")[0].split() if (run / "command.txt").exists() else []
        device = words[words.index("--device") + 1] if "--device" in words else "cpu"
        init = json.loads((run / "init.json").read_text()) if (run / "init.json").exists() else {}
        out.append({"run": run.name, "steps": last["step"], "wall_minutes": round(last["wall_s"] / 60, 1),
                    "device": device, "init_from": init.get("init_from"), "init_step": init.get("step")})
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("models/toy-t2i"), help="exported model folder")
    p.add_argument("--run", type=Path, default=Path("data/toy-run"), help="checkpoint and log folder")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--p-uncond", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--text-layers", type=int, default=1, help="transformer layers of the text encoder")
    p.add_argument("--text-window", type=int, default=3,
                   help="each token attends to itself and the window-1 tokens before it (0: the whole prefix)")
    p.add_argument("--colour-p", type=float, default=1.0, help="chance that a training caption names an object's colour")
    p.add_argument("--stop-after", type=int, help="pause after this step (checkpointed; rerun to resume)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--workers", type=int, default=0, help="processes rendering batches ahead (0: none)")
    p.add_argument("--device", default="cpu", help="e.g. cuda: same draws as on the CPU, not bit-identical weights")
    p.add_argument("--init-from", type=Path, help="start from the weights of another run's checkpoint.pt or "
                   "exported model folder (a second stage with a schedule of its own)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.run.mkdir(parents=True, exist_ok=True)
    with (a.run / "command.txt").open("a") as f:
        args = " ".join(argv or sys.argv[1:])
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} python -m a2m_utils.toy.train {args}\n")
    trainer = Trainer(a.run, a.out, a.steps, a.seed, a.batch_size, a.lr, a.p_uncond, a.ema_decay, a.warmup,
                      a.init_from, a.text_layers, a.text_window or None, a.device, a.colour_p)
    trainer.fit(a.eval_every, a.ckpt_every, a.n_val, a.stop_after, a.workers)


if __name__ == "__main__":
    main()
