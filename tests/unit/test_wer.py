"""Word error rate: word-level Levenshtein distance over the reference length."""

from __future__ import annotations

import pytest

from hitl_sip.testing.wer import (
    WordErrors,
    corpus_word_error_rate,
    normalize,
    word_error_rate,
    word_errors,
)


def test_identical_texts_have_no_errors() -> None:
    assert word_error_rate("go forward ten meters", "go forward ten meters") == 0.0


def test_case_and_punctuation_do_not_count_as_errors() -> None:
    assert word_error_rate("Go forward, ten meters.", "go forward ten meters") == 0.0
    words = normalize("Don't stop -- it's (nearly) done!")
    assert words == ["don't", "stop", "it's", "nearly", "done"]


def test_one_substitution_in_four_words_is_a_quarter() -> None:
    assert word_errors("go forward ten meters", "go forward two meters") == WordErrors(1, 0, 0, 4)
    assert word_error_rate("go forward ten meters", "go forward two meters") == 0.25


def test_deletions_and_insertions_are_counted_separately() -> None:
    assert word_errors("ten of clubs", "ten clubs") == WordErrors(0, 1, 0, 3)
    assert word_errors("ten of clubs", "ten of the clubs") == WordErrors(0, 0, 1, 3)


def test_insertions_can_make_the_rate_exceed_one() -> None:
    assert word_error_rate("yes", "oh yes yes indeed") == 3.0


def test_an_empty_hypothesis_deletes_every_reference_word() -> None:
    assert word_error_rate("five five", "") == 1.0


def test_minimal_alignment_is_found_not_a_positional_one() -> None:
    # a positional comparison would count 4 errors; one deletion at the front explains it
    assert word_errors("and he was not an ill", "he was not an ill").errors == 1


def test_empty_reference_is_zero_only_for_an_empty_hypothesis() -> None:
    assert word_error_rate("", "  ") == 0.0
    with pytest.raises(ValueError, match="empty reference"):
        word_error_rate("", "hello")


def test_corpus_rate_weights_utterances_by_their_length() -> None:
    ten = "one two three four five six seven eight nine ten"
    pairs = [(ten, ten), ("yes", "no")]
    # 1 error in 11 words, not the mean of 0.0 and 1.0
    assert corpus_word_error_rate(pairs) == pytest.approx(1 / 11)
    assert corpus_word_error_rate([]) == 0.0
