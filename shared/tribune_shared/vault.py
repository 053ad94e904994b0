"""The key vault: one data key per person, so erasure can be final (crypto-shredding).

Events are kept by Kafka (and could be replayed by any new consumer) long after a person
asked to be erased. So the personal fields of an event (``EventContract.personal_fields``)
never travel in clear: when an envelope enters a service's outbox they are moved out of
``data`` into ``envelope.sealed``, encrypted with AES-256-GCM under the data key of the
person (``subject_field``, the contact id). Kernel consumers open sealed envelopes before
their handlers run, so handlers see plain data. Erasure destroys the person's key: every
copy of their events, on any topic, in any outbox row or dead-letter queue, becomes
unreadable at once, and decodes with those fields at their defaults
(``event.erased_fields`` says which).

The vault is a dedicated database (``<database_prefix>vault``, ``TRIBUNE_VAULT_*``
settings) reached ONLY through this module; in production this module is where a KMS
(envelope encryption with a master key) would sit. A destroyed key leaves a tombstone, so
no key is ever created again for an erased person: an event produced after the erasure
drops the personal fields instead of sealing them.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tribune_shared.events import Envelope, EventContract, Sealed, utcnow
from tribune_shared.events.contracts import contract_for
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings

log = get_logger(__name__)

DATA_KEYS = "data_keys"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
_EMPTY: tuple[object, ...] = (None, "", [], {})

__all__ = [
    "KeyVault",
    "SealError",
    "contract_of",
    "open_with",
    "seal_with",
    "vault_for",
]


class SealError(Exception):
    """A sealed envelope could not be opened with its subject's key (tampered, wrong key)."""


# ---------------------------------------------------------------- pure sealing


def contract_of(envelope: Envelope) -> type[EventContract] | None:
    try:
        return contract_for(envelope.type, envelope.version)
    except LookupError:
        return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())


def _aad(envelope: Envelope, subject: str) -> bytes:
    # Binds the ciphertext to its event: it cannot be moved to another envelope or person.
    return f"{envelope.event_id}|{envelope.type}|{envelope.version}|{subject}".encode()


