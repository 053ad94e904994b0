"""The public form's HTML pages (pure): the form, the thank-you page and the pages of a
form that takes nothing now. French first, English on request.

Plain, accessible, mobile-first HTML: every input has its label, an error is linked to its
input (``aria-describedby``, ``aria-invalid``) and listed in a summary at the top, the
language is declared. No inline script or style (the CSP forbids them): the stylesheet
and the script (proof of work only) are this package's static files, served from the same
prefix. Every value is escaped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from importlib import resources
from typing import Any

from contacts.forms.domain import (
    REQUIRED,
    Availability,
    Language,
    Refusal,
    content_security_policy,
)

PREFIX = "/api/v1/public/forms"
STATIC = {
    name: resources.files("contacts.forms").joinpath("static", name).read_bytes()
    for name in ("form.css", "form.js")
}
#: the static files' URLs carry a hash of their content: cached for long, never stale
STATIC_VERSION = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in STATIC.items()}


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={STATIC_VERSION[name]}"


def page_headers(allowed_origins: Sequence[str]) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(allowed_origins),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


# ---------------------------------------------------------------- words

WORDS: dict[str, dict[Language, str]] = {
    "given_name": {"fr": "Prénom", "en": "First name"},
    "family_name": {"fr": "Nom", "en": "Last name"},
    "email": {"fr": "Adresse email", "en": "Email address"},
    "phone": {"fr": "Téléphone", "en": "Phone number"},
    "address": {"fr": "Adresse", "en": "Street address"},
    "postcode": {"fr": "Code postal", "en": "Postcode"},
    "commune": {"fr": "Commune", "en": "Town"},
    "birth_year": {"fr": "Année de naissance", "en": "Year of birth"},
    "optional": {"fr": "facultatif", "en": "optional"},
    "required": {"fr": "Ce champ est obligatoire.", "en": "This field is required."},
    "problem": {"fr": "Il y a un problème", "en": "There is a problem"},
    "consents": {"fr": "Vos choix (facultatifs)", "en": "Your choices (optional)"},
    "honeypot": {"fr": "Laissez ce champ vide", "en": "Leave this field empty"},
    "choose": {"fr": "— Choisissez —", "en": "— Choose —"},
    "submit.petition": {"fr": "Signer la pétition", "en": "Sign the petition"},
    "submit.signup": {"fr": "S'inscrire", "en": "Sign up"},
    "submit.volunteer": {"fr": "Je me porte volontaire", "en": "Volunteer"},
    "submit.event_rsvp": {"fr": "Je m'inscris", "en": "Register"},
    "thanks": {"fr": "Merci !", "en": "Thank you!"},
    "received": {
        "fr": "Votre réponse est bien enregistrée.",
        "en": "Your answer has been recorded.",
    },
    "confirm_email": {
        "fr": "Si vous avez accepté de recevoir des emails, un message vous demandera de "
        "confirmer votre adresse.",
        "en": "If you agreed to receive emails, a message will ask you to confirm your address.",
    },
    "signatures": {"fr": "signatures", "en": "signatures"},
    "goal": {"fr": "objectif", "en": "goal"},
    "pow_noscript": {
        "fr": "Ce formulaire fait un petit calcul anti-robot dans votre navigateur : "
        "activez JavaScript pour l'envoyer.",
        "en": "This form runs a small anti-robot computation in your browser: enable "
        "JavaScript to send it.",
    },
    "pow_working": {"fr": "Vérification anti-robot…", "en": "Anti-robot check…"},
    "privacy": {
        "fr": "Vos réponses sont utilisées par l'organisation qui publie ce formulaire, "
        "pour ce formulaire et, si vous cochez une case, pour les messages qu'elle décrit. "
        "Vous pouvez retirer votre accord à tout moment.",
        "en": "Your answers are used by the organisation publishing this form, for this "
        "form and, if you tick a box, for the messages it describes. You may withdraw your "
        "consent at any time.",
    },
    "closed": {"fr": "Ce formulaire est clos.", "en": "This form is closed."},
    "not_found": {
        "fr": "Ce formulaire n'existe pas ou n'est plus en ligne.",
        "en": "This form does not exist or is no longer online.",
    },
    "ended": {"fr": "Ce formulaire est terminé.", "en": "This form has ended."},
    "not_yet_open": {
        "fr": "Ce formulaire n'est pas encore ouvert. Il ouvrira le {date}.",
        "en": "This form is not open yet. It opens on {date}.",
    },
    "nothing_stored": {
        "fr": "Rien n'a été enregistré.",
        "en": "Nothing was recorded.",
    },
    "too_many": {
        "fr": "Trop d'envois depuis votre connexion : réessayez dans {seconds} secondes.",
        "en": "Too many submissions from your connection: try again in {seconds} seconds.",
    },
    "too_many_form": {
        "fr": "Ce formulaire reçoit beaucoup de réponses en ce moment : réessayez dans "
        "{seconds} secondes.",
        "en": "This form is receiving many answers right now: try again in {seconds} seconds.",
    },
    "too_large": {
        "fr": "Vos réponses sont trop longues (au plus {limit} octets). Raccourcissez-les "
        "et envoyez à nouveau.",
        "en": "Your answers are too long (at most {limit} bytes). Shorten them and send again.",
    },
    "unreadable": {
        "fr": "Votre envoi n'a pas pu être lu. Envoyez à nouveau le formulaire.",
        "en": "Your submission could not be read. Send the form again.",
    },
    Refusal.honeypot: {
        "fr": "Votre envoi ressemble à celui d'un robot : un champ caché, que les personnes "
        "ne voient pas, était rempli. Laissez-le vide et envoyez à nouveau.",
        "en": "Your submission looks like a robot's: a hidden field people do not see was "
        "filled in. Leave it empty and send again.",
    },
    Refusal.too_fast: {
        "fr": "Vous avez envoyé le formulaire très vite : patientez quelques secondes, "
        "vérifiez vos réponses, puis envoyez à nouveau.",
        "en": "You sent the form very quickly: wait a few seconds, check your answers, then "
        "send again.",
    },
    Refusal.token_missing: {
        "fr": "Cette page n'était pas complète : nous l'avons rechargée, envoyez à nouveau.",
        "en": "This page was incomplete: we reloaded it, please send again.",
    },
    Refusal.token_invalid: {
        "fr": "Cette page n'est pas valide : nous l'avons rechargée, envoyez à nouveau.",
        "en": "This page is not valid: we reloaded it, please send again.",
    },
    Refusal.token_expired: {
        "fr": "Cette page était ouverte depuis trop longtemps : nous l'avons rechargée, "
        "envoyez à nouveau.",
        "en": "This page was open for too long: we reloaded it, please send again.",
    },
    Refusal.texts_changed: {
        "fr": "Les textes des cases à cocher ont changé depuis l'ouverture de la page : "
        "relisez-les, puis envoyez à nouveau.",
        "en": "The texts of the boxes changed since the page was opened: read them again, "
        "then send again.",
    },
    Refusal.proof_of_work: {
        "fr": "La vérification anti-robot n'a pas abouti (JavaScript est-il activé ?). "
        "Envoyez à nouveau.",
        "en": "The anti-robot check did not complete (is JavaScript enabled?). Send again.",
    },
}

#: a field's problem, as the person reads it (the reason of contacts' rules is technical)
INVALID: dict[str, dict[Language, str]] = {
    "email": {
        "fr": "Saisissez une adresse email valide, par exemple nom@exemple.fr.",
        "en": "Enter a valid email address, such as name@example.org.",
    },
    "phone": {
        "fr": "Saisissez un numéro de téléphone valide, par exemple 06 12 34 56 78.",
        "en": "Enter a valid phone number, such as +44 7700 900123.",
    },
    "postcode": {
        "fr": "Saisissez un code postal valide (5 chiffres en France).",
        "en": "Enter a valid postcode.",
    },
    "birth_year": {
        "fr": "Saisissez une année de naissance, par exemple 1984.",
        "en": "Enter a year of birth, such as 1984.",
    },
}
_REACHABLE = {
    "fr": "Indiquez une adresse email ou un numéro de téléphone.",
    "en": "Give an email address or a phone number.",
}
_INPUTS: dict[str, tuple[str, str, str]] = {
    # name: (type, autocomplete, inputmode)
    "given_name": ("text", "given-name", ""),
    "family_name": ("text", "family-name", ""),
    "email": ("email", "email", "email"),
    "phone": ("tel", "tel", "tel"),
    "address": ("text", "street-address", ""),
    "postcode": ("text", "postal-code", "numeric"),
    "commune": ("text", "address-level2", ""),
    "birth_year": ("text", "bday-year", "numeric"),
}


def word(key: str, lang: Language, **values: Any) -> str:
    return WORDS[key][lang].format(**values)


def field_message(name: str, reason: str, lang: Language) -> str:
    if reason == REQUIRED:
        return word("required", lang)
    if reason.startswith("give an email"):
        return _REACHABLE[lang]
    if name in INVALID:
        return INVALID[name][lang]
    return reason  # custom fields' own reasons ("must be one of ...")


# ---------------------------------------------------------------- building blocks


def _document(title: str, body: str, lang: Language, *, script: bool = False) -> str:
    js = f'<script src="{static_url("form.js")}" defer></script>' if script else ""
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title>"
        f'<link rel="stylesheet" href="{static_url("form.css")}">{js}</head>'
        f'<body><main class="tf-page">{body}</main></body></html>'
    )


def _paragraphs(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return "".join(
        f"<p{cls}>{escape(part).replace(chr(10), '<br>')}</p>"
        for part in text.split("\n\n")
        if part.strip()
    )


def counter(signatures: int, goal: int | None, lang: Language) -> str:
    goal_text = f" ({word('goal', lang)} {goal:,})".replace(",", "\u202f") if goal else ""
    bar = ""
    if goal:
        bar = (
            f'<progress max="{goal}" value="{min(signatures, goal)}" '
            f'aria-label="{escape(word("signatures", lang))}"></progress>'
        )
    count = f"{signatures:,}".replace(",", "\u202f")
    return (
        f'<p class="tf-counter"><strong>{count}</strong> {word("signatures", lang)}'
        f"{goal_text}</p>{bar}"
    )


def _date(value: datetime, lang: Language) -> str:
    return value.strftime("%d/%m/%Y %H:%M UTC" if lang == "fr" else "%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- the form


def form_page(
    form: Mapping[str, Any],
    boxes: Sequence[Mapping[str, Any]],
    *,
    lang: Language,
    token: str,
    bits: int,
    values: Mapping[str, Any] | None = None,
    custom: Mapping[str, Any] | None = None,
    ticked: frozenset[tuple[str, str]] = frozenset(),
    errors: Sequence[tuple[str, str]] = (),
    notice: str | None = None,
    signatures: int | None = None,
) -> str:
    """The form, empty or re-shown with the person's values and what to fix."""
    values = values or {}
    custom = custom or {}
    by_field: dict[str, str] = {}
    for name, reason in errors:
        by_field.setdefault(name, field_message(name.removeprefix("custom."), reason, lang))
    parts = [f"<h1>{escape(form['title'])}</h1>"]
    if notice or by_field:
        items = "".join(
            f'<li><a href="#{_input_id(name)}">{escape(message)}</a></li>'
            for name, message in by_field.items()
        )
        lead = f"<p>{escape(notice)}</p>" if notice else ""
        parts.append(
            '<div class="tf-errors" role="alert" tabindex="-1" id="tf-errors">'
            f"<h2>{word('problem', lang)}</h2>{lead}"
            f"{f'<ul>{items}</ul>' if items else ''}</div>"
        )
    parts.append(_paragraphs(form.get("intro", ""), "tf-intro"))
    if signatures is not None:
        parts.append(counter(signatures, form.get("goal"), lang))
    action = f"{PREFIX}/{escape(str(form['_id']))}?lang={lang}"
    parts.append(
        f'<form method="post" action="{action}" class="tf-form" novalidate '
        f'data-pow-bits="{bits}" data-pow-working="{escape(word("pow_working", lang))}">'
        f'<input type="hidden" name="_token" value="{escape(token)}">'
        '<input type="hidden" name="_pow_nonce" value="">'
    )
    for spec in form["fields"]:
        parts.append(_contact_input(spec, values.get(spec["name"]), by_field, lang))
    for spec in form.get("custom_fields", []):
        parts.append(_custom_input(spec, custom.get(spec["key"]), by_field, lang))
    if boxes:
        parts.append(
            '<fieldset class="tf-consents" id="tf-consents">'
            f"<legend>{word('consents', lang)}</legend>"
        )
        for i, box in enumerate(boxes):
            value = f"{box['channel']}:{box['purpose']}"
            checked = " checked" if (box["channel"], box["purpose"]) in ticked else ""
            title = box.get("title") or value
            parts.append(
                '<div class="tf-consent">'
                f'<input type="checkbox" id="tf-consent-{i}" name="consent" '
                f'value="{escape(value)}" aria-describedby="tf-consent-{i}-text"{checked}>'
                f'<label for="tf-consent-{i}">{escape(title)}</label>'
                f'<div class="tf-consent-text" id="tf-consent-{i}-text">'
                f"{_paragraphs(box['body'])}"
                f'<p class="tf-muted">version {escape(box["text_version"])}</p></div></div>'
            )
        parts.append("</fieldset>")
    parts.append(
        '<div class="tf-hp" aria-hidden="true">'
        f'<label for="tf-website">{word("honeypot", lang)}</label>'
        '<input type="text" id="tf-website" name="website" tabindex="-1" autocomplete="off">'
        "</div>"
    )
    if bits:
        parts.append(f'<noscript><p class="tf-notice">{word("pow_noscript", lang)}</p></noscript>')
        parts.append('<p class="tf-pow" aria-live="polite"></p>')
    parts.append(
        f'<button type="submit">{word("submit." + form["kind"], lang)}</button></form>'
        f"{_paragraphs(word('privacy', lang), 'tf-muted')}"
    )
    return _document(form["title"], "".join(parts), lang, script=True)


