"""Template rules: what a template may say, what it must say, how it renders for a person."""

from __future__ import annotations

import pytest
from messaging.templates.domain import (
    REPEAT_MAX_ITEMS,
    TemplateCache,
    TemplateContent,
    TemplateLimits,
    TemplateRenderError,
    check_template,
    compile_template,
    render,
    text_from_html,
)
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import Channel

LIMITS = TemplateLimits(
    subject_max_chars=200, part_max_chars=100_000, render_max_chars=50_000, sms_stop_text="STOP"
)
LINK = '<a href="{{ unsubscribe_url }}">Se désinscrire</a>'
#: what every email body must print (HTML form)
HTML_FOOTER = f"<p>{{{{ origin }}}}</p><p>{{{{ sender }}}}</p><p>{LINK}</p>"
TEXT_FOOTER = "\n{{ origin }}\n{{ sender }}\nSe désinscrire : {{ unsubscribe_url }}\n"
SMS_FOOTER = " {{ origin }} {{ sender }} STOP"
URL = "https://tribune.example.org/u?token=abc&x=1"


def email(
    html: str | None = "<p>Bonjour</p>" + HTML_FOOTER,
    text: str | None = None,
    subject: str = "Nouvelles",
    limits: TemplateLimits = LIMITS,
) -> TemplateContent:
    return check_template(Channel.email, subject=subject, html=html, text=text, limits=limits)


def sms(text: str, limits: TemplateLimits = LIMITS) -> TemplateContent:
    return check_template(Channel.sms, subject=None, html=None, text=text, limits=limits)


def problems(call, *args, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(InvalidField) as refused:
        call(*args, **kwargs)
    return [(d["field"], d["reason"]) for d in refused.value.body()["detail"]]


def rendered(content: TemplateContent, contact: dict | None = None, **values):
    compiled = compile_template(
        Channel.sms if content.subject is None and content.html is None else Channel.email,
        subject=content.subject,
        html=content.html,
        text=content.text,
        render_max_chars=values.pop("render_max_chars", LIMITS.render_max_chars),
    )
    return render(
        compiled,
        contact or {},
        unsubscribe_url=values.get("unsubscribe_url", URL),
        origin=values.get("origin", "Vous avez signé notre pétition."),
        sender=values.get("sender", "Parti Exemple"),
        campaign_name=values.get("campaign_name", "Rentrée"),
    )


# ---------------------------------------------------------------- the sandbox


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ contact.__class__ }}",
        "{{ campaign.name.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ range(10) }}",
        "{{ origin.upper() }}",
        "{% for i in [1, 2] %}x{% endfor %}",
        "{% set x = 'a' %}",
        "{% include 'other' %}",
        "{% macro m() %}x{% endmacro %}",
        "{% autoescape false %}x{% endautoescape %}",
        "{{ origin | safe }}",
        "{{ origin | format(1) }}",
        "{{ '%s' % origin }}",
        "{{ 10 ** 10 }}",
        "{{ 'ab'[0:1] }}",
    ],
)
def test_anything_beyond_the_variables_and_plain_text_shaping_is_refused_when_saved(expression):
    found = problems(sms, expression + SMS_FOOTER)
    assert [field for field, _ in found] == ["text"]
    assert found[0][1]  # a reason the author can act on


def test_the_environment_itself_is_a_sandbox_whatever_got_past_the_checks():
    for source in ("{{ ''.__class__.__mro__ }}", "{{ '=' * 100000 }}", "{{ origin.__class__ }}"):
        compiled = compile_template(
            Channel.sms, subject=None, html=None, text=source, render_max_chars=1_000_000
        )
        with pytest.raises(TemplateRenderError) as refused:
            render(compiled, {}, unsubscribe_url=URL, origin="o", sender="s", campaign_name="c")
        assert refused.value.field == "text"


def test_repetition_is_allowed_for_a_separator_but_bounded():
    assert "=" * 40 in rendered(sms("{{ '=' * 40 }}" + SMS_FOOTER)).text
    found = problems(sms, f"{{{{ '=' * {REPEAT_MAX_ITEMS + 1} }}}}" + SMS_FOOTER)
    assert found[0][0] == "text" and str(REPEAT_MAX_ITEMS) in found[0][1]


def test_unknown_variables_and_fields_are_named():
    assert problems(sms, "{{ salary }}" + SMS_FOOTER) == [
        (
            "text",
            "unknown variable 'salary' (a template may use: campaign, contact, origin, "
            "sender, unsubscribe_url)",
        )
    ]
    (found,) = problems(sms, "{{ contact.birth_date | default('') }}" + SMS_FOOTER)
    assert "unknown field contact.birth_date" in found[1]
    (found,) = problems(sms, "{{ contact }}" + SMS_FOOTER)
    assert "contact.given_name" in found[1]


