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
settings) reached ONLY through this module. A destroyed key leaves a tombstone, so no key
is ever created again for an erased person: an event produced after the erasure drops the
personal fields instead of sealing them.

**Envelope encryption.** Data keys are never stored in clear: each is wrapped (AES-256-GCM,
bound to its subject) by a key-encryption key (KEK) that is NOT in any database:
``TRIBUNE_VAULT_KEK`` wraps, ``TRIBUNE_VAULT_PREVIOUS_KEKS`` still unwrap, and every
wrapped key names the id of the KEK that wrapped it, so a KEK is rotated without downtime:
add the new one, move the old one to the previous list, run ``KeyVault.rewrap`` (``python
-m consent.cli vault-rewrap``) until nothing is left under the old one, then drop it. The
store's credential, a dump, a backup or the oplog give wrapped keys only. In production a
KMS holds the KEK: implement ``KeyWrapper`` (wrap = the KMS's Encrypt, unwrap = Decrypt,
the KMS key's id as ``kek_id``) and return it from ``key_wrapper_for``; nothing else
changes. Keys stored unwrapped by an older version are still read, and ``rewrap`` wraps
them.

**Merged people.** contact-merged links the merged contact's key to the survivor
(``link``, done by consent when it sees the merge): destroying a person's key destroys the
keys of every contact ever merged into them, along chains of merges, and a merge seen
after its survivor was erased destroys the merged key at once.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tribune_shared.events import Envelope, EventContract, Sealed, utcnow
from tribune_shared.events.contracts import contract_for
from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import client_options

log = get_logger(__name__)

DATA_KEYS = "data_keys"
#: merged contact -> the contact it was merged into (whose erasure destroys its key too)
KEY_LINKS = "key_links"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
_EMPTY: tuple[object, ...] = (None, "", [], {})

__all__ = [
    "Destroyed",
    "KeyVault",
    "KeyWrapper",
    "LocalKeks",
    "RewrapReport",
    "SealError",
    "UnknownKek",
    "contract_of",
    "open_with",
    "seal_with",
    "vault_for",
]


class SealError(Exception):
    """A sealed envelope could not be opened with its subject's key (tampered, wrong key)."""


class UnknownKek(Exception):
    """A data key is wrapped by a KEK this process does not hold (retired too early, or
    not configured here): never read as "destroyed", so nothing is silently lost."""


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


# ---------------------------------------------------------------- key wrapping (KEK)


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys with a key-encryption key (envelope encryption).

    The hook for a KMS: an implementation calls the KMS's Encrypt / Decrypt (one call per
    key; the vault caches unwrapped keys for ``vault_key_cache_seconds``) and names the
    KMS key it used in ``kek_id``. ``subject`` must be bound to the wrapped key (AAD, or the
    KMS's encryption context) so a wrapped key cannot be copied onto another person."""

    @property
    def current_id(self) -> str:
        """The KEK new keys are wrapped with (``rewrap`` moves every key to it)."""
        ...

    async def wrap(self, key: bytes, subject: str) -> tuple[str, bytes]:
        """(id of the KEK used, wrapped key)."""
        ...

    async def unwrap(self, kek_id: str, wrapped: bytes, subject: str) -> bytes:
        """The data key; ``UnknownKek`` if ``kek_id`` is not held here, ``SealError`` if
        the wrapped key fails authentication."""
        ...


def _kek_bytes(secret: str) -> bytes:
    # Any strong secret string (like every other Tribune secret) becomes a 256-bit key.
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=b"tribune-vault-kek", info=b"v1"
    ).derive(secret.encode())


def _wrap_aad(subject: str) -> bytes:
    return f"tribune-vault-data-key|{subject}".encode()


