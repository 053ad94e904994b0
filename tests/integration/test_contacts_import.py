"""CSV imports, likely duplicates and merges over the real store and Kafka: uploads
(multipart and raw), the worker's job runner, progress, cancel, resume, the rejected and
flagged rows, events through the import outbox relay, merges, tenancy and clear errors."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from contacts.cli import main as cli_main
from contacts.import_jobs import (
    ImportRunner,
    now_ms,
    run_import_jobs,
    spool,
    worker_id,
)
from contacts.main import create_app
from contacts.messy_csv import messy_csv_bytes, write_messy_csv
from contacts.settings import ContactsSettings
from contacts.store import CONTACTS, IMPORTS, INDEXES, MERGES, ImportStore
from fastapi.testclient import TestClient
from support import (
    identity_headers,
    make_identity,
    read_topic,
    run_with_store,
    seed_federations,
)
from tribune_shared.auth import Role
from tribune_shared.bus import EventPublisher, ensure_topics
from tribune_shared.events import Envelope, decode
from tribune_shared.outbox import OUTBOX, OutboxRelay, unpack_batch
from tribune_shared.store import Store
from tribune_shared.vault import vault_for

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
URL = "/api/v1/contacts"
IMPORTS_URL = f"{URL}/imports"
ORIGIN = {"origin_kind": "petition", "origin_detail": "pétition gare du Nord"}


# ---------------------------------------------------------------- helpers


def headers(settings, path=PARIS, role=Role.secretary, user_id=None):
    return identity_headers(make_identity(path, role, user_id=user_id), settings.identity_secret)


def upload(
    client, settings, data: bytes, *, path=PARIS, multipart=True, filename="f.csv", **options
):
    params = {**ORIGIN, **options}
    if multipart:
        form = []
        for key, value in params.items():
            for item in value if isinstance(value, list) else [value]:
                form.append((key, (None, item)))
        form.append(("file", (filename, data, "text/csv")))
        return client.post(IMPORTS_URL, files=form, headers=headers(settings, path))
    return client.post(
        IMPORTS_URL,
        content=data,
        params={**params, "filename": filename},
        headers={**headers(settings, path), "Content-Type": "text/csv"},
    )


def run_next_job(settings, stop_after_batches: int | None = None, on_progress=None):
    """What the worker's loop does with the next queued job."""

    async def go(store: Store):
        runner = ImportRunner(settings, store)
        owner = worker_id()
        job = await runner.imports.claim(owner, *_lease())
        assert job is not None, "no queued job"
        stop = asyncio.Event()
        seen = []

        async def progress(view):
            seen.append(view)
            if on_progress:
                await on_progress(view, store)
            if stop_after_batches is not None and len(seen) >= stop_after_batches:
                stop.set()

        path = await spool(runner.imports, job, None)
        try:
            result = await runner.run(
                job["_id"], path, owner=owner, on_progress=progress, stop=stop
            )
        finally:
            path.unlink(missing_ok=True)
        return result, seen

    return run_with_store(settings, go)


#: the outbox rows holding a packed batch of events
BATCHES = {"batch": {"$ne": None}}


def relay_all(settings) -> int:
    """Publish the outbox to Kafka as the worker's relay does."""

    async def go(store: Store):
        await ensure_topics(settings)
        publisher = EventPublisher(settings)
        await publisher.start()
        try:
            relay = OutboxRelay(store, publisher)
            total = 0
            while n := await relay.relay_once():
                total += n
            return total
        finally:
            await publisher.stop()

    return run_with_store(settings, go)


def count(settings, collection, query=None) -> int:
    return run_with_store(settings, lambda s: s[collection].count_documents(query or {}))


def find(settings, collection, query=None) -> list[dict[str, Any]]:
    return run_with_store(settings, lambda s: s[collection].find(query or {}).to_list())


def wait_job(client, settings, job_id, path=PARIS) -> dict[str, Any]:
    r = client.get(f"{IMPORTS_URL}/{job_id}", headers=headers(settings, path))
    assert r.status_code == 200, r.text
    return r.json()


def csv_rows(text: str, delimiter: str = ";") -> list[list[str]]:
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=delimiter))


@pytest.fixture
def api(isolated_env):
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        yield client, settings


@pytest.fixture
def small_batches(isolated_env, monkeypatch):
    monkeypatch.setenv("CONTACTS_IMPORT_BATCH_SIZE", "50")


# ---------------------------------------------------------------- the whole flow