# ---------------------------------------------------------------- missing values


def test_a_missing_contact_field_takes_its_default():
    content = sms('Bonjour {{ contact.given_name | default("ami") }} !' + SMS_FOOTER)
    assert rendered(content, {"given_name": "Zoé"}).text.startswith("Bonjour Zoé !")
    for contact in ({}, {"given_name": None}, {"given_name": "  "}):
        assert rendered(content, contact).text.startswith("Bonjour ami !")


def test_a_contact_field_some_contacts_lack_needs_a_default_or_a_test():
    (found,) = problems(sms, "Bonjour {{ contact.given_name }}" + SMS_FOOTER)
    assert found[0] == "text"
    assert 'contact.given_name | default("...")' in found[1]
    guarded = sms(
        "{% if contact.given_name %}Bonjour {{ contact.given_name }}{% else %}Bonjour{% endif %}"
        "{{ ' ' ~ contact.family_name if contact.family_name is defined else '' }}"
        "{{ contact.federation_name or '' }}" + SMS_FOOTER
    )
    assert rendered(guarded, {"given_name": "Ana", "family_name": "Martin"}).text.startswith(
        "Bonjour Ana Martin "
    )
    assert rendered(guarded, {}).text.startswith("Bonjour ")
    # a test of one field proves nothing about another
    assert problems(sms, "{% if contact.email %}{{ contact.given_name }}{% endif %}" + SMS_FOOTER)


def test_the_channels_address_is_always_there():
    content = email(html="<p>Votre adresse : {{ contact.email }}</p>" + HTML_FOOTER)
    assert "ana@example.org" in rendered(content, {"email": "ana@example.org"}).html
    assert sms("Votre numéro {{ contact.phone }}" + SMS_FOOTER)


def test_an_inline_if_needs_an_else():
    assert problems(sms, "{{ 'Bonjour' if contact.given_name }}" + SMS_FOOTER)


# ---------------------------------------------------------------- required elements


def test_an_email_needs_the_unsubscribe_link_origin_and_sender_in_each_body_part():
    found = problems(email, html="<p>Bonjour</p>", text="Bonjour")
    fields = {field for field, _ in found}
    assert fields == {"html", "text"}
    reasons = " ".join(reason for _, reason in found)
    for element in ("{{ unsubscribe_url }}", "{{ origin }}", "{{ sender }}"):
        assert element in reasons
    assert len(found) == 6  # every problem of every part at once


def test_required_elements_are_checked_on_the_parsed_template_not_as_substrings():
    hidden = [
        # in a comment, in a condition, in a string: never printed to everyone
        "{# {{ unsubscribe_url }} #}",
        "{% if contact.email %}" + LINK + "{% endif %}",
        "{{ '{{ unsubscribe_url }}' }}",
    ]
    for html in hidden:
        found = problems(email, html="<p>{{ origin }} {{ sender }}</p>" + html)
        assert any(f == "html" and "unsubscribe" in r for f, r in found), html
    # printed, but not as a link: a reader of the HTML could not click it
    (found,) = problems(email, html="<p>{{ origin }} {{ sender }} {{ unsubscribe_url }}</p>")
    assert found[0] == "html" and "as a link" in found[1]


def test_an_sms_needs_the_stop_wording_as_plain_text():
    assert sms("Réunion ce soir." + SMS_FOOTER)
    for text in (
        "Réunion. {{ origin }} {{ sender }}",
        "Réunion. {{ origin }} {{ sender }} {{ 'STOP' }}",
        "Réunion. {{ origin }} {{ sender }} {% if contact.phone %}STOP{% endif %}",
        "Réunion. {{ origin }} {{ sender }} STOPPER",
    ):
        (found,) = problems(sms, text)
        assert found == ("text", found[1]) and "'STOP'" in found[1], text


def test_the_stop_wording_is_a_setting():
    limits = TemplateLimits(200, 100_000, 50_000, sms_stop_text="STOP au 36180")
    assert sms("Réunion. {{ origin }} {{ sender }} STOP au 36180", limits)
    (found,) = problems(sms, "Réunion." + SMS_FOOTER, limits)
    assert "'STOP au 36180'" in found[1]


def test_parts_belong_to_their_channel():
    assert problems(check_template, Channel.sms, subject="x", html=None, text="t", limits=LIMITS)[
        0
    ] == ("subject", "an SMS has only a text")
    assert problems(
        check_template, Channel.email, subject=None, html=None, text=None, limits=LIMITS
    ) == [
        ("subject", "an email template needs a subject"),
        ("html", "an email template needs an HTML or a text part"),
    ]
    assert problems(
        check_template, Channel.post, subject=None, html=None, text="x", limits=LIMITS
    ) == [("channel", "templates are written for email or sms")]


