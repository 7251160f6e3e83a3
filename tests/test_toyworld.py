import numpy as np
import pytest

from a2m_utils.tokens import class_positions
from a2m_utils.toy import world as toyworld
from a2m_utils.toy.pipeline import MAX_TOKENS, build_tokenizer
from a2m_utils.toy.world import TOY


def test_deterministic():
    a, b = toyworld.make_sample(123), toyworld.make_sample(123)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.caption == b.caption
    c = toyworld.make_sample(124)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("domain", toyworld.DOMAINS)
def test_masks_match_pixels(domain):
    for seed in range(40):
        s = toyworld.make_sample(seed, size=32, domain=domain)
        inst = toyworld.instance_map(s.scene.objects, 32)
        for i, obj in enumerate(s.scene.objects):
            sel = inst == i + 1
            assert sel.sum() > 0
            assert (s.label[sel] == TOY.index(obj.shape)).all()
            assert (s.image[sel] == toyworld.COLOURS[obj.colour]).all()
        bg = s.label == 0
        assert bg.sum() > 0
        colours = np.array(list(toyworld.COLOURS.values()))
        assert not (s.image[bg][:, None, :] == colours[None]).all(-1).any()
        assert set(np.unique(s.label)) - {0} == {TOY.index(c) for c in s.scene.classes}


def test_every_object_stays_visible():
    for seed in range(40):
        s = toyworld.make_sample(seed, size=32)
        inst = toyworld.instance_map(s.scene.objects, 32)
        for i, obj in enumerate(s.scene.objects):
            alone = toyworld.instance_map((obj,), 32) > 0
            assert (inst == i + 1).sum() >= toyworld.MIN_VISIBLE * alone.sum()


def test_domains_look_different():
    src = np.mean([toyworld.background("source", s, 32).mean() for s in range(20)])
    tgt = np.mean([toyworld.background("target", s, 32).mean() for s in range(20)])
    assert src > 180 and tgt < 130
    with pytest.raises(ValueError, match="unknown domain"):
        toyworld.background("night", 0, 32)


def test_captions_name_their_classes_and_fit_the_tokenizer():
    tok = build_tokenizer()
    for seed in range(200):
        s = toyworld.make_sample(seed, domain="target" if seed % 5 == 0 else "source")
        ids = tok(s.caption).input_ids
        assert tok.unk_token_id not in ids and len(ids) <= MAX_TOKENS
        assert set(class_positions(s.caption, tok, TOY)) == set(s.scene.classes)
        assert (toyworld.DOMAIN_TOKEN in s.caption) == (s.scene.domain == "target")


def test_fixed_shapes():
    s = toyworld.make_sample(5, shapes=("star",))
    assert s.scene.classes == ("star",) and len(s.scene.objects) == 1
    with pytest.raises(ValueError, match="unknown toy shape"):
        toyworld.make_sample(5, shapes=("hexagon",))
