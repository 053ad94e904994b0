"""SMTP sink for local runs and tests: accepts every message, keeps it, serves it as JSON.

SMTP (aiosmtpd) and a tiny HTTP API share one asyncio loop:
  GET /health                  {"status": "ok", "messages": <count>}
  GET /messages[?to=<addr>]    list of messages, oldest first (filter: envelope or To/Cc)
  GET /messages/<id>           one message
  DELETE /messages             forget all kept messages (the .eml files stay)
Every message is also written to <maildir>/<timestamp>-<id>.eml.

Run: python -m tribune_devstack.smtp_sink --smtp-port 1025 --http-port 8025 --maildir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import logging
import os
import signal
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("tribune.smtp_sink")


@dataclass(frozen=True)
class StoredMessage:
    id: str
    received_at: str
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    raw: str
    eml_path: str | None

    def addressed_to(self, addr: str) -> bool:
        addr = addr.strip().lower()
        if any(r.lower() == addr for r in self.rcpt_tos):
            return True
        header_addrs = getaddresses(
            [v for k, v in self.headers if k.lower() in ("to", "cc", "bcc")]
        )
        return any(a.lower() == addr for _, a in header_addrs)


def _body(msg: EmailMessage, subtype: str) -> str | None:
    part = msg.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset or broken encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


class MailStore:
    """Bounded in-memory list (oldest dropped first) plus an .eml file per message."""

    def __init__(self, maildir: Path | None, max_messages: int = 10_000) -> None:
        self.maildir = maildir
        self.messages: deque[StoredMessage] = deque(maxlen=max_messages)
        if maildir is not None:
            maildir.mkdir(parents=True, exist_ok=True)

    def add(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> StoredMessage:
        now = datetime.now(UTC)
        msg_id = uuid.uuid4().hex
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)  # guaranteed by policy.default
        eml_path: Path | None = None
        if self.maildir is not None:
            eml_path = self.maildir / f"{now:%Y%m%dT%H%M%S%f}-{msg_id}.eml"
            eml_path.write_bytes(raw)
        stored = StoredMessage(
            id=msg_id,
            received_at=now.isoformat(),
            mail_from=mail_from,
            rcpt_tos=list(rcpt_tos),
            subject=str(parsed.get("Subject", "")),
            headers=[(k, str(v)) for k, v in parsed.items()],
            text=_body(parsed, "plain"),
            html=_body(parsed, "html"),
            raw=raw.decode("utf-8", errors="replace"),
            eml_path=str(eml_path) if eml_path else None,
        )
        self.messages.append(stored)
        return stored

    def list(self, to: str | None = None) -> list[StoredMessage]:
        return [m for m in self.messages if to is None or m.addressed_to(to)]

    def get(self, msg_id: str) -> StoredMessage | None:
        return next((m for m in self.messages if m.id == msg_id), None)

    def clear(self) -> int:
        n = len(self.messages)
        self.messages.clear()
        return n


class SinkHandler:
    """aiosmtpd handler: accept everything, store it."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = self.store.add(envelope.mail_from or "", list(envelope.rcpt_tos), raw)
        log.info("received %s from %s to %s: %s", msg.id, msg.mail_from, msg.rcpt_tos, msg.subject)
        return "250 Message accepted for delivery"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class HttpApi:
    """Just enough HTTP/1.1 for a JSON API (one request per connection)."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    def route(self, method: str, target: str) -> tuple[int, Any]:
        url = urlsplit(target)
        query = parse_qs(url.query)
        path = url.path.rstrip("/") or "/"
        if path == "/health":
            if method != "GET":
                return 405, {"error": "use GET"}
            return 200, {"status": "ok", "messages": len(self.store.messages)}
        if path == "/messages":
            if method == "GET":
                to = query.get("to", [None])[0]
                return 200, [asdict(m) for m in self.store.list(to)]
            if method == "DELETE":
                return 200, {"deleted": self.store.clear()}
            return 405, {"error": "use GET or DELETE"}
        if path.startswith("/messages/") and method == "GET":
            found = self.store.get(path.removeprefix("/messages/"))
            return (200, asdict(found)) if found else (404, {"error": "no such message"})
        return 404, {"error": f"no route {method} {path}"}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3:
                status, body = 400, {"error": "bad request line"}
            else:
                status, body = self.route(parts[0].upper(), parts[1])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        except Exception as exc:  # a bug here must not kill the sink
            log.exception("http handler failed")
            status, body = 500, {"error": str(exc)}
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def serve(
    host: str = "127.0.0.1",
    smtp_port: int = 1025,
    http_port: int = 8025,
    maildir: Path | None = None,
    max_messages: int = 10_000,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT when run as a program)."""
    loop = asyncio.get_running_loop()
    store = MailStore(maildir, max_messages)
    handler = SinkHandler(store)
    # A fixed hostname: aiosmtpd otherwise calls socket.getfqdn(), slow on some hosts.
    smtp_server = await loop.create_server(
        lambda: SMTP(handler, hostname="tribune-smtp-sink", enable_SMTPUTF8=True),
        host,
        smtp_port,
    )
    http_server = await asyncio.start_server(HttpApi(store).handle, host, http_port)
    log.info("smtp sink on %s:%s, http api on %s:%s", host, smtp_port, host, http_port)
    stop = stop or asyncio.Event()
    try:
        await stop.wait()
    finally:
        smtp_server.close()
        http_server.close()
        await smtp_server.wait_closed()
        await http_server.wait_closed()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m tribune_devstack.smtp_sink", description=__doc__)
    p.add_argument("--host", default=env.get("TRIBUNE_HOST", "127.0.0.1"))
    p.add_argument("--smtp-port", type=int, default=int(env.get("TRIBUNE_SMTP_PORT", "1025")))
    p.add_argument("--http-port", type=int, default=int(env.get("TRIBUNE_SMTP_HTTP_PORT", "8025")))
    p.add_argument("--maildir", type=Path, default=None, help="write each message as .eml here")
    p.add_argument(
        "--max-messages",
        type=int,
        default=int(env.get("TRIBUNE_SMTP_MAX_MESSAGES", "10000")),
        help="messages kept in memory (oldest dropped first)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            args.host, args.smtp_port, args.http_port, args.maildir, args.max_messages, stop
        )

    asyncio.run(run())


if __name__ == "__main__":
    main()
