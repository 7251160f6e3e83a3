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
    """A prompt names no class of the vocabulary (or not the classes it should)."""


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # first token position (the BOS token is position 0)
    stop: int


def words(prompt: str, tokenizer) -> list[Word]:
    """The prompt's words with the token positions each one occupies."""
    texts = _WORD.findall(prompt.lower())
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    pos, out, pieces = 1, [], []
    for text in texts:
        sub = tokenizer(text, add_special_tokens=False).input_ids
        out.append(Word(text, pos, pos + len(sub)))
        pieces += sub
        pos += len(sub)
    if pieces != list(ids):
        raise ValueError(
            f"tokenizing {prompt!r} word by word does not give the tokens of the whole prompt; "
            "this tokenizer splits words differently from CLIP's pre-tokenizer"
        )
    return out


def _matches(phrase: str, seq: Sequence[str], i: int) -> int:
    """Number of words of ``phrase`` matched at ``seq[i:]`` (plural -s/-es allowed on the last), else 0."""
    parts = phrase.lower().split()
    if i + len(parts) > len(seq):
        return 0
    *head, last = parts
    if list(seq[i:i + len(head)]) != head:
        return 0
    w = seq[i + len(head)]
    return len(parts) if w in (last, last + "s", last + "es") else 0


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
    """Eq. 4's tau_c: class name -> every token position of every mention of it or a synonym.

    Longer phrases win over shorter ones ("potted plant" over "plant"). Words in
    ``attributes`` directly before a mention (the "red" of "a red circle") are added to
    that class: an option beyond the paper. Positions past the tokenizer's length limit
    are dropped, as the text encoder never sees them. Raises ``NoClassInPromptError`` when
    no class is named, or when a class of ``expected`` is not.
    """
    ws = words(prompt, tokenizer)
    limit = getattr(tokenizer, "model_max_length", 10**9) - 1
    found: dict[str, list[int]] = {}
    for name, first, stop in _mentions([w.text for w in ws], vocab, attributes):
        span = [t for w in ws[first:stop] for t in range(w.start, w.stop) if t < limit]
        found.setdefault(name, []).extend(span)
    found = {name: sorted(set(pos)) for name, pos in found.items() if pos}
    if not found:
        raise NoClassInPromptError(f"prompt {prompt!r} names no class of the vocabulary")
    missing = sorted(set(expected or ()) - set(found))
    if missing:
        raise NoClassInPromptError(f"prompt {prompt!r} does not name {missing}")
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
