"""Use cases of form submissions: applying a batch of queued submissions to people (the
worker's ``form-submitted`` handler) and the back office's list of a form's submissions.

A batch is applied in the consumer's transaction, in a handful of bulk operations
whatever its size: the queued documents (one read), the people holding their emails and
phones (one read per federation of the batch, through the import's lookup), those
contacts (one read), the signatures already counted (one read), the suppression list
(one read); then the new and changed contacts (the import's bulk write), the submissions
marked, the new signatures, the counters and every event (one packed outbox row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidFields, NotFound
from tribune_shared.events import Envelope, decode_as, new_envelope
from tribune_shared.events.contracts import (
    FormConsent,
    FormSubmissionAppliedV1,
    FormSubmittedV1,
)
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.suppression import email_hash, phone_hash

from contacts.custom_fields import CustomFieldDefinition
from contacts.domain import (
    contact_created,
    contact_updated,
    decode_time_cursor,
    encode_time_cursor,
    new_contact_id,
)
from contacts.import_jobs import now_ms
from contacts.meetings.domain import Rsvp
from contacts.meetings.service import record_rsvps
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import (
    CustomFieldStore,
    ImportStore,
    from_document,
    replacement_document,
    to_document,
)
from contacts.submissions.domain import (
    Key,
    Outcome,
    Rejected,
    Submission,
    Written,
    check_status,
    materialise,
    plan_batch,
    read_submission,
    submission_view,
)
from contacts.submissions.store import SubmissionStore, signature_id

log = get_logger(__name__)


class SubmissionsService:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.submissions = SubmissionStore(store)
        self.imports = ImportStore(store)
        self.custom_fields = CustomFieldStore(store)
        self.outbox = Outbox(store)
        # The very rules of the create endpoint (as the import uses them).
        self.rules = ContactsService(settings, store).rules

    # ------------------------------------------------------------ the worker's batch
    async def apply(self, envelopes: Sequence[Envelope], session: AsyncClientSession) -> None:
        """Apply the queued submissions these form-submitted events name (already applied
        ones are skipped: a redelivery changes nothing)."""
        causes: dict[str, Envelope] = {}
        for envelope in envelopes:
            causes.setdefault(decode_as(envelope, FormSubmittedV1).submission_id, envelope)
        docs = await self.submissions.queued(list(causes), session)
        if not docs:
            return
        definitions: dict[str, dict[str, CustomFieldDefinition]] = {}
        for path in dict.fromkeys(d["federation_path"] for d in docs):
            definitions[path] = await self.custom_fields.applicable(path, session)
        read = [
            read_submission(
                doc,
                self.rules,
                definitions[doc["federation_path"]],
                max_custom_text=self.settings.max_custom_text_length,
            )
            for doc in docs
        ]
        subs = [r for r in read if isinstance(r, Submission)]
        rejected = [(r.id, r.reason) for r in read if isinstance(r, Rejected)]
        for sid, reason in rejected:
            log.warning("submissions.rejected", submission_id=sid, reason=reason[:300])
        holders, contact_docs = await self._people(subs, session)
        contacts = {cid: from_document(doc) for cid, doc in contact_docs.items()}
        pairs = [(s.form_id, cid) for s in subs for cid in holders_of(s, holders)]
        signed = await self.submissions.signed(pairs, session)
        plan = plan_batch(subs, holders, contacts, signed, self.rules, new_contact_id)
        now = now_ms()
        suppressed = await self._suppressed_keys(plan.targets.values(), session)
        written = materialise(plan, now=now, suppressed_keys=suppressed)
        await self.imports.write_contacts(
            session,
            [to_document(c) for c in written.created],
            [
                (replacement_document(c, contact_docs[c.id]), previous)
                for c, _, previous in written.updated
            ],
        )
        await self._rsvps(plan.outcomes, session)
        await self.submissions.record(
            session,
            applied=[
                (
                    o.submission.id,
                    {"contact_id": o.contact_id, "created": o.created, "repeat": o.repeat},
                )
                for o in plan.outcomes
            ],
            rejected=rejected,
            signatures=[
                {
                    "_id": signature_id(form_id, contact_id),
                    "form_id": form_id,
                    "contact_id": contact_id,
                    "submission_id": sub.id,
                    "federation_id": sub.federation_id,
                    "federation_path": sub.federation_path,
                    "signed_at": sub.submitted_at,
                }
                for form_id, contact_id, sub in plan.signatures
            ],
            counts=_counts(plan.outcomes, plan.signatures),
            now=now,
        )
        await self.outbox.add_batch(session, self._events(written, plan.outcomes, causes))

    async def _people(
        self, subs: Sequence[Submission], session: AsyncClientSession
    ) -> tuple[dict[Key, str], dict[str, dict[str, Any]]]:
        """Who holds each email and phone of the batch in its federation (the import's
        lookup: the unique multikey indexes), and those contacts' documents."""
        by_federation: dict[str, list[str]] = {}
        for sub in subs:
            by_federation.setdefault(sub.federation_id, []).extend(sub.keys)
        holders: dict[Key, str] = {}
        for federation_id, keys in by_federation.items():
            found = await self.imports.ids_by_keys(federation_id, keys, session)
            holders.update({(federation_id, k): cid for k, cid in found.items()})
        docs = await self.imports.contacts_by_ids(sorted(set(holders.values())), session)
        # A holder gone between the two reads cannot happen within one snapshot; a key
        # pointing at a missing document is dropped rather than trusted.
        holders = {k: cid for k, cid in holders.items() if cid in docs}
        return holders, docs

    async def _suppressed_keys(self, targets, session: AsyncClientSession) -> set[str]:
        """The emails/phones of these contacts on the suppression list (as hashes)."""
        salt = self.settings.suppression_salt
        by_hash: dict[str, str] = {}
        for target in targets:
            for email in target.fields.emails or ():
                if h := email_hash(email.address, salt):
                    by_hash[h] = email.address
            for phone in target.fields.phones or ():
                if h := phone_hash(phone.number, salt):
                    by_hash[h] = phone.number
        found = await self.imports.suppressed(list(by_hash), session)
        return {by_hash[h] for h in found}

    async def _rsvps(self, outcomes: Sequence[Outcome], session: AsyncClientSession) -> None:
        """Event RSVP forms register the person for the form's meeting (contacts.meetings:
        idempotent, capacity and waiting list are its rules)."""
        wanted = [
            o
            for o in outcomes
            if o.submission.form_kind == "event_rsvp" and o.submission.meeting_id
        ]
        if not wanted:
            return
        rsvps = [
            Rsvp(
                meeting_id=str(o.submission.meeting_id),
                contact_id=o.contact_id,
                submission_id=o.submission.id,
                federation_id=o.submission.federation_id,
                federation_path=o.submission.federation_path,
            )
            for o in wanted
        ]
        await record_rsvps(self.store, session, rsvps)

    def _events(
        self, written: Written, outcomes: Sequence[Outcome], causes: dict[str, Envelope]
    ) -> list[Envelope]:
        producer = self.settings.service_name
        first_cause = {o.contact_id: causes.get(o.submission.id) for o in reversed(outcomes)}

        def correlation(contact_id: str) -> str | None:
            cause = first_cause.get(contact_id)
            return cause.correlation_id if cause is not None else None

        events = [contact_created(c, producer, correlation(c.id)) for c in written.created]
        events += [
            contact_updated(c, changed, producer, correlation(c.id))
            for c, changed, _ in written.updated
        ]
        for outcome in outcomes:
            sub = outcome.submission
            events.append(
                new_envelope(
                    FormSubmissionAppliedV1(
                        submission_id=sub.id,
                        form_id=sub.form_id,
                        form_kind=sub.form_kind,  # type: ignore[arg-type]
                        contact_id=outcome.contact_id,
                        contact_version=written.versions[outcome.contact_id],
                        created=outcome.created,
                        repeat=outcome.repeat,
                        consents=[FormConsent.model_validate(c) for c in sub.consents],
                        proof={**sub.proof, "form_id": sub.form_id, "submission_id": sub.id},
                        submitted_at=sub.submitted_at,
                    ),
                    producer=producer,
                    federation_id=sub.federation_id,
                    federation_path=sub.federation_path,
                    causation=causes.get(sub.id),
                )
            )
        return events

    # ------------------------------------------------------------ the back office
    async def page(
        self,
        identity: Identity,
        form_id: str,
        *,
        status: str | None,
        cursor: str | None,
        limit: int | None,
    ) -> dict[str, Any]:
        """A form's submissions, newest first (404 for a form outside the subtree)."""
        check_status(status)
        after = decode_time_cursor(cursor) if cursor else None
        size = limit or self.settings.default_page_size
        if not 1 <= size <= self.settings.max_page_size:
            raise InvalidFields([("limit", f"must be between 1 and {self.settings.max_page_size}")])
        if await self.submissions.form(form_id, identity.scope()) is None:
            raise NotFound("form not found")
        items, more = await self.submissions.page(form_id, status=status, after=after, limit=size)
        last = items[-1] if items and more else None
        return {
            "items": [submission_view(d) for d in items],
            "signatures": await self.submissions.signatures(form_id),
            "next_cursor": encode_time_cursor(last["received_at"], last["_id"]) if last else None,
        }


def holders_of(sub: Submission, holders: dict[Key, str]) -> list[str]:
    """The stored people holding one of the submission's emails or phones."""
    found = (holders.get((sub.federation_id, k)) for k in sub.keys)
    return list(dict.fromkeys(cid for cid in found if cid is not None))


def _counts(
    outcomes: Sequence[Outcome], signatures: Sequence[tuple[str, str, Submission]]
) -> dict[str, tuple[int, int]]:
    """Per form: (people counted for the first time, submissions applied)."""
    counts: dict[str, list[int]] = {}
    for form_id, _, _ in signatures:
        counts.setdefault(form_id, [0, 0])[0] += 1
    for outcome in outcomes:
        counts.setdefault(outcome.submission.form_id, [0, 0])[1] += 1
    return {form_id: (people, applied) for form_id, (people, applied) in counts.items()}
