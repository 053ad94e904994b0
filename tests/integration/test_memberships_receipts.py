"""Tax receipts over the real store: issued from payment-received in the consumer's
transaction with gap-free yearly numbers (under concurrency, redelivery and a crash
mid-batch), rendered as PDF, cancelled and reissued with an audit trail, cancelled by a
refund; the CNCCFP file and the ledger; erasure keeps what the tax law requires."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memberships.main import create_app
from memberships.payments.notice import DonorDeclaration, PaymentNotice
from memberships.payments.refunds import RefundService
from memberships.people.handlers import people_handlers
from memberships.privacy import erasure_handlers
from memberships.receipts.handlers import receipt_handlers
from memberships.receipts.numbering import gaps
from memberships.receipts.service import ReceiptsService
from memberships.receipts.store import INDEXES as RECEIPT_INDEXES
from memberships.receipts.store import RECEIPT_COUNTERS, RECEIPTS
from memberships.reports.handlers import ledger_handlers
from memberships.reports.store import INDEXES as REPORT_INDEXES
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES, PAYMENTS
from pypdf import PdfReader
from support import identity_headers, make_identity, seed_federations
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    ContactAddress,
    ContactCreatedV1,
    ContactState,
    ErasureRequestedV1,
    PaymentReceivedV1,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions, apply_steps

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
DONOR = DonorDeclaration(natural_person=True, nationality="FR", resides_in_france=True)


@pytest.fixture
def settings(isolated_env) -> MembershipsSettings:
    return MembershipsSettings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        seed_federations(settings, "/root/", PARIS, LYON)
        yield c


def run(settings: MembershipsSettings, work) -> Any:
    async def go() -> Any:
        store = Store(settings)
        try:
            await store.ensure_indexes([*INDEXES, *RECEIPT_INDEXES, *REPORT_INDEXES])
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def handlers(settings: MembershipsSettings, store: Store) -> Subscriptions:
    """The worker's subscriptions this part takes part in, as the worker composes them."""
    return (
        Subscriptions("memberships")
        .add(ContactDirectory(store).handlers())
        .add(people_handlers(store), also=True)
        .add(receipt_handlers(settings, store))
        .add(ledger_handlers(settings, store), also=True)
        .add(erasure_handlers(store))
    )


async def consume(settings, store: Store, envelopes: list[Envelope]) -> None:
    """Apply events as the kernel consumer does: a batch per type, one transaction."""
    subs = handlers(settings, store)
    by_type: dict[str, list[Envelope]] = {}
    for e in envelopes:
        by_type.setdefault(e.type, []).append(e)
    for event_type, batch in by_type.items():
        await store.run_transaction(
            lambda s, t=event_type, b=batch: apply_steps(subs.steps(t), b, s)
        )


def person(contact_id: str, path: str = PARIS, *, family_name: str = "Dupont") -> Envelope:
    return new_envelope(
        ContactCreatedV1(
            contact_id=contact_id,
            contact_version=1,
            contact=ContactState(
                given_name="Marianne",
                family_name=family_name,
                address=ContactAddress(
                    lines=["12 rue de la Roquette"], postcode="75011", commune="Paris"
                ),
            ),
        ),
        producer="contacts",
        federation_id=path.rstrip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )


def notice(contact_id: str, **changes: Any) -> PaymentNotice:
    fields: dict[str, Any] = {
        "provider": "stripe",
        "provider_payment_id": f"pi_{uuid.uuid4().hex}",
        "contact_id": contact_id,
        "amount_cents": 15_000,
        "currency": "EUR",
        "method": "card",
        "purpose": "donation",
        "paid_at": datetime.now(UTC) - timedelta(minutes=5),
        "donor": DONOR,
    }
    fields.update(changes)
    return PaymentNotice(**fields)


async def pay(settings, store: Store, *notices: PaymentNotice) -> list[Envelope]:
    """Record payments through the one recording path; their payment-received events."""
    service = MembershipsService(settings, store)
    ids = []
    for n in notices:
        outcome = await service.record_payment(n)
        assert outcome.status == "recorded", outcome
        ids.append(outcome.payment_id)
    rows = await store[OUTBOX].find({"envelope.type": "payment-received"}).to_list()
    found = {
        r["envelope"]["data"]["payment_id"]: Envelope.model_validate(r["envelope"]) for r in rows
    }
    return [found[i] for i in ids]


