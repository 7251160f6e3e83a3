"""Token-to-class mapping: the positions tau_c of Eq. 4 for any tokenizer.

Words are runs of letters or digits in the prompt as written ("A dog's bowl" -> A, dog, s, bowl;
"café" is one word), matched against class names lower-cased. A word's token positions are the
tokens whose character spans (the tokenizer's own offsets) overlap it, so the mapping holds for
whatever the tokenizer does to the text (CLIP's BPE with its pre-tokenizer and ftfy-style
fixing, T5's sentencepiece pieces), counted in the encoded sequence with its special tokens
(CLIP's start token is position 0; T5 has none).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .classes import ClassVocab

_WORD = re.compile(r"[^\W_]+")


class NoClassInPromptError(ValueError):
    """A prompt that cannot be labelled: it names no class of the vocabulary (or not the classes it
    should), or its class words are lost to the text encoder. ``reason`` says which, in a few words,
    for counting skipped prompts."""

    reason = "naming no class"

    def __init__(self, message: str, prompt: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.prompt = prompt
        if reason is not None:
            self.reason = reason


class ClassWordLostError(NoClassInPromptError):
    """A class word the text encoder never sees: the tokenizer turns it into its unknown token
    (a word-level tokenizer lacking a plural, "circles"), drops it, or it lies past the length limit.
    Its attention would be another token's, so the prompt cannot be labelled; like a prompt naming no
    class it raises, or is skipped and counted (``skip_unknown``, ``on_missing="skip"``)."""

    def __init__(self, message: str, prompt: str, words: Sequence[str], reason: str) -> None:
        super().__init__(message, prompt, reason)
        self.words = tuple(words)


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # first token position in the encoded sequence (CLIP's start token is position 0)
    stop: int
    ids: tuple[int, ...] = ()  # its token ids


@lru_cache(maxsize=8)
def _backend(tokenizer):
    """A ``tokenizers.Tokenizer`` with offsets for a tokenizer without them (transformers' slow classes)."""
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    return convert_slow_tokenizer(tokenizer)


def encode(prompt: str, tokenizer) -> tuple[list[int], list[tuple[int, int] | None]]:
    """The prompt's token ids with special tokens, untruncated, and each token's character span in
    ``prompt`` (None for special tokens), from the tokenizer's own offsets."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt, return_offsets_mapping=True, return_special_tokens_mask=True, verbose=False)
        ids, spans, special = enc.input_ids, enc.offset_mapping, enc.special_tokens_mask
    else:
        enc = _backend(tokenizer).encode(prompt)
        ids, spans, special = enc.ids, enc.offsets, enc.special_tokens_mask
        if ids != tokenizer(prompt, verbose=False).input_ids:
            raise NoClassInPromptError(f"prompt {prompt!r}: the tokenizer's offsets (from its fast twin) do not give "
                                       "its own tokens; use a fast tokenizer", prompt, "tokenized differently by the fast twin")
    return list(ids), [None if s else tuple(o) for o, s in zip(spans, special)]


def words(prompt: str, tokenizer) -> list[Word]:
    """The prompt's words with the token positions each one occupies (empty where the tokenizer drops it)."""
    ids, spans = encode(prompt, tokenizer)
    out = []
    for m in _WORD.finditer(prompt):
        pos = [i for i, s in enumerate(spans) if s is not None and s[0] < m.end() and s[1] > m.start()]
        start, stop = (pos[0], pos[-1] + 1) if pos else (0, 0)
        out.append(Word(m.group().lower(), start, stop, tuple(ids[start:stop])))
    return out


IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "person": "people", "ox": "oxen",
                     "mouse": "mice", "goose": "geese", "foot": "feet", "tooth": "teeth"}


