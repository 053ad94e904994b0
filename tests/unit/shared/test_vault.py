"""Crypto-shredding: personal fields travel sealed with the person's key; without the key
(destroyed at erasure) they decode as erased; plaintext envelopes keep working."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pymongo.errors import DuplicateKeyError
from tribune_shared.events import CONTRACTS, Envelope, decode, new_envelope
from tribune_shared.events.contracts import (
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactState,
    DataOrigin,
    EventContract,
    OriginKind,
    _check_personal_fields,
)
from tribune_shared.settings import ServiceSettings
from tribune_shared.vault import KeyVault, SealError, needs_seal, open_with, seal_with

EMAIL = "marianne.dupont@example.fr"
PHONE = "+33612345678"


def created(contact_id: str = "c1", **state: Any) -> Envelope:
    contact = ContactState(
        given_name="Marianne",
        family_name="Dupont",
        email=EMAIL,
        phone=PHONE,
        postcode="75011",
        tags=["benevole"],
        origin=DataOrigin(kind=OriginKind.web_form, detail="petition"),
        **state,
    )
    event = ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=contact)
    return new_envelope(event, producer="contacts", federation_id="f", federation_path="/f/")


KEY = os.urandom(32)


def test_sealing_moves_every_personal_field_out_of_the_clear_payload():
    env = created()
    sealed = seal_with(env, ContactCreatedV1, KEY)
    raw = sealed.to_bytes()
    for secret in (EMAIL, PHONE, "Marianne", "Dupont", "75011"):
        assert secret.encode() not in raw
    # what is not personal stays readable by anyone
    assert b"benevole" in raw and b"petition" in raw
    assert sealed.sealed is not None
    assert sealed.sealed.subject == "c1"
    assert set(sealed.sealed.fields) == set(ContactCreatedV1.personal_fields)


def test_opening_with_the_key_gives_back_exactly_the_event():
    env = created()
    opened = open_with(Envelope.from_bytes(seal_with(env, ContactCreatedV1, KEY).to_bytes()), KEY)
    assert opened.sealed is None
    assert decode(opened) == decode(env)
    assert not decode(opened).erased


def test_without_the_key_the_personal_fields_read_as_erased_defaults():
    sealed = seal_with(created(), ContactCreatedV1, KEY)
    assert open_with(sealed, None) is sealed  # destroyed key: nothing to open
    event = decode(sealed)
    assert isinstance(event, ContactCreatedV1)
    assert event.erased
    assert event.erased_fields == frozenset(ContactCreatedV1.personal_fields)
    assert (event.contact.given_name, event.contact.family_name) == ("", "")
    assert (event.contact.email, event.contact.phone, event.contact.postcode) == (None,) * 3
    assert event.contact.tags == ["benevole"]  # the rest is still there
    assert event.contact_id == "c1" and event.contact_version == 1


def test_a_producer_of_an_already_erased_person_drops_the_fields():
    sealed = seal_with(created(), ContactCreatedV1, None)
    assert sealed.sealed is not None and sealed.sealed.ciphertext is None
    assert EMAIL.encode() not in sealed.to_bytes()
    assert decode(sealed).erased


def test_another_key_or_a_tampered_or_transplanted_ciphertext_is_refused():
    sealed = seal_with(created(), ContactCreatedV1, KEY)
    with pytest.raises(SealError):
        open_with(sealed, os.urandom(32))
    assert sealed.sealed is not None and sealed.sealed.ciphertext is not None
    flipped = sealed.sealed.ciphertext[:-4] + (
        "AAAA" if not sealed.sealed.ciphertext.endswith("AAAA") else "BBBB"
    )
    with pytest.raises(SealError):
        open_with(
            sealed.model_copy(
                update={"sealed": sealed.sealed.model_copy(update={"ciphertext": flipped})}
            ),
            KEY,
        )
    # the same sealed block on another event (or another person) does not open
    other = created("c2").model_copy(update={"sealed": sealed.sealed})
    with pytest.raises(SealError):
        open_with(other, KEY)


def test_plaintext_envelopes_of_before_keep_decoding():
    env = created()  # as every producer wrote them before sealing existed
    event = decode(Envelope.from_bytes(env.to_bytes()))
    assert isinstance(event, ContactCreatedV1)
    assert event.contact.email == EMAIL and not event.erased
    assert open_with(env, KEY) is env


def test_only_events_carrying_personal_values_in_clear_need_sealing():
    assert needs_seal(created(), ContactCreatedV1)
    empty = new_envelope(
        ContactCreatedV1(contact_id="c", contact_version=1, contact=ContactState()),
        producer="contacts",
        federation_id="f",
        federation_path="/f/",
    )
    assert not needs_seal(empty, ContactCreatedV1)  # nothing personal to protect
    revoked = new_envelope(
        ConsentRevokedV1(
            contact_id="c",
            channel="email",
            purpose="news",
            source="x",
            revoked_at=datetime.now(UTC),
        ),
        producer="consent",
        federation_id="f",
        federation_path="/f/",
    )
    assert not needs_seal(revoked, ConsentRevokedV1)  # no personal field: the fast path
    granted = new_envelope(
        ConsentGrantedV1(
            contact_id="c",
            channel="email",
            purpose="news",
            source="form",
            proof={"ip": "203.0.113.0/24"},
            granted_at=datetime.now(UTC),
        ),
        producer="consent",
        federation_id="f",
        federation_path="/f/",
    )
    assert needs_seal(granted, ConsentGrantedV1)
    assert not needs_seal(seal_with(granted, ConsentGrantedV1, KEY), ConsentGrantedV1)


def test_a_personal_field_without_default_or_missing_is_refused_at_registration():
    class NoDefault(EventContract):
        personal_fields: ClassVar[tuple[str, ...]] = ("email",)
        contact_id: str
        email: str

    class Missing(EventContract):
        personal_fields: ClassVar[tuple[str, ...]] = ("contact.nickname",)
        contact_id: str
        contact: ContactState

    for bad in (NoDefault, Missing):
        with pytest.raises(TypeError):
            _check_personal_fields(bad)


#: field names that always hold personal data wherever they appear in a contract
PERSONAL_NAMES = {
    "given_name",
    "family_name",
    "first_name",
    "last_name",
    "email",
    "emails",
    "phone",
    "phones",
    "postcode",
    "address",
    "addresses",
    "birth_date",
    "date_of_birth",
    "ip",
    "user_agent",
}


def _paths(model: type, prefix: str = "") -> list[str]:
    from tribune_shared.events.contracts import _model_of

    out = []
    for name, info in model.model_fields.items():
        out.append(prefix + name)
        nested = _model_of(info.annotation)
        if nested is not None:
            out += _paths(nested, f"{prefix}{name}.")
    return out


@pytest.mark.parametrize("key", sorted(CONTRACTS), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_every_personal_looking_field_of_every_contract_is_sealed(key):
    """A new contract (or field) carrying names, addresses... must declare them personal,
    or an erased person could come back from a topic replay."""
    model = CONTRACTS[key]
    declared = set(model.personal_fields)
    for path in _paths(model):
        if path.rsplit(".", 1)[-1] in PERSONAL_NAMES:
            covered = any(path == p or path.startswith(p + ".") for p in declared)
            assert covered, f"{model.__name__}.{path} looks personal: add it to personal_fields"


# ---------------------------------------------------------------- the vault's keys


class _Cursor:
    def __init__(self, docs):
        self.docs = docs

    async def to_list(self, length=None):
        return list(self.docs)


class FakeKeys:
    """Enough of a collection for KeyVault (unit tests; the real one is in integration)."""

    def __init__(self):
        self.docs: dict[str, dict] = {}
        self.reads = 0

    def find(self, query):
        self.reads += 1
        return _Cursor([dict(self.docs[i]) for i in query["_id"]["$in"] if i in self.docs])

    async def find_one(self, query, projection=None):
        doc = self.docs.get(query["_id"])
        return dict(doc) if doc else None

    async def insert_many(self, docs, ordered=True):
        for d in docs:
            assert d["_id"] not in self.docs
            self.docs[d["_id"]] = dict(d)

    async def find_one_and_update(self, query, update, upsert, return_document):
        doc = self.docs.get(query["_id"])
        if doc is not None and doc.get("destroyed_at") is not None:
            raise DuplicateKeyError("E11000")  # the filter missed; the upsert collides
        doc = self.docs.setdefault(query["_id"], {"_id": query["_id"]})
        for k in update.get("$unset", {}):
            doc.pop(k, None)
        doc.update(update.get("$set", {}))
        return dict(doc)


class FakeClient(dict):
    def __init__(self, keys):
        super().__init__()
        self.keys = keys

    def __getitem__(self, name):
        return {"data_keys": self.keys}


def vault(clock=lambda: 0.0, **settings) -> tuple[KeyVault, FakeKeys]:
    keys = FakeKeys()
    return KeyVault(ServiceSettings(**settings), FakeClient(keys), clock=clock), keys


async def test_a_key_is_made_once_per_person_and_never_again_after_destruction():
    v, keys = vault()
    first = await v.key_for("c1", create=True)
    assert first is not None and len(first) == 32
    assert await v.key_for("c1", create=True) == first
    assert await v.key_for("nobody") is None  # not created unless asked
    destroyed_at = await v.destroy("c1")
    assert destroyed_at is not None
    assert await v.key_for("c1", create=True) is None  # the tombstone stays
    v.forget_cached()
    assert await v.key_for("c1", create=True) is None
    assert "key" not in keys.docs["c1"]
    # destroying twice keeps the first time; a never-keyed person gets a tombstone too
    assert await v.destroy("c1") == destroyed_at
    await v.destroy("c9")
    assert await v.key_for("c9", create=True) is None


async def test_keys_are_cached_for_a_while_and_destruction_is_seen_at_once_here():
    now = [0.0]
    v, keys = vault(clock=lambda: now[0], vault_key_cache_seconds=30)
    await v.key_for("c1", create=True)
    reads = keys.reads
    await v.key_for("c1")
    assert keys.reads == reads  # cached
    now[0] = 31
    await v.key_for("c1")
    assert keys.reads == reads + 1  # expired: read again
    await v.destroy("c1")
    assert await v.key_for("c1") is None


async def test_seal_many_and_open_round_trip_through_the_vault():
    v, _ = vault()
    envs = [created("c1"), created("c2"), created("c1")]
    sealed = await v.seal_many(envs)
    assert all(s.sealed is not None for s in sealed)
    assert [decode(await v.open(s)) for s in sealed] == [decode(e) for e in envs]
    await v.destroy("c1")
    reopened = [decode(await v.open(s)) for s in sealed]
    assert [e.erased for e in reopened] == [True, False, True]
    assert reopened[0].contact.email is None and reopened[1].contact.email == EMAIL
