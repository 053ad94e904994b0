"""Campaign mail goes through pooled SMTP sessions to a real SMTP server, fails over to
the second relay when the first cannot take it now, and never when it refused the
message itself."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
from messaging.composer import OutgoingEmail, build_transactional_email
from messaging.domain import Recipient
from messaging.mailer import DeliveryError, FailoverMailer, SmtpPool, SmtpTarget

pytestmark = pytest.mark.integration

#: the mailbox the test SMTP server refuses (tests/integration/conftest.py)
REJECTED_ADDRESS = "gone@example.org"


def mail(to: str, n: int = 0) -> OutgoingEmail:
    return build_transactional_email(
        message_id=f"m{n}",
        mail_from="Tribune <no-reply@tribune.test>",
        recipient=Recipient(
            contact_id=f"c{n}", federation_id="paris", federation_path="/root/paris/", email=to
        ),
        subject=f"Meeting {n}",
        text="Samedi 15h.",
        date=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


def target(port: int) -> SmtpTarget:
    return SmtpTarget("127.0.0.1", port, timeout=5)


async def test_a_pool_carries_many_messages_over_few_sessions(smtp_server):
    sink, port = smtp_server
    sink.take()
    pool = SmtpPool(target(port), pool_size=2)
    try:
        import asyncio

        await asyncio.gather(*(pool.send(mail(f"p{i}@example.org", i)) for i in range(30)))
    finally:
        await pool.close()
    received = sink.take()
    assert sorted(m["Subject"] for _, m in received) == sorted(f"Meeting {i}" for i in range(30))


async def test_an_unreachable_relay_fails_over_to_the_second(smtp_server):
    sink, port = smtp_server
    sink.take()
    mailer = FailoverMailer([SmtpPool(target(closed_port()), 2), SmtpPool(target(port), 2)])
    try:
        await mailer.send(mail("ana@example.org"))
    finally:
        await mailer.close()
    [(rcpt, _)] = sink.take()
    assert rcpt == ["ana@example.org"]


async def test_a_refused_mailbox_is_not_offered_to_the_second_relay(smtp_server):
    sink, port = smtp_server
    sink.take()
    second = SmtpPool(target(port), 1)
    sent_by_second: list[OutgoingEmail] = []
    real_send = second.send

    async def spy(message: OutgoingEmail) -> None:
        sent_by_second.append(message)
        await real_send(message)

    second.send = spy  # type: ignore[method-assign]
    mailer = FailoverMailer([SmtpPool(target(port), 1), second])
    try:
        with pytest.raises(DeliveryError) as refused:
            await mailer.send(mail(REJECTED_ADDRESS))
        assert "550" in refused.value.reason and refused.value.retryable is False
        await mailer.send(mail("bob@example.org"))  # the session survived the refusal
    finally:
        await mailer.close()
    assert sent_by_second == []
    assert [rcpt for rcpt, _ in sink.take()] == [["bob@example.org"]]


async def test_every_relay_unreachable_is_a_retryable_failure():
    mailer = FailoverMailer([SmtpPool(target(closed_port()), 1)])
    with pytest.raises(DeliveryError) as failed:
        await mailer.send(mail("ana@example.org"))
    assert failed.value.retryable and "unreachable" in failed.value.reason


async def test_an_address_outside_ascii_goes_with_smtputf8_and_arrives_whole(smtp_server):
    sink, port = smtp_server
    sink.take()
    mailer = FailoverMailer([SmtpPool(target(port), 1)])
    try:
        await mailer.send(mail("zoe@exemplé.fr", 7))
    finally:
        await mailer.close()
    [(rcpt, received)] = sink.take()
    assert rcpt == ["zoe@exemplé.fr"]
    assert received["To"].addresses[0].addr_spec == "zoe@exemplé.fr"
    assert received["Subject"] == "Meeting 7"