def test_messy_cp1252_semicolon_file_is_imported_with_exact_counts_and_events(small_batches):
    settings = ContactsSettings()
    data, expected = messy_csv_bytes(400, encoding="cp1252", delimiter=";", seed=3)
    with TestClient(create_app(settings)) as client:
        r = upload(client, settings, data, tag=["import-2026"])
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"{IMPORTS_URL}/{job['id']}"
        assert job["status"] == "queued"
        assert job["file"]["encoding"] == "cp1252" and job["file"]["delimiter"] == "semicolon"
        assert job["header"][0] == "Prénom"
        assert {m["column"]: m["field"] for m in job["mapping"]} == {
            "Prénom": "given_name",
            "Nom": "family_name",
            "Courriel": "email",
            "Téléphone": "phone",
            "Portable": "phone",
            "Adresse": "address_line",
            "Code postal": "postcode",
            "Ville": "commune",
            "Étiquettes": "tags",
        }
        assert job["origin"]["kind"] == "petition"

        final, seen = run_next_job(settings)
        assert final["status"] == "done", final.get("error")
        # progress was visible while it ran: rows done, the total, a rate
        assert len(seen) == -(-expected.rows // 50)
        assert seen[0]["progress"]["total"] == expected.rows
        assert 0 < seen[0]["progress"]["rows_done"] < expected.rows

        view = wait_job(client, settings, job["id"])
        assert view["status"] == "done"
        assert view["progress"]["rows_done"] == view["progress"]["total"] == expected.rows
        assert view["progress"]["percent"] == 100.0
        assert view["progress"]["rate_per_second"] > 0
        assert view["counts"] == {
            "created": expected.created,
            "updated": 0,
            "merged": expected.merged,
            "unchanged": 0,
            "skipped": 0,
            "rejected": expected.rejected,
            "flagged": 0,
        }
        assert count(settings, CONTACTS) == expected.created

        # Every row's contact carries the import's origin; quoted line breaks are kept.
        docs = find(settings, CONTACTS)
        assert {d["origin"]["detail"] for d in docs} == {"pétition gare du Nord"}
        assert all(d["import_ids"] == [job["id"]] for d in docs)
        assert all("import-2026" in d["tags"] for d in docs)
        assert any(len(d["address"]["lines"]) == 2 for d in docs)
        assert all(p["number"].startswith("+33") for d in docs for p in d["phones"])

        # The uploaded file is gone once the job is over.
        assert count(settings, "contact_import_chunks") == 0

        # Events: one contact-created per contact, no per-row outbox rows: one packed
        # row per batch.
        assert count(settings, OUTBOX, {"batch": None}) == 0
        events = [e for b in find(settings, OUTBOX, BATCHES) for e in unpack_batch(b)]
        created = [e for e in events if e.type == "contact-created"]
        assert len(created) == expected.created
        # duplicates of contacts an earlier batch created update them
        assert {e.type for e in events if e not in created} <= {"contact-updated"}
        assert relay_all(settings) == len(events)
        assert count(settings, OUTBOX) == 0  # published batch rows are deleted
        records = asyncio.run(
            read_topic(
                settings.kafka_bootstrap_servers,
                settings.topic("contact-created"),
                expect=expected.created,
            )
        )
        assert len(records) == expected.created
        envelope = Envelope.from_bytes(records[0].value)
        assert envelope.sealed is not None  # personal fields travel encrypted
        opened = asyncio.run(_open(settings, envelope))
        event = decode(opened)
        assert event.contact_version == 1
        assert event.contact.origin.detail == "pétition gare du Nord"
        assert {r.key.decode() for r in records} == {d["_id"] for d in docs}


async def _open(settings, envelope):
    store = Store(settings)
    try:
        return await vault_for(store).open(envelope)
    finally:
        await store.close()


def test_raw_body_utf8_bom_commas_english_headers_and_mapping_override(api):
    client, settings = api
    text = (
        "First name,Last name,E-mail,Mobile phone,Zip,City,Notes,Member since\r\n"
        "Jean,Dupont,jean@example.org,06 12 34 56 78,75011,Paris,vu au marché,2019\r\n"
        "\r\n"
        ",,,,,,,\r\n"
        'Marie,"Curie, née Skłodowska",marie@example.org,+33 7 51 23 45 67,69003,Lyon,,2020\r\n'
    )
    r = upload(
        client,
        settings,
        text.encode("utf-8-sig"),
        multipart=False,
        mapping=["Notes=ignore", "Member since=birth_year"],
        filename="export.csv",
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["file"]["encoding"], job["file"]["delimiter"]) == ("utf-8-sig", "comma")
    assert job["file"]["name"] == "export.csv"
    mapping = {m["column"]: m["field"] for m in job["mapping"]}
    assert mapping["Mobile phone"] == "phone" and mapping["Zip"] == "postcode"
    assert mapping["Member since"] == "birth_year" and "Notes" not in mapping
    final, _ = run_next_job(settings)
    assert final["status"] == "done"
    assert final["counts"]["created"] == 2 and final["progress"]["rows_done"] == 2
    docs = {d["email"]: d for d in find(settings, CONTACTS)}
    assert docs["marie@example.org"]["family_name"] == "Curie, née Skłodowska"
    assert docs["marie@example.org"]["phone"] == "+33751234567"
    assert docs["jean@example.org"]["birth_year"] == 2019
    assert docs["jean@example.org"]["address"]["commune"] == "Paris"


def test_custom_fields_are_mapped_by_name_and_checked_like_the_api(api):
    client, settings = api
    r = client.post(
        f"{URL}/custom-fields",
        json={"name": "mandat", "type": "choice", "choices": ["maire", "conseiller"]},
        headers=headers(settings),
    )
    assert r.status_code == 201, r.text
    text = (
        "nom;courriel;mandat;Commentaire\n"
        "Dupont;a@example.org;Maire;x\n"
        "Durand;b@example.org;roi;y\n"
    )
    # an override wins over the automatic mapping (the other column is left aside)
    r = upload(client, settings, text.encode(), mapping=["Commentaire=custom.mandat"])
    assert r.status_code == 202, r.text
    assert {m["column"]: m["field"] for m in r.json()["mapping"]}["Commentaire"] == "custom.mandat"
    assert r.json()["unmapped_columns"] == ["mandat"]
    cancel = client.post(f"{IMPORTS_URL}/{r.json()['id']}/cancel", headers=headers(settings))
    assert cancel.json()["status"] == "cancelled"
    r = upload(
        client,
        settings,
        text.encode(),
        mapping=["mandat=custom.mandat", "Commentaire=custom.mandat"],
    )
    assert r.status_code == 422, r.text  # fed twice by the overrides
    r = upload(client, settings, text.encode())
    assert r.status_code == 202, r.text
    assert {m["column"]: m["field"] for m in r.json()["mapping"]}["mandat"] == "custom.mandat"
    assert r.json()["unmapped_columns"] == ["Commentaire"]
    final, _ = run_next_job(settings)
    assert (final["counts"]["created"], final["counts"]["rejected"]) == (1, 1)
    (doc,) = find(settings, CONTACTS)
    assert doc["custom_fields"] == {"mandat": "maire"}
    rejected = client.get(f"{IMPORTS_URL}/{final['_id']}/rejected.csv", headers=headers(settings))
    rows = csv_rows(rejected.text)
    assert rows[1][:2] == ["3", "mandat: must be one of maire, conseiller"]


# ---------------------------------------------------------------- duplicates


def _existing(client, settings, **fields):
    body = {"origin": {"kind": "web_form", "detail": "site"}, **fields}
    r = client.post(URL, json=body, headers=headers(settings))
    assert r.status_code == 201, r.text
    return r.json()


def test_duplicates_of_existing_contacts_are_merged_skipped_or_flagged(api):
    client, settings = api
    jean = _existing(
        client, settings, family_name="Dupont", email="jean@example.org", tags=["adhérent"]
    )
    marie = _existing(client, settings, given_name="Marie", family_name="Curie", phone="0612345678")
    text = (
        "prénom;nom;email;téléphone;tags\n"
        "Jean;Dupont;jean@EXAMPLE.org;07 51 23 45 67;bénévole\n"  # fills given name + phone
        "Marie;Curie;;+33 6 12 34 56 78;\n"  # same phone, nothing new
        "Jean;Dupont;jean@example.org;;tractage\n"  # in-file duplicate of row 2
        "X;Y;jean@example.org;06 12 34 56 78;\n"  # email of one contact, phone of another
    )
    # merge (the default)
    r = upload(client, settings, text.encode())
    assert r.status_code == 202, r.text
    final, _ = run_next_job(settings)
    assert final["counts"] == {
        "created": 0,
        "updated": 1,
        "merged": 1,
        "unchanged": 1,
        "skipped": 0,
        "rejected": 0,
        "flagged": 1,
    }
    got = client.get(f"{URL}/{jean['id']}", headers=headers(settings)).json()
    assert got["given_name"] == "Jean" and got["phone"] == "+33751234567"
    assert got["tags"] == ["adhérent", "bénévole", "tractage"]
    assert got["version"] == 2 and got["origin"]["kind"] == "web_form"
    assert client.get(f"{URL}/{marie['id']}", headers=headers(settings)).json()["version"] == 1
    # one contact-updated for jean (the batch's final state), none for marie
    events = [e for b in find(settings, OUTBOX, BATCHES) for e in unpack_batch(b)]
    assert [(e.type, e.key) for e in events] == [("contact-updated", jean["id"])]
    flagged = client.get(f"{IMPORTS_URL}/{final['_id']}/flagged.csv", headers=headers(settings))
    assert flagged.status_code == 200
    rows = csv_rows(flagged.text)
    assert rows[0][:3] == ["row", "reason", "existing_contact_id"]
    assert rows[1][0] == "5" and "different contacts" in rows[1][1]

    # skip: nothing changes
    r = upload(client, settings, b"email;tags\njean@example.org;nouveau\n", duplicates="skip")
    final, _ = run_next_job(settings)
    assert final["counts"]["skipped"] == 1
    assert (
        "nouveau" not in client.get(f"{URL}/{jean['id']}", headers=headers(settings)).json()["tags"]
    )

    # flag: listed for review with the existing contact
    r = upload(client, settings, b"email;tags\njean@example.org;nouveau\n", duplicates="flag")
    final, _ = run_next_job(settings)
    assert final["counts"]["flagged"] == 1
    flagged = client.get(f"{IMPORTS_URL}/{final['_id']}/flagged.csv", headers=headers(settings))
    rows = csv_rows(flagged.text)
    assert rows[1][:3] == ["2", "same email or phone as an existing contact", jean["id"]]
    assert rows[1][3:] == ["jean@example.org", "nouveau"]


def test_duplicate_lookups_read_an_index_per_field_and_keep_to_the_federation(api):
    """Each import batch and form submission looks its emails and phones up: on the local
    store a `$or`, or a field beside federation_id, scanned every contact (4-12 s each at
    92,000 contacts). Each lookup is now one field alone, read through its index; other
    federations' holders and documents of the old shape (primary email only) are handled."""
    _client, settings = api

    async def work(store: Store):
        contacts = ImportStore(store)
        await store.ensure_indexes(INDEXES)
        await store[CONTACTS].insert_many(
            [
                {
                    "_id": "a",
                    "federation_id": "paris",
                    "email": "ana@example.org",
                    "emails": [{"address": "ana@example.org"}],
                    "phones": [{"number": "+33600000001"}],
                },
                {
                    "_id": "b",
                    "federation_id": "lyon",
                    "email": "ana@example.org",
                    "emails": [{"address": "ana@example.org"}],
                },
                # written before the full contact: no lists
                {
                    "_id": "c",
                    "federation_id": "paris",
                    "email": "old@example.org",
                    "phone": "+33600000002",
                },
            ]
        )
        plans = {}
        for name in ("emails.address", "email", "phones.number", "phone"):
            explained = await store[CONTACTS].find({name: {"$in": ["x"]}}).explain()
            plans[name] = explained["queryPlanner"]["winningPlan"]
        found = await contacts.ids_by_keys(
            "paris", ["ana@example.org", "old@example.org", "+33600000002", "nobody@x.org"]
        )
        return plans, found

    plans, found = run_with_store(settings, work)
    for name, plan in plans.items():
        assert plan["stage"] != "COLLSCAN", (name, plan)
        assert plan["inputStage"]["stage"] == "IXSCAN", (name, plan)
        assert plan["inputStage"]["keyPattern"] == {name: 1}
    assert found == {"ana@example.org": "a", "old@example.org": "c", "+33600000002": "c"}


def test_rejected_rows_csv_has_row_numbers_reasons_and_safe_cells(api):
    client, settings = api
    text = (
        "nom;email;portable\n"
        "Dupont;pas-un-email;\n"
        "\n"
        "Durand;d@example.org;12\n"
        ";;\n"
        '=HYPERLINK("x");;\n'  # a name is enough; stored as typed, neutralised in CSV
        ";;\n"
        "Martin;m@example.org;06 12 34 56 78;extra\n"
        ";=1+2;\n"
    )
    r = upload(client, settings, text.encode())
    assert r.status_code == 202, r.text
    final, _ = run_next_job(settings)
    assert final["counts"]["rejected"] == 4 and final["counts"]["created"] == 1
    r = client.get(f"{IMPORTS_URL}/{final['_id']}/rejected.csv", headers=headers(settings))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = csv_rows(r.text)
    assert rows[0] == ["row", "reason", "nom", "email", "portable"]
    assert [row[0] for row in rows[1:]] == ["2", "4", "8", "9"]
    assert rows[1][1].startswith("email: not a valid email address")
    assert rows[2][1].startswith("portable: not a")
    assert "header has 3" in rows[3][1]
    assert rows[4][1].startswith("email: not a valid") and rows[4][3] == "'=1+2"


def test_hostile_cells_are_rejected_with_reasons_and_the_import_goes_on(api):
    """A 131,000-character cell froze the worker for a minute (quadratic splitting): its
    row is now rejected naming its column, long runs of spaces within the bounds are
    read right, and the rejected rows' header is made safe like its cells. The per-row
    cost next to a normal file: bench/contacts_import_hostile.py (a ratio)."""
    client, settings = api
    spaces = " " * 1_000
    phones = "/".join(f"06{i:08d}" for i in range(300))
    text = (
        'nom;courriel;portable;étiquettes;=HYPERLINK("x")\n'
        f"Dupont;a@example.org{' ' * 131_000}b;;;\n"
        f"Durand;d@example.org{spaces},{spaces}e@example.org;06 12 34 56 78{spaces}/;"
        f"bénévole{spaces}actif;\n"
        f"Martin;m@example.org;{phones};;\n"
        "Petit;p@example.org;;;\n"
    )
    r = upload(client, settings, text.encode())
    assert r.status_code == 202, r.text
    final, _ = run_next_job(settings)
    assert final["status"] == "done"
    assert (final["counts"]["created"], final["counts"]["rejected"]) == (2, 2)
    durand = next(d for d in find(settings, CONTACTS) if d["family_name"] == "Durand")
    got = client.get(f"{URL}/{durand['_id']}", headers=headers(settings)).json()
    assert [e["address"] for e in got["emails"]] == ["d@example.org", "e@example.org"]
    assert got["phone"] == "+33612345678" and got["tags"] == ["bénévole actif"]
    r = client.get(f"{IMPORTS_URL}/{final['_id']}/rejected.csv", headers=headers(settings))
    rows = csv_rows(r.text)
    header = ["row", "reason", "nom", "courriel", "portable", "étiquettes"]
    assert rows[0] == [*header, '\'=HYPERLINK("x")']
    assert rows[1][:2] == ["2", "courriel: more than 4096 characters"]
    assert rows[2][:3] == ["4", "portable: at most 10 numbers", "Martin"]


# ---------------------------------------------------------------- progress, cancel, resume


def test_cancel_stops_between_batches_and_keeps_what_was_committed(small_batches):
    settings = ContactsSettings()
    data, _ = messy_csv_bytes(300, seed=11, duplicate_rate=0, invalid_rate=0)
    with TestClient(create_app(settings)) as client:
        job = upload(client, settings, data).json()

        async def cancel_after_first(view, store):
            if view["progress"]["rows_done"] <= 50:
                r = client.post(f"{IMPORTS_URL}/{job['id']}/cancel", headers=headers(settings))
                assert r.status_code == 202, r.text
                assert r.json()["cancel_requested"] is True

        final, seen = run_next_job(settings, on_progress=cancel_after_first)
        assert final["status"] == "cancelled"
        assert len(seen) == 1  # the runner noticed before its second batch committed
        view = wait_job(client, settings, job["id"])
        assert view["status"] == "cancelled" and view["finished_at"]
        assert view["progress"]["rows_done"] == 50 < view["progress"]["total"]
        assert count(settings, CONTACTS) == view["counts"]["created"] == 50
        assert sum(b["count"] for b in find(settings, OUTBOX, BATCHES)) == 50
        again = client.post(f"{IMPORTS_URL}/{job['id']}/cancel", headers=headers(settings))
        assert again.status_code == 409


def test_a_queued_job_is_cancelled_at_once(api):
    client, settings = api
    job = upload(client, settings, b"nom\nDupont\n").json()
    r = client.post(f"{IMPORTS_URL}/{job['id']}/cancel", headers=headers(settings))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert count(settings, "contact_import_chunks") == 0
    assert run_with_store(settings, lambda s: ImportStore(s).claim("w", *_lease())) is None


def _lease():
    now = now_ms()
    return now, now + timedelta(seconds=60)


def test_a_stopped_worker_releases_the_job_and_another_resumes_it_exactly(small_batches):
    settings = ContactsSettings()
    data, expected = messy_csv_bytes(240, seed=5)
    with TestClient(create_app(settings)) as client:
        job = upload(client, settings, data).json()
        first, seen = run_next_job(settings, stop_after_batches=2)
        assert first is None and len(seen) == 2  # released after its second batch
        view = wait_job(client, settings, job["id"])
        assert view["status"] == "queued" and view["progress"]["rows_done"] == 100
        final, _ = run_next_job(settings)
        assert final["status"] == "done"
        view = wait_job(client, settings, job["id"])
        assert view["progress"]["rows_done"] == expected.rows
        assert (
            view["counts"]["created"],
            view["counts"]["merged"],
            view["counts"]["rejected"],
        ) == (
            expected.created,
            expected.merged,
            expected.rejected,
        )
        assert count(settings, CONTACTS) == expected.created


def test_a_crashed_runner_s_job_is_taken_over_after_its_lease(api):
    client, settings = api
    job = upload(client, settings, b"nom\nDupont\n").json()

    async def crash(store: Store):
        imports = ImportStore(store)
        now = now_ms()
        taken = await imports.claim("dead-worker", now, now - timedelta(seconds=1))
        assert taken["_id"] == job["id"]

    run_with_store(settings, crash)
    final, _ = run_next_job(settings)
    assert final["status"] == "done" and final["counts"]["created"] == 1


def test_the_worker_loop_takes_queued_jobs_in_order_until_stopped(api):
    client, settings = api
    first = upload(client, settings, b"nom;email\nDupont;a@example.org\n").json()
    second = upload(client, settings, b"nom;email;tags\nDurand;a@example.org;x\n").json()

    async def worker(store: Store):
        stop = asyncio.Event()
        task = asyncio.create_task(run_import_jobs(settings, store, stop))
        imports = ImportStore(store)
        for _ in range(600):
            jobs = [await imports.job(j["id"]) for j in (first, second)]
            if all(j["status"] == "done" for j in jobs):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)
        return jobs

    done_first, done_second = run_with_store(settings, worker)
    assert done_first["counts"]["created"] == 1
    assert done_second["counts"]["merged"] == 0 and done_second["counts"]["updated"] == 1
    assert done_first["finished_at"] <= done_second["started_at"]
    doc = find(settings, CONTACTS)[0]
    assert doc["family_name"] == "Dupont" and doc["tags"] == ["x"]  # filled when empty
    assert doc["import_ids"] == [first["id"], second["id"]]


