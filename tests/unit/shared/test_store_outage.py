"""A store that is down or stops answering (paused, failing over, cut off): every API
answers 503 with Retry-After, never a 500, and never holds a request past the configured
store timeouts (tribune_shared.app, tribune_shared.store.client_options)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from tribune_shared.app import api_store, create_service_app
from tribune_shared.errors import ServiceUnavailable
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store, client_options, is_unreachable


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionFailure("connection refused"),
        AutoReconnect("connection closed"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("no server"),
        ExecutionTimeout("operation exceeded time limit", code=50),
        WTimeoutError("waiting for replication timed out", code=64),
        ExceptionGroup("middleware", [NetworkTimeout("a"), AutoReconnect("b")]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_unreachable_or_silent_store_is_an_outage(exc: BaseException) -> None:
    assert is_unreachable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        DuplicateKeyError("E11000 duplicate key", code=11000),
        OperationFailure("bad query", code=2),
        ValueError("a bug"),
        ExceptionGroup("middleware", [NetworkTimeout("a"), ValueError("a bug")]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_are_not_an_outage(exc: BaseException) -> None:
    assert not is_unreachable(exc)


def test_every_store_client_waits_a_bounded_time_as_configured() -> None:
    settings = ServiceSettings(
        store_server_selection_timeout_seconds=1.5,
        store_connect_timeout_seconds=2,
        store_socket_timeout_seconds=7,
    )
    options = client_options(settings)
    assert options["serverSelectionTimeoutMS"] == 1500
    assert options["connectTimeoutMS"] == 2000
    assert options["socketTimeoutMS"] == 7000
    defaults = client_options(ServiceSettings())
    assert all(defaults[k] > 0 for k in ("serverSelectionTimeoutMS", "socketTimeoutMS"))


def _app(settings: ServiceSettings, store: Store | None = None) -> FastAPI:
    router = APIRouter()

    @router.get("/raises/{kind}")
    async def raises(kind: str) -> dict[str, str]:
        errors: dict[str, Exception] = {
            "selection": ServerSelectionTimeoutError("no primary"),
            "network": NetworkTimeout("read timed out"),
            "execution": ExecutionTimeout("time limit", code=50),
            "duplicate": DuplicateKeyError("E11000", code=11000),
            "refused": ServiceUnavailable("the access audit is unavailable; try again later"),
            "conflict": OperationFailure("WriteConflict", code=112),
        }
        raise errors[kind]

    @router.get("/reads")
    async def reads() -> dict[str, object]:
        assert store is not None
        doc = await store["things"].find_one({})
        return {"found": doc is not None}

    app = create_service_app(settings, title="outage", routers=[router], store=store)

    @app.middleware("http")
    async def reads_the_store_first(request, call_next):  # as read-your-writes does
        if request.url.path == "/middleware-reads":
            raise NetworkTimeout("the store did not answer")
        return await call_next(request)

    return app


def _client(settings: ServiceSettings, store: Store | None = None) -> TestClient:
    # no lifespan (it would create indexes on a store): the routes and middlewares alone
    return TestClient(_app(settings, store), raise_server_exceptions=False)


@pytest.mark.parametrize("kind", ["selection", "network", "execution", "refused"])
def test_a_route_that_meets_a_store_outage_answers_503_with_retry_after(kind: str) -> None:
    settings = ServiceSettings(store_retry_after_seconds=7)
    r = _client(settings).get(f"/raises/{kind}")
    assert r.status_code == 503
    # a store outage: the setting; a refusal the code raised: its own (5 by default)
    assert r.headers["Retry-After"] == ("5" if kind == "refused" else "7")
    assert r.json()["error"] == "service_unavailable"
    assert r.headers["X-Correlation-ID"]  # inside the usual middlewares: logged, counted


def test_a_middleware_that_meets_a_store_outage_answers_503_too() -> None:
    settings = ServiceSettings(store_retry_after_seconds=3)
    r = _client(settings).get("/middleware-reads")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "3"


def test_a_write_conflict_that_outlived_the_retries_answers_503_busy() -> None:
    """The transaction runner gave up (request_transaction_retry_seconds): the client is
    told to come back, before the gateway's upstream timeout could answer 504."""
    settings = ServiceSettings(store_retry_after_seconds=4)
    r = _client(settings).get("/raises/conflict")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "4"
    assert "changed by others" in r.json()["detail"]


