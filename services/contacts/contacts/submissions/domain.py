"""Applying queued form submissions to people, free of I/O.

A submission is read with the create endpoint's own rules (``normalise_contact``), matched
to a person of the form's federation by normalised email or phone (in the store, or
earlier in the same batch: two submissions of one new person make ONE contact), and folded
into that person with the CSV import's merge rule (``contacts.imports.fold_into``):

- names, address, codes, birth year, custom fields: filled when the contact has none,
  the value already there (an operator's, or an earlier submission's) is kept;
- a new email or phone is ADDED (the primary email and the first phone stay first);
  an email or phone that belongs to another contact of the federation is left out (the
  person is matched on their first address that is known; the unique indexes forbid
  one address on two people);
- the form's tags and its reference (as a tag) are added; nothing is ever blanked.

A person counts once per form: the (form, contact) signature; a submission of a person
who already signed is a ``repeat``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from tribune_shared.errors import InvalidFields
from tribune_shared.events.contracts import (
    ContactAddress,
    ContactEmail,
    ContactPhone,
    DataOrigin,
    OriginKind,
)

from contacts.custom_fields import CustomFieldDefinition, normalise_custom_fields
from contacts.domain import (
    Contact,
    ContactFields,
    ContactRules,
    aware,
    build_contact,
    normalise_contact,
    normalise_tag,
    updated_contact,
)
from contacts.imports import fold_into

#: statuses of a ``form_submissions`` document
QUEUED, APPLIED, REJECTED = "queued", "applied", "rejected"
STATUSES = (QUEUED, APPLIED, REJECTED)

#: the single-value answers a form may carry (the forms helper's field keys)
_TEXT_ANSWERS = ("given_name", "family_name", "email", "phone")
_ADDRESS_ANSWERS = ("postcode", "commune", "commune_insee")


@dataclass(frozen=True)
class Submission:
    """A queued submission, its answers normalised as contact fields."""

    id: str
    form_id: str
    form_kind: str
    federation_id: str
    federation_path: str
    fields: ContactFields
    custom: dict[str, Any]
    consents: tuple[dict[str, str], ...]
    proof: dict[str, str]
    reference: str
    meeting_id: str | None
    received_at: datetime

    @property
    def keys(self) -> list[str]:
        """Its emails then its phones: what it is matched on, in that order."""
        return [
            *(e.address for e in self.fields.emails or ()),
            *(p.number for p in self.fields.phones or ()),
        ]

    @property
    def submitted_at(self) -> datetime:
        raw = self.proof.get("submitted_at")
        if raw:
            try:
                return aware(datetime.fromisoformat(raw.replace("Z", "+00:00")))
            except ValueError:
                pass
        return self.received_at


@dataclass(frozen=True)
class Rejected:
    """A queued submission whose answers no longer pass the contact rules (the forms
    intake checks them first: this is a safety net, e.g. a rule tightened meanwhile)."""

    id: str
    reason: str


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _extra_tags(raw: Iterable[Any], rules: ContactRules) -> tuple[str, ...]:
    """The form's tags and reference as tags; one that breaks the tag rules is dropped
    (the person's submission is not refused for the form's settings)."""
    out: dict[str, None] = {}
    for value in raw:
        if not isinstance(value, str) or not value.strip():
            continue
        try:
            out.setdefault(normalise_tag(value, rules.max_tag_length), None)
        except ValueError:
            continue
    return tuple(out)[: rules.max_tags]


def read_submission(
    doc: Mapping[str, Any],
    rules: ContactRules,
    definitions: Mapping[str, CustomFieldDefinition],
    *,
    max_custom_text: int,
) -> Submission | Rejected:
    """A ``form_submissions`` document as contact fields. Custom answers become the
    contact's custom fields when the federation defines a field of that name and the value
    fits it; the others stay on the submission only (the list shows them)."""
    answers = doc.get("answers") or {}
    form = doc.get("form") or {}
    values = {name: _text(answers.get(name)) for name in _TEXT_ANSWERS}
    address_values = {name: _text(answers.get(name)) or None for name in _ADDRESS_ANSWERS}
    lines = [_text(v) for v in answers.get("address_lines") or () if _text(v)]
    address = (
        ContactAddress(lines=lines, **address_values)
        if lines or any(address_values.values())
        else None
    )
    birth_year = answers.get("birth_year")
    if isinstance(birth_year, str) and birth_year.strip().isdigit():
        birth_year = int(birth_year.strip())
    reference = _text(form.get("reference"))
    raw = ContactFields(
        given_name=values["given_name"],
        family_name=values["family_name"],
        email=values["email"] or None,
        phone=values["phone"] or None,
        address=address,
        birth_year=birth_year if isinstance(birth_year, int) else None,
    )
    try:
        fields = normalise_contact(raw, rules)
    except InvalidFields as exc:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in exc.problems)
        return Rejected(str(doc["_id"]), reasons or "invalid answers")
    tags = _extra_tags([*(form.get("tags") or ()), reference], rules)
    given_custom = answers.get("custom") or {}
    known = {k: v for k, v in given_custom.items() if k in definitions and v not in (None, "")}
    custom, problems = normalise_custom_fields(
        known, definitions, max_text=max_custom_text, required=False
    )
    for name, _reason in problems:  # an answer that does not fit the field stays out
        custom.pop(name.removeprefix("custom_fields."), None)
    return Submission(
        id=str(doc["_id"]),
        form_id=str(doc["form_id"]),
        form_kind=str(doc.get("form_kind") or form.get("kind") or "petition"),
        federation_id=str(doc["federation_id"]),
        federation_path=str(doc["federation_path"]),
        fields=ContactFields(**{**_fields_dict(fields), "tags": tags}),
        custom=dict(custom),
        consents=tuple(dict(c) for c in doc.get("consents") or ()),
        proof={str(k): str(v) for k, v in (doc.get("proof") or {}).items() if v is not None},
        reference=reference,
        meeting_id=form.get("meeting_id") or None,
        received_at=aware(doc["received_at"]),
    )


def _fields_dict(fields: ContactFields) -> dict[str, Any]:
    return {name: getattr(fields, name) for name in ContactFields.__dataclass_fields__}


def web_form_origin(submission: Submission) -> DataOrigin:
    """Where a contact created by a form came from: the form (its id and reference)."""
    detail = f"form {submission.form_id}"
    if submission.reference:
        detail += f" ({submission.reference})"
    return DataOrigin(
        kind=OriginKind.web_form,
        detail=detail[:500],
        collected_on=submission.received_at.date(),
    )


def without_keys(fields: ContactFields, dropped: set[str]) -> ContactFields:
    """The fields without the emails/phones in ``dropped`` (held by another person)."""
    if not dropped:
        return fields
    emails = tuple(e for e in fields.emails or () if e.address not in dropped)
    if emails and not any(e.primary for e in emails):
        emails = (ContactEmail(address=emails[0].address, primary=True), *emails[1:])
    phones: tuple[ContactPhone, ...] = tuple(
        p for p in fields.phones or () if p.number not in dropped
    )
    return ContactFields(
        **{
            **_fields_dict(fields),
            "emails": emails,
            "phones": phones,
            "email": emails[0].address if emails else None,
            "phone": phones[0].number if phones else None,
        }
    )


# ---------------------------------------------------------------- a batch


@dataclass
class Target:
    """A contact a batch creates (``original`` None) or folds submissions into."""

    contact_id: str
    federation: tuple[str, str]
    fields: ContactFields
    custom: dict[str, Any]
    original: Contact | None = None
    #: the submission that created it (its origin)
    first: Submission | None = None
    #: the last submission folded into it (who ``updated_by`` names)
    last: Submission | None = None


@dataclass(frozen=True)
class Outcome:
    submission: Submission
    contact_id: str
    #: the person entered the file with this submission
    created: bool
    #: the person had already submitted this form (counted once)
    repeat: bool


@dataclass
class BatchPlan:
    targets: dict[str, Target] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    #: (form_id, contact_id, submission) of people counted for the first time
    signatures: list[tuple[str, str, Submission]] = field(default_factory=list)


#: a key of the matching: (federation id, normalised email or E.164 phone)
Key = tuple[str, str]


def plan_batch(
    submissions: Iterable[Submission],
    holders: Mapping[Key, str],
    contacts: Mapping[str, Contact],
    signed: set[tuple[str, str]],
    rules: ContactRules,
    new_id: Any,
) -> BatchPlan:
    """Match and fold a batch of submissions (in order). ``holders``: which stored contact
    holds each key; ``contacts``: those contacts; ``signed``: (form, contact) pairs already
    counted; ``new_id()``: a fresh contact id."""
    plan = BatchPlan()
    overlay: dict[Key, str] = {}
    counted = set(signed)
    for sub in submissions:
        keys = [(sub.federation_id, k) for k in sub.keys]
        held = [(k, overlay.get(k) or holders.get(k)) for k in keys]
        found = [cid for _, cid in held if cid is not None]
        if not found:
            contact_id = new_id()
            plan.targets[contact_id] = Target(
                contact_id,
                (sub.federation_id, sub.federation_path),
                sub.fields,
                dict(sub.custom),
                first=sub,
            )
            created = True
        else:
            contact_id = found[0]  # the first known address: emails before phones
            elsewhere = {k[1] for k, cid in held if cid is not None and cid != contact_id}
            target = plan.targets.get(contact_id)
            if target is None:
                original = contacts[contact_id]
                target = plan.targets[contact_id] = Target(
                    contact_id,
                    (original.federation_id, original.federation_path),
                    original.fields(),
                    dict(original.custom_fields),
                    original=original,
                )
            target.fields, target.custom = fold_into(
                target.fields,
                target.custom,
                without_keys(sub.fields, elsewhere),
                sub.custom,
                rules,
            )
            created = False
        target = plan.targets[contact_id]
        target.last = sub
        for key in [
            *(e.address for e in target.fields.emails or ()),
            *(p.number for p in target.fields.phones or ()),
        ]:
            overlay.setdefault((sub.federation_id, key), contact_id)
        pair = (sub.form_id, contact_id)
        repeat = pair in counted
        if not repeat:
            counted.add(pair)
            plan.signatures.append((sub.form_id, contact_id, sub))
        plan.outcomes.append(Outcome(sub, contact_id, created=created, repeat=repeat))
    return plan


@dataclass
class Written:
    """What a batch writes to contacts: new contacts, new versions (with what changed and
    the version they replace), and each touched contact's version after the batch."""

    created: list[Contact] = field(default_factory=list)
    updated: list[tuple[Contact, list[str], int]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)


