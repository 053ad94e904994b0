"""`tribune users|federations|import` as an operator runs them (the installed command, the
settings in its environment, --json documents) against a real gateway and a real contacts
API served on the real store, with the contacts worker's import loop running.

What an operator notices: federations created, renamed and moved as the API does it (the
`federation-updated` events in the gateway's outbox); accounts created, changed,
deactivated (their login refused at once), their password reset, a DPO made with the
operator's own password confirmed; the role rule and the subtree enforced by the gateway
(a secretary is refused); every change in the access audit under the operator's name; and
an import uploaded, followed to its end, with its rejected rows and their reasons."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from contacts.import_jobs import run_import_jobs
from contacts.main import create_app as create_contacts_app
from contacts.settings import ContactsSettings
from contacts.store import CONTACTS
from gateway.main import create_app as create_gateway_app
from gateway.settings import GatewaySettings
from support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    audit_entries,
    read_collection,
    run_with_store,
    serving,
)
from tribune_shared.bus import ProcessedEvents
from tribune_shared.events import Envelope
from tribune_shared.federations import FederationDirectory
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store

pytestmark = pytest.mark.integration
TRIBUNE = Path(sys.executable).with_name("tribune")


class Platform:
    def __init__(self, gateway_url: str, gateway: GatewaySettings, contacts: ContactsSettings):
        self.url = gateway_url
        self.gateway = gateway
        self.contacts = contacts
        self.env = {
            **os.environ,
            "TRIBUNE_OPS_GATEWAY_URL": gateway_url,
            "TRIBUNE_OPS_ADMIN_EMAIL": ADMIN_EMAIL,
            "TRIBUNE_OPS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "TRIBUNE_OPS_IMPORT_POLL_SECONDS": "0.2",
        }

    def tribune(
        self, *args: str, expect: int = 0, stdin: str | None = None, **env: str
    ) -> dict[str, Any]:
        """Run the command; its JSON document (it must exit ``expect``)."""
        result = subprocess.run(
            [str(TRIBUNE), *args, "--json"],
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == expect, result.stdout + result.stderr
        return json.loads(result.stdout)

    def contacts_learn_the_tree(self) -> None:
        """What contacts' consumer does with the gateway's federation events (it is not
        running here): the same events, recorded as applied (the gateway's read-your-writes
        token names them: a call to contacts waits for them)."""
        rows = read_collection(self.gateway, OUTBOX, {"topic": {"$regex": "^federation-"}})
        envelopes = [Envelope.model_validate(r["envelope"]) for r in sorted(rows, key=_seq)]

        async def apply(store: Store) -> None:
            directory = FederationDirectory(store)
            for envelope in envelopes:
                async with store.transaction() as session:
                    if await ProcessedEvents(store, "contacts").claim([envelope], session):
                        await directory.on_federation_event(envelope, session)

        run_with_store(self.contacts, apply)

    def login(self, email: str, password: str) -> int:
        answer = httpx.post(
            f"{self.url}/api/v1/auth/token",
            data={"username": email, "password": password},
            timeout=10,
        )
        return answer.status_code


def _seq(row: dict[str, Any]) -> float:
    return row["seq"]


def _import_loop(settings: ContactsSettings, started: threading.Event, stop_box: list) -> None:
    """The contacts worker's import loop, in its own thread and event loop."""

    async def go() -> None:
        store = Store(settings)
        stop = asyncio.Event()
        stop_box.append((asyncio.get_running_loop(), stop))
        started.set()
        try:
            await run_import_jobs(settings, store, stop)
        finally:
            await store.close()

    asyncio.run(go())


@pytest.fixture
def platform(gateway_env, monkeypatch) -> Iterator[Platform]:
    contacts = ContactsSettings()
    with serving(create_contacts_app(contacts), "contacts") as contacts_url:
        monkeypatch.setenv("GATEWAY_CONTACTS_URL", contacts_url)
        gateway = GatewaySettings()
        with serving(create_gateway_app(gateway), "gateway") as gateway_url:
            started, stop_box = threading.Event(), []
            worker = threading.Thread(
                target=_import_loop, args=(contacts, started, stop_box), daemon=True
            )
            worker.start()
            assert started.wait(30)
            try:
                yield Platform(gateway_url, gateway, contacts)
            finally:
                loop, stop = stop_box[0]
                loop.call_soon_threadsafe(stop.set)
                worker.join(30)


def test_federations_are_created_renamed_and_moved_through_the_api(platform):
    root = platform.tribune("federations", "list")["federations"]
    assert len(root) == 1
    paris = platform.tribune("federations", "create", "Paris")
    lyon = platform.tribune("federations", "create", "Lyon")
    section = platform.tribune("federations", "create", "Paris 11e", "--parent", "Paris")
    assert paris["parent_id"] == root[0]["id"] and section["parent_id"] == paris["id"]

    # a sibling's name is refused by the gateway, which names the existing one
    refused = platform.tribune("federations", "create", "paris", expect=1)
    assert "409" in refused["error"] and paris["id"] in refused["error"]

    renamed = platform.tribune("federations", "rename", section["id"], "Paris XIe")
    assert renamed["name"] == "Paris XIe" and renamed["version"] == 2
    moved = platform.tribune("federations", "move", "Paris XIe", "--parent", lyon["id"])
    assert moved["path"] == f"{lyon['path']}{section['id']}/"
    # never under itself or below: the gateway's rule, 422 (bad input: exit 2)
    under_itself = platform.tribune(
        "federations", "move", "Lyon", "--parent", "Paris XIe", expect=2
    )
    assert "parent_id" in under_itself["error"]

    tree = {f["name"]: f for f in platform.tribune("federations", "list")["federations"]}
    assert set(tree) == {root[0]["name"], "Paris", "Lyon", "Paris XIe"}
    assert tree["Paris XIe"]["parent_id"] == lyon["id"]
    # the events are the API's: created by the outbox in the same transactions
    events = [d["topic"] for d in read_collection(platform.gateway, OUTBOX)]
    assert events.count("federation-created") >= 4  # the root's too
    assert events.count("federation-updated") == 2  # the rename, the move


