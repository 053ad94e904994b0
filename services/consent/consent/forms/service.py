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
- redelivery records nothing twice: boxes already in the ledger for the submission are
  skipped, and the double opt-in request id is derived from the submission and the box.
"""

from __future__ import annotations

import hashlib
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
from consent.forms.store import FormLedger
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
        """Record the person's ticked boxes; returns how many entries were recorded."""
        event = decode_as(envelope, FormSubmissionAppliedV1)
        if not event.consents:
            return 0
        directory = self.consent.contacts
        contact_id = (await directory.survivors([event.contact_id], session))[event.contact_id]
        if await directory.is_erased(contact_id, session):
            return 0
        contact = await directory.get(contact_id, session)
        if contact is None or (
            contact_id == event.contact_id and (contact.get("version") or 0) < event.contact_version
        ):
            # contact-created/updated (another topic) brings the person and the addresses
            # the suppression check needs
            raise Awaiting(f"contact {event.contact_id} v{event.contact_version} not known yet")
        if await self.consent.is_suppressed(contact_id, session):
            return 0
        done = await self.ledger.recorded(contact_id, event.submission_id, session)
        statuses = await self.consent.statuses(contact_id, session)
        client = ClientInfo(ip=event.proof.get("ip"), user_agent=event.proof.get("user_agent"))
        paths = ancestor_paths(contact["federation_path"])
        changes: list[Change] = []
        refused: list[dict[str, str]] = []
        for box in event.consents:
            if (box.channel.value, box.purpose) in done:
                continue
            try:
                self.consent.check_choice(box.channel, box.purpose)
            except InvalidField as exc:
                refused.append(_refused(box, exc.message))
                continue
            text = await self.consent.consents.text_for(box.text_version, paths, session)
            if (why := refusal(box, text)) is not None:
                refused.append(_refused(box, why))
                continue
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
        if changes:
            await self.consent.record_and_audit(
                session, contact, changes, THE_PERSON, client, SOURCE
            )
        if refused:
            log.warning(
                "consent.form_boxes_refused",
                submission_id=event.submission_id,
                form_id=event.form_id,
                boxes=refused,
            )
            await self.consent.write_audit(
                session,
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
        return len(changes)


def _refused(box: FormConsent, reason: str) -> dict[str, str]:
    return {
        "channel": box.channel.value,
        "purpose": box.purpose,
        "text_version": box.text_version,
        "text_sha256": box.text_sha256,
        "reason": reason,
    }
