"""A child process for the kill -9 tests (run by test_bus.py, never collected)."""

from __future__ import annotations

import asyncio
import sys

from pydantic_settings import SettingsConfigDict
from pymongo import UpdateOne
from tribune_shared.bus import Batch, EventConsumer, EventPublisher
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import Outbox
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

TOPIC = "contact-created"


class BusSettings(ServiceSettings):
    service_name = "bustest"
    model_config = SettingsConfigDict(env_prefix="BUSTEST_", extra="ignore")


def say(line: str) -> None:
    print(line, flush=True)


async def hang() -> None:
    await asyncio.sleep(3600)


async def consume(settings: BusSettings, store: Store, arg: str) -> None:
    group, moment = arg.split(":")
    publisher = EventPublisher(settings)
    await publisher.start()

    async def handle_many(envelopes, session):
        # A batch handler, as the projections are: every event of the partition batch in
        # one bulk write inside the consumer's transaction.
        if moment == "sigterm-while-handling":
            say("HANDLING")
            await asyncio.sleep(1.5)  # SIGTERM arrives now: the work in hand must finish
        await store["effects"].bulk_write(
            [UpdateOne({"_id": e.key}, {"$inc": {"applied": 1}}, upsert=True) for e in envelopes],
            session=session,
        )
        if moment == "inside-handler":
            say("READY-TO-DIE")  # the batch is written, its transaction not committed
            await hang()

    handle = Batch(handle_many)

    consumer = EventConsumer(
        settings, store, group=group, handlers={TOPIC: handle}, dlq_publisher=publisher
    )
    if moment == "after-handler-before-commit":

        async def commit_never(*_a, **_k):
            say("READY-TO-DIE")  # the handler's transaction has committed
            await hang()

        consumer.consumer.commit = commit_never
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.request_stop)
    await consumer.start()
    await consumer.run()
    await publisher.stop()
    say("STOPPED")


async def write(store: Store, key: str, hang_inside: bool) -> None:
    event = ContactCreatedV1(contact_id=key, contact_version=1, contact=ContactState())
    env = new_envelope(event, producer="bustest", federation_id="f", federation_path="/f/")
    async with store.transaction() as session:
        await store["states"].insert_one({"_id": key}, session=session)
        await Outbox(store).add(session, env)
        if hang_inside:
            say("IN-TRANSACTION")
            await hang()
    say("COMMITTED")
    await hang()  # the relay never gets to run in this process


async def main() -> None:
    mode, arg = sys.argv[1], sys.argv[2]
    settings = BusSettings()
    store = Store(settings)
    if mode == "consume":
        await consume(settings, store, arg)
    else:
        await write(store, arg, hang_inside=mode == "hang-in-transaction")


if __name__ == "__main__":
    asyncio.run(main())
