"""Where a run's time goes: wall and process-CPU seconds per named phase (generation, pseudo-masks,
segmenter training, ...). Time is charged to the innermost open phase, so phases never overlap.

    with phase("generation"): ...          # or, on a function: @phase("evaluation")

With the environment variable ``A2M_PHASES`` set to a file path, the totals are written there (JSON,
``{phase: {"wall_s", "cpu_s", "calls"}}``) whenever an outermost phase ends; the study's runner sets it
for each notebook and keeps the totals in its run record (``benchmarks/run_phases.py`` prints them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import write_bytes

ENV = "A2M_PHASES"
totals: dict[str, dict[str, float]] = {}
_open: list[str] = []
_mark = (0.0, 0.0)


def _charge() -> None:
    """Add the time since the last mark to the innermost open phase, and move the mark."""
    global _mark
    now = (time.perf_counter(), time.process_time())
    if _open:
        t = totals[_open[-1]]  # made by phase() when it opened
        t["wall_s"] += now[0] - _mark[0]
        t["cpu_s"] += now[1] - _mark[1]
    _mark = now


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the time spent inside to ``name`` (minus any phase opened inside it)."""
    _charge()
    _open.append(name)
    totals.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0})["calls"] += 1
    try:
        yield
    finally:
        _charge()
        _open.pop()
        if not _open and os.environ.get(ENV):
            write_bytes(Path(os.environ[ENV]), json.dumps(totals, indent=1).encode())