def auth(settings, path: str = "/root/", role: Role = Role.treasurer) -> dict[str, str]:
    return identity_headers(make_identity(path, role), settings.identity_secret)


# ---------------------------------------------------------------- issuing


def test_a_payment_gets_one_receipt_with_the_years_next_number_and_its_event(settings):
    async def work(store: Store):
        await consume(settings, store, [person("c1")])
        received = await pay(settings, store, notice("c1"), notice("c1", purpose="dues"))
        await consume(settings, store, received)
        await consume(settings, store, received)  # redelivered: nothing twice
        receipts = await store[RECEIPTS].find().sort("seq", 1).to_list()
        events = await store[OUTBOX].find({"envelope.type": "receipt-issued"}).to_list()
        payments = await store[PAYMENTS].find().to_list()
        return receipts, events, payments

    receipts, events, payments = run(settings, work)
    year = datetime.now(UTC).astimezone(settings.zone).year
    assert [r["number"] for r in receipts] == [f"{year}-000001", f"{year}-000002"]
    assert [r["nature"] for r in receipts] == ["donation", "dues"]
    assert receipts[0]["donor"]["family_name"] == "Dupont"
    assert receipts[0]["identity_complete"] is True
    assert receipts[0]["amount_words"] == "cent cinquante euros"
    assert len(events) == 2
    assert {p["receipt_number"] for p in payments} == {r["number"] for r in receipts}


def test_a_gift_to_a_campaign_account_or_flagged_for_refund_gets_no_party_receipt(settings):
    async def work(store: Store):
        await consume(settings, store, [person("c1")])
        [ok] = await pay(settings, store, notice("c1"))
        # built by hand: such payments emit no payment-received, a stray event changes nothing
        flagged = {**(await store[PAYMENTS].find_one({"_id": ok.data["payment_id"]}))}
        flagged.update(_id="flagged", status="flagged_for_refund", provider_payment_id="x")
        await store[PAYMENTS].insert_one(flagged)
        stray = new_envelope(
            PaymentReceivedV1(**{**ok.data, "payment_id": "flagged"}),
            producer="memberships",
            federation_id="paris",
            federation_path=PARIS,
        )
        await consume(settings, store, [ok, stray])
        return await store[RECEIPTS].find().to_list()

    [only] = run(settings, work)
    assert only["seq"] == 1


# ---------------------------------------------------------------- numbering under stress

WORKERS = 8
BATCH = 25
RECEIPTS_WANTED = 1000


