import pytest
from conftest import clip_tokenizer
from transformers import CLIPTokenizer, CLIPTokenizerFast

from a2m_utils.classes import VOC
from a2m_utils.tokens import ClassWordLostError, NoClassInPromptError, class_positions, map_prompts, word_forms, words
from a2m_utils.toy.pipeline import build_tokenizer
from a2m_utils.toy.world import COLOURS, TOY


@pytest.fixture(scope="module", params=[CLIPTokenizer, CLIPTokenizerFast])
def clip(request, tmp_path_factory):
    return clip_tokenizer(tmp_path_factory.mktemp("clip"), request.param)


def test_clip_multi_token_word_and_repeated_synonyms(clip):
    prompt = "a photo of an aeroplane and a puppy next to a dog and another puppy"
    ids = clip(prompt).input_ids
    tokens = clip.convert_ids_to_tokens(ids)
    assert tokens[5:7] == ["aero", "plane</w>"]  # the multi-token class word
    pos = class_positions(prompt, clip, VOC)
    assert pos == {"aeroplane": [5, 6], "dog": [9, 13, 16]}
    assert [tokens[i] for i in pos["dog"]] == ["puppy</w>", "dog</w>", "puppy</w>"]


def test_longest_phrase_wins(clip):
    pos = class_positions("a potted plant and a cat", clip, VOC)
    assert pos == {"cat": [6], "pottedplant": [2, 3]}


def test_word_positions_follow_the_tokenizer(clip):
    ws = words("an aeroplane, a dog", clip)
    assert [(w.text, w.start, w.stop) for w in ws] == [("an", 1, 2), ("aeroplane", 2, 4), (",", 4, 5),
                                                       ("a", 5, 6), ("dog", 6, 7)]


def test_toy_tokenizer_synonyms_attributes_and_background_word():
    tok = build_tokenizer()
    prompt = "a photo of a red circle and a blue disc with a background"
    ids = tok(prompt).input_ids
    pos = class_positions(prompt, tok, TOY)
    assert pos == {"circle": [6, 10]}
    assert tok.convert_ids_to_tokens([ids[6], ids[10]]) == ["circle", "disc"]
    with_colour = class_positions(prompt, tok, TOY, attributes=COLOURS)
    assert with_colour == {"circle": [5, 6, 9, 10]}


def test_plural_mentions():
    tok = build_tokenizer(["two", "red", "circles", "and", "a", "box"])
    assert class_positions("two red circles and a box", tok, TOY) == {"circle": [3], "square": [6]}


def test_prompt_naming_no_class_is_an_error_or_skipped():
    tok = build_tokenizer()
    with pytest.raises(NoClassInPromptError, match="'a photo of a red background'"):
        class_positions("a photo of a red background", tok, TOY)
    with pytest.raises(NoClassInPromptError, match=r"does not name \['star'\]"):
        class_positions("a red circle", tok, TOY, expected=["circle", "star"])
    out, skipped = map_prompts(["a red circle", "a photo of a background"], tok, TOY, skip_unknown=True)
    assert out == [{"circle": [3]}, None] and skipped == ["a photo of a background"]
    with pytest.raises(NoClassInPromptError):
        map_prompts(["a photo of a background"], tok, TOY)


def test_a_class_word_past_the_length_limit_is_an_error_or_skipped():
    tok = build_tokenizer()
    long = "a photo of " + ", ".join(["a red circle"] * 10)
    with pytest.raises(ClassWordLostError, match=r"prompt 'a photo of a red circle.*the class word 'circle' past the "
                                                 r"text encoder's limit of 24 tokens is cut off") as err:
        class_positions(long, tok, TOY)
    assert err.value.words[0] == "circle" and err.value.reason == "with a class word past the token limit"
    out, skipped = map_prompts([long, "a blue box"], tok, TOY, skip_unknown=True)
    assert out == [None, {"square": [3]}] and skipped == [long]
    # words past the limit that name no class do not matter
    tail = "a red circle with a background" + " and a background" * 8
    assert len(tok(tail).input_ids) > tok.model_max_length
    assert class_positions(tail, tok, TOY) == {"circle": [3]}


@pytest.mark.parametrize("prompt, word", [("two circles", "circles"), ("a red circles and a blue square", "circles"),
                                          ("a red box and two boxes", "boxes")])
def test_a_class_word_the_tokenizer_does_not_know_is_an_error(prompt, word):
    """The toy word-level tokenizer was not trained with plurals: "circles" is [UNK], and its map would be the
    unknown token's. The whole prompt is refused (or skipped), never labelled from [UNK]."""
    tok = build_tokenizer()
    assert tok.unk_token_id in tok(prompt).input_ids
    with pytest.raises(ClassWordLostError, match=f"prompt '{prompt}': the tokenizer does not know the class word "
                                                 f"'{word}' \\(it becomes \\[UNK\\]") as err:
        class_positions(prompt, tok, TOY)
    assert isinstance(err.value, NoClassInPromptError) and err.value.prompt == prompt
    assert err.value.reason == "with a class word the tokenizer does not know"
    assert map_prompts([prompt], tok, TOY, skip_unknown=True) == ([None], [prompt])
    # unknown words that name no class do not matter ("two")
    assert class_positions("two red circle", tok, TOY) == {"circle": [3]}


def test_plurals_the_tokenizer_knows_count_with_both_tokenizers(clip):
    tok = build_tokenizer(["two", "red", "circles", "boxes", "discs", "and", "a"])
    assert class_positions("two red circles and two boxes", tok, TOY) == {"circle": [3], "square": [6]}
    assert class_positions("two discs", tok, TOY) == {"circle": [2]}
    ids = clip("a photo of two dogs").input_ids  # BPE: "dogs" -> known sub-tokens
    pos = class_positions("a photo of two dogs", clip, VOC)
    assert list(pos) == ["dog"] and len(pos["dog"]) > 1 and pos["dog"][-1] == len(ids) - 2
    assert clip.unk_token_id not in [ids[i] for i in pos["dog"]]
    assert class_positions("two puppies and a cat", clip, VOC)["dog"]


def test_word_forms():
    assert {"puppies", "puppys"} <= word_forms("puppy") and "boies" not in word_forms("boy")
    assert "men" in word_forms("man") and "calves" in word_forms("calf") and "buses" in word_forms("bus")
