"""Train several toy-model configurations side by side on one accelerator within a time budget.

Each configuration is one ``python -m a2m_utils.toy.train`` process. A short probe of all of
them together measures the seconds per step, and the number of steps is chosen so that the
cosine schedule ends inside the budget. Every run's log, command and exported model are packed
into ``<out>/<name>.tar.gz``; ``sweep.json`` records the probe and the steps chosen.

    python scripts/train_toy_sweep.py --out /tmp/sweep --budget 330 --device cuda

The ``s4-*`` configurations are fourth stages from stage 3's weights (``models/toy-t2i-stage3``); ``s4-b64``
made the committed model (``runs/toy-t2i/command.txt``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

CONFIGS = {
    "w3": ["--text-layers", "1", "--text-window", "3"],
    "w3c": ["--text-layers", "1", "--text-window", "3", "--colour-p", "0.5"],
    "full2": ["--text-layers", "2", "--text-window", "0"],
    "full2c": ["--text-layers", "2", "--text-window", "0", "--colour-p", "0.5"],
    **{f"s4-b{size}": ["--init-from", "models/toy-t2i-stage3", "--seed", str(seed), "--batch-size", str(size),
                       "--lr", lr, "--warmup", "50"]
       for seed, size, lr in [(4, 64, "2e-4"), (5, 128, "2e-4"), (6, 256, "3e-4")]},
}
PROBE_STEPS = 40


def launch(name: str, extra: list[str], steps: int, eval_every: int, n_val: int, root: Path,
           common: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "a2m_utils.toy.train", "--run", str(root / "runs" / name),
           "--out", str(root / "models" / name), "--steps", str(steps), "--eval-every", str(eval_every),
           "--n-val", str(n_val), *common, *extra]
    with open(root / f"{name}.stderr", "w") as log:  # the child keeps its own handle
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, int | None]:
    while time.time() < deadline and any(p.poll() is None for p in procs.values()):
        time.sleep(2)
    for p in procs.values():
        if p.poll() is None:
            p.kill()
    return {n: p.wait() for n, p in procs.items()}


def seconds_per_step(run: Path) -> float:
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    return last["wall_s"] / last["step"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where the packed runs and sweep.json go")
    p.add_argument("--work", type=Path, default=Path("/tmp/toy-sweep"), help="run and model folders")
    p.add_argument("--budget", type=float, required=True, help="seconds for the training runs")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--configs", nargs="+", default=["w3", "w3c", "full2", "full2c"], choices=list(CONFIGS))
    p.add_argument("--workers", type=int, default=0, help="processes rendering each run's batches")
    p.add_argument("--n-val", type=int, default=64, help="held-out images of each evaluation")
    a = p.parse_args()
    common = ["--device", a.device, "--batch-size", str(a.batch_size), "--threads", "2", "--ckpt-every", "1000",
              "--workers", str(a.workers)]
    a.out.mkdir(parents=True, exist_ok=True)
    probe = a.work / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    codes = wait_all({n: launch(n, CONFIGS[n], PROBE_STEPS, PROBE_STEPS, 8, probe, common) for n in a.configs},
                     t0 + 120)
    speed = {n: seconds_per_step(probe / "runs" / n) for n in a.configs if codes[n] == 0}
    record = {"probe_codes": codes, "seconds_per_step": speed, "budget_s": a.budget, "runs": {}}
    root = a.work / "sweep"
    root.mkdir(exist_ok=True)
    start, procs = time.time(), {}
    for n, s in speed.items():
        steps = max(100, int(0.8 * a.budget / s) // 100 * 100)
        procs[n] = launch(n, CONFIGS[n], steps, max(50, steps // 10 // 50 * 50), a.n_val, root, common)
        record["runs"][n] = {"steps": steps, "args": common + CONFIGS[n]}
    codes = wait_all(procs, start + a.budget * 1.3)
    for n, code in codes.items():
        record["runs"][n]["returncode"] = code
        with tarfile.open(a.out / f"{n}.tar.gz", "w:gz") as tar:
            for part in (*(root / "runs" / n / f for f in ("log.jsonl", "command.txt", "init.json")),
                         root / "models" / n, root / f"{n}.stderr"):
                if part.exists():
                    tar.add(part, arcname=str(part.relative_to(root)))
    (a.out / "sweep.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
