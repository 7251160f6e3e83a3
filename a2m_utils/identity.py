"""Which model made a dataset, in milliseconds: a pipeline's identity for caches and manifests.

For each component: its class and config, and for a model its weight files (safetensors
header, size, and a sample of 64 evenly spaced 4 KiB blocks, since two trainings of one
architecture share header and size) in the folder it was loaded from; a model built in memory
is hashed whole. LoRA adapters (peft) are hashed whole: they are small. So two paths to one
folder give one identity, and Stable Diffusion (2 GB) costs a few MB of reads, not a full hash.
Weights changed in memory after loading, other than adapters, are not seen.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

BLOCKS, BLOCK = 64, 4096


def file_identity(path: Path) -> str:
    """sha256 of a weight file's size, safetensors header and sampled blocks."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        if path.suffix == ".safetensors":
            (n,) = struct.unpack("<Q", f.read(8))
            h.update(f.read(n))
        for k in range(BLOCKS):
            f.seek(k * max(size - BLOCK, 0) // (BLOCKS - 1))
            h.update(f.read(BLOCK))
    return h.hexdigest()


def _source(module) -> Path | None:
    """The folder a diffusers or transformers model was loaded from, if it is on disk."""
    config = getattr(module, "config", None)
    name = getattr(module, "name_or_path", None) or (config.get("_name_or_path") if isinstance(config, dict) else None)
    return Path(name) if name and Path(name).is_dir() else None


def _weights(module: torch.nn.Module) -> dict:
    adapters = {k: v for k, v in module.state_dict().items() if "lora_" in k}
    base = {k: v for k, v in module.state_dict().items() if "lora_" not in k}
    folder = _source(module)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")) if folder else []
    out = {"files": [file_identity(p) for p in files]} if files else {"tensors": tensor_digest(base)}
    return out | ({"adapters": tensor_digest(adapters)} if adapters else {})


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _config(component) -> dict:
    config = getattr(component, "config", None)
    if config is None:
        return {}
    items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in items.items() if k not in ("_name_or_path", "_diffusers_version", "transformers_version",
                                                        "_commit_hash", "dtype", "torch_dtype")}


def model_identity(pipe) -> str:
    """sha256 identifying a pipeline's components and weights (see the module docstring)."""
    parts = {}
    for name, component in sorted(pipe.components.items()):
        if component is None or name in ("scheduler", "safety_checker", "feature_extractor", "image_encoder"):
            continue
        part = {"class": type(component).__name__, "config": _config(component)}
        if isinstance(component, torch.nn.Module):
            part |= _weights(component)
        elif hasattr(component, "get_vocab"):
            part["vocab"] = hashlib.sha256(json.dumps(component.get_vocab(), sort_keys=True).encode()).hexdigest()
        parts[name] = part
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def scheduler_identity(scheduler) -> dict:
    """A scheduler's class and config, as stored with a dataset."""
    return {"class": type(scheduler).__name__, "config": _config(scheduler)}