def test_a_subject_is_one_line_within_its_limit_and_a_part_within_its_own():
    assert problems(email, subject="Bonjour\nà tous") == [("subject", "must be a single line")]
    assert problems(email, subject="   ") == [("subject", "must not be blank")]
    small = TemplateLimits(10, 200, 50_000, "STOP")
    found = problems(email, subject="x" * 11, html="<p>" + "x" * 300 + "</p>", limits=small)
    assert found == [
        ("subject", "must be at most 10 characters"),
        ("html", "must be at most 200 characters"),
    ]


def test_a_syntax_error_names_its_line():
    (found,) = problems(sms, "Bonjour\n{{ contact.given_name | default('ami') " + SMS_FOOTER)
    assert found[0] == "text" and found[1].startswith("line 2:")


# ---------------------------------------------------------------- text from HTML


def test_the_text_is_derived_from_the_html_when_absent_and_keeps_the_link():
    content = email(
        html='<h1>Rentrée</h1><p>Bonjour {{ contact.given_name | default("ami") }} &amp; '
        "bienvenue</p><ul><li>un</li><li>deux</li></ul>" + HTML_FOOTER
    )
    assert content.text_derived
    assert "{{ unsubscribe_url }}" in content.text
    out = rendered(content, {"given_name": "Zoé"})
    assert "Bonjour Zoé & bienvenue" in out.text
    assert "* un" in out.text
    assert f"[Se désinscrire]({URL})" in out.text
    assert "<" not in out.text


def test_a_given_text_is_kept_as_written():
    content = email(text="Bonjour" + TEXT_FOOTER)
    assert not content.text_derived
    assert content.text == "Bonjour" + TEXT_FOOTER


def test_text_from_html_keeps_jinja_tags_whole():
    text = text_from_html('<p>{{ contact.given_name | default("a}}b") }}</p>{# note #}<p>x</p>')
    assert text == '{{ contact.given_name | default("a}}b") }}\n\nx\n'


# ---------------------------------------------------------------- rendering


def test_html_is_escaped_and_subject_and_text_are_not():
    content = email(
        subject="Pour {{ contact.given_name | default('vous') }}",
        html="<p>{{ contact.given_name | default('vous') }}</p>" + HTML_FOOTER,
        text="{{ contact.given_name | default('vous') }}" + TEXT_FOOTER,
    )
    out = rendered(content, {"given_name": "<b>Zoé</b> & co"}, sender="Parti & Co")
    assert out.subject == "Pour <b>Zoé</b> & co"
    assert "<p>&lt;b&gt;Zoé&lt;/b&gt; &amp; co</p>" in out.html
    assert 'href="https://tribune.example.org/u?token=abc&amp;x=1"' in out.html
    assert "Parti &amp; Co" in out.html
    assert out.text.startswith("<b>Zoé</b> & co\n")
    assert "Parti & Co" in out.text and URL in out.text


def test_a_rendered_subject_stays_one_line():
    content = email(subject="Bonjour {{ contact.given_name | default('ami') }} !")
    assert rendered(content, {"given_name": "Ana\r\nBcc: x@y\x00"}).subject == (
        "Bonjour Ana Bcc: x@y !"
    )


def test_campaign_name_and_federation_name_are_available():
    content = sms(
        "{{ campaign.name }} - {{ contact.federation_name | default('Tribune') }}" + SMS_FOOTER
    )
    assert rendered(content, {"federation_name": "Paris"}).text.startswith("Rentrée - Paris")
    assert rendered(content, {}).text.startswith("Rentrée - Tribune")


def test_a_part_rendering_beyond_the_limit_fails():
    content = sms("{{ origin }}{{ origin }}" + SMS_FOOTER)
    with pytest.raises(TemplateRenderError) as refused:
        rendered(content, origin="x" * 600, render_max_chars=1000)
    assert refused.value.field == "text" and "1000" in refused.value.message
    small = TemplateLimits(200, 100_000, render_max_chars=1000, sms_stop_text="STOP")
    (found,) = problems(sms, "{{ '=' * 900 }}{{ '=' * 900 }}" + SMS_FOOTER, small)
    assert found[0] == "text" and "more than 1000 characters" in found[1]


# ---------------------------------------------------------------- tree and cache


def test_the_cache_keeps_the_most_recently_used():
    content = sms("x" + SMS_FOOTER)
    compiled = compile_template(
        Channel.sms, subject=None, html=None, text=content.text, render_max_chars=100
    )
    cache = TemplateCache(2)
    cache.put(("a", 1), compiled)
    cache.put(("b", 1), compiled)
    assert cache.get(("a", 1)) is compiled
    cache.put(("c", 1), compiled)
    assert cache.get(("b", 1)) is None
    assert cache.get(("a", 1)) is compiled and cache.get(("c", 1)) is compiled
