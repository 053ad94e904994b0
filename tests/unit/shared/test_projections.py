"""Rebuildable projections without a store: which collection a version lives in, what a
flip and a rollback make of the pointer, what is dropped afterwards, how a store resolves
a projection's name, and what a registry refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tribune_shared.projections import (
    NothingToRollBack,
    Pointer,
    Projection,
    ProjectionRegistry,
    Unrebuildable,
    physical_name,
    rebuild_group,
    versions_among,
)
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Physical, Store

AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_first_version_is_the_collection_that_existed_before_any_rebuild():
    assert physical_name("contacts", 1) == "contacts"
    assert physical_name("contacts", 4) == "contacts__v4"
    with pytest.raises(ValueError):
        physical_name("contacts", 0)


def test_a_projection_never_rebuilt_reads_its_own_name():
    pointer = Pointer.from_doc("contacts", None)
    assert (pointer.active, pointer.version, pointer.previous) == ("contacts", 1, None)
    assert pointer.next_target() == ("contacts__v2", 2)
    with pytest.raises(NothingToRollBack):
        pointer.rollback_target()


def test_a_flip_makes_the_new_version_active_and_keeps_the_old_one_for_a_rollback():
    pointer = Pointer.from_doc("contacts", None)
    doc = pointer.flipped("contacts__v2", 2, {"t.contact-created:0": 12}, AT)
    after = Pointer.from_doc("contacts", {"_id": "contacts", **doc})
    assert after.active == "contacts__v2" and after.version == 2
    assert (after.previous, after.previous_version) == ("contacts", 1)
    assert after.building is None
    # the offsets survive the round trip through the document (topic names hold dots)
    assert doc["flip_offsets"] == [{"topic": "t.contact-created", "partition": 0, "offset": 12}]
    assert after.flip_offsets == {"t.contact-created:0": 12}
    assert after.rollback_target() == ("contacts", 1)


def test_a_rollback_goes_back_once_and_a_later_build_never_reuses_a_version():
    built = Pointer.from_doc(
        "contacts",
        {
            "active": "contacts__v3",
            "version": 3,
            "latest": 3,
            "previous": "contacts__v2",
            "previous_version": 2,
        },
    )
    target, version = built.rollback_target()
    back = Pointer.from_doc("contacts", built.flipped(target, version, {}, AT))
    assert back.active == "contacts__v2" and back.version == 2
    with pytest.raises(NothingToRollBack):  # nothing left to roll back to
        back.rollback_target()
    # v3 was made once: the next build is v4, not v3 again
    assert back.next_target() == ("contacts__v4", 4)


def test_after_a_flip_only_the_active_and_previous_versions_are_kept():
    pointer = Pointer.from_doc(
        "contacts",
        {
            "active": "contacts__v3",
            "version": 3,
            "latest": 3,
            "previous": "contacts__v2",
            "previous_version": 2,
        },
    )
    collections = ["contacts", "contacts__v2", "contacts__v3", "contacts_archive", "consents"]
    assert pointer.obsolete(collections) == ["contacts"]
    building = Pointer.from_doc(
        "contacts",
        {
            "active": "contacts__v3",
            "previous": "contacts__v2",
            "building": {"collection": "contacts__v4"},
        },
    )
    assert building.obsolete([*collections, "contacts__v4"]) == ["contacts"]


def test_versions_of_a_projection_are_told_apart_from_other_collections():
    found = versions_among("contacts", ["contacts", "contacts__v7", "contacts_v7", "xcontacts"])
    assert found == {"contacts": 1, "contacts__v7": 7}


def test_each_build_has_a_consumer_group_of_its_own():
    first = rebuild_group("messaging", "contacts", 2)
    second = rebuild_group("messaging", "contacts", 2)
    assert first.startswith("messaging.rebuild.contacts.v2.")
    assert first != second  # an interrupted attempt's offsets never skip events
    assert rebuild_group("messaging", "contacts", 1, rollback=True).startswith(
        "messaging.rollback.contacts.v1."
    )


async def test_a_store_reads_and_writes_the_active_collection_of_a_projection():
    store = Store(ServiceSettings())  # never connects: resolving a name reads nothing
    try:
        assert store["contacts"].name == "contacts"
        store.routes = {"contacts": "contacts__v2"}
        assert store["contacts"].name == "contacts__v2"
        assert store.physical("contacts") == "contacts__v2"
        assert store["messages"].name == "messages"  # not a rebuilt projection
        # what a rebuild (or a rollback to version 1) writes is the version it names
        assert store[Physical("contacts")].name == "contacts"
    finally:
        await store.close()


def steps(store, into):
    async def handle(envelope, session):
        pass

    return {"contact-created": handle}


def test_a_registry_says_why_a_projection_cannot_be_rebuilt():
    registry = ProjectionRegistry(
        service="svc",
        settings=ServiceSettings,
        projections=(
            Projection(
                "contacts",
                "who",
                topics=("contact-created",),
                handlers=steps,
                indexes=(IndexSpec("contacts", [("federation_path", 1)]),),
            ),
            Projection("messages", "the log", why_not="svc's own record"),
        ),
    )
    contacts = registry.rebuildable("contacts")
    indexes = contacts.indexes_for("contacts")
    assert indexes[0].collection == "contacts" and isinstance(indexes[0].collection, Physical)
    with pytest.raises(Unrebuildable, match="svc's own record"):
        registry.rebuildable("messages")
    with pytest.raises(Unrebuildable, match="has: contacts, messages"):
        registry.get("nope")


def test_a_projection_declares_its_handlers_or_why_it_has_none():
    with pytest.raises(ValueError, match="no topic"):
        Projection("x", "x", topics=("no-such-topic",), handlers=steps)
    with pytest.raises(ValueError, match="either"):
        Projection("x", "x", topics=("contact-created",))
    with pytest.raises(ValueError, match="either"):
        Projection("x", "x", topics=("contact-created",), handlers=steps, why_not="because")
    # the handlers cover exactly the topics it is built from
    wrong = Projection("x", "x", topics=("contact-created", "contact-updated"), handlers=steps)
    with pytest.raises(ValueError, match="handlers for"):
        wrong.steps_for(object(), "x__v2")  # type: ignore[arg-type]


def test_messaging_declares_its_views_and_refuses_its_own_records():
    from messaging.projections import REGISTRY

    rebuildable = {p.name for p in REGISTRY.projections if p.rebuildable}
    assert rebuildable == {"contacts", "consents", "memberships", "suppressed"}
    for projection in REGISTRY.projections:
        if projection.rebuildable:  # every handler set matches its topics
            assert projection.steps_for(object(), f"{projection.name}__v2")  # type: ignore[arg-type]
    with pytest.raises(Unrebuildable):
        REGISTRY.rebuildable("messages")


async def test_consent_declares_its_contact_directory_and_refuses_its_own_records():
    from consent.projections import REGISTRY
    from consent.settings import ConsentSettings

    rebuildable = {p.name for p in REGISTRY.projections if p.rebuildable}
    assert rebuildable == {"contacts", "contact_hashes"}
    store = Store(ConsentSettings())  # never connects
    try:
        for name in rebuildable:
            assert REGISTRY.rebuildable(name).steps_for(store, f"{name}__v2")
    finally:
        await store.close()
    with pytest.raises(Unrebuildable, match="own records"):
        REGISTRY.rebuildable("consent_ledger")
