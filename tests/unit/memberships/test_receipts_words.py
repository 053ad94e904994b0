"""The amount in French words a receipt prints ("en toutes lettres")."""

from __future__ import annotations

import pytest
from memberships.receipts.words import euros_in_words, number_in_words


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zéro"),
        (1, "un"),
        (16, "seize"),
        (17, "dix-sept"),
        (21, "vingt et un"),
        (22, "vingt-deux"),
        (71, "soixante et onze"),
        (72, "soixante-douze"),
        (80, "quatre-vingts"),
        (81, "quatre-vingt-un"),
        (91, "quatre-vingt-onze"),
        (100, "cent"),
        (101, "cent un"),
        (200, "deux cents"),
        (250, "deux cent cinquante"),
        (1000, "mille"),
        (1001, "mille un"),
        (2000, "deux mille"),
        (80_000, "quatre-vingt mille"),
        (200_000, "deux cent mille"),
        (7500, "sept mille cinq cents"),
        (1_000_000, "un million"),
        (200_000_000, "deux cents millions"),
    ],
)
def test_numbers_follow_french_spelling(n, words):
    assert number_in_words(n) == words


@pytest.mark.parametrize(
    ("cents", "words"),
    [
        (100, "un euro"),
        (15_000, "cent cinquante euros"),
        (15_001, "cent cinquante euros et un centime"),
        (3_050, "trente euros et cinquante centimes"),
        (750_000, "sept mille cinq cents euros"),
        (50, "zéro euro et cinquante centimes"),
        (100_000_000, "un million d'euros"),
    ],
)
def test_amounts_in_euros_and_centimes(cents, words):
    assert euros_in_words(cents) == words


def test_a_negative_amount_has_no_words():
    with pytest.raises(ValueError):
        euros_in_words(-1)