def test_accounts_are_administered_with_the_gateways_rules_and_audit(platform):
    paris = platform.tribune("federations", "create", "Paris")
    created = platform.tribune(
        "users", "create", "anna@paris.test", "--role", "secretary", "--federation", "Paris",
        "--password-stdin", stdin="a-good-long-password\n",
    )  # fmt: skip
    assert created["role"] == "secretary" and created["federation_id"] == paris["id"]
    assert platform.login("anna@paris.test", "a-good-long-password") == 200
    # a password the gateway finds too short: 422, bad input
    short = platform.tribune(
        "users", "create", "bob@paris.test", "--role", "viewer", "--password-stdin", stdin="x\n",
        expect=2,
    )  # fmt: skip
    assert "password" in short["error"]

    listed = platform.tribune("users", "list", "--role", "secretary")["users"]
    assert [u["email"] for u in listed] == ["anna@paris.test"]
    assert listed[0]["federation_name"] == "Paris"

    changed = platform.tribune("users", "set-role", "anna@paris.test", "campaign_manager")
    assert changed["role"] == "campaign_manager"
    gone = platform.tribune("users", "deactivate", "anna@paris.test")
    assert gone["active"] is False
    assert platform.login("anna@paris.test", "a-good-long-password") == 401
    assert platform.tribune("users", "list", "--inactive")["users"][0]["id"] == created["id"]
    platform.tribune("users", "activate", created["id"])
    reset = platform.tribune("users", "reset-password", "anna@paris.test", "--generate")
    assert platform.login("anna@paris.test", "a-good-long-password") == 401
    assert platform.login("anna@paris.test", reset["password"]) == 200

    # a DPO: the gateway asks for the operator's own password again, the CLI gives it
    dpo = platform.tribune("users", "create", "dpo@tribune.test", "--role", "dpo", "--generate")
    assert dpo["role"] == "dpo"

    # the gateway, not the CLI, decides who may: a secretary may not administer accounts
    platform.tribune("users", "create", "sec@paris.test", "--role", "secretary",
                     "--password-stdin", stdin="another-long-password\n")  # fmt: skip
    refused = platform.tribune(
        "users", "list", expect=1,
        TRIBUNE_OPS_ADMIN_EMAIL="sec@paris.test",
        TRIBUNE_OPS_ADMIN_PASSWORD="another-long-password",
    )  # fmt: skip
    assert refused["error"].startswith("gateway: 403")
    wrong = platform.tribune("users", "list", expect=1, TRIBUNE_OPS_ADMIN_PASSWORD="wrong-one")
    assert "login refused" in wrong["error"]
    missing = platform.tribune("users", "deactivate", "nobody@paris.test", expect=1)
    assert "404" in missing["error"]

    # every change is in the access audit, under the operator's account
    audit = audit_entries(platform.gateway, {"target_user_id": created["id"]}, count=5)
    changes = [(e["email"], e["changes"]) for e in sorted(audit, key=lambda e: e["at"])]
    assert changes == [
        (ADMIN_EMAIL, {"role": "secretary", "federation_id": paris["id"]}),
        (ADMIN_EMAIL, {"role": "campaign_manager"}),
        (ADMIN_EMAIL, {"active": "false"}),
        (ADMIN_EMAIL, {"active": "true"}),
        (ADMIN_EMAIL, {"password": "reset"}),
    ]


def test_an_import_is_uploaded_followed_and_its_rejected_rows_shown(platform, tmp_path):
    paris = platform.tribune("federations", "create", "Paris")
    platform.contacts_learn_the_tree()
    data = tmp_path / "petition.csv"
    data.write_text(
        "nom;prénom;courriel\n"
        "Dupont;Anne;anne@example.org\n"
        "Martin;Paul;not-an-email\n"
        "Durand;Lea;lea@example.org\n",
        encoding="utf-8",
    )
    outcome = platform.tribune(
        "import", str(data), "--federation", "Paris", "--origin-kind", "petition",
        "--origin-detail", "gare du Nord", "--tag", "gare", "--show-rejected", "5",
        expect=0,
    )  # fmt: skip
    assert outcome["status"] == "done"
    assert outcome["counts"]["created"] == 2 and outcome["counts"]["rejected"] == 1
    assert outcome["progress"]["rows_done"] == 3
    [rejected] = outcome["rejected_rows"]
    assert rejected["row"] == "3" and "email" in rejected["reason"].lower()
    people = read_collection(platform.contacts, CONTACTS)
    assert sorted(p["family_name"] for p in people) == ["Dupont", "Durand"]
    assert all(p["federation_id"] == paris["id"] and p["tags"] == ["gare"] for p in people)

    # a bad option is the contacts API's 422, naming it; nothing is imported
    bad = platform.tribune(
        "import", str(data), "--federation", paris["id"], "--origin-kind", "rumour", expect=2
    )
    assert "origin_kind" in bad["error"]
    assert len(read_collection(platform.contacts, CONTACTS)) == 2