def materialise(plan: BatchPlan, *, now: datetime, suppressed_keys: set[str]) -> Written:
    """The contacts of a plan as stored: built with contacts' own rules
    (``build_contact``, ``updated_contact``); an address on the suppression list marks the
    contact ``suppressed`` as an import does."""
    out = Written()
    for target in plan.targets.values():
        keys = {e.address for e in target.fields.emails or ()}
        keys |= {p.number for p in target.fields.phones or ()}
        flagged = bool(keys & suppressed_keys)
        source = target.last or target.first
        assert source is not None  # every target comes from a submission
        actor = form_actor(source.form_id)
        if target.original is None:
            assert target.first is not None
            contact = build_contact(
                contact_id=target.contact_id,
                federation=target.federation,
                version=1,
                fields=target.fields,
                custom=target.custom,
                origin=web_form_origin(target.first),
                created=(now, form_actor(target.first.form_id)),
                updated=(now, None),
                suppressed=flagged,
            )
            out.created.append(contact)
            out.versions[contact.id] = 1
            continue
        result = updated_contact(
            target.original,
            target.fields,
            target.custom,
            suppressed=flagged,
            now=now,
            updated_by=actor,
        )
        if result is None:
            out.versions[target.contact_id] = target.original.version
            continue
        contact, changed = result
        out.updated.append((contact, changed, target.original.version))
        out.versions[contact.id] = contact.version
    return out