# ---------------------------------------------------------------- clear errors


def test_upload_errors_are_clear_and_leave_nothing(api):
    client, settings = api
    good = b"nom;courriel\nDupont;d@example.org\n"

    def problems(r):
        assert r.status_code == 422, r.text
        return {d["field"]: d["reason"] for d in r.json()["detail"]}

    p = problems(upload(client, settings, good, mapping=["courriel=mail_address"]))
    assert "unknown field 'mail_address'" in p["mapping.courriel"]
    p = problems(upload(client, settings, good, mapping=["Portable=phone"]))
    assert "no column 'Portable'" in p["mapping.Portable"]
    p = problems(upload(client, settings, good, mapping=["courriel=custom.nope"]))
    assert "unknown custom field" in p["mapping.courriel"]
    p = problems(upload(client, settings, good, mapping=["pas de signe égal"]))
    assert "column=field" in p["mapping"]
    p = problems(upload(client, settings, good, origin_kind="", origin_detail=""))
    assert set(p) == {"origin_kind", "origin_detail"}
    p = problems(upload(client, settings, good, multipart=False, origin_kind="gossip"))
    assert "origin_kind" in p
    p = problems(upload(client, settings, good, duplicates="maybe", delimiter="|"))
    assert set(p) == {"duplicates", "delimiter"}
    p = problems(upload(client, settings, good, colour="blue"))
    assert "colour" in p
    p = problems(upload(client, settings, b"prenom;ville\nJean;Paris\n"))
    assert "email, phone or family_name" in p["mapping"]
    p = problems(upload(client, settings, b""))
    assert "empty" in p["file"]
    p = problems(upload(client, settings, b"\n\n;;\n"))
    assert "header" in p["file"]
    r = client.post(
        IMPORTS_URL, files=[("origin_kind", (None, "petition"))], headers=headers(settings)
    )
    assert problems(r)["file"] == "no file part in the form"
    r = client.post(IMPORTS_URL, json={"a": 1}, params=ORIGIN, headers=headers(settings))
    assert r.status_code == 415, r.text
    viewer = client.post(
        IMPORTS_URL, content=good, params=ORIGIN, headers=headers(settings, role=Role.viewer)
    )
    assert viewer.status_code == 403
    assert count(settings, IMPORTS) == 0
    assert count(settings, "contact_import_chunks") == 0