def _input_id(name: str) -> str:
    return "tf-" + name.replace(".", "-")


def _label(text: str, input_id: str, required: bool, lang: Language) -> str:
    optional = "" if required else f' <span class="tf-optional">({word("optional", lang)})</span>'
    return f'<label for="{input_id}">{escape(text)}{optional}</label>'


def _error(input_id: str, message: str | None) -> tuple[str, str]:
    """The error paragraph and the attributes linking the input to it."""
    if message is None:
        return "", ""
    return (
        f'<p class="tf-error" id="{input_id}-error">{escape(message)}</p>',
        f' aria-describedby="{input_id}-error" aria-invalid="true"',
    )


def _contact_input(
    spec: Mapping[str, Any], value: Any, errors: Mapping[str, str], lang: Language
) -> str:
    name = spec["name"]
    input_id = _input_id(name)
    type_, autocomplete, inputmode = _INPUTS[name]
    error, linked = _error(input_id, errors.get(name))
    required = " required" if spec["required"] else ""
    mode = f' inputmode="{inputmode}"' if inputmode else ""
    shown = "" if value is None else escape(str(value))
    return (
        f'<div class="tf-field{" tf-invalid" if error else ""}">'
        f"{_label(spec.get('label') or word(name, lang), input_id, spec['required'], lang)}"
        f"{error}"
        f'<input type="{type_}" id="{input_id}" name="{name}" autocomplete="{autocomplete}"'
        f'{mode} maxlength="254" value="{shown}"{required}{linked}></div>'
    )


