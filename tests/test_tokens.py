import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import T5TokenizerFast

from a2m_utils.classes import VOC
from a2m_utils.tokens import ClassWordLostError, NoClassInPromptError, class_positions, map_prompts, word_forms, words
from a2m_utils.toy.pipeline import build_tokenizer
from a2m_utils.toy.world import COLOURS, TOY


def test_the_offline_clip_tokenizer_is_stable_diffusions(clip):
    """49,408 tokens, and SD 1.x's known splits of VOC's class names."""
    assert len(clip) == 49408 and clip.bos_token_id == 49406 and clip.eos_token_id == clip.pad_token_id == 49407
    for word, pieces in [("aeroplane", ["aerop", "lane</w>"]), ("tvmonitor", ["tv", "monitor</w>"]),
                         ("pottedplant", ["pot", "ted", "plant</w>"])]:
        assert clip.tokenize(word) == pieces


def test_multi_token_word_and_repeated_synonyms(clip):
    prompt = "a photo of an aeroplane and a puppy next to a dog and another puppy"
    tokens = clip.convert_ids_to_tokens(clip(prompt).input_ids)
    pos = class_positions(prompt, clip, VOC)
    assert pos == {"aeroplane": [5, 6], "dog": [9, 13, 16]}
    assert [tokens[i] for i in pos["aeroplane"] + pos["dog"]] == ["aerop", "lane</w>", "puppy</w>", "dog</w>", "puppy</w>"]


def test_longest_phrase_wins(clip):
    assert class_positions("a potted plant and a cat", clip, VOC) == {"cat": [6], "pottedplant": [2, 3]}


@pytest.mark.parametrize("prompt, expected", [
    ("A dog's bowl next to a cat on the floor.", {"cat": "cat</w>", "dog": "dog</w>"}),
    ("cats' toys and a dog's bowl", {"cat": "cats</w>", "dog": "dog</w>"}),
    ("a café with a cat", {"cat": "cat</w>"}),
    ("A MAN walking his DOG!!! ...", {"dog": "dog</w>", "person": "man</w>"}),
    ("3 sheep, 2 cows & 1 horse", {"cow": "cows</w>", "horse": "horse</w>", "sheep": "sheep</w>"}),
    ("a double-decker bus", {"bus": "double</w>decker</w>bus</w>"}),  # the synonym "double decker" and "bus"
    ('a "tv" on a desk', {"diningtable": "desk</w>", "tvmonitor": "tv</w>"}),
    ("a kitten 🐱 on a couch", {"cat": "kitten</w>", "sofa": "couch</w>"}),
    ("Airplane over the Motorcycle", {"aeroplane": "airplane</w>", "motorbike": "motorcycle</w>"}),
])
def test_every_text_the_tokenizer_accepts_maps(clip, prompt, expected):
    """Apostrophes, accents, punctuation runs, digits, hyphens, quotes, emoji and upper case: each class word's
    positions are the tokens of that word, as the tokenizer itself split the text."""
    tokens = clip.convert_ids_to_tokens(clip(prompt).input_ids)
    pos = class_positions(prompt, clip, VOC)
    assert {name: "".join(tokens[i] for i in p) for name, p in pos.items()} == expected


def test_word_positions_follow_the_tokenizer(clip):
    ws = words("An aeroplane, a dog's", clip)
    assert [(w.text, w.start, w.stop) for w in ws] == [("an", 1, 2), ("aeroplane", 2, 4), ("a", 5, 6), ("dog", 6, 7),
                                                       ("s", 7, 8)]


def t5_tokenizer() -> T5TokenizerFast:
    """A T5-style sentencepiece (Unigram) tokenizer: "▁" marks a word start, "</s>" closes, no start token."""
    pieces = ["<pad>", "</s>", "<unk>", "▁", "▁a", "▁photo", "▁of", "▁pupp", "y", "ies", "▁cat", "s", "'", "▁and",
              "▁dog", "▁bowl", "."]
    tok = Tokenizer(models.Unigram([(p, -float(len(pieces) - i)) for i, p in enumerate(pieces)], unk_id=2))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=32)


def test_sentencepiece_tokens_map_by_the_same_offsets():
    tok = t5_tokenizer()
    prompt = "A photo of puppies and a cat's bowl."
    tokens = tok.convert_ids_to_tokens(tok(prompt).input_ids)
    pos = class_positions(prompt, tok, VOC)
    assert {n: [tokens[i] for i in p] for n, p in pos.items()} == {"cat": ["▁cat"], "dog": ["▁pupp", "ies"]}
    assert tokens[-1] == "</s>" and pos["dog"][0] == 3  # no start token: the first word is position 0
    with pytest.raises(ClassWordLostError, match="does not know the class word 'horse'"):
        class_positions("a horse and a cat", tok, VOC)


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
    assert class_positions("a photo of two dogs", clip, VOC) == {"dog": [5]}  # "dogs</w>", one BPE token
    tokens = clip.convert_ids_to_tokens(clip("two puppies and a kittens").input_ids)
    pos = class_positions("two puppies and a kittens", clip, VOC)
    assert {n: [tokens[i] for i in p] for n, p in pos.items()} == {"cat": ["kittens</w>"], "dog": ["puppies</w>"]}


def test_word_forms():
    assert {"puppies", "puppys"} <= word_forms("puppy") and "boies" not in word_forms("boy")
    assert "men" in word_forms("man") and "calves" in word_forms("calf") and "buses" in word_forms("bus")