def test_a_file_above_the_limit_is_413_and_leaves_nothing(isolated_env, monkeypatch):
    monkeypatch.setenv("CONTACTS_IMPORT_MAX_BYTES", "4096")
    monkeypatch.setenv("CONTACTS_IMPORT_CHUNK_BYTES", "4096")
    settings = ContactsSettings()
    data, _ = messy_csv_bytes(200)
    assert len(data) > 4096
    with TestClient(create_app(settings)) as client:
        for multipart in (True, False):
            r = upload(client, settings, data, multipart=multipart)
            assert r.status_code == 413, r.text
            assert r.json()["error"] == "payload_too_large"

        # without a declared length (chunked), the limit holds while streaming
        def chunks():
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        r = client.post(
            IMPORTS_URL,
            content=chunks(),
            params=ORIGIN,
            headers={**headers(settings), "Content-Type": "text/csv"},
        )
        assert r.status_code == 413, r.text
        small = upload(client, settings, data[:3000].rsplit(b"\r\n", 1)[0])
        assert small.status_code == 202, small.text
    assert count(settings, IMPORTS) == 1
    assert count(settings, "contact_import_chunks") == 1


def test_a_file_above_the_json_limit_is_taken_whole(api):
    """Every other route of the service takes a few KiB (tribune_shared.limits): the
    upload route alone declares the import limit."""
    client, settings = api
    data, _ = messy_csv_bytes(1_000, seed=7)
    assert settings.max_body_bytes < len(data) < settings.import_max_bytes
    for multipart in (True, False):
        r = upload(client, settings, data, multipart=multipart)
        assert r.status_code == 202, r.text
        assert r.json()["file"]["bytes"] == len(data)
    # the same bytes to a JSON route of the same service: refused before being read
    r = client.post(URL, content=data, headers=headers(settings))
    assert r.status_code == 413 and r.json()["limit"] == settings.max_body_bytes


