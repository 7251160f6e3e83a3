"""Atomic writes: a file is replaced whole or not at all, so an interrupted run leaves no half file, and
processes writing the same file at once (two notebooks finishing one cached dataset) never collide."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import torch


def _replace(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file of this process beside ``path``, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` through a temporary file; return its sha256."""
    _replace(path, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def save_torch(obj: object, path: str | Path) -> None:
    """``torch.save`` through a temporary file."""
    _replace(path, lambda tmp: torch.save(obj, tmp))