def word_forms(word: str) -> set[str]:
    """A word and its English plurals: -s, -es, -y -> -ies, -f(e) -> -ves and the common irregular ones."""
    forms = {word, word + "s", word + "es"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    if word.endswith("f"):
        forms.add(word[:-1] + "ves")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    if word in IRREGULAR_PLURALS:
        forms.add(IRREGULAR_PLURALS[word])
    return forms


@lru_cache(maxsize=None)
def _phrase_words(phrase: str) -> tuple[str, ...]:
    """A class phrase as the words of a prompt's text ("jack-o'-lantern" -> jack, o, lantern)."""
    return tuple(_WORD.findall(phrase.lower()))


def _matches(phrase: str, seq: Sequence[str], i: int) -> int:
    """Number of words of ``phrase`` matched at ``seq[i:]`` (a plural allowed on the last), else 0."""
    parts = _phrase_words(phrase)
    if i + len(parts) > len(seq):
        return 0
    *head, last = parts
    if list(seq[i:i + len(head)]) != head:
        return 0
    return len(parts) if seq[i + len(head)] in word_forms(last) else 0


def _mentions(seq: Sequence[str], vocab: ClassVocab,
              attributes: Collection[str] = ()) -> Iterator[tuple[str, int, int]]:
    """(class, first word, stop word) of each mention in a word sequence; longer phrases win
    ("potted plant" over "plant"); a mention starts at the ``attributes`` right before it."""
    phrases = sorted(((p, name) for name in vocab.names[1:] for p in vocab.phrases(name)),
                     key=lambda pn: -len(_phrase_words(pn[0])))
    i = 0
    while i < len(seq):
        hit = next(((n, name) for p, name in phrases if (n := _matches(p, seq, i))), None)
        if hit is None:
            i += 1
            continue
        n, name = hit
        first = i
        while first > 0 and seq[first - 1] in attributes:
            first -= 1
        yield name, first, i + n
        i += n


def _listed(texts: Sequence[str]) -> str:
    unique = list(dict.fromkeys(texts))
    return ("word " if len(unique) == 1 else "words ") + ", ".join(map(repr, unique))


def mentioned_classes(text: str, vocab: ClassVocab) -> tuple[str, ...]:
    """The classes a text names (by name or synonym), in vocabulary order; no tokenizer needed."""
    named = {name for name, _, _ in _mentions(_WORD.findall(text.lower()), vocab)}
    return tuple(n for n in vocab.names if n in named)


def class_positions(
    prompt: str,
    tokenizer,
    vocab: ClassVocab,
    expected: Collection[str] | None = None,
    attributes: Collection[str] = (),
) -> dict[str, list[int]]:
    """Eq. 4's tau_c: class name -> every token position of every mention of it or a synonym
    (plurals included: "two circles").

    Longer phrases win over shorter ones ("potted plant" over "plant"). Words in
    ``attributes`` directly before a mention (the "red" of "a red circle") are added to
    that class: an option beyond the paper. Raises ``NoClassInPromptError`` when no class is
    named, or when a class of ``expected`` is not; ``ClassWordLostError`` (a subclass) when a
    mention's words become the tokenizer's unknown token, are dropped by it, or lie past its length
    limit, as the text encoder never sees them (their maps would be another token's).
    """
    ws = words(prompt, tokenizer)
    limit = getattr(tokenizer, "model_max_length", 10**9) - 1  # the last kept position holds the end token
    unk = getattr(tokenizer, "unk_token_id", None)
    found: dict[str, list[int]] = {}
    unknown, dropped, cut = [], [], []
    for name, first, stop in _mentions([w.text for w in ws], vocab, attributes):
        mention = ws[first:stop]
        unknown += [w.text for w in mention if unk is not None and unk in w.ids]
        dropped += [w.text for w in mention if w.start == w.stop]
        cut += [w.text for w in mention if w.stop > limit]
        found.setdefault(name, []).extend(t for w in mention for t in range(w.start, w.stop))
    if unknown:
        token = getattr(tokenizer, "unk_token", None) or "the unknown token"
        raise ClassWordLostError(
            f"prompt {prompt!r}: the tokenizer does not know the class {_listed(unknown)} "
            f"({'it becomes' if len(set(unknown)) == 1 else 'they become'} {token}, whose attention is no class's); "
            "use a form the tokenizer knows or skip such prompts", prompt, unknown,
            "with a class word the tokenizer does not know")
    if dropped:
        raise ClassWordLostError(f"prompt {prompt!r}: the tokenizer drops the class {_listed(dropped)} (no token spans "
                                 "it); skip such prompts", prompt, dropped, "with a class word the tokenizer drops")
    if cut:
        raise ClassWordLostError(
            f"prompt {prompt!r}: the class {_listed(cut)} past the text encoder's limit of "
            f"{limit + 1} tokens is cut off; shorten the prompt or skip such prompts",
            prompt, cut, "with a class word past the token limit")
    found = {name: sorted(set(pos)) for name, pos in found.items()}
    if not found:
        raise NoClassInPromptError(f"prompt {prompt!r} names no class of the vocabulary", prompt)
    missing = sorted(set(expected or ()) - set(found))
    if missing:
        raise NoClassInPromptError(f"prompt {prompt!r} does not name {missing}", prompt, "missing an expected class")
    return {name: found[name] for name in vocab.names if name in found}


def map_prompts(
    prompts: Sequence[str], tokenizer, vocab: ClassVocab, skip_unknown: bool = False, **kwargs
) -> tuple[list[dict[str, list[int]] | None], list[str]]:
    """``class_positions`` for many prompts; with ``skip_unknown`` a failing prompt gives ``None``
    and is listed in the second return value instead of raising."""
    out, skipped = [], []
    for prompt in prompts:
        try:
            out.append(class_positions(prompt, tokenizer, vocab, **kwargs))
        except NoClassInPromptError:
            if not skip_unknown:
                raise
            out.append(None)
            skipped.append(prompt)
    return out, skipped
