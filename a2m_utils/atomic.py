"""Atomic writes: a file is replaced whole or not at all, so an interrupted run leaves no half file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` through a temporary file; return its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def save_torch(obj: object, path: str | Path) -> None:
    """``torch.save`` through a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
