"""What an SMS text costs: its encoding and the number of SMS it is split into."""

from __future__ import annotations

import pytest
from messaging.sms.segments import (
    Encoding,
    check_sms_text,
    count_segments,
    segments_problem,
)
from tribune_shared.errors import InvalidField


def test_plain_french_text_is_gsm7() -> None:
    text = "Réunion ce soir à 19h, salle Émile-Zola. STOP au 36180"
    count = count_segments(text)
    assert count.encoding is Encoding.gsm7
    assert count.units == count.characters == len(text)
    assert count.segments == 1
    # ê is not in the GSM alphabet: "arrêter" makes the same text UCS-2
    assert count_segments(text + " pour arrêter").encoding is Encoding.ucs2


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (153 * 2, 2), (153 * 2 + 1, 3), (153 * 3, 3)],
)
def test_gsm7_boundaries(length: int, segments: int) -> None:
    count = count_segments("a" * length)
    assert (count.encoding, count.units, count.segments) == (Encoding.gsm7, length, segments)


@pytest.mark.parametrize("char", [*"€[]{}\\^~|", "\f"])
def test_extension_characters_take_two_septets(char: str) -> None:
    count = count_segments(char)
    assert (count.encoding, count.characters, count.units) == (Encoding.gsm7, 1, 2)


def test_extension_characters_reach_the_limit_twice_as_fast() -> None:
    assert count_segments("€" * 80).segments == 1  # 160 septets
    assert count_segments("a" * 159 + "€").segments == 2  # 161 septets


def test_an_escape_sequence_is_never_split_between_parts() -> None:
    # 306 septets would fit in two parts of 153, but the euro sign cannot straddle them.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text).units == 306
    assert count_segments(text).segments == 3


@pytest.mark.parametrize("text", ["ça va", "Merci \u2019", "Привет", "你好"])
def test_one_character_outside_gsm_makes_the_text_ucs2(text: str) -> None:
    assert count_segments(text).encoding is Encoding.ucs2


def test_gsm_lookalikes_stay_gsm7() -> None:
    # Ç, é, ù, Δ are in the GSM alphabet: they cost one septet each
    count = count_segments("ÇéùΔ")
    assert (count.encoding, count.units) == (Encoding.gsm7, 4)


@pytest.mark.parametrize(("length", "segments"), [(70, 1), (71, 2), (67 * 2, 2), (67 * 2 + 1, 3)])
def test_ucs2_boundaries(length: int, segments: int) -> None:
    count = count_segments("ж" * length)
    assert (count.encoding, count.units, count.segments) == (Encoding.ucs2, length, segments)


def test_an_emoji_counts_two_utf16_units() -> None:
    count = count_segments("👍")
    assert (count.encoding, count.characters, count.units) == (Encoding.ucs2, 1, 2)
    assert count_segments("👍" * 35).segments == 1  # 70 units
    assert count_segments("👍" * 36).segments == 2  # 72 units


def test_a_surrogate_pair_is_never_split_between_parts() -> None:
    text = "ж" * 66 + "👍" + "ж" * 66  # 134 units: two parts of 67 if one could split it
    assert count_segments(text).units == 134
    assert count_segments(text).segments == 3


def test_one_emoji_turns_a_one_sms_text_into_three() -> None:
    text = "a" * 150
    assert count_segments(text).segments == 1
    assert count_segments(text + "🙂").segments == 3  # 152 UCS-2 units / 67


def test_empty_text_takes_no_sms_and_is_refused() -> None:
    count = count_segments("")
    assert count.segments == 0
    assert segments_problem(count, 3) == "the SMS text is empty"


def test_the_maximum_of_segments_is_refused_with_the_reason() -> None:
    assert segments_problem(count_segments("a" * 306), 2) is None
    problem = segments_problem(count_segments("a" * 307), 2)
    assert problem == "the text needs 3 SMS (307 GSM-7 units), more than the maximum of 2"
    ucs2 = segments_problem(count_segments("ж" * 200), 2)
    assert ucs2 is not None and "needs 3 SMS (200 UCS-2 units)" in ucs2 and "emoji" in ucs2


def test_check_sms_text_is_a_422_on_the_field() -> None:
    assert check_sms_text("Bonjour", 1).segments == 1
    with pytest.raises(InvalidField) as caught:
        check_sms_text("a" * 161, 1, field="body")
    assert caught.value.field == "body"
    assert "more than the maximum of 1" in caught.value.message
