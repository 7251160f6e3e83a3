"""Where the default run's time goes: wall seconds per phase (generation, pseudo-masks, segmenter
training, ...) and per notebook, from run records of ``python -m a2m_utils.study.runner``, each
measured in one run (``a2m_utils.phases``). Given two records, prints both and the after/before ratios.

    python benchmarks/run_phases.py BEFORE.json [AFTER.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def by_phase(record: dict) -> dict[str, float]:
    """Wall seconds per phase, summed over the record's notebooks."""
    out: dict[str, float] = defaultdict(float)
    for nb in record["notebooks"].values():
        if "phases" not in nb:
            raise ValueError(f"a record without phase times (made before a2m_utils.phases): {record['started']}")
        for name, t in nb["phases"].items():
            out[name] += t["wall_s"]
    return dict(out)


def show(records: list[dict], labels: list[str]) -> None:
    phases = [by_phase(r) for r in records]
    names = sorted({k for p in phases for k in p}, key=lambda k: -phases[0].get(k, 0.0))
    head = "".join(f"{lab:>12}" for lab in labels) + ("   after/before" if len(records) == 2 else "")
    print(f"{'phase (wall s)':<22}{head}")
    for k in [*names, "total"]:
        vals = [sum(p.values()) if k == "total" else p.get(k, 0.0) for p in phases]
        ratio = f"{vals[1] / vals[0]:>15.2f}" if len(vals) == 2 and vals[0] else ""
        print(f"{k:<22}" + "".join(f"{v:>12.0f}" for v in vals) + ratio)
    print(f"\n{'notebook (wall s)':<22}{head}")
    for nb in sorted({n for r in records for n in r["notebooks"]}):
        vals = [r["notebooks"].get(nb, {}).get("wall_s", 0.0) for r in records]
        ratio = f"{vals[1] / vals[0]:>15.2f}" if len(vals) == 2 and vals[0] else ""
        print(f"{nb:<22}" + "".join(f"{v:>12.0f}" for v in vals) + ratio)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("records", nargs="+", type=Path, help="run records (run_<profile>.json), before then after")
    a = p.parse_args()
    if len(a.records) > 2:
        p.error("give one or two run records")
    records = [json.loads(path.read_text()) for path in a.records]
    for label, r in zip(("before", "after"), records):
        print(f"{label}: {r['profile']} started {r['started']}, {r['cpus']} CPUs, {r['wall_s']:.0f} s")
    show(records, ["before", "after"][:len(records)])


if __name__ == "__main__":
    main()
