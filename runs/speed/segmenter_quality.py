"""python quality.py METHOD DATA STEPS SEED key=value...  -> one JSON line (mIoU on toy val 500)."""
import json, sys, time
import torch
import a2m_utils.toy  # registers the toy sets
from a2m_utils.study import experiments, segmenters
from a2m_utils.study.combination import open_set
from a2m_utils.seg_data import VOCLayout
method, data, steps, seed, *kv = sys.argv[1:]
over = {k: json.loads(v) for k, v in (x.split("=", 1) for x in kv)}
if "arch" in over: over["arch"] = tuple(over["arch"].items())
threads = over.pop("threads", 2); torch.set_num_threads(threads)
cfg = segmenters.SegConfig(steps=int(steps), **over)
train = open_set("toy", "train") if data == "real" else VOCLayout(data)
val = open_set("toy", "val").arrays()
t0 = time.process_time(); w0 = time.perf_counter()
f = segmenters.fit(method, train, 6, int(seed), cfg, cache=None)
cpu, wall = time.process_time() - t0, time.perf_counter() - w0
r = experiments.score(f, val[0], val[1], 6)
print(json.dumps({"method": method, "data": data, "steps": int(steps), "seed": int(seed), "over": kv, "threads": threads,
                  "mIoU": round(r["miou"], 4), "cpu_s": round(cpu), "wall_s": round(wall)}), flush=True)