def _custom_input(
    spec: Mapping[str, Any], value: Any, errors: Mapping[str, str], lang: Language
) -> str:
    name = f"custom.{spec['key']}"
    input_id = _input_id(name)
    post_name = f"c_{spec['key']}"
    error, linked = _error(input_id, errors.get(name))
    required = " required" if spec["required"] else ""
    css = f"tf-field{' tf-invalid' if error else ''}"
    if spec["type"] == "boolean":
        checked = " checked" if value in (True, "on", "true", "1") else ""
        return (
            f'<div class="{css} tf-check">{error}'
            f'<input type="checkbox" id="{input_id}" name="{post_name}" value="on"'
            f"{checked}{required}{linked}>"
            f"{_label(spec['label'], input_id, spec['required'], lang)}</div>"
        )
    label = _label(spec["label"], input_id, spec["required"], lang)
    if spec["type"] == "choice":
        options = [f'<option value="">{word("choose", lang)}</option>']
        for choice in spec["choices"]:
            selected = " selected" if value == choice else ""
            options.append(f'<option value="{escape(choice)}"{selected}>{escape(choice)}</option>')
        return (
            f'<div class="{css}">{label}{error}<select id="{input_id}" name="{post_name}"'
            f"{required}{linked}>{''.join(options)}</select></div>"
        )
    mode = ' inputmode="decimal"' if spec["type"] == "number" else ""
    shown = "" if value is None else escape(str(value))
    return (
        f'<div class="{css}">{label}{error}<input type="text" id="{input_id}" '
        f'name="{post_name}"{mode} maxlength="500" value="{shown}"{required}{linked}></div>'
    )


