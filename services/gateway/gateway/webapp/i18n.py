"""The web app's words, in French (first) and English, and how numbers, amounts and dates
are written in each (pure).

Every key exists in both catalogues (tests/unit/gateway/test_webapp_i18n.py); a template
asking for a missing key fails loudly instead of showing a key to a user.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Literal

Lang = Literal["fr", "en"]
LANGS: tuple[Lang, ...] = ("fr", "en")
DEFAULT_LANG: Lang = "fr"
#: what each language is called in itself (the switch names the other one)
LANG_NAMES: Mapping[Lang, str] = {"fr": "Français", "en": "English"}
_BY_TAG: Mapping[str, Lang] = {lang: lang for lang in LANGS}

FR: dict[str, str] = {
    "app.name": "Tribune",
    "app.skip": "Aller au contenu",
    "nav.label": "Menu principal",
    "nav.dashboard": "Tableau de bord",
    "nav.contacts": "Contacts",
    "nav.imports": "Imports",
    "nav.users": "Utilisateurs",
    "nav.logout": "Se déconnecter",
    "nav.language": "Langue",
    "nav.signed_in_as": "Connecté·e : {email}",
    "login.title": "Connexion",
    "login.intro": "Connectez-vous avec l'adresse et le mot de passe de votre compte Tribune.",
    "login.email": "Adresse e-mail",
    "login.password": "Mot de passe",
    "login.submit": "Se connecter",
    "login.bad_credentials": "Adresse e-mail ou mot de passe incorrect.",
    "login.rate_limited": "Trop de tentatives. Réessayez dans {seconds} secondes.",
    "login.invalid": "Saisissez une adresse e-mail et un mot de passe.",
    "login.expired": "Votre session a expiré : reconnectez-vous.",
    "login.logged_out": "Vous êtes déconnecté·e.",
    "login.unavailable": "Le service est momentanément indisponible. Réessayez plus tard.",
    "dashboard.title": "Tableau de bord",
    "dashboard.federation": "Fédération",
    "dashboard.show": "Afficher",
    "dashboard.members": "Adhérents",
    "dashboard.members_good": "À jour de cotisation",
    "dashboard.members_grace": "Dont en période de grâce",
    "dashboard.members_lapsed": "Échus",
    "dashboard.money": "Cotisations et dons en {year}",
    "dashboard.dues": "Cotisations",
    "dashboard.donations": "Dons",
    "dashboard.live": "Mis à jour en direct",
    "dashboard.live_paused": "Mise à jour en direct interrompue ; rechargez la page.",
    "dashboard.figures_unavailable": "Ces chiffres ne sont pas disponibles pour le moment.",
    "dashboard.contacts": "Contacts",
    "dashboard.contacts_count": "Contacts de la fédération",
    "dashboard.imports": "Imports en cours",
    "dashboard.no_imports": "Aucun import en cours.",
    "dashboard.campaigns": "Dernières campagnes",
    "dashboard.no_campaigns": "Aucune campagne pour l'instant.",
    "campaign.name": "Campagne",
    "campaign.status": "État",
    "campaign.sent": "Envoyés",
    "campaign.delivered": "Remis",
    "campaign.bounced": "Rejetés",
    "import.file": "Fichier",
    "import.status": "État",
    "import.progress": "Avancement",
    "import.rows": "{done} lignes sur {total}",
    "import.rows_unknown": "{done} lignes",
    "import.rejected": "Rejetées",
    "import.status.queued": "En attente",
    "import.status.running": "En cours",
    "import.status.done": "Terminé",
    "import.status.failed": "Échec",
    "import.status.cancelled": "Annulé",
    "contacts.title": "Contacts",
    "contacts.search": "Rechercher",
    "contacts.q": "Nom, e-mail ou téléphone",
    "contacts.q_hint": "Le début d'un nom, d'une adresse e-mail ou d'un numéro.",
    "contacts.tag": "Étiquette",
    "contacts.postcode": "Code postal",
    "contacts.commune": "Commune (code INSEE)",
    "contacts.has_email": "Avec une adresse e-mail",
    "contacts.has_phone": "Avec un téléphone",
    "contacts.submit": "Rechercher",
    "contacts.results": "Résultats",
    "contacts.none": "Aucun contact ne correspond.",
    "contacts.next": "Page suivante",
    "contacts.first": "Première page",
    "contacts.name": "Nom",
    "contacts.email": "E-mail",
    "contacts.phone": "Téléphone",
    "contacts.postcode_col": "Code postal",
    "contacts.tags": "Étiquettes",
    "person.title": "Fiche de {name}",
    "person.back": "Retour à la recherche",
    "person.identity": "Identité",
    "person.emails": "Adresses e-mail",
    "person.phones": "Téléphones",
    "person.address": "Adresse",
    "person.tags": "Étiquettes",
    "person.origin": "Origine des données",
    "person.created": "Créé le",
    "person.hidden": "Champs masqués pour votre rôle : {fields}",
    "person.consents": "Consentements",
    "person.suppressed": "Une adresse de cette personne est sur la liste d'opposition.",
    "person.no_consents": "Aucun consentement enregistré.",
    "person.history": "Historique et preuves",
    "person.channel": "Canal",
    "person.purpose": "Finalité",
    "person.status": "État",
    "person.source": "Source",
    "person.proof": "Preuve",
    "person.when": "Date",
    "person.memberships": "Adhésions",
    "person.no_memberships": "Aucune adhésion.",
    "person.plan": "Formule",
    "person.period": "Période",
    "person.good_standing": "À jour",
    "person.payments": "Paiements",
    "person.no_payments": "Aucun paiement.",
    "person.amount": "Montant",
    "person.method": "Moyen",
    "person.messages": "Messages",
    "person.no_messages": "Aucun message.",
    "person.subject": "Objet",
    "person.unavailable": "Une partie de la fiche est indisponible pour le moment : {parts}.",
    "person.not_allowed": "Votre rôle ne permet pas de voir cette partie.",
    "person.part_unavailable": "Cette partie n'est pas disponible (service indisponible ou "
    "non autorisé pour votre rôle).",
    "common.yes": "Oui",
    "common.no": "Non",
    "common.none": "—",
    "error.title": "Erreur",
    "error.404.title": "Page introuvable",
    "error.404.text": "Cette page n'existe pas ou vous n'y avez pas accès.",
    "error.403.title": "Accès refusé",
    "error.403.text": "Votre rôle ne permet pas d'ouvrir cette page.",
    "error.400.title": "Demande refusée",
    "error.400.text": "Le formulaire a expiré ou n'est pas valide. Rechargez la page et réessayez.",
    "error.503.title": "Service indisponible",
    "error.503.text": "Un service ne répond pas pour le moment. Réessayez dans un instant.",
    "error.home": "Retour au tableau de bord",
    "error.field": "{field} : {reason}",
}

EN: dict[str, str] = {
    "app.name": "Tribune",
    "app.skip": "Skip to content",
    "nav.label": "Main menu",
    "nav.dashboard": "Dashboard",
    "nav.contacts": "Contacts",
    "nav.imports": "Imports",
    "nav.users": "Users",
    "nav.logout": "Log out",
    "nav.language": "Language",
    "nav.signed_in_as": "Signed in: {email}",
    "login.title": "Log in",
    "login.intro": "Log in with the email and password of your Tribune account.",
    "login.email": "Email",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.bad_credentials": "Incorrect email or password.",
    "login.rate_limited": "Too many attempts. Try again in {seconds} seconds.",
    "login.invalid": "Enter an email and a password.",
    "login.expired": "Your session has expired: please log in again.",
    "login.logged_out": "You are logged out.",
    "login.unavailable": "The service is unavailable right now. Try again later.",
    "dashboard.title": "Dashboard",
    "dashboard.federation": "Federation",
    "dashboard.show": "Show",
    "dashboard.members": "Members",
    "dashboard.members_good": "Up to date with dues",
    "dashboard.members_grace": "Of whom in grace",
    "dashboard.members_lapsed": "Lapsed",
    "dashboard.money": "Dues and donations in {year}",
    "dashboard.dues": "Dues",
    "dashboard.donations": "Donations",
    "dashboard.live": "Updated live",
    "dashboard.live_paused": "Live updates stopped; reload the page.",
    "dashboard.figures_unavailable": "These figures are not available right now.",
    "dashboard.contacts": "Contacts",
    "dashboard.contacts_count": "Contacts of the federation",
    "dashboard.imports": "Imports in progress",
    "dashboard.no_imports": "No import in progress.",
    "dashboard.campaigns": "Latest campaigns",
    "dashboard.no_campaigns": "No campaign yet.",
    "campaign.name": "Campaign",
    "campaign.status": "Status",
    "campaign.sent": "Sent",
    "campaign.delivered": "Delivered",
    "campaign.bounced": "Bounced",
    "import.file": "File",
    "import.status": "Status",
    "import.progress": "Progress",
    "import.rows": "{done} of {total} rows",
    "import.rows_unknown": "{done} rows",
    "import.rejected": "Rejected",
    "import.status.queued": "Queued",
    "import.status.running": "Running",
    "import.status.done": "Done",
    "import.status.failed": "Failed",
    "import.status.cancelled": "Cancelled",
    "contacts.title": "Contacts",
    "contacts.search": "Search",
    "contacts.q": "Name, email or phone",
    "contacts.q_hint": "The start of a name, an email address or a number.",
    "contacts.tag": "Tag",
    "contacts.postcode": "Postcode",
    "contacts.commune": "Commune (INSEE code)",
    "contacts.has_email": "With an email address",
    "contacts.has_phone": "With a phone",
    "contacts.submit": "Search",
    "contacts.results": "Results",
    "contacts.none": "No contact matches.",
    "contacts.next": "Next page",
    "contacts.first": "First page",
    "contacts.name": "Name",
    "contacts.email": "Email",
    "contacts.phone": "Phone",
    "contacts.postcode_col": "Postcode",
    "contacts.tags": "Tags",
    "person.title": "{name}",
    "person.back": "Back to the search",
    "person.identity": "Identity",
    "person.emails": "Email addresses",
    "person.phones": "Phones",
    "person.address": "Address",
    "person.tags": "Tags",
    "person.origin": "Where the data came from",
    "person.created": "Created on",
    "person.hidden": "Fields hidden for your role: {fields}",
    "person.consents": "Consents",
    "person.suppressed": "An address of this person is on the suppression list.",
    "person.no_consents": "No consent recorded.",
    "person.history": "History and proof",
    "person.channel": "Channel",
    "person.purpose": "Purpose",
    "person.status": "Status",
    "person.source": "Source",
    "person.proof": "Proof",
    "person.when": "Date",
    "person.memberships": "Memberships",
    "person.no_memberships": "No membership.",
    "person.plan": "Plan",
    "person.period": "Period",
    "person.good_standing": "Up to date",
    "person.payments": "Payments",
    "person.no_payments": "No payment.",
    "person.amount": "Amount",
    "person.method": "Method",
    "person.messages": "Messages",
    "person.no_messages": "No message.",
    "person.subject": "Subject",
    "person.unavailable": "Part of this record is unavailable right now: {parts}.",
    "person.not_allowed": "Your role may not see this part.",
    "person.part_unavailable": "This part is not available (its service is down or your "
    "role may not see it).",
    "common.yes": "Yes",
    "common.no": "No",
    "common.none": "—",
    "error.title": "Error",
    "error.404.title": "Page not found",
    "error.404.text": "This page does not exist or you may not open it.",
    "error.403.title": "Access refused",
    "error.403.text": "Your role may not open this page.",
    "error.400.title": "Request refused",
    "error.400.text": "The form has expired or is not valid. Reload the page and try again.",
    "error.503.title": "Service unavailable",
    "error.503.text": "A service is not answering right now. Try again in a moment.",
    "error.home": "Back to the dashboard",
    "error.field": "{field}: {reason}",
}

CATALOGUES: Mapping[Lang, Mapping[str, str]] = {"fr": FR, "en": EN}


class MissingMessage(KeyError):
    """A template asked for a key no catalogue has (a bug, never shown as a key)."""


def negotiate(cookie: str | None, accept_language: str | None) -> Lang:
    """The language of a page: the one chosen with the switch (cookie), else the first of
    the browser's languages we have (Accept-Language, by quality), else French."""
    if cookie is not None and cookie in _BY_TAG:
        return _BY_TAG[cookie]
    for tag in _accepted(accept_language or ""):
        primary = tag.split("-", 1)[0]
        if primary in _BY_TAG:
            return _BY_TAG[primary]
    return DEFAULT_LANG