def test_another_federation_s_import_is_404(api):
    client, settings = api
    job = upload(client, settings, b"nom\nDupont\n").json()
    lyon = headers(settings, LYON)
    for method, suffix in (
        ("GET", ""),
        ("POST", "/cancel"),
        ("GET", "/rejected.csv"),
        ("GET", "/flagged.csv"),
    ):
        r = client.request(method, f"{IMPORTS_URL}/{job['id']}{suffix}", headers=lyon)
        assert r.status_code == 404, (suffix, r.text)
    assert client.get(IMPORTS_URL, headers=lyon).json()["items"] == []
    national = headers(settings, "/root/", Role.admin)
    assert [j["id"] for j in client.get(IMPORTS_URL, headers=national).json()["items"]] == [
        job["id"]
    ]
    # importing into a federation outside the caller's subtree is 404 too
    r = upload(
        client, settings, b"nom\nDupont\n", path=LYON, multipart=False, federation_id="paris"
    )
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "federation_id"


# ---------------------------------------------------------------- likely duplicates, merge


def test_likely_duplicates_are_listed_by_postcode_within_the_subtree(api):
    client, settings = api
    a = _existing(
        client,
        settings,
        given_name="Jean",
        family_name="Dupont",
        postcode="75011",
        email="a@example.org",
    )
    b = _existing(
        client,
        settings,
        given_name="DUPONT",
        family_name="Jéan",
        postcode="75011",
        phone="0612345678",
    )
    _existing(
        client,
        settings,
        given_name="Jean",
        family_name="Dupond",
        postcode="69003",
        email="c@example.org",
    )
    _existing(
        client,
        settings,
        given_name="Paul",
        family_name="Martin",
        postcode="75011",
        email="d@example.org",
    )
    e = _existing(
        client,
        settings,
        given_name="Jeanne",
        family_name="Dupont",
        postcode="75011",
        email="e@example.org",
    )
    other = headers(settings, LYON)
    r = client.post(
        URL,
        json={
            "origin": {"kind": "web_form"},
            "family_name": "Dupont",
            "given_name": "Jean",
            "postcode": "75011",
        },
        headers=other,
    )
    assert r.status_code == 201
    r = client.get(f"{URL}/duplicates", headers=headers(settings))
    assert r.status_code == 200, r.text
    page = r.json()
    pairs = [(i["a"]["id"], i["b"]["id"], i["score"]) for i in page["items"]]
    assert pairs == sorted(
        [
            (*sorted((a["id"], b["id"])), 100.0),
            (*sorted((a["id"], e["id"])), 91.7),
            (*sorted((b["id"], e["id"])), 91.7),
        ],
        key=lambda p: (-p[2], p[0], p[1]),
    )
    assert page["items"][0]["postcode"] == "75011" and page["next_cursor"] is None
    # a higher threshold finds fewer; pages continue through the cursor
    r = client.get(f"{URL}/duplicates", params={"threshold": 95}, headers=headers(settings))
    assert len(r.json()["items"]) == 1
    seen = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"{URL}/duplicates", params=params, headers=headers(settings))
        assert r.status_code == 200, r.text
        seen += [(i["a"]["id"], i["b"]["id"], i["score"]) for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == pairs
    assert (
        client.get(
            f"{URL}/duplicates", params={"cursor": "nope"}, headers=headers(settings)
        ).status_code
        == 422
    )
    assert (
        client.get(
            f"{URL}/duplicates", params={"threshold": 10}, headers=headers(settings)
        ).status_code
        == 422
    )
    # Lyon sees none of Paris's
    assert client.get(f"{URL}/duplicates", headers=other).json()["items"] == []


def test_merge_keeps_the_chosen_values_logs_and_publishes_in_one_transaction(api):
    client, settings = api
    survivor = _existing(
        client,
        settings,
        given_name="Jean",
        family_name="Dupont",
        email="jean@example.org",
        tags=["adhérent"],
        postcode="75011",
    )
    merged = _existing(
        client,
        settings,
        given_name="Jean-Pierre",
        family_name="Dupont",
        phone="06 12 34 56 78",
        email="jp@example.org",
        tags=["bénévole"],
        birth_year=1970,
    )
    before = count(settings, OUTBOX)
    admin_id = "f" * 32
    r = client.post(
        f"{URL}/{survivor['id']}/merge",
        json={"merged_id": merged["id"], "fields": {"given_name": "merged"}, "survivor_version": 1},
        headers=headers(settings, user_id=admin_id),
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id"] == survivor["id"] and got["version"] == 2
    assert got["given_name"] == "Jean-Pierre" and got["birth_year"] == 1970
    assert got["email"] == "jean@example.org"  # the survivor's primary stays primary
    assert [e["address"] for e in got["emails"]] == ["jean@example.org", "jp@example.org"]
    assert got["phone"] == "+33612345678" and got["tags"] == ["adhérent", "bénévole"]
    assert client.get(f"{URL}/{merged['id']}", headers=headers(settings)).status_code == 404
    (record,) = find(settings, MERGES)
    assert (record["surviving_contact_id"], record["merged_contact_id"], record["merged_by"]) == (
        survivor["id"],
        merged["id"],
        admin_id,
    )
    assert record["choices"]["given_name"] == "merged" and "given_name" in record["changed_fields"]
    log = client.get(f"{URL}/merges", headers=headers(settings)).json()["items"]
    assert [item["merged_contact_id"] for item in log] == [merged["id"]]
    events = find(settings, OUTBOX)[before:]
    assert [e["topic"] for e in events] == ["contact-merged", "contact-updated"]
    merged_event = decode(Envelope.model_validate(events[0]["envelope"]))
    assert (merged_event.merged_contact_id, merged_event.surviving_contact_id) == (
        merged["id"],
        survivor["id"],
    )
    assert merged_event.contact_version == 2 and merged_event.merged_by == admin_id
    assert events[1]["envelope"]["data"]["contact_version"] == 2
    # its email/phone are free again... for the survivor only: a new contact with them is 409
    again = client.post(
        URL, json={"origin": {"kind": "manual"}, "phone": "0612345678"}, headers=headers(settings)
    )
    assert again.status_code == 409 and again.json()["existing_id"] == survivor["id"]


def test_merge_refusals(api):
    client, settings = api
    seed_federations(settings, LYON, PARIS)
    a = _existing(client, settings, family_name="A", email="a@example.org")
    b = _existing(client, settings, family_name="B", email="b@example.org")
    r = client.post(
        URL,
        json={"origin": {"kind": "manual"}, "family_name": "L"},
        headers=headers(settings, LYON),
    )
    lyon = r.json()

    def merge(survivor, body, path=PARIS, role=Role.secretary):
        return client.post(
            f"{URL}/{survivor}/merge", json=body, headers=headers(settings, path, role)
        )

    assert merge(a["id"], {"merged_id": lyon["id"]}).status_code == 404
    assert merge(lyon["id"], {"merged_id": a["id"]}, LYON).status_code == 404
    assert merge("0" * 32, {"merged_id": a["id"]}).status_code == 404
    national = merge(a["id"], {"merged_id": lyon["id"]}, "/root/", Role.admin)
    assert national.status_code == 409 and national.json()["error"] == "refused"
    r = merge(a["id"], {"merged_id": a["id"]})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "merged_id"
    r = merge(a["id"], {"merged_id": b["id"], "fields": {"emails": "auto", "colour": "x"}})
    assert r.status_code == 422, r.text
    r = merge(a["id"], {"merged_id": b["id"], "fields": {"tags": "merged", "given_name": "union"}})
    assert r.status_code == 422, r.text
    assert merge(a["id"], {"merged_id": b["id"], "merged_version": 7}).status_code == 409
    assert merge(a["id"], {"merged_id": b["id"]}, role=Role.viewer).status_code == 403
    assert count(settings, MERGES) == 0 and count(settings, CONTACTS) == 3


# ---------------------------------------------------------------- the CLI


def test_cli_imports_a_file_with_the_job_runner(isolated_env, tmp_path: Path, capsys):
    settings = ContactsSettings()
    seed_federations(settings, PARIS)
    path = tmp_path / "adherents.csv"
    expected = write_messy_csv(path, 150, encoding="cp1252", delimiter=";", seed=9)
    code = cli_main(
        [
            "import",
            str(path),
            "--federation",
            "paris",
            "--origin-kind",
            "membership",
            "--origin-detail",
            "fichier adhérents 2025",
            "--mapping",
            "Téléphone=ignore",
            "--quiet",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"created {expected.created}" in out.out and f"rejected {expected.rejected}" in out.out
    (job,) = find(settings, IMPORTS)
    assert job["source"] == "cli" and job["status"] == "done"
    assert job["counts"]["merged"] == expected.merged
    docs = find(settings, CONTACTS)
    assert len(docs) == expected.created
    assert all(
        d["origin"]
        == {"kind": "membership", "detail": "fichier adhérents 2025", "collected_on": None}
        for d in docs
    )
    assert not any(p["number"].startswith("+331") for d in docs for p in d["phones"])
    assert (
        cli_main(["import", str(path), "--federation", "nowhere", "--origin-kind", "petition"]) == 2
    )
    assert "unknown federation" in capsys.readouterr().err


# ---------------------------------------------------------------- 100,000 rows


@pytest.mark.timeout(3600)
def test_a_100000_row_messy_file_is_imported_with_exact_counts(isolated_env, tmp_path: Path):
    settings = ContactsSettings()
    path = tmp_path / "big.csv"
    expected = write_messy_csv(path, 100_000, encoding="utf-8-sig", delimiter=";", seed=42)
    with TestClient(create_app(settings)) as client:
        with open(path, "rb") as handle:
            r = client.post(
                IMPORTS_URL,
                files={"file": ("big.csv", handle, "text/csv")},
                data={**ORIGIN, "origin_kind": "electoral_list"},
                headers=headers(settings),
            )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["file"]["bytes"] == path.stat().st_size
        final, _ = run_next_job(settings)
        assert final["status"] == "done", final.get("error")
        view = wait_job(client, settings, job["id"])
    assert view["progress"]["rows_done"] == view["progress"]["total"] == expected.rows
    assert view["counts"]["created"] == expected.created
    assert view["counts"]["merged"] == expected.merged
    assert view["counts"]["rejected"] == expected.rejected
    assert view["counts"]["flagged"] == view["counts"]["updated"] == 0
    assert count(settings, CONTACTS) == expected.created
    assert sum(b["count"] for b in find(settings, OUTBOX, BATCHES)) >= expected.created
