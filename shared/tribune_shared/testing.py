"""Helpers for tests: identities and the signed header the gateway would send."""

from __future__ import annotations

import uuid

from tribune_shared.auth import IDENTITY_HEADER, Identity, Role, sign_identity


def make_identity(
    federation_path: str = "/root/",
    role: Role = Role.admin,
    user_id: str | None = None,
    email: str = "tester@tribune.test",
) -> Identity:
    federation_id = federation_path.rstrip("/").rsplit("/", 1)[-1]
    return Identity(
        user_id=user_id or uuid.uuid4().hex,
        email=email,
        role=role,
        federation_id=federation_id,
        federation_path=federation_path,
    )


def identity_headers(identity: Identity, secret: str) -> dict[str, str]:
    return {IDENTITY_HEADER: sign_identity(identity, secret)}


async def read_topic(
    bootstrap_servers: str, topic: str, *, expect: int | None = None, idle_seconds: float = 3.0
) -> list:
    """Every record of ``topic`` from the beginning (a fresh consumer, no group): stops
    once ``expect`` records were read, or after ``idle_seconds`` without new ones."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list = []
    try:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while loop.time() - last < idle_seconds:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
                last = loop.time()
            if expect is not None and len(records) >= expect:
                break
    finally:
        await consumer.stop()
    return records


async def wait_for(predicate, *, timeout: float = 20.0, interval: float = 0.1):
    """Poll an async predicate until it returns a truthy value (returned) or time runs out."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def eventually(call, accept=bool, *, timeout: float = 30.0, interval: float = 0.1):
    """Repeat ``call()`` until ``accept(result)`` holds and return that result; projections
    built from events are eventually consistent. Fails with the last result."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = call()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            shown = getattr(result, "text", result)
            raise AssertionError(f"not reached within {timeout}s; last result: {shown!s:.500}")
        time.sleep(interval)
