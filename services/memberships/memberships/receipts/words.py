"""An amount in French words, as a receipt writes it ("en toutes lettres"): traditional
spelling (hyphens below one hundred, "et" in 21..71, "quatre-vingts" and "cents" plural
only when they end the number, "mille" invariable)."""

from __future__ import annotations

_UNITS = (
    "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze "
    "quinze seize dix-sept dix-huit dix-neuf"
).split()
_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def _below_100(n: int) -> str:
    if n < 20:
        return _UNITS[n]
    tens, unit = divmod(n, 10)
    if tens in (7, 9):  # soixante-dix..., quatre-vingt-dix...
        head = "soixante" if tens == 7 else "quatre-vingt"
        rest = 10 + unit
        if tens == 7 and unit == 1:
            return "soixante et onze"
        return f"{head}-{_UNITS[rest]}"
    if tens == 8:
        return "quatre-vingts" if unit == 0 else f"quatre-vingt-{_UNITS[unit]}"
    head = _TENS[tens]
    if unit == 0:
        return head
    if unit == 1:
        return f"{head} et un"
    return f"{head}-{_UNITS[unit]}"


def _below_1000(n: int, *, final: bool) -> str:
    """``final``: the group ends the number (only then do "cents"/"quatre-vingts" take
    their plural s: "deux cents", but "deux cent mille")."""
    hundreds, rest = divmod(n, 100)
    parts = []
    if hundreds:
        if hundreds == 1:
            parts.append("cent")
        else:
            plural = "s" if rest == 0 and final else ""
            parts.append(f"{_UNITS[hundreds]} cent{plural}")
    if rest:
        words = _below_100(rest)
        if not final and words == "quatre-vingts":
            words = "quatre-vingt"
        parts.append(words)
    return " ".join(parts)


def number_in_words(n: int) -> str:
    if n < 0:
        raise ValueError("a negative amount has no receipt")
    if n == 0:
        return "zéro"
    groups = []
    for scale, singular, plural in (
        (1_000_000_000, "milliard", "milliards"),
        (1_000_000, "million", "millions"),
    ):
        count, n = divmod(n, scale)
        if count:
            groups.append(f"{number_in_words(count)} {singular if count == 1 else plural}")
    thousands, n = divmod(n, 1000)
    if thousands:
        groups.append("mille" if thousands == 1 else f"{_below_1000(thousands, final=False)} mille")
    if n:
        groups.append(_below_1000(n, final=True))
    return " ".join(groups)


def euros_in_words(cents: int, currency: str = "EUR") -> str:
    """ "cent cinquante euros", "trente euros et cinquante centimes", "un euro"."""
    if cents < 0:
        raise ValueError("a negative amount has no receipt")
    units, centimes = divmod(cents, 100)
    if currency != "EUR":
        text = f"{number_in_words(units)} {currency}"
        return text + (f" et {number_in_words(centimes)} centièmes" if centimes else "")
    euros = "euro" if units <= 1 else "euros"
    # "un million d'euros": a round million or milliard takes "d'"
    joiner = " d'" if units >= 1_000_000 and units % 1_000_000 == 0 else " "
    text = f"{number_in_words(units)}{joiner}{euros}"
    if centimes:
        text += f" et {number_in_words(centimes)} centime{'s' if centimes > 1 else ''}"
    return text
