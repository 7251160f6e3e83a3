import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from a2m_utils.dataset import (
    CorruptDatasetError,
    DatasetError,
    DatasetWriter,
    Settings,
    load_sample,
    merge,
    sample_id,
)
from a2m_utils.identity import model_identity, scheduler_identity
from a2m_utils.prompts import Prompt
from a2m_utils.registry import PRESETS, load_pipeline
from a2m_utils.seg_data import VOCLayout
from a2m_utils.study import experiments
from a2m_utils.tokens import ClassWordLostError, NoClassInPromptError
from a2m_utils.toy.pipeline import TOY_DEFAULT, load_toy
from a2m_utils.toy.world import TOY, toy_prompts

SETTINGS = Settings(vocab="toy", num_steps=3, guidance_scale=3.0, capture_steps=None, batch_size=2)
SCHEDULER = "DDIMScheduler"
CLI = [sys.executable, "-m", "a2m_utils.make_dataset", "--n", "10", "--steps", "3", "--batch-size", "2",
       "--threads", "1"]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(TOY_DEFAULT, scheduler=SCHEDULER)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pipe):
    root = tmp_path_factory.mktemp("ref")
    DatasetWriter(root, pipe, TOY, toy_prompts(6), SETTINGS).run(progress=False)
    merge(root)
    return root


def test_layout_reads_with_a_plain_reader(reference):
    ids = (reference / "ImageSets/Segmentation/train.txt").read_text().split()
    assert ids == [sample_id(i) for i in range(6)]
    for sid in ids:
        image = Image.open(reference / "JPEGImages" / f"{sid}.jpg")
        mask = Image.open(reference / "SegmentationClass" / f"{sid}.png")
        assert image.size == mask.size == (32, 32) and mask.mode == "P"
        meta = json.loads((reference / "meta" / f"{sid}.json").read_text())
        assert set(np.unique(np.asarray(mask))) <= {0, *(TOY.index(c) for c in meta["classes"])}
    lines = [json.loads(x) for x in (reference / "manifest.jsonl").read_text().splitlines()]
    assert [m["id"] for m in lines] == ids and lines[0]["model"] == str(TOY_DEFAULT)
    info = json.loads((reference / "dataset.json").read_text())
    assert info["model"] == model_identity(load_toy()) and info["model_name"] == str(TOY_DEFAULT)
    assert info["scheduler"]["class"] == SCHEDULER and info["settings"]["vocab"] == "toy"
    assert "model_sha256" not in info and "sampler" not in info["settings"] and "model" not in info["settings"]
    images, labels, reliable = VOCLayout(reference).arrays()  # the kit's own segmentation dataset
    assert images.shape == (6, 32, 32, 3) and labels.shape == reliable.shape == (6, 32, 32)
    s = load_sample(reference, ids[0])
    assert s["maps"].shape[0] == len(s["class_ids"]) and s["reliability"].dtype == bool


def test_same_seed_same_files(tmp_path, pipe, reference):
    DatasetWriter(tmp_path, pipe, TOY, toy_prompts(6), SETTINGS).run(progress=False)
    merge(tmp_path)
    assert tree(tmp_path) == tree(reference)