class LocalKeks:
    """KEKs from the settings (``vault_kek`` wraps, ``vault_previous_keks`` unwrap): AES-256-
    GCM, each KEK named by a fingerprint (never the secret). Wrapped form: nonce + ciphertext."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        if not current:
            raise ValueError("a key-encryption key is required (TRIBUNE_VAULT_KEK)")
        self._keks: dict[str, AESGCM] = {}
        self._current_id = ""
        for i, secret in enumerate((current, *previous)):
            raw = _kek_bytes(secret)
            kek_id = "local-" + hashlib.sha256(b"tribune-vault-kek-id|" + raw).hexdigest()[:16]
            self._keks.setdefault(kek_id, AESGCM(raw))
            if i == 0:
                self._current_id = kek_id

    @property
    def current_id(self) -> str:
        return self._current_id

    @property
    def kek_ids(self) -> list[str]:
        return list(self._keks)

    async def wrap(self, key: bytes, subject: str) -> tuple[str, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keks[self._current_id].encrypt(nonce, key, _wrap_aad(subject))
        return self._current_id, nonce + sealed

    async def unwrap(self, kek_id: str, wrapped: bytes, subject: str) -> bytes:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise UnknownKek(
                f"the data key of {subject!r} is wrapped by KEK {kek_id!r}, which is not "
                "configured (TRIBUNE_VAULT_KEK / TRIBUNE_VAULT_PREVIOUS_KEKS)"
            )
        try:
            return kek.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(subject))
        except InvalidTag as exc:
            raise SealError(f"the wrapped data key of {subject!r} fails authentication") from exc


def key_wrapper_for(settings: ServiceSettings) -> KeyWrapper:
    """The process's key wrapper: the KEKs of the settings. A KMS-backed ``KeyWrapper``
    is returned from here instead (the one place to change)."""
    keks = settings.vault_keks()
    if not keks:
        raise ValueError(f"{settings.env_names('vault_kek')} is not set: the vault cannot work")
    return LocalKeks(keks[0], keks[1:])


# ---------------------------------------------------------------- the vault


@dataclass(frozen=True)
class Destroyed:
    """What ``destroy`` did: when the person's key was destroyed (the first time), and every
    subject whose key is now destroyed (the person's, then those merged into them)."""

    at: datetime
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    #: keys left under another KEK than the current one (could not be unwrapped here)
    failed: int


class KeyVault:
    """Per-person data keys, wrapped by a KEK: created on first use, destroyed on erasure
    (for good, with the keys of every contact merged into the person)."""

    def __init__(
        self,
        settings: ServiceSettings,
        client: AsyncMongoClient | None = None,
        *,
        wrapper: KeyWrapper | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._own_client = client is None
        self.client: AsyncMongoClient = (
            client
            if client is not None
            else AsyncMongoClient(
                settings.vault_mongo_url or settings.mongo_url, **client_options(settings)
            )
        )
        database = self.client[settings.vault_database_name]
        self.keys = database[DATA_KEYS]
        self.links = database[KEY_LINKS]
        self._wrapper = wrapper
        self._clock = clock
        self._indexed = False
        # subject -> (expires at, key or None when destroyed); destroyed never come back.
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()

    @property
    def wrapper(self) -> KeyWrapper:
        # Made on first use: a process that never seals (the gateway) needs no KEK.
        if self._wrapper is None:
            self._wrapper = key_wrapper_for(self.settings)
        return self._wrapper

    async def _ensure_indexes(self) -> None:
        if not self._indexed:  # once per process; creating an existing index is a no-op
            await self.links.create_index([("into", ASCENDING)])
            self._indexed = True

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
    async def _key_of(self, doc: dict[str, Any]) -> bytes | None:
        """The live data key a stored document holds (None: destroyed)."""
        if doc.get("destroyed_at") is not None:
            return None
        if doc.get("wrapped") is not None:
            return await self.wrapper.unwrap(doc["kek"], bytes(doc["wrapped"]), doc["_id"])
        if doc.get("key") is not None:  # stored unwrapped by an older version: rewrap wraps it
            return bytes(doc["key"])
        return None

    async def _new_doc(self, subject: str, key: bytes) -> dict[str, Any]:
        kek_id, wrapped = await self.wrapper.wrap(key, subject)
        return {"_id": subject, "wrapped": wrapped, "kek": kek_id, "created_at": utcnow()}

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
        made: dict[str, bytes] = {}
        if missing and create:
            made = {s: os.urandom(KEY_BYTES) for s in missing}
            docs = [await self._new_doc(s, k) for s, k in made.items()]
            try:
                await self.keys.insert_many(docs, ordered=False)
                found.update({d["_id"]: d for d in docs})
            except BulkWriteError as exc:  # a concurrent producer created some first
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
                made = {}  # theirs or ours: read back what is stored
                again = await self.keys.find({"_id": {"$in": missing}}).to_list()
                found.update({d["_id"]: d for d in again})
        for subject in wanted:
            doc = found.get(subject)
            if doc is None:
                out[subject] = None  # absent, not created: not remembered
                continue
            key = made[subject] if subject in made else await self._key_of(doc)
            out[subject] = key
            self._remember(subject, key)
        return out

    async def key_for(self, subject: str, *, create: bool = False) -> bytes | None:
        return (await self.keys_for([subject], create=create))[subject]

    async def _destroy_one(self, subject: str) -> datetime:
        try:
            doc = await self.keys.find_one_and_update(
                {"_id": subject, "destroyed_at": None},  # live, or never keyed
                {
                    "$unset": {"key": "", "wrapped": "", "kek": ""},
                    "$set": {"destroyed_at": utcnow()},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # destroyed before: keep the first time
            doc = await self.keys.find_one({"_id": subject})
        assert doc is not None
        self._cache.pop(subject, None)
        self._remember(subject, None)
        return doc["destroyed_at"]

    async def merged_into(self, subject: str) -> list[str]:
        """Every subject linked to ``subject`` (merged into it, or into one merged into it,
        ...), nearest first; never ``subject`` itself."""
        await self._ensure_indexes()
        seen = {subject}
        found: list[str] = []
        frontier = [subject]
        while frontier:
            docs = await self.links.find({"into": {"$in": frontier}}, {"_id": 1}).to_list()
            frontier = [d["_id"] for d in docs if d["_id"] not in seen]
            seen.update(frontier)
            found += frontier
        return found

    async def destroy(self, subject: str) -> Destroyed:
        """Destroy the key of the person ``subject`` and of every contact merged into them
        (idempotent): what they sealed can never be read again, and no key is created for
        them afterwards. ``at`` is when the person's own key was first destroyed."""
        at = await self._destroy_one(subject)
        linked = await self.merged_into(subject)
        for other in linked:
            await self._destroy_one(other)
        log.info("vault.key_destroyed", subject=subject, linked=len(linked))
        return Destroyed(at=at, subjects=(subject, *linked))

    async def _destroyed_along(self, subject: str) -> bool:
        """Whether ``subject``, or the contact it was merged into (and so on), is destroyed."""
        seen: set[str] = set()
        current: str | None = subject
        while current is not None and current not in seen:
            seen.add(current)
            doc = await self.keys.find_one({"_id": current}, {"destroyed_at": 1})
            if doc is not None and doc.get("destroyed_at") is not None:
                return True
            link = await self.links.find_one({"_id": current})
            current = link["into"] if link else None
        return False

    async def link(self, merged: str, survivor: str) -> Destroyed | None:
        """contact-merged: ``merged``'s key belongs to the person ``survivor`` from now on,
        so their erasure destroys it (idempotent). If the survivor is erased already, the
        merged key (and those merged into it) is destroyed now: returns what was."""
        if merged == survivor:
            return None
        await self._ensure_indexes()
        await self.links.update_one(
            {"_id": merged},
            {"$set": {"into": survivor}, "$setOnInsert": {"linked_at": utcnow()}},
            upsert=True,
        )
        if await self._destroyed_along(survivor):
            return await self.destroy(merged)
        return None

    # ------------------------------------------------------------ rotation and restores
    async def rewrap(
        self,
        batch_size: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> RewrapReport:
        """Move every live key to the current KEK (and wrap any stored unwrapped), a batch
        at a time; safe while services run: a key is replaced only if it is still live and
        unchanged, so a concurrent destruction always wins. ``on_batch`` is told how many
        keys each batch looked at (a progress bar)."""
        size = batch_size or self.settings.vault_rewrap_batch_size
        current = self.wrapper.current_id
        query: dict[str, Any] = {
            "destroyed_at": None,
            "$or": [{"kek": {"$ne": current}}, {"key": {"$exists": True}}],
        }
        rewrapped = failed = 0
        after: str | None = None
        while True:
            page = {**query, "_id": {"$gt": after}} if after is not None else query
            docs = await self.keys.find(page).sort("_id", ASCENDING).limit(size).to_list()
            if not docs:
                break
            after = docs[-1]["_id"]
            updates = []
            for doc in docs:
                try:
                    key = await self._key_of(doc)
                except (UnknownKek, SealError) as exc:
                    log.warning("vault.rewrap_failed", subject=doc["_id"], error=str(exc))
                    failed += 1
                    continue
                if key is None:
                    continue
                kek_id, wrapped = await self.wrapper.wrap(key, doc["_id"])
                unchanged = {"_id": doc["_id"], "destroyed_at": None}
                unchanged.update(
                    {"wrapped": doc["wrapped"], "kek": doc["kek"]}
                    if doc.get("wrapped") is not None
                    else {"key": doc["key"]}
                )
                updates.append(
                    UpdateOne(
                        unchanged,
                        {"$set": {"wrapped": wrapped, "kek": kek_id}, "$unset": {"key": ""}},
                    )
                )
            if updates:
                result = await self.keys.bulk_write(updates, ordered=False)
                rewrapped += result.modified_count
            if on_batch is not None:
                on_batch(len(docs))
            if len(docs) < size:
                break
        log.info("vault.rewrapped", rewrapped=rewrapped, failed=failed, kek=current)
        return RewrapReport(rewrapped=rewrapped, failed=failed)

    async def status(self) -> dict[str, Any]:
        """How many keys each KEK wraps, how many are stored unwrapped, destroyed, linked."""
        by_kek: dict[str, int] = {}
        pipeline: list[dict[str, Any]] = [
            {"$match": {"destroyed_at": None, "kek": {"$exists": True}}},
            {"$group": {"_id": "$kek", "n": {"$sum": 1}}},
        ]
        async for row in await self.keys.aggregate(pipeline):
            by_kek[str(row["_id"])] = int(row["n"])
        return {
            "current_kek": self.wrapper.current_id,
            "wrapped_by_kek": by_kek,
            "unwrapped": await self.keys.count_documents(
                {"destroyed_at": None, "key": {"$exists": True}}
            ),
            "destroyed": await self.keys.count_documents({"destroyed_at": {"$ne": None}}),
            "linked": await self.links.count_documents({}),
        }

    async def destroyed_subjects(self) -> list[tuple[str, datetime]]:
        """Every tombstone (subject, destroyed at): what a restore of an older backup of the
        vault must destroy again (``redestroy``)."""
        docs = self.keys.find({"destroyed_at": {"$ne": None}}, {"destroyed_at": 1}).sort("_id")
        return [(d["_id"], d["destroyed_at"]) async for d in docs]

    async def redestroy(self, subjects: Iterable[str]) -> int:
        """Destroy these subjects' keys again (after restoring an older backup); returns how
        many were live (brought back by the restore) and are destroyed now."""
        revived = 0
        for subject in dict.fromkeys(subjects):
            doc = await self.keys.find_one({"_id": subject}, {"destroyed_at": 1})
            if doc is not None and doc.get("destroyed_at") is None:
                revived += 1
            await self.destroy(subject)
        return revived

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