# ---------------------------------------------------------------- other pages


def thank_you_page(
    form: Mapping[str, Any], lang: Language, *, signatures: int | None, email_box: bool
) -> str:
    text = form.get("thank_you") or word("received", lang)
    parts = [f"<h1>{word('thanks', lang)}</h1>", _paragraphs(text)]
    if email_box:
        parts.append(_paragraphs(word("confirm_email", lang), "tf-muted"))
    if signatures is not None:
        parts.append(counter(signatures, form.get("goal"), lang))
    return _document(form["title"], "".join(parts), lang)


def unavailable_page(form: Mapping[str, Any], state: Availability, lang: Language) -> str:
    if state is Availability.not_yet_open:
        message = word("not_yet_open", lang, date=_date(form["starts_at"], lang))
    elif state is Availability.ended:
        message = word("ended", lang)
    else:
        message = word("closed", lang)
    body = f'<h1>{escape(form["title"])}</h1><p class="tf-notice">{escape(message)}</p>'
    return _document(form["title"], body, lang)


def message_page(title: str, message: str, lang: Language) -> str:
    """A refusal the form cannot be shown again with (too large, too many)."""
    body = (
        f'<h1>{escape(title)}</h1><div class="tf-errors" role="alert">'
        f"<p>{escape(message)}</p><p>{word('nothing_stored', lang)}</p></div>"
    )
    return _document(title, body, lang)


def not_found_page(lang: Language) -> str:
    message = word("not_found", lang)
    return _document(message, f"<h1>{escape(message)}</h1>", lang)
