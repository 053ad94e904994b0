"""The key vault over the real store: data keys are stored wrapped by a key-encryption key
that no database holds; the KEK rotates while services run (``rewrap``); a person's
erasure destroys the keys of every contact merged into them; a restored older backup is
shredded again from the tombstones."""

from __future__ import annotations

import pytest
from tribune_shared.settings import ServiceSettings
from tribune_shared.vault import KeyVault, LocalKeks

pytestmark = pytest.mark.integration

KEK_OLD = "the-old-key-encryption-key-0123456789abcdef"
KEK_NEW = "the-new-key-encryption-key-0123456789abcdef"


def vault(kek: str, *previous: str) -> KeyVault:
    return KeyVault(ServiceSettings(vault_kek=kek, vault_previous_keks=list(previous)))


async def test_a_kek_rotation_rewraps_every_key_in_batches_while_services_keep_reading(
    isolated_env,
):
    before = vault(KEK_OLD)
    after = vault(KEK_NEW, KEK_OLD)  # processes restarted with the new KEK first
    only_new = vault(KEK_NEW)  # once the old KEK is dropped
    try:
        subjects = [f"c{i}" for i in range(7)]
        keys = await before.keys_for(subjects, create=True)
        await before.destroy("c6")
        legacy = bytes(range(32))  # stored unwrapped by an older version
        await before.keys.insert_one({"_id": "legacy", "key": legacy})

        # During the rotation every key still opens, whichever KEK wrapped it...
        assert await after.key_for("c0") == keys["c0"]
        assert await after.key_for("legacy") == legacy
        # ...and new keys are wrapped by the new one.
        await after.key_for("c7", create=True)
        doc = await after.keys.find_one({"_id": "c7"})
        assert doc is not None and doc["kek"] == LocalKeks(KEK_NEW).current_id

        report = await after.rewrap(batch_size=2)
        assert (report.rewrapped, report.failed) == (7, 0)  # c0-c5 and the legacy key
        status = await after.status()
        assert status["wrapped_by_kek"] == {LocalKeks(KEK_NEW).current_id: 8}
        assert (status["unwrapped"], status["destroyed"]) == (0, 1)
        assert (await after.rewrap(batch_size=2)).rewrapped == 0  # nothing left

        # The old KEK can go: everything opens with the new one alone...
        for subject in subjects[:6]:
            assert await only_new.key_for(subject) == keys[subject]
        assert await only_new.key_for("legacy") == legacy
        assert await only_new.key_for("c6", create=True) is None  # destroyed stays destroyed
        # ...and no data key is left in clear in the database.
        async for stored in only_new.keys.find({}):
            assert "key" not in stored
            assert all(bytes(stored.get("wrapped", b"")).find(k) < 0 for k in keys.values() if k)
    finally:
        for v in (before, after, only_new):
            await v.close()


async def test_destroying_a_person_destroys_the_keys_of_every_contact_merged_into_them(
    isolated_env,
):
    v = vault(KEK_NEW)
    try:
        await v.keys_for(["a", "b", "c", "x"], create=True)
        assert await v.link("a", "b") is None  # a merged into b...
        assert await v.link("b", "c") is None  # ...then b into c
        assert await v.link("a", "b") is None  # a replay changes nothing

        destroyed = await v.destroy("c")
        assert set(destroyed.subjects) == {"a", "b", "c"}
        v.forget_cached()
        assert await v.keys_for(["a", "b", "c"], create=True) == {"a": None, "b": None, "c": None}
        assert await v.key_for("x") is not None  # someone else

        # A merge seen after the survivor's erasure: the merged key goes at once.
        await v.key_for("d", create=True)
        late = await v.link("d", "a")
        assert late is not None and late.subjects == ("d",)
        assert await v.key_for("d", create=True) is None
    finally:
        await v.close()


async def test_a_restored_older_backup_is_shredded_again_from_the_tombstones(isolated_env):
    v = vault(KEK_NEW)
    try:
        await v.keys_for(["p", "q"], create=True)
        backup = await v.keys.find({}).to_list()  # last night's backup of the vault
        await v.destroy("p")  # erased today
        tombstones = await v.destroyed_subjects()  # exported before restoring
        assert [s for s, _ in tombstones] == ["p"]

        await v.keys.delete_many({})  # disaster: the vault is restored from the backup
        await v.keys.insert_many(backup)
        fresh = vault(KEK_NEW)
        try:
            assert await fresh.key_for("p") is not None  # the erased person is back...
            assert await fresh.redestroy(s for s, _ in tombstones) == 1
            fresh.forget_cached()
            assert await fresh.key_for("p") is None  # ...and gone again
            assert await fresh.key_for("q") is not None
        finally:
            await fresh.close()
    finally:
        await v.close()
