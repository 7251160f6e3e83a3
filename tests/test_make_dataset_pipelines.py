"""``make_dataset --preset sdxl|sd3|flux --model FOLDER``: a VOC-layout dataset from a tiny pipeline of each newer
architecture, saved like the real checkpoint and loaded by folder, sampled with the preset's settings."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_mmdit, tiny_sdxl
from PIL import Image

from a2m_utils.classes import VOC
from a2m_utils.dataset import load_sample
from a2m_utils.make_dataset import main
from a2m_utils.registry import PRESETS

CAPTIONS = Path(__file__).parent / "data" / "captions_train2017.json"  # COCO's format
# The tiny SDXL at 64x64 latents, so that its first attention level is at 32x32 (the sdxl preset's self-attention);
# the tiny SD3 and Flux as built: the side of the images each pipeline draws by default.
SIDES = {"sdxl": 128, "sd3": 32, "flux": 256}


@pytest.fixture(scope="module", params=list(SIDES))
def model(request, tmp_path_factory):
    """(preset, the folder of a tiny pipeline of its architecture)."""
    d = tmp_path_factory.mktemp(f"tiny-{request.param}")
    pipe = tiny_sdxl(d / "tok", latent=64) if request.param == "sdxl" else tiny_mmdit(request.param, d / "tok")
    pipe.save_pretrained(d / "pipe")
    return request.param, d / "pipe"


def make(preset: str, folder: Path, out: Path, capsys) -> str:
    main(["--preset", preset, "--model", str(folder), "--prompts", "voc-coco", "--coco-json", str(CAPTIONS),
          "--n", "3", "--steps", "2", "--capture", "1", "--batch-size", "2", "--threads", "1", "--out", str(out)])
    return capsys.readouterr().out


def test_a_voc_layout_dataset_with_the_presets_sampling(model, tmp_path, capsys):
    preset, folder = model
    out = tmp_path / f"voc-{preset}"
    assert make(preset, folder, out, capsys).startswith("3 samples generated")
    ids = (out / "ImageSets/Segmentation/train.txt").read_text().split()
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["id"] for m in lines] == ids and len(ids) == 3
    for sid, meta in zip(ids, lines):  # PASCAL VOC's layout: images, palette masks of the prompt's classes
        image = Image.open(out / "JPEGImages" / f"{sid}.jpg")
        mask = Image.open(out / "SegmentationClass" / f"{sid}.png")
        assert image.size == mask.size == (SIDES[preset],) * 2 and mask.mode == "P"
        assert set(np.unique(np.asarray(mask))) <= {0, 255, *(VOC.index(c) for c in meta["classes"])}
        assert [step for step, _ in meta["steps_used"]] == [1] and meta["classes"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["scheduler"]["class"] == PRESETS[preset].scheduler and info["model_name"] == str(folder)
    assert info["settings"]["guidance_scale"] == PRESETS[preset].settings.guidance_scale
    sample = load_sample(out, ids[0])
    assert sample["maps"].shape[0] == len(sample["class_ids"]) and np.isfinite(sample["maps"]).all()
    if PRESETS[preset].settings.self_attention_res:  # sdxl: maps refined by self-attention at 32x32
        assert sample["refined"].shape == (len(sample["class_ids"]), 32, 32)
    assert make(preset, folder, out, capsys).startswith("0 samples generated, 3 already complete")
