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
from tribune_shared.vault import (
    KeyVault,
    LocalKeks,
    SealError,
    UnknownKek,
    needs_seal,
    open_with,
    seal_with,
)

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

    def find(self, query, projection=None):
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


class FakeLinks:
    """No merges (links are tested against the real store: tests/integration/test_vault.py)."""

    async def create_index(self, keys):
        return "into_1"

    def find(self, query, projection=None):
        return _Cursor([])

    async def find_one(self, query, projection=None):
        return None


class FakeClient(dict):
    def __init__(self, keys):
        super().__init__()
        self.keys = keys

    def __getitem__(self, name):
        return {"data_keys": self.keys, "key_links": FakeLinks()}


def vault(clock=lambda: 0.0, wrapper=None, **settings) -> tuple[KeyVault, FakeKeys]:
    keys = FakeKeys()
    vault = KeyVault(ServiceSettings(**settings), FakeClient(keys), wrapper=wrapper, clock=clock)
    return vault, keys


async def test_a_key_is_made_once_per_person_and_never_again_after_destruction():
    v, keys = vault()
    first = await v.key_for("c1", create=True)
    assert first is not None and len(first) == 32
    assert await v.key_for("c1", create=True) == first
    assert await v.key_for("nobody") is None  # not created unless asked
    destroyed = await v.destroy("c1")
    assert destroyed.at is not None and destroyed.subjects == ("c1",)
    assert await v.key_for("c1", create=True) is None  # the tombstone stays
    v.forget_cached()
    assert await v.key_for("c1", create=True) is None
    assert {"key", "wrapped", "kek"}.isdisjoint(keys.docs["c1"])
    # destroying twice keeps the first time; a never-keyed person gets a tombstone too
    assert (await v.destroy("c1")).at == destroyed.at
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


# ---------------------------------------------------------------- wrapped keys (KEKs)

KEK_2025 = "the-2025-key-encryption-key-0123456789abcdef"
KEK_2026 = "the-2026-key-encryption-key-0123456789abcdef"


async def test_data_keys_are_stored_wrapped_by_the_kek_never_in_clear():
    v, keys = vault(vault_kek=KEK_2025)
    key = await v.key_for("c1", create=True)
    assert key is not None
    stored = keys.docs["c1"]
    assert "key" not in stored and key not in bytes(stored["wrapped"])
    assert stored["kek"] == LocalKeks(KEK_2025).current_id
    assert KEK_2025 not in repr(stored)  # the KEK is named by a fingerprint only

    # What a dump, a backup or the store's credential gives is useless without the KEK...
    thief = KeyVault(ServiceSettings(vault_kek=KEK_2026), FakeClient(keys))
    with pytest.raises(UnknownKek):
        await thief.key_for("c1")
    # ...and a wrapped key copied onto another person does not open either.
    keys.docs["c2"] = {**stored, "_id": "c2"}
    with pytest.raises(SealError):
        await KeyVault(ServiceSettings(vault_kek=KEK_2025), FakeClient(keys)).key_for("c2")
    # With the KEK, another process reads the same key.
    same = KeyVault(ServiceSettings(vault_kek=KEK_2025), FakeClient(keys))
    assert await same.key_for("c1") == key


async def test_a_new_kek_wraps_new_keys_while_the_previous_one_still_unwraps():
    old, new = LocalKeks(KEK_2025), LocalKeks(KEK_2026, [KEK_2025])
    assert old.current_id != new.current_id and new.kek_ids == [new.current_id, old.current_id]
    kek_id, wrapped = await old.wrap(KEY, "c1")
    assert await new.unwrap(kek_id, wrapped, "c1") == KEY  # rotation without downtime
    assert (await new.wrap(KEY, "c1"))[0] == new.current_id
    with pytest.raises(UnknownKek):  # the old KEK retired: never read as "destroyed"
        await LocalKeks(KEK_2026).unwrap(kek_id, wrapped, "c1")


async def test_keys_stored_unwrapped_by_an_older_version_are_still_read():
    v, keys = vault()
    keys.docs["old"] = {"_id": "old", "key": KEY, "created_at": datetime.now(UTC)}
    assert await v.key_for("old") == KEY


def test_production_refuses_to_start_without_a_kek(monkeypatch):
    strong = "a-strong-identity-secret-0123456789abcdef"
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", strong)
    monkeypatch.delenv("TRIBUNE_VAULT_KEK", raising=False)
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="TRIBUNE_VAULT_KEK"):
        ServiceSettings()
    with pytest.raises(ValueError, match="at least 32"):
        ServiceSettings(vault_kek="short")
    with pytest.raises(ValueError, match="at least 32"):
        ServiceSettings(vault_kek=KEK_2026, vault_previous_keks=["short"])
    settings = ServiceSettings(vault_kek=KEK_2026, vault_previous_keks=[KEK_2025])
    assert settings.vault_keks() == (KEK_2026, KEK_2025)
    assert KEK_2026 not in repr(settings)  # never printed with the settings

    # Development (and the test suite) derive one from the identity secret: every process
    # of a stack agrees on it, and it is never the same for two stacks.
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "test")
    derived = ServiceSettings().vault_keks()
    assert len(derived) == 1 and strong not in derived[0]
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", "another-identity-secret-0123456789abcdef")
    assert ServiceSettings().vault_keks() != derived
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    assert ServiceSettings().vault_keks()
