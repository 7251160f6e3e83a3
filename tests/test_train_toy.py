import json

import pytest
import torch

from a2m_utils.latents import embed
from a2m_utils.toy.pipeline import load_toy
from a2m_utils.toy.train import Trainer, batch


def make(tmp_path, name, steps=4):
    return Trainer(tmp_path / name, tmp_path / f"{name}-model", steps=steps, seed=3, batch_size=2, lr=1e-3,
                   p_uncond=0.5, ema_decay=0.9, warmup=1)


def test_batches_are_fixed_by_seed_and_step():
    a, b = batch(0, 5, 4, 0.5), batch(0, 5, 4, 0.5)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], batch(0, 6, 4, 0.5)[0])


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = make(tmp_path, "a")
    straight.fit(eval_every=100, ckpt_every=100, n_val=2)
    interrupted = make(tmp_path, "b")
    interrupted.fit(eval_every=100, ckpt_every=100, n_val=2, stop_after=2)
    with (tmp_path / "b" / "log.jsonl").open("a") as f:  # a record written after the checkpoint, then a crash
        f.write(json.dumps({"step": 3, "loss": 1.0, "wall_s": 9.0}) + "\n")
    resumed = make(tmp_path, "b")
    assert resumed.step == 2
    resumed.fit(eval_every=100, ckpt_every=100, n_val=2)
    for k, v in straight.model.unet.state_dict().items():
        assert torch.equal(v, resumed.model.unet.state_dict()[k]), k
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4] and "val_miou" in log[-1]
    assert log[-1]["wall_s"] >= interrupted.wall_s > 0


def test_batches_rendered_by_workers_train_the_same_weights(tmp_path):
    inline, parallel = make(tmp_path, "w0", steps=3), make(tmp_path, "w2", steps=3)
    inline.fit(eval_every=100, ckpt_every=100, n_val=2)
    parallel.fit(eval_every=100, ckpt_every=100, n_val=2, workers=2)
    assert parallel.step == 3
    for k, v in inline.model.unet.state_dict().items():
        assert torch.equal(v, parallel.model.unet.state_dict()[k]), k


def test_fit_past_the_pause_step_trains_nothing(tmp_path):
    t = make(tmp_path, "p", steps=4)
    t.fit(eval_every=100, ckpt_every=100, n_val=2, stop_after=2)
    before = {k: v.clone() for k, v in t.model.unet.state_dict().items()}
    t.fit(eval_every=100, ckpt_every=100, n_val=2, stop_after=1)
    assert t.step == 2
    for k, v in before.items():
        assert torch.equal(v, t.model.unet.state_dict()[k]), k


def test_export_loads_and_resume_checks_settings(tmp_path):
    t = make(tmp_path, "c", steps=1)
    t.fit(eval_every=1, ckpt_every=1, n_val=2)
    model = load_toy(tmp_path / "c-model")
    assert json.loads((tmp_path / "c-model" / "training.json").read_text())["step"] == 1
    assert embed(model, ["a red circle"]).shape[:2] == (1, 24)
    with pytest.raises(ValueError, match="was made with"):
        make(tmp_path, "c", steps=2)
    with pytest.raises(FileExistsError, match="holds a model exported by another run"):
        Trainer(tmp_path / "other", tmp_path / "c-model", steps=3, seed=3, batch_size=2, lr=1e-3,
                p_uncond=0.5, ema_decay=0.9, warmup=1)
    with pytest.raises(FileNotFoundError, match="not a toy pipeline folder"):
        load_toy(tmp_path)


def test_second_stage_starts_from_a_checkpoint_and_logs_continue(tmp_path):
    from a2m_utils.toy.train import training_log

    first = make(tmp_path, "s1", steps=2)
    first.fit(eval_every=100, ckpt_every=1, n_val=2)
    second = Trainer(tmp_path / "s2", tmp_path / "s2-model", steps=1, seed=4, batch_size=2, lr=1e-4,
                     p_uncond=0.5, ema_decay=0.9, warmup=0, init_from=tmp_path / "s1" / "checkpoint.pt")
    for k, v in first.model.unet.state_dict().items():
        assert torch.equal(v, second.model.unet.state_dict()[k]), k
    second.fit(eval_every=100, ckpt_every=1, n_val=2)
    log = training_log([tmp_path / "s1", tmp_path / "s2"])
    assert [r["step"] for r in log] == [2, 3]
    assert log[1]["wall_s"] >= log[0]["wall_s"]


def test_second_stage_from_an_exported_model_folder(tmp_path):
    first = make(tmp_path, "f1", steps=1)
    first.fit(eval_every=100, ckpt_every=1, n_val=2)  # the last step is evaluated and exported
    second = Trainer(tmp_path / "f2", tmp_path / "f2-model", steps=1, seed=4, batch_size=2, lr=1e-4,
                     p_uncond=0.5, ema_decay=0.9, warmup=0, init_from=tmp_path / "f1-model")
    exported = load_toy(tmp_path / "f1-model")
    for k, v in exported.unet.state_dict().items():
        assert torch.equal(v, second.model.unet.state_dict()[k]), k
    assert json.loads((tmp_path / "f2" / "init.json").read_text())["step"] == 1


def test_colour_p_drops_colour_words_from_training_captions():
    from a2m_utils.toy.world import COLOURS

    plain, without = batch(0, 5, 8, 0.0), batch(0, 5, 8, 0.0, colour_p=0.0)
    assert torch.equal(plain[0], without[0])
    assert all(any(c in caption.split() for c in COLOURS) for caption in plain[1])
    assert not any(c in caption.split() for caption in without[1] for c in COLOURS)


def test_stages_name_each_run_with_its_device_and_start(tmp_path):
    from a2m_utils.toy.train import stages

    for name, step, command in [("s1", 3000, "python -m a2m_utils.toy.train --device cuda --steps 5000"),
                                ("s2", 600, "python -m a2m_utils.toy.train --steps 600")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text(json.dumps({"step": step, "loss": 0.1, "wall_s": 60.0 * step}) + "\n")
        (tmp_path / name / "command.txt").write_text(f"2026-11-26T00:00:00 {command}\n# a comment\n")
    (tmp_path / "s2" / "init.json").write_text(json.dumps({"init_from": "models/s1", "step": 3000}))
    s1, s2 = stages([tmp_path / "s1", tmp_path / "s2"])
    assert (s1["device"], s1["steps"], s1["wall_minutes"], s1["init_step"]) == ("cuda", 3000, 3000.0, None)
    assert (s2["device"], s2["steps"], s2["init_from"], s2["init_step"]) == ("cpu", 600, "models/s1", 3000)


def test_three_stage_log_counts_steps_from_where_each_stage_started(tmp_path):
    from a2m_utils.toy.train import stage_offsets, training_log

    for name, steps, init in [("s1", [100, 200, 300], None), ("s2", [50, 100], 200), ("s3", [10, 20], 50)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text(
            "".join(json.dumps({"step": s, "loss": 0.1, "wall_s": float(s)}) + "\n" for s in steps))
        if init is not None:
            (tmp_path / name / "init.json").write_text(json.dumps({"init_from": "x", "step": init}))
    runs = [tmp_path / n for n in ("s1", "s2", "s3")]
    assert stage_offsets(runs) == [0, 200, 250]
    log = training_log(runs)
    assert [r["step"] for r in log] == [100, 200, 250, 260, 270]  # s1's step 300 and s2's step 100 were not used
    assert [r["wall_s"] for r in log] == [100.0, 200.0, 250.0, 260.0, 270.0]