def test_two_shards_merged_equal_one_process(tmp_path, pipe, reference):
    a, b = tmp_path / "a", tmp_path / "b"
    for root, shard in ((a, 0), (b, 1)):
        DatasetWriter(root, pipe, TOY, toy_prompts(6), SETTINGS).run(shard, 2, progress=False)
    with pytest.raises(DatasetError, match="missing or incomplete"):
        merge(a)
    assert merge(a, [b]) == 6
    assert tree(a) == tree(reference)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run([*CLI, "--out", str(full)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*CLI, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((killed / "meta").glob("*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((killed / "meta").glob("*.json")))
    assert 3 <= done_before < 10, "the run was not interrupted part way"
    assert not (killed / "manifest.jsonl").exists()
    out = subprocess.run([*CLI, "--out", str(killed)], check=True, env=env, capture_output=True, text=True).stdout
    redone = int(out.split("samples generated")[0].split()[-1])
    assert 10 - done_before <= redone <= 10 - done_before + 1  # at most one partial batch of 2 redone
    assert tree(killed) == tree(full)


def test_prompt_naming_no_class(tmp_path, pipe):
    bad = [*toy_prompts(2), Prompt("a red hexagon", ("circle",), 5)]
    with pytest.raises(NoClassInPromptError, match="hexagon"):
        DatasetWriter(tmp_path / "x", pipe, TOY, bad, SETTINGS)
    writer = DatasetWriter(tmp_path / "y", pipe, TOY, bad, SETTINGS, skip_unknown=True)
    assert [p.text for p in writer.skipped] == ["a red hexagon"] and len(writer.prompts) == 2


def test_class_words_lost_to_the_tokenizer_are_an_error_or_counted(tmp_path, pipe):
    long = Prompt("a photo of " + ", ".join(["a red circle"] * 10), ("circle",), 7)
    lost = [Prompt("two circles", ("circle",), 5), long, Prompt("a red hexagon", ("circle",), 6)]
    with pytest.raises(ClassWordLostError, match="'two circles': the tokenizer does not know the class word 'circles'"):
        DatasetWriter(tmp_path / "x", pipe, TOY, [*toy_prompts(2), *lost], SETTINGS)
    assert not (tmp_path / "x").exists()
    writer = DatasetWriter(tmp_path / "y", pipe, TOY, [*toy_prompts(2), *lost], SETTINGS, skip_unknown=True)
    assert writer.skipped == lost and len(writer.prompts) == 2
    assert writer.skip_reasons == {"with a class word the tokenizer does not know": 1, "naming no class": 1,
                                   "with a class word past the token limit": 1}
    with pytest.raises(DatasetError, match="no prompt to generate: 3 given, 1 with a class word the tokenizer"):
        DatasetWriter(tmp_path / "z", pipe, TOY, lost, SETTINGS, skip_unknown=True)
    with pytest.raises(DatasetError, match="no prompt to generate: 0 given"):
        DatasetWriter(tmp_path / "z", pipe, TOY, [], SETTINGS)
    assert not (tmp_path / "z").exists()  # nothing claimed


def test_folder_made_with_other_settings_is_refused(tmp_path, pipe):
    DatasetWriter(tmp_path, pipe, TOY, toy_prompts(2), SETTINGS)
    with pytest.raises(DatasetError, match="other settings"):
        DatasetWriter(tmp_path, pipe, TOY, toy_prompts(2), replace(SETTINGS, beta=0.0))
    with pytest.raises(DatasetError, match="other settings or prompts"):
        DatasetWriter(tmp_path, pipe, TOY, toy_prompts(3), SETTINGS)


def test_corrupt_file_found_on_resume(tmp_path, pipe, reference):
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    image = tmp_path / "JPEGImages" / f"{sample_id(3)}.jpg"
    image.write_bytes(image.read_bytes()[:100])
    label = tmp_path / "SegmentationClass" / f"{sample_id(0)}.png"
    label.unlink()
    writer = DatasetWriter(tmp_path, pipe, TOY, toy_prompts(6), SETTINGS)
    with pytest.raises(CorruptDatasetError, match="2 files of .* are missing or corrupt") as err:
        writer.run(progress=False)
    assert err.value.files == [label, image] and "repair" in str(err.value).splitlines()[-1]
    repaired = DatasetWriter(tmp_path, pipe, TOY, toy_prompts(6), SETTINGS, repair=True)
    assert repaired.run(progress=False) == 4  # the batches holding samples 0 and 3
    assert tree(tmp_path) == tree(reference)


def test_missing_and_unreadable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a toy pipeline folder"):
        load_toy(tmp_path / "nowhere")
    shutil.copytree(TOY_DEFAULT, tmp_path / "toy")
    weights = next((tmp_path / "toy" / "unet").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(OSError, match="Unable to load weights"):
        load_toy(tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match="cannot load the pipeline"):
        load_pipeline(tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match="cannot load the pipeline"):
        load_pipeline(tmp_path / "no-sd")


def test_shard_spec_is_checked(tmp_path):
    from a2m_utils.make_dataset import main

    for shard in ("2of4", "4/4", "-1/2"):
        with pytest.raises(SystemExit, match="i/n|0 <= i < n") as err:
            main(["--out", str(tmp_path / "unused"), f"--shard={shard}", "--n", "1"])
        assert err.value.code == 2
    assert not (tmp_path / "unused").exists()


def test_post_processing_redone_from_stored_maps(reference, pipe, tmp_path):
    stored = np.stack([np.asarray(Image.open(p)) for p in sorted((reference / "SegmentationClass").glob("*.png"))])
    assert np.array_equal(experiments.relabel(reference, "dcrf", beta=SETTINGS.beta), stored)
    assert not np.array_equal(experiments.relabel(reference, "threshold", theta=64), stored)
    with pytest.raises(ValueError, match="without self-attention"):
        experiments.relabel(reference, "refine")
    refined = replace(SETTINGS, self_attention_res=16)
    DatasetWriter(tmp_path, pipe, TOY, toy_prompts(2), refined).run(progress=False)
    merge(tmp_path)
    labels = experiments.relabel(tmp_path, "refine")
    assert labels.shape == (2, 32, 32) and set(np.unique(labels)) <= {0, 255, *range(1, TOY.num_classes)}


def test_pseudo_mask_scores_skip_ignored_pixels():
    truth = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 255], [1, 0]], dtype=np.uint8)
    s = experiments.pseudo_mask_scores(pred, truth, 2)
    assert s["labelled"] == 0.75 and s["pixel_acc"] == pytest.approx(2 / 3)


def test_folder_made_by_another_model_is_refused(tmp_path, pipe):
    DatasetWriter(tmp_path, pipe, TOY, toy_prompts(2), SETTINGS)
    other = load_pipeline(TOY_DEFAULT.parent / "toy-t2i-stage3", scheduler=SCHEDULER)
    with pytest.raises(DatasetError, match="another model"):
        DatasetWriter(tmp_path, other, TOY, toy_prompts(2), SETTINGS)
    ddpm = load_pipeline(TOY_DEFAULT, scheduler="DDPMScheduler")
    with pytest.raises(DatasetError, match="scheduler.class: stored 'DDIMScheduler', requested 'DDPMScheduler'"):
        DatasetWriter(tmp_path, ddpm, TOY, toy_prompts(2), SETTINGS)


def test_the_same_model_by_another_path_is_accepted(tmp_path, pipe, monkeypatch):
    """dataset.json's model_name is informational: the identity of the weights decides."""
    DatasetWriter(tmp_path, pipe, TOY, toy_prompts(2), SETTINGS)
    monkeypatch.chdir(TOY_DEFAULT.parents[1])
    same = load_pipeline("models/toy-t2i", scheduler=SCHEDULER)
    assert same.name_or_path != pipe.name_or_path
    DatasetWriter(tmp_path, same, TOY, toy_prompts(2), SETTINGS)
    assert json.loads((tmp_path / "dataset.json").read_text())["scheduler"] == scheduler_identity(pipe.scheduler)


def test_presets_and_the_command_line_settings():
    from a2m_utils.make_dataset import parse, settings_from

    toy, sd = PRESETS["toy"], PRESETS["sd"]
    assert toy.model == str(TOY_DEFAULT) and toy.scheduler == SCHEDULER and toy.settings.vocab == "toy"
    assert sd.scheduler == "DDPMScheduler" and sd.settings.num_steps == 100 and sd.settings.capture_steps == (50,)
    a = parse(["--out", "x", "--steps", "3", "--capture", "1:3", "--scheduler", "DDPMScheduler"])
    assert a.preset == "toy" and a.scheduler == "DDPMScheduler" and a.model is None
    assert settings_from(a) == replace(toy.settings, num_steps=3, capture_steps=(1, 2))


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux"])
def test_presets_capture_the_middle_of_their_schedule(name):
    """The paper's step 50 of 100, scaled to each model card's schedule; schedulers are diffusers classes."""
    import diffusers

    preset = PRESETS[name]
    assert preset.settings.capture_steps == (preset.settings.num_steps // 2,) and preset.settings.vocab == "voc"
    assert issubclass(getattr(diffusers, preset.scheduler), diffusers.SchedulerMixin)
