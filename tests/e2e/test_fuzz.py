"""Fuzzing (issue 9, "Also"): Schemathesis generates requests from every service's OpenAPI
document, valid ones and invalid ones, and sends them to the real processes with a signed
identity (the gateway's, with a user's access token). No answer may be a 5xx, and every
documented answer must match its schema.

Bounded so CI stays fast: ``TRIBUNE_FUZZ_EXAMPLES`` (default 20) examples per operation
and generation mode (valid, invalid); through the gateway, the services' operations (its
document publishes them, ``x-tribune-service``) and the catch-alls left (the live figures)
get ``TRIBUNE_FUZZ_FORWARDED_EXAMPLES`` (default 3): the services are fuzzed directly.
``TRIBUNE_FUZZ_SEED`` makes a run reproducible (default: a fixed seed, so a
failure in CI is the same one locally; set it to ``random`` to explore).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from support import Client, login, make_identity
from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("TRIBUNE_FUZZ_EXAMPLES", "20"))
FORWARDED_EXAMPLES = int(os.environ.get("TRIBUNE_FUZZ_FORWARDED_EXAMPLES", "3"))
_SEED = os.environ.get("TRIBUNE_FUZZ_SEED", "20260901")
SEED = None if _SEED == "random" else int(_SEED)
SERVICES = ("contacts", "consent", "memberships", "messaging")
CHECKS = [not_a_server_error, response_schema_conformance]

# The DSN webhook takes a raw report message (message/rfc822): fuzz it with arbitrary bytes
# and with report-shaped messages, which Schemathesis cannot derive from a schema.
_REPORT = (
    b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
    b'boundary="b"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n'
    b"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\n"
    b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
)
schemathesis.openapi.media_type(
    "message/rfc822", st.one_of(st.binary(max_size=4096), st.just(_REPORT))
)


@dataclass(frozen=True)
class Fuzzed:
    """Who calls: the headers of one request to an operation (fresh: identities expire)."""

    headers: Callable[[str], dict[str, str]]
    base_url: str


@pytest.fixture(scope="module")
def fuzz_federation(admin) -> dict:
    """A federation of its own, so whatever valid requests create stays there."""
    r = admin("POST", "/api/v1/federations", json={"name": f"Fuzz {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
    return r.json()


def _dpo_operation(path: str) -> bool:
    """Operations only the DPO reaches: fuzzed as the DPO, the rest as an administrator."""
    return "/privacy" in path or path.endswith("/audit") or path.endswith("/exports")


def _schema(base_url: str) -> schemathesis.BaseSchema:
    spec = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    return schemathesis.openapi.from_dict(spec)


def _fuzz(
    schema: schemathesis.BaseSchema,
    who: Fuzzed,
    examples: Callable[[Any], int],
) -> list[str]:
    """Every operation with ``examples(operation)`` cases per generation mode; the failures
    (operation, request, what went wrong), all of them, rather than the first."""
    failures: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        count = examples(operation)
        if count <= 0:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seen: list[str] = []
            run = _runner(operation, mode, who, session, seen, count)
            if SEED is not None:
                run = seed(SEED)(run)
            try:
                run()
            except Unsatisfiable:  # no invalid request exists (an operation without inputs)
                continue
            failures.extend(dict.fromkeys(seen))  # each distinct failure once
    session.close()
    return failures


def _runner(
    operation, mode: GenerationMode, who: Fuzzed, session, seen: list[str], count: int
) -> Callable[[], None]:
    """A Hypothesis test sending ``count`` cases of one operation, noting failures."""

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(
            base_url=who.base_url,
            session=session,
            headers=who.headers(operation.path),
            timeout=30,
        )
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # schemathesis' failures (a group, one per check)
            first = [line for line in str(exc).strip().splitlines() if line.strip()][:8]
            seen.append(
                f"{operation.method.upper()} {operation.path} [{mode.value}] "
                f"{response.status_code}: " + " | ".join(first)
            )

    return run


def _signed(secret: str, fed: dict) -> Callable[[str], dict[str, str]]:
    admin = make_identity(fed["path"], Role.admin)
    dpo = make_identity(fed["path"], Role.dpo)

    def headers(path: str) -> dict[str, str]:
        identity: Identity = dpo if _dpo_operation(path) else admin
        return {IDENTITY_HEADER: sign_identity(identity, secret)}

    return headers


@pytest.mark.parametrize("service", SERVICES)
def test_fuzzing_a_service_gives_no_server_error_and_no_schema_violation(
    stack, fuzz_federation, service
):
    secret = stack.env["TRIBUNE_IDENTITY_SECRET"]
    base_url = stack.url(service)
    who = Fuzzed(_signed(secret, fuzz_federation), base_url)
    failures = _fuzz(_schema(base_url), who, lambda _operation: EXAMPLES)
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def fuzz_users(stack, admin, http, fuzz_federation) -> Iterator[dict[str, Client]]:
    """An administrator and a DPO of the fuzz federation, signed in: role -> user."""
    users = {}
    for role in ("admin", "dpo"):
        email = f"fuzz.{role}.{uuid.uuid4().hex[:6]}@tribune.test"
        password = f"pw-{uuid.uuid4().hex}"
        body = {
            "email": email,
            "password": password,
            "role": role,
            "federation_id": fuzz_federation["id"],
            # granting the DPO role takes the granting administrator's password
            "confirm_password": stack.admin_credentials[1],
        }
        r = admin("POST", "/api/v1/users", json=body)
        assert r.status_code == 201, r.text
        users[role] = login(http, email, password)
    yield users


def test_fuzzing_the_gateway_gives_no_server_error_and_no_schema_violation(stack, fuzz_users):
    from gateway.openapi import SERVICE_EXTENSION
    from gateway.routing import ROUTES

    forwarded = {r.prefix for r in ROUTES}

    def headers(path: str) -> dict[str, str]:
        role = "dpo" if _dpo_operation(path) else "admin"
        return {"Authorization": f"Bearer {fuzz_users[role].token}"}

    def examples(operation: Any) -> int:
        if operation.path.removesuffix("/{path}") in forwarded:
            return FORWARDED_EXAMPLES
        if SERVICE_EXTENSION in operation.definition.raw:
            return FORWARDED_EXAMPLES
        return EXAMPLES

    who = Fuzzed(headers, stack.gateway_url)
    failures = _fuzz(_schema(stack.gateway_url), who, examples)
    assert not failures, "\n".join(failures)
