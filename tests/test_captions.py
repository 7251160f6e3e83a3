"""The paper's Table 1 prompt set on its real inputs: COCO captions as distributed (a fixture in the exact
shape of ``captions_train2017.json``) through Stable Diffusion's own CLIP tokenizer."""

import json
import re
from pathlib import Path

import pytest

from a2m_utils.classes import VOC
from a2m_utils.make_dataset import main
from a2m_utils.prompts import coco_captions
from a2m_utils.sd import clip_tokenizer, random_sd
from a2m_utils.seg_data import VOCLayout
from a2m_utils.tokens import class_positions

CAPTIONS = Path(__file__).parent / "data" / "captions_train2017.json"
# What the fixture holds, by construction: 332 captions, 5 of them repeats; 15 distinct ones name no VOC class;
# 3 name one only past CLIP's 77 tokens (a long market scene ending in "a dog.").
DISTINCT, NAMING_NONE, PAST_LIMIT = 327, 15, 3


def test_the_fixture_has_the_shape_and_the_text_of_coco_captions():
    data = json.loads(CAPTIONS.read_text())
    assert list(data) == ["info", "licenses", "images", "annotations"]
    assert {"id", "file_name", "height", "width", "coco_url", "license"} <= set(data["images"][0])
    assert set(data["annotations"][0]) == {"image_id", "id", "caption"}
    assert {a["image_id"] for a in data["annotations"]} == {i["id"] for i in data["images"]}
    captions = [a["caption"] for a in data["annotations"]]
    assert len(captions) >= 300 and len(set(captions)) == DISTINCT
    share = {name: sum(bool(re.search(pattern, c)) for c in captions) / len(captions) for name, pattern in
             [("apostrophe", "'"), ("accent", "[éèêëñïç]"), ("punctuation run", r"[!?.]{2,}"), ("digit", "[0-9]"),
              ("hyphen", r"\w-\w"), ("upper-case word", r"\b[A-Z]{2,}\b")]}
    assert 0.08 <= share["apostrophe"] <= 0.2 and min(share.values()) > 0, share
    assert all(any(re.search(rf"\b{w}\b", c, re.I) for c in captions) for w in ["airplane", "motorcycle", "couch", "tv"])


def test_curation_keeps_every_distinct_caption_naming_a_class():
    prompts, counts = coco_captions(CAPTIONS, VOC)
    assert len(prompts) == DISTINCT - NAMING_NONE
    assert sum(counts.values()) == sum(len(p.classes) for p in prompts) and min(counts.values()) > 0


def test_every_curated_caption_maps_through_clips_own_tokens(clip):
    """Each class mention's positions hold tokens of the mention's own characters, for every caption the tokenizer
    keeps whole."""
    prompts, _ = coco_captions(CAPTIONS, VOC)
    mapped = 0
    for p in prompts:
        enc = clip(p.text, return_offsets_mapping=True)
        if len(enc.input_ids) > clip.model_max_length:
            continue
        positions = class_positions(p.text, clip, VOC)
        assert tuple(positions) == p.classes
        for pos in positions.values():
            spans = [enc.offset_mapping[i] for i in pos]
            assert all(re.fullmatch(r"[^\W_]+", p.text[a:b]) for a, b in spans), (p.text, spans)
        mapped += 1
    assert mapped == DISTINCT - NAMING_NONE - PAST_LIMIT


@pytest.fixture(scope="module")
def sd77(tmp_path_factory):
    """A tiny random Stable Diffusion pipeline with SD's CLIP tokenizer at its real length, 77, and 32x32 latents
    (the sd preset keeps self-attention at 32x32 latent pixels)."""
    d = tmp_path_factory.mktemp("sd77")
    random_sd(clip_tokenizer(d / "tok"), tiny=True, latent=32).save_pretrained(d / "pipe")
    return d / "pipe"


def test_make_dataset_writes_every_caption_naming_a_class_and_counts_skips_by_reason(tmp_path, capsys, sd77):
    out = tmp_path / "voc-coco"
    main(["--out", str(out), "--preset", "sd", "--model", str(sd77), "--prompts", "voc-coco", "--coco-json",
          str(CAPTIONS), "--skip-unknown", "--steps", "2", "--capture", "1", "--guidance", "1", "--batch-size", "32",
          "--method", "argmax"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    written = DISTINCT - NAMING_NONE - PAST_LIMIT
    assert line.startswith(f"{written} samples generated, 0 already complete, {PAST_LIMIT} prompts skipped "
                           f"({PAST_LIMIT} with a class word past the token limit)"), line
    assert len(VOCLayout(out)) == written
