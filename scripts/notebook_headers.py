"""Refresh the last paragraph of each notebook's header from a run record: its run time on this
profile's machine and the link to its executed copy (and, in the executed copy, back to the clean
notebook). Markdown only: no code or output changes.

    python scripts/notebook_headers.py [results/run_toy.json]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
GPU = "on a GPU: see [the Stable Diffusion profiles]({up}docs/stable_diffusion.md#profiles-and-costs)"


def duration(seconds: float) -> str:
    return f"about {seconds / 60:.0f} minutes" if seconds >= 90 else f"about {seconds:.0f} seconds"


def header(source: str, paragraph: str) -> str:
    """``source`` with its trailing "**Run time:**" paragraph replaced by ``paragraph``."""
    return re.sub(r"\n\n\*\*Run time:\*\*.*\Z", "", source, flags=re.S) + "\n\n" + paragraph


def main(record: Path) -> None:
    run = json.loads(record.read_text())
    for name, r in run["notebooks"].items():
        cores = f"{run['cpus']} CPU cores"
        time = f"**Run time:** {duration(r['wall_s'])} on {cores} with the `toy` profile ({record.name})"
        clean = REPO / "notebooks" / f"{name}.ipynb"
        executed = record.parent / "notebooks" / f"{name}.ipynb"
        for path, extra in [(clean, f"; {GPU.format(up='../')}. Read it with its outputs, without running: "
                                    f"[{executed.relative_to(REPO)}](../{executed.relative_to(REPO)})."),
                            (executed, f"; {GPU.format(up='../../')}. This is the executed copy of "
                                       f"[notebooks/{name}.ipynb](../../notebooks/{name}.ipynb).")]:
            nb = nbformat.read(path, as_version=4)
            nb.cells[0].source = header(nb.cells[0].source, time + extra)
            nbformat.write(nb, path)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "results" / "run_toy.json").resolve())