def form_actor(form_id: str) -> str:
    """Who ``created_by``/``updated_by`` name for a change a form made: the form."""
    return f"form:{form_id}"


# ---------------------------------------------------------------- the submissions list


def check_status(status: str | None) -> str | None:
    if status is not None and status not in STATUSES:
        raise InvalidFields([("status", f"one of {', '.join(STATUSES)}")])
    return status


def submission_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One submission as the back office sees it: who (the person's id once applied),
    whether it created them or repeated an earlier signature, the boxes ticked with the
    text versions, and when. The answers stay on the person (GET /api/v1/contacts/{id})."""
    return {
        "id": doc["_id"],
        "form_id": doc["form_id"],
        "federation_id": doc.get("federation_id"),
        "status": doc.get("status"),
        "contact_id": doc.get("contact_id"),
        "created": doc.get("created"),
        "repeat": doc.get("repeat"),
        "consents": [
            {k: c.get(k) for k in ("channel", "purpose", "text_version", "text_sha256")}
            for c in doc.get("consents") or ()
        ],
        "submitted_at": (doc.get("proof") or {}).get("submitted_at")
        or _iso(doc.get("received_at")),
        "received_at": _iso(doc.get("received_at")),
        "applied_at": _iso(doc.get("applied_at")),
        "reason": doc.get("reason"),
    }


def _iso(at: datetime | None) -> str | None:
    return aware(at).isoformat().replace("+00:00", "Z") if at is not None else None


def today_of(at: datetime) -> date:
    return aware(at).date()
