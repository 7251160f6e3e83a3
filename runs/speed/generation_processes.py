"""One toy dataset of 64 images written by one process on 2 threads, or by two single-thread
processes, one shard each (``DatasetWriter`` shards by whole batches, so the files are the same).

    python runs/speed/generation_processes.py THREADS SHARD NUM_SHARDS OUT
    python runs/speed/generation_processes.py 2 0 1 /tmp/g1
    python runs/speed/generation_processes.py 1 0 2 /tmp/g2 & python runs/speed/generation_processes.py 1 1 2 /tmp/g2
"""
import sys
import time
from pathlib import Path

import torch

from a2m_utils import registry
from a2m_utils.dataset import DatasetWriter
from a2m_utils.toy.world import toy_prompts

registry.load_plugins()
threads, shard, num_shards, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
torch.set_num_threads(threads)
preset = registry.PRESETS["toy"]
pipe = registry.load_pipeline(preset.model, "cpu", scheduler=preset.scheduler)
writer = DatasetWriter(out, pipe, registry.VOCABS["toy"], toy_prompts(64, 0), preset.settings)
start = time.perf_counter()
writer.run(shard, num_shards, progress=False)
print(f"threads {threads} shard {shard}/{num_shards}: {time.perf_counter() - start:.1f} s", flush=True)
