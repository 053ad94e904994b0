"""The consent side of public forms: the boxes a person ticked become consents whose
proof is their own (``form-submission-applied``, after contacts matched the person).

- email: a pending consent through the existing double opt-in (the confirmation request
  and its email, consent-confirmation-requested); the person's link grants it;
- other channels: granted at once;
- proof: the text version and its SHA-256 as the page showed them (checked against
  consent's own text of that version for the person's federation or its ancestors), the
  time of the submission, the minimised IP and user agent, the form and the submission;
  actor: the person; source ``web_form``;
- a box whose text does not match (the page showed another body, or consent has no such
  version) or whose purpose is unknown is NOT recorded: a consent with a proof that does
  not hold is no consent. The refusal is in the audit log (``form_consent_refused``) for
  the DPO;
- a person whose address is on the suppression list: nothing is recorded (as for users);
- a batch of events (``apply_many``) gives the state the events one by one give, with
  one read per kind of fact and a few writes for the whole batch;
- redelivery records nothing twice: boxes already in the ledger for the submission are
  skipped, refused boxes already in the audit log are not logged again, and the double
  opt-in request id is derived from the submission and the box.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.client_info import ClientInfo
from tribune_shared.errors import InvalidField
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import (
    Channel,
    EventContract,
    FormConsent,
    FormSubmissionAppliedV1,
)
from tribune_shared.logging import get_logger
from tribune_shared.store import ancestor_paths
from tribune_shared.subscriptions import Awaiting

from consent.domain import ConsentStatus, needs_entry, proof_of
from consent.forms.store import FormLedger, Recorded
from consent.service import THE_PERSON, AuditAction, Change, ChangeRequest, ConsentService

log = get_logger(__name__)

SOURCE = "web_form"


def request_id_of(submission_id: str, box: FormConsent) -> str:
    """The double opt-in request of one box of one submission (the same on redelivery)."""
    raw = f"{submission_id}|{box.channel.value}|{box.purpose}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def refusal(box: FormConsent, text: dict[str, Any] | None) -> str | None:
    """Why a ticked box cannot be recorded with its proof, or None."""
    if text is None:
        return "no consent text of this version for the person's federation"
    if text.get("sha256") != box.text_sha256:
        return "the text the page showed is not consent's text of this version"
    return None


class FormConsents:
    def __init__(self, consent: ConsentService) -> None:
        self.consent = consent
        self.ledger = FormLedger(consent.store)

    async def apply(self, envelope: Envelope, session: AsyncClientSession) -> int:
        """One event: the batch of one (the same rules, the same writes)."""
        return await self.apply_many([envelope], session)

    async def apply_many(self, envelopes: list[Envelope], session: AsyncClientSession) -> int:
        """Record the ticked boxes of a batch of applied submissions, in offset order, as
        if one by one (a person's second submission in the batch sees the first's pending
        request); returns how many entries were recorded. One read per kind of fact and a
        few writes for the whole batch. Raises ``Awaiting`` naming the first event whose
        person is not known yet (the consumer applies the events before it and holds the
        partition there)."""
        decoded = [(e, decode_as(e, FormSubmissionAppliedV1)) for e in envelopes]
        events = [event for _, event in decoded if event.consents]
        if not events:
            return 0
        survivors = await self.consent.contacts.survivors({e.contact_id for e in events}, session)
        people = await self.ledger.people(survivors.values(), session)
        for envelope, event in decoded:
            if not event.consents:
                continue
            contact_id = survivors[event.contact_id]
            doc = people.get(contact_id)
            if doc is not None and doc.get("erased"):
                continue
            if doc is None or (
                contact_id == event.contact_id and (doc.get("version") or 0) < event.contact_version
            ):
                # contact-created/updated (another topic) brings the person and the
                # addresses the suppression check needs
                raise Awaiting(
                    f"contact {event.contact_id} v{event.contact_version} not known yet",
                    event_id=envelope.event_id,
                )
        live = {c: d for c, d in people.items() if not d.get("erased")}
        suppressed = await self._suppressed(live, session)
        todo = [e for e in events if survivors[e.contact_id] in live]
        todo = [e for e in todo if survivors[e.contact_id] not in suppressed]
        if not todo:
            return 0
        done = await self.ledger.recorded(
            ((survivors[e.contact_id], e.submission_id) for e in todo), session
        )
        statuses = await self.ledger.statuses({survivors[e.contact_id] for e in todo}, session)
        paths = {c: ancestor_paths(live[c]["federation_path"]) for c in statuses}
        texts = await self.ledger.texts_for(
            (box.text_version for e in todo for box in e.consents),
            (p for person in paths.values() for p in person),
            session,
        )
        pairs = [(survivors[e.contact_id], e.submission_id) for e in todo]
        logged = await self.ledger.refusals_audited(
            pairs, AuditAction.form_consent_refused.value, session
        )
        batch: list[tuple[dict[str, Any], list[Change], ClientInfo]] = []
        audits: list[dict[str, Any]] = []
        for event in todo:
            contact_id = survivors[event.contact_id]
            contact = live[contact_id]
            client = ClientInfo(ip=event.proof.get("ip"), user_agent=event.proof.get("user_agent"))
            changes, refused = self._plan(
                event,
                contact,
                done,
                statuses[contact_id],
                partial(nearest_text, texts, at=paths[contact_id]),
            )
            batch.append((contact, changes, client))
            if refused and event.submission_id not in logged:
                logged.add(event.submission_id)
                log.warning(
                    "consent.form_boxes_refused",
                    submission_id=event.submission_id,
                    form_id=event.form_id,
                    boxes=refused,
                )
                audits.append(
                    self.consent.audit_doc(
                        AuditAction.form_consent_refused,
                        THE_PERSON,
                        client,
                        federation_path=contact["federation_path"],
                        contact_id=contact_id,
                        detail={
                            "form_id": event.form_id,
                            "submission_id": event.submission_id,
                            "boxes": refused,
                        },
                    )
                )
        await self.consent.record_many(session, batch, THE_PERSON, SOURCE, audits=audits)
        return sum(len(changes) for _, changes, _ in batch)

    async def _suppressed(
        self, people: dict[str, dict[str, Any]], session: AsyncClientSession
    ) -> set[str]:
        """Who among these people has an email or phone (theirs or of a contact merged
        into them) on the suppression list."""
        members = await self.ledger.merged_into(people, session)
        hashes = await self.ledger.address_hashes(
            (m for ids in members.values() for m in ids), session
        )
        listed = await self.consent.consents.suppressed_among(
            (h for ids in members.values() for m in ids for h in hashes.get(m, ())), session
        )
        return {
            person
            for person, ids in members.items()
            if any(h in listed for m in ids for h in hashes.get(m, ()))
        }

    def _plan(
        self,
        event: FormSubmissionAppliedV1,
        contact: dict[str, Any],
        done: set[Recorded],
        statuses: dict[tuple[Channel, str], ConsentStatus],
        text_for: Callable[[str], dict[str, Any] | None],
    ) -> tuple[list[Change], list[dict[str, str]]]:
        """The changes one submission makes (``statuses`` updated with them, for the next
        submission of the same person in the batch) and the boxes refused."""
        contact_id = contact["_id"]
        client = ClientInfo(ip=event.proof.get("ip"), user_agent=event.proof.get("user_agent"))
        changes: list[Change] = []
        refused: list[dict[str, str]] = []
        for box in event.consents:
            if (contact_id, event.submission_id, box.channel.value, box.purpose) in done:
                continue
            try:
                self.consent.check_choice(box.channel, box.purpose)
            except InvalidField as exc:
                refused.append(_refused(box, exc.message))
                continue
            text = text_for(box.text_version)
            if (why := refusal(box, text)) is not None:
                refused.append(_refused(box, why))
                continue
            assert text is not None
            email = box.channel is Channel.email
            wanted = ConsentStatus.pending if email else ConsentStatus.granted
            if not needs_entry(statuses.get((box.channel, box.purpose)), wanted):
                continue  # already consented, or a confirmation already pending
            proof = proof_of(
                text=text,
                reference=event.form_id,
                client=client.as_proof(),
                extra={
                    "form_id": event.form_id,
                    "submission_id": event.submission_id,
                    "submitted_at": event.proof.get("submitted_at")
                    or event.submitted_at.isoformat(),
                    **({"page": event.proof["page"]} if event.proof.get("page") else {}),
                },
            )
            pending = None
            extra: tuple[EventContract, ...] = ()
            if email:
                request = ChangeRequest(
                    box.channel,
                    box.purpose,
                    SOURCE,
                    text_version=box.text_version,
                    reference=event.form_id,
                    double_opt_in=True,
                )
                pending, extra = self.consent.confirmation_request(
                    contact,
                    request,
                    proof,
                    text,
                    THE_PERSON,
                    request_id=request_id_of(event.submission_id, box),
                )
                proof = {**proof, "request_id": pending["request_id"]}
            statuses[(box.channel, box.purpose)] = wanted
            changes.append(
                Change(
                    box.channel,
                    box.purpose,
                    wanted,
                    SOURCE,
                    proof,
                    text=text,
                    pending=pending,
                    events=extra,
                )
            )
        return changes, refused


def nearest_text(texts: list[dict[str, Any]], version: str, at: list[str]) -> dict[str, Any] | None:
    """The text of that version closest to the person (their federation, else the
    nearest ancestor's), as ``ConsentStore.text_for`` picks it."""
    return max(
        (t for t in texts if t["version"] == version and t["federation_path"] in at),
        key=lambda t: len(t["federation_path"]),
        default=None,
    )


def _refused(box: FormConsent, reason: str) -> dict[str, str]:
    return {
        "channel": box.channel.value,
        "purpose": box.purpose,
        "text_version": box.text_version,
        "text_sha256": box.text_sha256,
        "reason": reason,
    }