def test_1000_concurrent_receipts_get_1000_distinct_gap_free_numbers_despite_a_crash(settings):
    """1,000 payments, issued by 8 concurrent consumers in batches of 25 (each its own
    store client); one batch crashes after taking its numbers and is redelivered, and a few
    batches are delivered twice. The year's series is exactly 1..1000."""

    async def work(store: Store):
        now = datetime.now(UTC) - timedelta(minutes=1)
        docs, envelopes = [], []
        for i in range(RECEIPTS_WANTED):
            pid = f"bulk{i:04d}"
            docs.append(
                {
                    "_id": pid,
                    "provider": "bench",
                    "provider_payment_id": pid,
                    "contact_id": f"c{i % 50}",
                    "amount_cents": 1000,
                    "currency": "EUR",
                    "method": "card",
                    "purpose": "donation",
                    "status": "accepted",
                    "paid_at": now,
                    "federation_id": "paris",
                    "federation_path": PARIS,
                }
            )
            envelopes.append(
                new_envelope(
                    PaymentReceivedV1(
                        payment_id=pid,
                        provider="bench",
                        provider_payment_id=pid,
                        contact_id=f"c{i % 50}",
                        amount_cents=1000,
                        currency="EUR",
                        method="card",
                        purpose="donation",
                        received_at=now,
                    ),
                    producer="memberships",
                    federation_id="paris",
                    federation_path=PARIS,
                )
            )
        await store[PAYMENTS].insert_many(docs)
        batches = [envelopes[i : i + BATCH] for i in range(0, len(envelopes), BATCH)]
        deliveries = batches + random.Random(7).sample(batches, 5)  # some twice
        random.Random(11).shuffle(deliveries)
        crash_at = deliveries[len(deliveries) // 2]
        queue: asyncio.Queue[list[Envelope]] = asyncio.Queue()
        for b in deliveries:
            queue.put_nowait(b)
        crashed: list[int] = []

        async def worker() -> None:
            own = Store(settings)  # its own connections, like another process
            receipts = ReceiptsService(settings, own)
            try:
                while not queue.empty():
                    batch = queue.get_nowait()

                    async def issue(session, batch=batch) -> None:
                        await receipts.issue_for_payments(batch, session)
                        if batch is crash_at and not crashed:
                            crashed.append(1)
                            raise RuntimeError("worker died mid-batch")

                    try:
                        await own.run_transaction(issue)
                    except RuntimeError:
                        queue.put_nowait(batch)  # not committed: Kafka redelivers it
            finally:
                await own.close()

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        receipts = (
            await store[RECEIPTS].find({}, {"seq": 1, "payment_id": 1, "series": 1}).to_list()
        )
        counters = await store[RECEIPT_COUNTERS].find().to_list()
        return receipts, counters, crashed

    receipts, counters, crashed = run(settings, work)
    assert crashed == [1]
    seqs = sorted(r["seq"] for r in receipts)
    assert len(receipts) == RECEIPTS_WANTED
    assert len({r["payment_id"] for r in receipts}) == RECEIPTS_WANTED  # one per payment
    assert seqs == list(range(1, RECEIPTS_WANTED + 1))  # distinct and gap-free
    assert gaps(seqs) == []
    [counter] = counters
    assert counter["last"] == RECEIPTS_WANTED  # the crashed batch's numbers were given back


# ---------------------------------------------------------------- API


def _seed_receipt(settings, contact_id: str = "c1", path: str = PARIS, **changes) -> str:
    async def work(store: Store):
        await consume(settings, store, [person(contact_id, path)])
        received = await pay(settings, store, notice(contact_id, **changes))
        await consume(settings, store, received)
        doc = await store[RECEIPTS].find_one({"payment_id": received[0].data["payment_id"]})
        return doc["_id"]

    return run(settings, work)


def test_the_receipt_pdf_downloads_with_number_amount_and_name(settings, client):
    rid = _seed_receipt(settings, amount_cents=7500, method="cheque")
    r = client.get(f"/api/v1/receipts/{rid}/pdf", headers=auth(settings, PARIS))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
    number = client.get(f"/api/v1/receipts/{rid}", headers=auth(settings, PARIS)).json()["number"]
    assert number in text
    assert "75,00 EUR" in text and "soixante-quinze euros" in text
    assert "Marianne Dupont" in text
    assert "Chèque" in text


def test_receipts_of_another_federation_are_404_and_roles_are_checked(settings, client):
    rid = _seed_receipt(settings)
    assert client.get(f"/api/v1/receipts/{rid}", headers=auth(settings, LYON)).status_code == 404
    pdf = client.get(f"/api/v1/receipts/{rid}/pdf", headers=auth(settings, LYON))
    assert pdf.status_code == 404
    viewer = auth(settings, PARIS, Role.viewer)
    assert client.get(f"/api/v1/receipts/{rid}", headers=viewer).status_code == 403
    dpo = auth(settings, PARIS, Role.dpo)
    assert client.get(f"/api/v1/receipts/{rid}", headers=dpo).status_code == 200
    cancel = client.post(f"/api/v1/receipts/{rid}/cancel", json={"reason": "x"}, headers=dpo)
    assert cancel.status_code == 403


def test_lists_by_contact_and_by_year_in_pages(settings, client):
    rid = _seed_receipt(settings, "c1")
    _seed_receipt(settings, "c2")
    _seed_receipt(settings, "c3", LYON)
    paris = auth(settings, PARIS)
    mine = client.get("/api/v1/receipts", params={"contact_id": "c1"}, headers=paris).json()
    assert [i["receipt_id"] for i in mine["items"]] == [rid]
    other = client.get("/api/v1/receipts", params={"contact_id": "c3"}, headers=paris)
    assert other.status_code == 404
    year = datetime.now(UTC).astimezone(settings.zone).year
    first = client.get("/api/v1/receipts", params={"year": year, "limit": 1}, headers=paris)
    page1 = first.json()
    assert len(page1["items"]) == 1 and page1["next_after"] is not None
    nxt = client.get(
        "/api/v1/receipts",
        params={"year": year, "limit": 1, "after": page1["next_after"]},
        headers=paris,
    ).json()
    numbers = [page1["items"][0]["number"], *[i["number"] for i in nxt["items"]]]
    assert numbers == sorted(numbers) and len(set(numbers)) == 2  # Paris only: not Lyon's
    everything = client.get("/api/v1/receipts", params={"year": year}, headers=auth(settings))
    assert len(everything.json()["items"]) == 3
    neither = client.get("/api/v1/receipts", headers=paris)
    assert neither.status_code == 422


def test_cancel_then_reissue_keep_an_audit_trail_and_never_reuse_a_number(settings, client):
    rid = _seed_receipt(settings)
    paris = auth(settings, PARIS)
    r = client.post(f"/api/v1/receipts/{rid}/reissue", json={"reason": "adresse"}, headers=paris)
    assert r.status_code == 201, r.text
    new = r.json()
    old = client.get(f"/api/v1/receipts/{rid}", headers=paris).json()
    assert old["status"] == "cancelled" and old["replaced_by"] == new["receipt_id"]
    assert old["cancellation"]["reason"] == "adresse" and old["cancellation"]["kind"] == "reissued"
    assert [h["action"] for h in old["history"]] == ["issued", "cancelled"]
    assert new["replaces"] == rid and new["number"] > old["number"]
    again = client.post(f"/api/v1/receipts/{rid}/reissue", json={"reason": "x"}, headers=paris)
    assert again.status_code == 409
    blank = client.post(
        f"/api/v1/receipts/{new['receipt_id']}/cancel", json={"reason": "  "}, headers=paris
    )
    assert blank.status_code == 422 and blank.json()["detail"][0]["field"] == "reason"
    done = client.post(
        f"/api/v1/receipts/{new['receipt_id']}/cancel", json={"reason": "erreur"}, headers=paris
    )
    assert done.status_code == 200 and done.json()["status"] == "cancelled"

    async def after(store: Store):
        return (
            await store[RECEIPTS].count_documents({}),
            await store[OUTBOX].count_documents({"envelope.type": "receipt-cancelled"}),
        )

    assert run(settings, after) == (2, 2)
    # a third receipt of the year takes the next number: cancelled ones are never reused
    rid3 = _seed_receipt(settings, "c9")
    third = client.get(f"/api/v1/receipts/{rid3}", headers=paris).json()
    assert third["number"] > new["number"]


def test_a_refund_cancels_the_receipt_automatically_and_enters_the_ledger(settings, client):
    async def work(store: Store):
        await consume(settings, store, [person("c1")])
        n = notice("c1", amount_cents=20_000)
        received = await pay(settings, store, n)
        await consume(settings, store, received)
        await RefundService(settings, store).reverse(
            provider=n.provider,
            provider_payment_id=n.provider_payment_id,
            kind="chargeback",
            amount_cents=20_000,
            reason="fraude",
            at=datetime.now(UTC),
            reference="dp_1",
        )
        rows = await store[OUTBOX].find({"envelope.type": "payment-refunded"}).to_list()
        refunded = [Envelope.model_validate(r["envelope"]) for r in rows]
        await consume(settings, store, refunded)
        await consume(settings, store, refunded)  # again: nothing more
        return await store[RECEIPTS].find_one({}), await store[OUTBOX].count_documents(
            {"envelope.type": "receipt-cancelled"}
        )

    receipt, cancelled_events = run(settings, work)
    assert receipt["status"] == "cancelled"
    assert receipt["cancellation"]["kind"] == "chargeback"
    assert cancelled_events == 1
    year = datetime.now(UTC).astimezone(settings.zone).year
    ledger = client.get(
        "/api/v1/treasury/ledger", params={"year": year}, headers=auth(settings, PARIS)
    ).json()
    assert [i["kind"] for i in ledger["items"]] == ["payment", "chargeback"]
    assert [i["donations_total_cents"] for i in ledger["items"]] == [20_000, 0]
    assert ledger["totals"]["balance_cents"] == 0


# ---------------------------------------------------------------- reports


def test_the_cnccfp_file_lists_the_years_accepted_payments_of_the_subtree(settings, client):
    _seed_receipt(settings, "c1", PARIS, amount_cents=12_345)
    _seed_receipt(settings, "c2", LYON)
    year = datetime.now(UTC).astimezone(settings.zone).year
    r = client.get("/api/v1/treasury/cnccfp", params={"year": year}, headers=auth(settings, PARIS))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/tab-separated-values")
    header, *lines = r.text.splitlines()
    assert header.split("\t")[0] == "Identifiant de l'enregistrement comptable"
    assert len(lines) == 1  # Lyon's is not in Paris's file
    row = lines[0].split("\t")
    assert len(row) == len(header.split("\t"))
    assert "123,45" in row and "Dupont" in row and "Don" in row
    assert any(v.startswith(f"{year}-") for v in row)  # the receipt number
    national = client.get("/api/v1/treasury/cnccfp", params={"year": year}, headers=auth(settings))
    assert len(national.text.splitlines()) == 3
    outside = client.get(
        "/api/v1/treasury/cnccfp",
        params={"year": year, "federation_id": "lyon"},
        headers=auth(settings, PARIS),
    )
    assert outside.status_code == 404
    assert (
        client.get(
            "/api/v1/treasury/cnccfp", params={"year": year - 1}, headers=auth(settings)
        ).text.count("\n")
        == 1
    )  # only the header
    viewer = auth(settings, PARIS, Role.secretary)
    assert (
        client.get("/api/v1/treasury/cnccfp", params={"year": year}, headers=viewer).status_code
        == 403
    )


def test_the_ledger_csv_has_running_totals(settings, client):
    _seed_receipt(settings, "c1", PARIS, amount_cents=3_000, purpose="dues")
    _seed_receipt(settings, "c2", PARIS, amount_cents=5_000)
    year = datetime.now(UTC).astimezone(settings.zone).year
    r = client.get("/api/v1/treasury/ledger.csv", params={"year": year}, headers=auth(settings))
    assert r.status_code == 200
    header, *rows = [line.split(",") for line in r.text.strip().splitlines()]
    last = dict(zip(header, rows[-1], strict=True))
    assert len(rows) == 2
    assert last["dues_total_cents"] == "3000" and last["donations_total_cents"] == "5000"
    assert last["balance_cents"] == "8000"


# ---------------------------------------------------------------- erasure


def test_erasure_keeps_the_receipt_pseudonymised_and_purges_it_after_retention(settings):
    async def work(store: Store):
        await consume(settings, store, [person("c1")])
        received = await pay(settings, store, notice("c1"))
        await consume(settings, store, received)
        erase = new_envelope(
            ErasureRequestedV1(contact_id="c1", request_id="rq1", requested_at=datetime.now(UTC)),
            producer="consent",
            federation_id="paris",
            federation_path=PARIS,
        )
        await consume(settings, store, [erase])
        kept = await store[RECEIPTS].find_one({})
        people = await store["people"].find_one({"_id": "c1"})
        # within the retention period nothing more goes
        service = ReceiptsService(settings, store)
        assert await service.purge_expired() == 0
        later = ReceiptsService(
            settings, store, clock=lambda: (datetime.now(UTC) + timedelta(days=6 * 366)).timestamp()
        )
        purged = await later.purge_expired()
        after = await store[RECEIPTS].find_one({})
        answer = await store[OUTBOX].find_one({"envelope.type": "erasure-completed"})
        return kept, people, purged, after, answer

    kept, people, purged, after, answer = run(settings, work)
    assert kept["contact_id"].startswith("pseudonym-")
    assert kept["donor"]["family_name"] == "Dupont"  # kept: LPF art. L102 E
    assert people == {"_id": "c1", "erased": True, "version": people["version"]}
    assert purged == 1
    assert after["donor"] is None and after["number"] == kept["number"]
    assert any("receipts: 1" in r for r in answer["envelope"]["data"]["kept_for_legal_reasons"])
