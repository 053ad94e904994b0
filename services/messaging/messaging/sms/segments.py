"""SMS encoding and segment counting (pure): what a text costs before it is sent.

A text made only of GSM 03.38 characters travels as GSM-7: 160 septets in one SMS, or 153
per part once it is split (each part carries a 7-septet concatenation header). The
extension table's characters (``€ [ ] { } \\ ^ ~ |`` and form feed) take two septets (an
escape, then the character). One character outside both tables turns the whole message into
UCS-2: 70 UTF-16 code units in one SMS, 67 per part; a character outside the Basic
Multilingual Plane (most emoji) is a surrogate pair, so it counts two.

A part never ends in the middle of an escape sequence or a surrogate pair: the phone could
not put it back together, so such a character moves to the next part whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tribune_shared.errors import InvalidField

#: GSM 03.38 basic character set (the escape 0x1B itself is not a character one can send)
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: each is sent as escape + character, two septets
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_MULTI = 153
UCS2_SINGLE = 70
UCS2_MULTI = 67


class Encoding(StrEnum):
    gsm7 = "GSM-7"
    ucs2 = "UCS-2"


@dataclass(frozen=True)
class SegmentCount:
    encoding: Encoding
    #: characters as a person counts them (code points)
    characters: int
    #: what the network counts: septets (GSM-7) or UTF-16 code units (UCS-2)
    units: int
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def _pack(costs: list[int], single: int, multi: int) -> int:
    """Parts needed for characters of these unit costs (a character is never split)."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts, used = parts + 1, 0
        used += cost
    return parts


def count_segments(text: str) -> SegmentCount:
    """The encoding ``text`` needs and how many SMS it takes (0 for an empty text)."""
    if is_gsm7(text):
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        encoding, single, multi = Encoding.gsm7, GSM7_SINGLE, GSM7_MULTI
    else:
        costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
        encoding, single, multi = Encoding.ucs2, UCS2_SINGLE, UCS2_MULTI
    return SegmentCount(encoding, len(text), sum(costs), _pack(costs, single, multi))


def segments_problem(count: SegmentCount, max_segments: int) -> str | None:
    """Why a text so counted may not be sent as one SMS message, or None."""
    if count.segments == 0:
        return "the SMS text is empty"
    if count.segments > max_segments:
        hint = (
            " (one character outside the GSM alphabet, such as an emoji or a curly quote, "
            "makes the whole text UCS-2: 70 units per SMS instead of 160)"
            if count.encoding is Encoding.ucs2
            else ""
        )
        return (
            f"the text needs {count.segments} SMS ({count.units} {count.encoding} units), "
            f"more than the maximum of {max_segments}{hint}"
        )
    return None


def check_sms_text(text: str, max_segments: int, *, field: str = "text") -> SegmentCount:
    """The text's count, or InvalidField (422) with the reason when it may not be sent."""
    count = count_segments(text)
    if problem := segments_problem(count, max_segments):
        raise InvalidField(problem, field=field)
    return count