def _pop(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    *parents, leaf = path.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node:
        return True, node.pop(leaf)
    return False, None


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def subject_of(envelope: Envelope, contract: type[EventContract]) -> str | None:
    value = envelope.data.get(contract.subject_field)
    return str(value) if value else None


def needs_seal(envelope: Envelope, contract: type[EventContract] | None) -> bool:
    """True if the envelope carries a non-empty personal value in clear."""
    if contract is None or not contract.personal_fields or envelope.sealed is not None:
        return False
    probe = copy.deepcopy(envelope.data)
    return any(_pop(probe, p)[1] not in _EMPTY for p in contract.personal_fields)


def seal_with(envelope: Envelope, contract: type[EventContract], key: bytes | None) -> Envelope:
    """The envelope with its personal fields moved out of ``data`` and encrypted with
    ``key``; with ``key=None`` (the person is already erased) they are dropped."""
    subject = subject_of(envelope, contract)
    if subject is None:
        raise SealError(f"{envelope.type}: no subject in {contract.subject_field!r}")
    data = copy.deepcopy(envelope.data)
    values: dict[str, Any] = {}
    for path in contract.personal_fields:
        found, value = _pop(data, path)
        if found:
            values[path] = value
    if key is None:
        sealed = Sealed(subject=subject, fields=sorted(values))
    else:
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        ciphertext = AESGCM(key).encrypt(nonce, plain, _aad(envelope, subject))
        sealed = Sealed(
            subject=subject, fields=sorted(values), nonce=_b64(nonce), ciphertext=_b64(ciphertext)
        )
    return envelope.model_copy(update={"data": data, "sealed": sealed})


def open_with(envelope: Envelope, key: bytes | None) -> Envelope:
    """The envelope with its sealed fields back in ``data`` (``sealed`` cleared). Without a
    key (destroyed: the person was erased) it is returned unchanged: decoding it gives the
    personal fields' defaults and lists them in ``erased_fields``."""
    sealed = envelope.sealed
    if sealed is None:
        return envelope
    if key is None or sealed.ciphertext is None or sealed.nonce is None:
        return envelope
    try:
        plain = AESGCM(key).decrypt(
            _unb64(sealed.nonce), _unb64(sealed.ciphertext), _aad(envelope, sealed.subject)
        )
    except InvalidTag as exc:
        raise SealError(f"sealed fields of event {envelope.event_id} fail authentication") from exc
    data = copy.deepcopy(envelope.data)
    for path, value in json.loads(plain).items():
        _put(data, path, value)
    return envelope.model_copy(update={"data": data, "sealed": None})


# ---------------------------------------------------------------- the vault


class KeyVault:
    """Per-person data keys: created on first use, destroyed on erasure (for good)."""

    def __init__(
        self,
        settings: ServiceSettings,
        client: AsyncMongoClient | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._own_client = client is None
        self.client: AsyncMongoClient = (
            client
            if client is not None
            else AsyncMongoClient(
                settings.vault_mongo_url or settings.mongo_url,
                tz_aware=True,
                serverSelectionTimeoutMS=5000,
                uuidRepresentation="standard",
            )
        )
        self.keys = self.client[settings.vault_database_name][DATA_KEYS]
        self._clock = clock
        # subject -> (expires at, key or None when destroyed); destroyed never come back.
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()

    # ------------------------------------------------------------ cache
    def _cached(self, subject: str) -> tuple[bool, bytes | None]:
        hit = self._cache.get(subject)
        if hit is None:
            return False, None
        expires, key = hit
        if key is not None and expires < self._clock():
            del self._cache[subject]
            return False, None
        self._cache.move_to_end(subject)
        return True, key

    def _remember(self, subject: str, key: bytes | None) -> None:
        size = self.settings.vault_key_cache_size
        ttl = self.settings.vault_key_cache_seconds
        if size == 0 or (key is not None and ttl == 0):
            return
        self._cache[subject] = (self._clock() + ttl, key)
        self._cache.move_to_end(subject)
        while len(self._cache) > size:
            self._cache.popitem(last=False)

    def forget_cached(self, subject: str | None = None) -> None:
        if subject is None:
            self._cache.clear()
        else:
            self._cache.pop(subject, None)

    # ------------------------------------------------------------ keys
    async def keys_for(
        self, subjects: Iterable[str], *, create: bool = False
    ) -> dict[str, bytes | None]:
        """Each subject's live key; None if destroyed (or absent and ``create`` is False).
        ``create`` makes the missing ones, never one for a destroyed subject."""
        out: dict[str, bytes | None] = {}
        wanted: list[str] = []
        for subject in dict.fromkeys(subjects):
            hit, key = self._cached(subject)
            if hit:
                out[subject] = key
            else:
                wanted.append(subject)
        if not wanted:
            return out
        found = {d["_id"]: d for d in await self.keys.find({"_id": {"$in": wanted}}).to_list()}
        missing = [s for s in wanted if s not in found]
        if missing and create:
            now = utcnow()
            docs = [{"_id": s, "key": os.urandom(KEY_BYTES), "created_at": now} for s in missing]
            try:
                await self.keys.insert_many(docs, ordered=False)
                found.update({d["_id"]: d for d in docs})
            except BulkWriteError as exc:  # a concurrent producer created some first
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
                again = await self.keys.find({"_id": {"$in": missing}}).to_list()
                found.update({d["_id"]: d for d in again})
        for subject in wanted:
            doc = found.get(subject)
            if doc is None:
                out[subject] = None  # absent, not created: not remembered
                continue
            key = bytes(doc["key"]) if doc.get("key") is not None else None
            out[subject] = key
            self._remember(subject, key)
        return out

    async def key_for(self, subject: str, *, create: bool = False) -> bytes | None:
        return (await self.keys_for([subject], create=create))[subject]

    async def destroy(self, subject: str) -> datetime:
        """Destroy the subject's key (idempotent): what it sealed can never be read again,
        and no key is created for the subject afterwards. Returns when it was destroyed."""
        try:
            doc = await self.keys.find_one_and_update(
                {"_id": subject, "destroyed_at": None},  # live, or never keyed
                {"$unset": {"key": ""}, "$set": {"destroyed_at": utcnow()}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # destroyed before: keep the first time
            doc = await self.keys.find_one({"_id": subject})
        assert doc is not None
        self._cache.pop(subject, None)
        self._remember(subject, None)
        log.info("vault.key_destroyed", subject=subject)
        return doc["destroyed_at"]

    # ------------------------------------------------------------ envelopes
    async def seal_many(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Seal the personal fields of every envelope that carries some in clear (one
        vault round trip for the batch); others are returned as they are."""
        todo: dict[int, tuple[type[EventContract], str]] = {}
        for i, env in enumerate(envelopes):
            contract = contract_of(env)
            if contract is not None and needs_seal(env, contract):
                subject = subject_of(env, contract)
                if subject is None:
                    raise SealError(f"{env.type}: no subject in {contract.subject_field!r}")
                todo[i] = (contract, subject)
        if not todo:
            return list(envelopes)
        keys = await self.keys_for({s for _, s in todo.values()}, create=True)
        out = list(envelopes)
        for i, (contract, subject) in todo.items():
            out[i] = seal_with(envelopes[i], contract, keys[subject])
        return out

    async def open(self, envelope: Envelope) -> Envelope:
        """Plain data back if the subject's key lives; unchanged (fields erased) if not."""
        if envelope.sealed is None or envelope.sealed.ciphertext is None:
            return envelope
        return open_with(envelope, await self.key_for(envelope.sealed.subject))

    async def open_many(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """``open`` for a batch: one vault round trip for every subject in it."""
        subjects = {
            e.sealed.subject
            for e in envelopes
            if e.sealed is not None and e.sealed.ciphertext is not None
        }
        if not subjects:
            return list(envelopes)
        keys = await self.keys_for(subjects)
        return [
            open_with(e, keys[e.sealed.subject])
            if e.sealed is not None and e.sealed.ciphertext is not None
            else e
            for e in envelopes
        ]

    async def close(self) -> None:
        if self._own_client:
            await self.client.close()


def vault_for(store: Any) -> KeyVault:
    """The process's vault for a service's ``Store`` (created once, sharing its client
    unless ``vault_mongo_url`` points elsewhere)."""
    vault = getattr(store, "_tribune_vault", None)
    if vault is None:
        settings: ServiceSettings = store.settings
        shared = settings.vault_mongo_url in (None, "", settings.mongo_url)
        vault = KeyVault(settings, store.client if shared else None)
        store._tribune_vault = vault
    return vault
