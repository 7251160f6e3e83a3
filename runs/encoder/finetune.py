"""Experiment: does a classification-pretrained encoder (the toy world's ImageNet) make the toy segmenter converge faster?"""
import sys, time, json
import numpy as np, torch, torch.nn.functional as F
import segmentation_models_pytorch as smp
from a2m_utils import segmentation
from a2m_utils.toy.world import make_sample, TOY
from a2m_utils.batches import array_batches
from a2m_utils.study.combination import Study
from a2m_utils.study import experiments

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
mode = sys.argv[2] if len(sys.argv) > 2 else "pretrain"
PRE = 9 * 10**9

def pretrain_set(n):
    imgs, ys = [], []
    for s in range(PRE, PRE + n):
        smp_ = make_sample(s, domain="target" if s % 2 else "source", max_objects=2)
        imgs.append(smp_.image)
        y = np.zeros(len(TOY.names) - 1, np.float32)
        for o in smp_.scene.objects: y[TOY.index(o.shape) - 1] = 1
        ys.append(y)
    return np.stack(imgs), np.stack(ys)

if mode == "pretrain":
    n, steps, bs = int(sys.argv[3]), int(sys.argv[4]), 64
    t0 = time.time(); X, Y = pretrain_set(n); print("render", time.time() - t0, flush=True)
    torch.manual_seed(0)
    model = segmentation.build(len(TOY.names), seed=0, **segmentation.TOY)
    enc = model.encoder
    head = torch.nn.Linear(enc.out_channels[-1], Y.shape[1])
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    g = np.random.default_rng(0)
    t0 = time.time()
    for step in range(steps):
        idx = g.integers(0, n, bs)
        x = segmentation.to_tensor(X[idx]); y = torch.from_numpy(Y[idx])
        # dihedral augmentation
        k = int(g.integers(4)); x = torch.rot90(x, k, (2, 3))
        if g.random() < 0.5: x = x.flip(3)
        with torch.autocast("cpu", torch.bfloat16):
            f = enc(x)[-1].mean((2, 3))
            logits = head(f)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if step % 200 == 0 or step == steps - 1:
            acc = ((logits.float() > 0) == (y > 0.5)).all(1).float().mean().item()
            print(step, round(loss.item(), 4), "exact", round(acc, 3), round(time.time() - t0), flush=True)
    torch.save(enc.state_dict(), f"/tmp/pre/enc_{n}_{steps}.pt")
else:
    enc_path, steps_list, seeds = sys.argv[3], [int(s) for s in sys.argv[4].split(",")], [int(s) for s in sys.argv[5].split(",")]
    lr = float(sys.argv[6]) if len(sys.argv) > 6 else 3e-3
    study = Study()
    real, val = study.real(500), study.val(500)
    data = real.arrays()
    for steps in steps_list:
        for seed in seeds:
            t0 = time.time()
            model = segmentation.build(study.num_classes, seed=seed, **segmentation.TOY)
            if enc_path != "none":
                model.encoder.load_state_dict(torch.load(enc_path))
            segmentation.train_supervised(model, array_batches(data, 32, seed), steps, lr=lr, optimizer="adam", seed=seed, desc="x")
            m = segmentation.evaluate(lambda im: segmentation.predict(model, im), *val[:2], study.num_classes)["miou"]
            print(json.dumps({"enc": enc_path, "steps": steps, "seed": seed, "lr": lr, "miou": round(m, 4), "s": round(time.time() - t0)}), flush=True)
