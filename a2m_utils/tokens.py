"""Token-to-class mapping: the positions tau_c of Eq. 4 for any tokenizer.

A prompt is split into words the way CLIP's pre-tokenizer splits text (lower case,
runs of letters or digits, single punctuation marks); each word is tokenized alone to
learn how many sub-tokens it takes, which makes the mapping exact for CLIP BPE and for
word-level tokenizers alike (and is checked against the tokenization of the whole prompt).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from .classes import ClassVocab

_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")


class NoClassInPromptError(ValueError):
    """A prompt names no class of the vocabulary (or not the classes it should). ``reason`` says
    which, in a few words, for counting skipped prompts."""

    reason = "naming no class"

    def __init__(self, message: str, prompt: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.prompt = prompt
        if reason is not None:
            self.reason = reason


class ClassWordLostError(NoClassInPromptError):
    """A class word the text encoder never sees: the tokenizer turns it into its unknown token (a
    word-level tokenizer lacking a plural, "circles"), or it lies past the length limit. Its
    attention would be another token's, so the prompt cannot be labelled; like a prompt naming no
    class it raises, or is skipped and counted (``skip_unknown``, ``on_missing="skip"``)."""

    def __init__(self, message: str, prompt: str, words: Sequence[str], reason: str) -> None:
        super().__init__(message, prompt, reason)
        self.words = tuple(words)


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # first token position (the BOS token is position 0)
    stop: int
    ids: tuple[int, ...] = ()  # its token ids


def words(prompt: str, tokenizer) -> list[Word]:
    """The prompt's words with the token positions each one occupies."""
    texts = _WORD.findall(prompt.lower())
    ids = tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids  # the length is checked later
    pos, out, pieces = 1, [], []
    for text in texts:
        sub = tokenizer(text, add_special_tokens=False).input_ids
        out.append(Word(text, pos, pos + len(sub), tuple(sub)))
        pieces += sub
        pos += len(sub)
    if pieces != list(ids):
        raise ValueError(
            f"tokenizing {prompt!r} word by word does not give the tokens of the whole prompt; "
            "this tokenizer splits words differently from CLIP's pre-tokenizer"
        )
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


def _matches(phrase: str, seq: Sequence[str], i: int) -> int:
    """Number of words of ``phrase`` matched at ``seq[i:]`` (a plural allowed on the last), else 0."""
    parts = phrase.lower().split()
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
                     key=lambda pn: -len(pn[0].split()))
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
    mention's words become the tokenizer's unknown token or lie past its length limit, as the
    text encoder never sees them (their maps would be another token's).
    """
    ws = words(prompt, tokenizer)
    limit = getattr(tokenizer, "model_max_length", 10**9) - 1  # the last kept position holds the end token
    unk = getattr(tokenizer, "unk_token_id", None)
    found: dict[str, list[int]] = {}
    unknown, cut = [], []
    for name, first, stop in _mentions([w.text for w in ws], vocab, attributes):
        mention = ws[first:stop]
        unknown += [w.text for w in mention if unk is not None and unk in w.ids]
        cut += [w.text for w in mention if w.stop > limit]
        found.setdefault(name, []).extend(t for w in mention for t in range(w.start, w.stop))
    if unknown:
        token = getattr(tokenizer, "unk_token", None) or "the unknown token"
        raise ClassWordLostError(
            f"prompt {prompt!r}: the tokenizer does not know the class {_listed(unknown)} "
            f"({'it becomes' if len(set(unknown)) == 1 else 'they become'} {token}, whose attention is no class's); "
            "use a form the tokenizer knows or skip such prompts", prompt, unknown,
            "with a class word the tokenizer does not know")
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
