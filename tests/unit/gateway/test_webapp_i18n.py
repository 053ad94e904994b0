"""The web app's words: every key in both languages, every template key known, the
language chosen as a user expects, amounts written as the browser writes them."""

from __future__ import annotations

import re
import string
from pathlib import Path

import gateway.webapp
import pytest
from gateway.webapp.i18n import (
    CATALOGUES,
    EN,
    FR,
    MissingMessage,
    format_cents,
    format_int,
    negotiate,
    translator,
)

TEMPLATES = Path(gateway.webapp.__file__).parent / "templates"
#: t("key") and t('key', ...) in the templates (dynamic keys are built from a prefix)
T_CALL = re.compile(r"""\bt\(\s*["']([a-z0-9_.]*[a-z0-9_])["'](?!\s*~)""")
DYNAMIC = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+\.)["']\s*~""")


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_exists_in_french_and_in_english():
    assert sorted(set(FR) - set(EN)) == [], "keys missing in English"
    assert sorted(set(EN) - set(FR)) == [], "keys missing in French"


def test_both_languages_fill_the_same_blanks():
    differing = [k for k in FR if _placeholders(FR[k]) != _placeholders(EN[k])]
    assert differing == []


def test_no_text_is_empty():
    for lang, catalogue in CATALOGUES.items():
        assert [k for k, v in catalogue.items() if not v.strip()] == [], lang


def test_every_key_a_template_asks_for_exists():
    asked = set()
    for template in TEMPLATES.glob("*.html"):
        asked |= set(T_CALL.findall(template.read_text()))
    assert asked, "no t(...) call found: the pattern is wrong"
    assert sorted(asked - set(FR)) == []


def test_the_keys_templates_build_exist_for_every_value():
    # "import.status." ~ job.status: every status the contacts API answers
    for status in ("queued", "running", "done", "failed", "cancelled"):
        assert f"import.status.{status}" in FR
    for code in (400, 403, 404, 503):
        assert f"error.{code}.title" in FR and f"error.{code}.text" in FR


def test_a_missing_key_fails_loudly_instead_of_showing_a_key():
    with pytest.raises(MissingMessage):
        translator("fr")("no.such.key")


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, None, "fr"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "de-DE,de;q=0.9,en;q=0.8,fr;q=0.5", "en"),
        (None, "de-DE", "fr"),
        (None, "en;q=0, fr;q=0.1", "fr"),
        (None, "fr;q=0.2, en;q=0.8", "en"),
        ("fr", "en", "fr"),  # the switch wins
        ("en", "fr", "en"),
        ("xx", "en", "en"),  # an unknown choice is ignored
    ],
)
def test_the_language_is_the_choice_then_the_browsers_then_french(cookie, header, expected):
    assert negotiate(cookie, header) == expected


def test_amounts_are_written_as_intl_number_format_writes_them():
    # fr-FR: narrow no-break space between thousands, no-break space before the sign
    assert format_cents(123456, "fr") == "1\u202f234,56\u00a0€"
    assert format_cents(3000, "fr") == "30,00\u00a0€"
    assert format_cents(123456, "en") == "€1,234.56"
    assert format_cents(-500, "en") == "-€5.00"
    assert format_int(1234567, "fr") == "1\u202f234\u202f567"
    assert format_int(1234567, "en") == "1,234,567"


def test_a_text_with_blanks_is_filled():
    assert translator("en")("login.rate_limited", seconds=30) == (
        "Too many attempts. Try again in 30 seconds."
    )


def test_percentages_are_written_as_each_language_does():
    from gateway.webapp.i18n import format_percent

    assert format_percent(0.425, "fr") == "42,5\u202f%"
    assert format_percent(0.425, "en") == "42.5%"
    assert format_percent(0, "en") == "0.0%"
    assert format_percent(1, "fr") == "100,0\u202f%"
