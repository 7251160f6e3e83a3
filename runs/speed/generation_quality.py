import time, torch, numpy as np, sys
import a2m_utils.toy
from a2m_utils.toy.pipeline import load_toy
from a2m_utils.toy.oracle import load_or_train_oracle
from a2m_utils.toy.world import TOY
from a2m_utils.toy import world as toyworld
from a2m_utils import generate, segmentation
from a2m_utils.metrics import confusion_matrix, scores
from diffusers import DDIMScheduler
torch.set_num_threads(1)
pipe = load_toy(); pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config); pipe.set_progress_bar_config(disable=True)
oracle = load_or_train_oracle()
from a2m_utils.prompts import Prompt
from a2m_utils.registry import PROMPT_SETS
print(list(PROMPT_SETS))
prompts = toyworld.toy_prompts(128, seed=123)
def run(bf16):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    labels, images = [], []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), 16):
        b = prompts[i:i+16]
        with ctx:
            t = generate(pipe, [p.text for p in b], [p.seed for p in b], steps=None, self_attention_res=16, num_inference_steps=20, guidance_scale=2.0)
        labels += [m.label for m in t.pseudo_masks(TOY, "dcrf", 0.0, 0.6)]
        images.append(t.images)
    dt = time.perf_counter() - t0
    images = np.concatenate(images); truth = segmentation.predict(oracle, images)
    return dt, scores(confusion_matrix(np.stack(labels), truth, TOY.num_classes))["miou"]
for bf in (False, True, False, True):
    print("bf16" if bf else "fp32", run(bf), flush=True)
