"""Word error rate: word-level Levenshtein distance over the reference length.

Text is normalised before comparison (lower case, punctuation other than in-word
apostrophes and hyphens dropped, whitespace collapsed), so ``"Go forward, ten metres."``
and ``"go forward ten metres"`` are equal. A corpus WER adds up the errors and reference
words of every utterance (:func:`corpus_word_error_rate`) rather than averaging the
per-utterance rates, which would overweight short utterances.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["WordErrors", "corpus_word_error_rate", "normalize", "word_error_rate", "word_errors"]

_NOT_WORD = re.compile(r"[^\w'\-]+")


@dataclass(frozen=True)
class WordErrors:
    """Edit operations turning the reference into the hypothesis, minimally."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def normalize(text: str) -> list[str]:
    """Split ``text`` into lower-case words, dropping punctuation around them."""
    words = _NOT_WORD.sub(" ", text.lower()).split()
    return [stripped for word in words if (stripped := word.strip("'-"))]


def _align(reference: Sequence[str], hypothesis: Sequence[str]) -> WordErrors:
    # One row of the edit-distance table at a time; each cell holds
    # (cost, substitutions, deletions, insertions) so ties keep a consistent breakdown.
    previous = [(j, 0, 0, j) for j in range(len(hypothesis) + 1)]
    for i, ref_word in enumerate(reference, start=1):
        current = [(i, 0, i, 0)]
        for j, hyp_word in enumerate(hypothesis, start=1):
            cost, sub, dele, ins = previous[j - 1]
            if ref_word == hyp_word:
                best = (cost, sub, dele, ins)
            else:
                best = (cost + 1, sub + 1, dele, ins)
            cost, sub, dele, ins = previous[j]
            best = min(best, (cost + 1, sub, dele + 1, ins))
            cost, sub, dele, ins = current[j - 1]
            best = min(best, (cost + 1, sub, dele, ins + 1))
            current.append(best)
        previous = current
    _, sub, dele, ins = previous[-1]
    return WordErrors(sub, dele, ins, len(reference))


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Count the substitutions, deletions and insertions between two texts (normalised)."""
    return _align(normalize(reference), normalize(hypothesis))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """``errors / reference words``; 0.0 for two empty texts.

    Raises ValueError when the reference has no words but the hypothesis has some: the
    rate is undefined there (use :func:`word_errors` or a corpus rate instead).
    """
    counted = word_errors(reference, hypothesis)
    if counted.reference_words == 0:
        if counted.errors:
            raise ValueError("word error rate is undefined for an empty reference")
        return 0.0
    return counted.errors / counted.reference_words


def corpus_word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Total errors over total reference words for ``(reference, hypothesis)`` pairs."""
    errors = words = 0
    for reference, hypothesis in pairs:
        counted = word_errors(reference, hypothesis)
        errors += counted.errors
        words += counted.reference_words
    if words == 0:
        if errors:
            raise ValueError("word error rate is undefined for an empty reference")
        return 0.0
    return errors / words
