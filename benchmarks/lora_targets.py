"""Can a LoRA teach the toy model notebook 05's target look (Table 4, Fig. 6)? One line per run: the layers it
adapts, its size and training, the look of 32 images drawn with the domain token against the target set's
(``readings.look``: brightness and texture), how many keep every prompted class (the oracle), and the final
DreamBooth loss. ``benchmarks/results/lora_targets.txt`` holds the lines of the runs quoted in docs/experiments.md.

    python benchmarks/lora_targets.py to_k,to_q,to_v,to_out.0 300 1e-3 4      # notebook 05's LoRA
    python benchmarks/lora_targets.py to_k,to_q,to_v,to_out.0,conv1,conv2 300 1e-3 4
"""

import argparse
import tempfile
import time

import numpy as np

from a2m_utils import generate, lora
from a2m_utils.study import readings
from a2m_utils.study.combination import Study


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("targets", help="comma-separated module names of the U-Net to adapt (peft target_modules)")
    p.add_argument("steps", type=int)
    p.add_argument("lr", type=float)
    p.add_argument("rank", type=int)
    a = p.parse_args()
    study = Study(preset="toy", train_set="toy-target", val_set="toy-target")
    target = study.real(256).arrays()[0]
    pipe = study.pipeline()
    lora.UNET_TARGETS[:] = a.targets.split(",")  # add_lora adapts the modules this list names
    lora.add_lora(pipe, rank=a.rank, alpha=a.rank, seed=0)
    size = sum(v.numel() for v in lora.lora_parameters(pipe).values())
    t0 = time.time()
    with tempfile.TemporaryDirectory() as run_dir:
        losses = lora.train_lora(pipe, target, "in sks world", run_dir, steps=a.steps, lr=a.lr, batch_size=8)
    prompts = study.prompt_list(32, target=True)
    drawn = generate(pipe, [q.text for q in prompts], [q.seed for q in prompts], num_inference_steps=14,
                     guidance_scale=2.0)
    kept = sum(all(study.vocab.index(c) in np.unique(m) for c in q.classes)
               for m, q in zip(study.oracle_masks(drawn.images), prompts))
    print(a.targets.split(","), a.steps, a.lr, a.rank, f"params {size}", f"{time.time() - t0:.0f}s",
          "look", readings.look(drawn.images), "target", readings.look(target[:64]),
          f"all classes found {kept}/32", f"loss end {np.mean(losses[-20:]):.4f}")


if __name__ == "__main__":
    main()