def test_an_api_gives_up_on_a_conflict_before_the_gateway_does() -> None:
    """An API's store retries request_transaction_retry_seconds, a worker's the longer
    transaction_retry_seconds; by default the API's budget and one last store command fit
    in the gateway's upstream timeout."""
    from gateway.settings import GatewaySettings

    settings = ServiceSettings(transaction_retry_seconds=60, request_transaction_retry_seconds=3)
    assert Store(settings).transaction_retry_seconds == 60
    assert api_store(settings).transaction_retry_seconds == 3

    defaults = ServiceSettings()
    assert (
        defaults.request_transaction_retry_seconds + defaults.store_socket_timeout_seconds
        < GatewaySettings().upstream_timeout_seconds
    )
    assert defaults.transaction_retry_seconds > defaults.request_transaction_retry_seconds


def test_another_database_error_is_still_a_500() -> None:
    assert _client(ServiceSettings()).get("/raises/duplicate").status_code == 500


@pytest.fixture
def silent_store() -> Iterator[str]:
    """A port that accepts connections and never answers: a paused (SIGSTOP) store."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        host, port = listener.getsockname()
        yield f"mongodb://{host}:{port}/?directConnection=true"


@pytest.fixture
def closed_store() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()
    return f"mongodb://{host}:{port}/?directConnection=true"


@pytest.mark.parametrize("which", ["silent_store", "closed_store"])
def test_a_real_client_on_a_silent_or_closed_store_gets_503_not_a_hang(
    which: str, request: pytest.FixtureRequest
) -> None:
    settings = ServiceSettings(
        mongo_url=request.getfixturevalue(which),
        store_server_selection_timeout_seconds=0.5,
        store_connect_timeout_seconds=0.5,
        store_socket_timeout_seconds=0.5,
    )
    r = _client(settings, Store(settings)).get("/reads")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == str(settings.store_retry_after_seconds)


def test_every_service_unavailable_says_when_to_come_back() -> None:
    """Answered by the kernel's handler or built directly (the gateway's dispatch)."""
    assert ServiceUnavailable("busy").headers["Retry-After"] == "5"
    assert ServiceUnavailable("busy", retry_after=9).headers["Retry-After"] == "9"
    named = ServiceUnavailable("busy", headers={"Retry-After": "30"})
    assert named.headers["Retry-After"] == "30"


def test_the_transaction_runner_stops_retrying_a_conflict_after_its_store_budget() -> None:
    import asyncio
    import time
    from contextlib import asynccontextmanager

    settings = ServiceSettings(
        transaction_retry_seconds=60,
        request_transaction_retry_seconds=0.3,
        transaction_retry_backoff_seconds=0.01,
    )
    store = api_store(settings)
    attempts = 0

    @asynccontextmanager
    async def conflicting():  # every attempt loses its write conflict
        nonlocal attempts
        attempts += 1
        yield None
        raise OperationFailure("WriteConflict", code=112)

    store.transaction = conflicting  # type: ignore[method-assign]

    async def work(_session: object) -> None:
        return None

    started = time.monotonic()
    with pytest.raises(OperationFailure):
        asyncio.run(store.run_transaction(work))
    assert 0.3 <= time.monotonic() - started < 30  # its own budget, not the 60 s of workers
    assert attempts > 1


@pytest.mark.parametrize(("api", "attempts_wanted"), [(True, 1), (False, 2)])
def test_an_api_does_not_run_a_transaction_again_when_the_store_did_not_answer(
    api: bool, attempts_wanted: int
) -> None:
    """PyMongo labels a network timeout inside a transaction transient: a worker runs it
    again (it waits the outage out), an API answers 503 at once."""
    import asyncio
    from contextlib import asynccontextmanager

    settings = ServiceSettings(
        transaction_retry_seconds=60, transaction_retry_backoff_seconds=0.001
    )
    store = api_store(settings) if api else Store(settings)
    attempts = 0

    @asynccontextmanager
    async def timing_out():
        nonlocal attempts
        attempts += 1
        yield None
        if attempts == 1:
            exc = NetworkTimeout("timed out")
            exc._add_error_label("TransientTransactionError")
            raise exc

    store.transaction = timing_out  # type: ignore[method-assign]

    async def work(_session: object) -> str:
        return "done"

    if api:
        with pytest.raises(NetworkTimeout):
            asyncio.run(store.run_transaction(work))
    else:
        assert asyncio.run(store.run_transaction(work)) == "done"
    assert attempts == attempts_wanted
