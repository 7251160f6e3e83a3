"""Resumable training: one checkpoint format for every loop of the kit (segmenters, BECO, LoRA, the
toy model). A checkpoint holds the ``state_dict`` of each part (models, optimiser, schedule, EMA)
under its name, the ``config`` it was made with, and the loop's own state (step, history)."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import save_torch


def save(path: Path, parts: dict, config: dict, **state) -> None:
    """Atomically write the parts' state dicts, ``config`` and ``state``."""
    save_torch({**{k: v.state_dict() for k, v in parts.items()}, "config": config, **state}, path)


def load(path: Path | None, parts: dict, config: dict) -> dict | None:
    """Load the checkpoint at ``path`` into ``parts`` and return its loop state, or None when there is
    none. A checkpoint made with another ``config`` raises ValueError naming the keys that differ."""
    if path is None or not Path(path).exists():
        return None
    stored = torch.load(path, map_location="cpu", weights_only=False)
    differ = sorted(k for k in {*config, *stored["config"]} if stored["config"].get(k) != config.get(k))
    if differ:
        raise ValueError(f"{path} was made with other settings ({', '.join(differ)} differ); "
                         "delete it or use another run folder")
    for name, part in parts.items():
        part.load_state_dict(stored[name])
    return {k: v for k, v in stored.items() if k not in parts and k != "config"}


def step_of(path: Path) -> int:
    """The step the checkpoint at ``path`` reached (0 when there is none)."""
    return torch.load(path, map_location="cpu", weights_only=False)["step"] if Path(path).exists() else 0


class Tensors:
    """Named tensors (e.g. LoRA weights) as a checkpoint part: saved as copies, loaded in place."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: t.detach().clone() for k, t in self.tensors.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, t in self.tensors.items():
            t.copy_(state[k])
