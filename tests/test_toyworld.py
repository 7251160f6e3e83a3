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


def test_renderer_errors_name_the_valid_values():
    with pytest.raises(ValueError, match=r"unknown toy colour 'pink'; expected one of \['red', 'green'"):
        obj = toyworld.ToyObject("circle", "pink", 16, 16, 6, 0)
        toyworld.render(toyworld.Scene((obj,), "source", 0), 32)
    with pytest.raises(ValueError, match=r"unknown toy shape 'hexagon'; expected one of \['circle'"):
        toyworld.render(toyworld.Scene((toyworld.ToyObject("hexagon", "red", 16, 16, 6, 0),), "source", 0), 32)
    for kwargs in ({"n_objects": 7}, {"shapes": ("circle",) * 7}, {"max_objects": 0}):
        with pytest.raises(ValueError, match=r"must be 1 to 6 \(a scene's objects have distinct colours"):
            toyworld.make_sample(5, **kwargs)
    with pytest.raises(ValueError, match=r"unknown domain 'night'; expected one of \('source', 'target'\)"):
        toyworld.make_sample(5, domain="night")
    assert len(toyworld.make_sample(5, n_objects=6, size=64).scene.objects) == 6