def _accepted(header: str) -> list[str]:
    """The language tags of an Accept-Language header, best first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(header[:1000].split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, index, tag.lower()))
    return [tag for _, _, tag in sorted(ranked)]


def translator(lang: Lang) -> Callable[..., str]:
    catalogue = CATALOGUES[lang]

    def t(key: str, **values: object) -> str:
        try:
            text = catalogue[key]
        except KeyError:
            raise MissingMessage(f"no {lang} text for {key!r}") from None
        return text.format(**values) if values else text

    return t


# ---------------------------------------------------------------- numbers, amounts, dates

#: the French digit group separator is a narrow no-break space, as the browsers'
#: Intl.NumberFormat writes it (the live updates and the first render agree)
_NARROW_NBSP = "\u202f"
_NBSP = "\u00a0"


def format_int(value: int, lang: Lang) -> str:
    text = f"{value:,}"
    return text.replace(",", _NARROW_NBSP) if lang == "fr" else text


def format_cents(cents: int, lang: Lang, currency: str = "EUR") -> str:
    """An amount in euros, as Intl.NumberFormat(lang, {style: "currency"}) writes it."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    if lang == "fr":
        return f"{sign}{format_int(whole, lang)},{rest:02d}{_NBSP}€"
    return f"{sign}€{format_int(whole, lang)}.{rest:02d}"


def format_date(value: date | datetime | str | None, lang: Lang) -> str:
    """A date (or the date of a timestamp): 14/07/2026 in French, 2026-07-14 in English
    (unambiguous wherever the reader lives)."""
    if value is None:
        return CATALOGUES[lang]["common.none"]
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    day = value.date() if isinstance(value, datetime) else value
    if lang == "fr":
        return day.strftime("%d/%m/%Y")
    return day.strftime("%Y-%m-%d")
