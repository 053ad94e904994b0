"""Consent's projections: which can be rebuilt from the topics, and how.

``tribune rebuild consent <projection>`` (tribune_ops.rebuild; tribune_shared.projections
for the switch) builds a fresh version of one of consent's views of the contacts service's
facts, from the beginning of the topics, with the worker's rules:

- ``contacts``: the contact directory (each contact's federation; tombstones of the erased
  and of the merged, which remember whom they became);
- ``contact_hashes``: the salted hashes of each contact's addresses (STOP lookups,
  suppression checks).

Erased people stay erased: their contact events open as tombstones (the vault destroyed
their key) and erasure-requested is replayed as a tombstone, for the ids merged into them
too.

Not rebuildable: the consent ledger and current states, the suppression list, privacy
requests and retention clocks. They are consent's own records (the consent-* events are
what it publishes from them, without the proofs), restored from a backup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import CONTACT_DIRECTORY, ContactDirectory
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactMergedV1
from tribune_shared.privacy import erasure_request
from tribune_shared.projections import Projection, ProjectionRegistry
from tribune_shared.store import IndexSpec, Store
from tribune_shared.subscriptions import Batch, Step

from consent.handlers import hashes_state
from consent.privacy_store import PRIVACY_REQUESTS
from consent.settings import ConsentSettings
from consent.store import CONTACT_HASHES, INDEXES, LEDGER, SUPPRESSION, ConsentStore

CONTACT_EVENTS = ("contact-created", "contact-updated")


def directory_into(store: Store, into: str) -> Mapping[str, Step | Sequence[Step]]:
    directory = ContactDirectory(store, into)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, ContactMergedV1)
        direct = event.surviving_contact_id
        person = (await directory.survivors([direct], session))[direct]
        if await directory.is_erased(person, session):  # the same person: erased too
            await directory.forget(event.merged_contact_id, session)
        else:
            await directory.forget_merged(event.merged_contact_id, direct, session)

    async def on_erasure(envelope: Envelope, session: AsyncClientSession) -> None:
        contact_id = erasure_request(envelope).contact_id
        # the ids merged into the person are the person (their links go with them)
        for erased in [*await directory.merged_ids(contact_id, session), contact_id]:
            await directory.forget(erased, session)

    batch = Batch(directory.on_contact_events)
    return {
        **dict.fromkeys(CONTACT_EVENTS, batch),
        "contact-merged": on_merged,
        "erasure-requested": on_erasure,
    }


def hashes_into(store: Store, into: str) -> Mapping[str, Step | Sequence[Step]]:
    settings = store.settings
    if not isinstance(settings, ConsentSettings):
        raise TypeError("consent's projections are built with consent's settings")
    salt = settings.suppression_salt
    consents = ConsentStore(store)

    async def on_contacts(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await consents.project_hashes_many(
            [hashes_state(e, salt) for e in envelopes], session, into=into
        )

    async def on_erasure(envelope: Envelope, session: AsyncClientSession) -> None:
        contact_id = erasure_request(envelope).contact_id
        # the ids merged into the person, as the contact directory knows them
        merged = await ContactDirectory(store).merged_ids(contact_id, session)
        for erased in [*merged, contact_id]:
            await consents.forget_hashes(erased, session, into=into)

    batch = Batch(on_contacts)
    return {**dict.fromkeys(CONTACT_EVENTS, batch), "erasure-requested": on_erasure}


def _indexes(collection: str, specs: Sequence[IndexSpec]) -> tuple[IndexSpec, ...]:
    return tuple(spec for spec in specs if spec.collection == collection)


REGISTRY = ProjectionRegistry(
    service="consent",
    settings=ConsentSettings,
    projections=(
        Projection(
            CONTACT_DIRECTORY,
            "the contact directory: each contact's federation; tombstones of the erased "
            "and the merged",
            topics=(*CONTACT_EVENTS, "contact-merged", "erasure-requested"),
            handlers=directory_into,
            indexes=_indexes(CONTACT_DIRECTORY, ContactDirectory.indexes),
        ),
        Projection(
            CONTACT_HASHES,
            "salted hashes of each contact's addresses (reads the contact directory for "
            "the ids merged into an erased person)",
            topics=(*CONTACT_EVENTS, "erasure-requested"),
            handlers=hashes_into,
            indexes=_indexes(CONTACT_HASHES, INDEXES),
        ),
        Projection(
            LEDGER,
            "the consent ledger (and the current states derived from it), with proofs",
            why_not="consent's own records, with their proofs: the consent-* events are "
            "published from them (restore them from a backup)",
        ),
        Projection(
            SUPPRESSION,
            "the suppression list",
            why_not="consent's own decisions (bounces, complaints, erasures), kept as salted "
            "hashes only (restore it from a backup)",
        ),
        Projection(
            PRIVACY_REQUESTS,
            "privacy requests (access, erasure) and retention clocks",
            why_not="consent's own records (restore them from a backup)",
        ),
    ),
)
