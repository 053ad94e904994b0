"""Benchmark: an SMS campaign of N recipients in several time zones into the fake provider.

    uv run --frozen python bench/campaign_sms.py [--recipients 10000]

One isolated platform (campaign_kit.platform), the fake SMS provider of the local stack
(tribune_devstack.fake_sms) behind messaging's OVH-like and Twilio-like adapters. Seeded as
campaign_kit's docstring says (contacts by the CSV import API, SMS consents as signed
consent-granted events), with phone numbers spread over metropolitan France (+33 6),
Réunion (+262 692), Guadeloupe (+590 690) and French Polynesia (+689 87). The allowed hours
are set for the run to a window around the current time in Paris
(MESSAGING_SMS_ALLOWED_HOURS, every day, French public holidays quiet), so the
metropolitan part may be sent now and the overseas parts are quiet (deferred).

Checks: every recipient is sent, refused by a named rule, or deferred with a not_before;
0 SMS reached the provider while its recipient was in quiet hours (each SMS the provider
recorded is judged at its arrival time, in the recipient's zone, with messaging's own
rules). Prints the table and the send rate of the part sent now.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from campaign_kit import (
    Client,
    Store,
    import_contacts,
    launch,
    now,
    platform,
    print_table,
    publish_consents,
    template,
    until,
)
from messaging.campaigns.rules import (
    QuietHoursPolicy,
    holiday_subdivision,
    is_quiet,
    parse_windows,
    recipient_zone,
)
from tribune_devstack.platform import RunningStack
from tribune_shared.events.contracts import Channel

#: (prefix, digits after it) of each zone's mobile numbers
ZONES = (("+336", 8), ("+262692", 6), ("+590690", 6), ("+68987", 6))
PARIS = ZoneInfo("Europe/Paris")


def allowed_window() -> str:
    """Every day, from 30 minutes ago to 2 hours on, on a Paris clock (within the day)."""
    local = datetime.now(PARIS)
    minutes = local.hour * 60 + local.minute
    start, end = max(0, minutes - 30), min(24 * 60, minutes + 120)
    return f"mon-sun {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def phone(i: int) -> str:
    prefix, digits = ZONES[i % len(ZONES)]
    return f"{prefix}{i:0{digits}d}"


async def run(stack: RunningStack, args: argparse.Namespace, window: str) -> list[dict[str, str]]:
    n = args.recipients
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=120, trust_env=False) as gw,
        httpx.AsyncClient(timeout=120, trust_env=False) as direct,
    ):
        admin = Client(gw, *stack.admin_credentials)
        store = Store(stack)
        try:
            people = [
                {"given_name": f"Bench{i}", "family_name": "Sms", "phone": phone(i)}
                for i in range(n)
            ]
            took = await import_contacts(admin, people)
            contacts = await store.contacts()
            await store.wait_count("messaging", "contacts", {}, len(contacts), "contacts")
            await publish_consents(stack, contacts, Channel.sms)
            await store.wait_count(
                "messaging", "consents", {"channel": "sms"}, len(contacts), "SMS consents"
            )
            print(f"seeded {len(contacts)} of {n} rows in {took:.0f}s", flush=True)
            template_id = await template(admin, Channel.sms)
            started = now()
            campaign_id = await launch(admin, template_id, Channel.sms, "SMS bench")
            messages = store.db("messaging")["messages"]

            async def settled() -> bool:
                unsettled = await messages.count_documents(
                    {
                        "campaign_id": campaign_id,
                        "$or": [{"status": "sending"}, {"status": "queued", "not_before": None}],
                    }
                )
                total = await messages.count_documents({"campaign_id": campaign_id})
                return total >= len(contacts) and unsettled == 0

            # two counts over the campaign's messages: every 2 s, not faster (at 0.5 s they
            # were the store profiler's busiest aggregates, and py-spy had aggregates at
            # 28 % of the store's CPU: the bench weighed on what it measures)
            await until(settled, 2.0, "every SMS sent, refused or deferred")
            took_send = now() - started
            log = await messages.find(
                {"campaign_id": campaign_id},
                {"status": 1, "refused_rule": 1, "not_before": 1, "failure_reason": 1},
            ).to_list()
            r = await direct.get(f"{stack.cfg.sms_url}/messages")
            recorded: list[dict[str, Any]] = r.json()
        finally:
            await store.close()

    policy = QuietHoursPolicy(allowed=parse_windows(window), holiday_country="FR")
    in_quiet = 0
    for sms in recorded:
        at = datetime.fromisoformat(sms["received_at"])
        zone = recipient_zone(None, None, sms["to"], PARIS)
        if is_quiet(at, zone, policy, holiday_subdivision("FR", None, sms["to"])):
            in_quiet += 1
    statuses = Counter(m["status"] for m in log)
    deferred = sum(1 for m in log if m["status"] == "queued" and m.get("not_before"))
    unnamed = sum(1 for m in log if m["status"] == "refused" and not m.get("refused_rule"))
    failed = statuses["failed"]
    accounted = statuses["sent"] + statuses["refused"] + deferred
    rules = Counter(m["refused_rule"] for m in log if m["status"] == "refused")
    rate = statuses["sent"] / max(1e-3, took_send)
    return [
        {
            "scenario": f"SMS campaign of {len(log):,} (4 zones) into the fake provider",
            "goal": "all sent or refused by a named rule (or deferred)",
            "measured": f"{statuses['sent']} sent, {deferred} deferred (quiet hours), "
            f"{statuses['refused']} refused {dict(rules)}, {failed} failed; "
            f"{rate:.0f} SMS/s launch to settled ({took_send:.0f} s)",
            "verdict": "met" if accounted == len(log) and not unnamed and not failed else "NOT met",
        },
        {
            "scenario": f"SMS at the provider in quiet hours (allowed: {window}, Paris clock "
            "for metropolitan numbers)",
            "goal": "0",
            "measured": f"{in_quiet} of {len(recorded)} recorded",
            "verdict": "met" if in_quiet == 0 else "NOT met",
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    if args.recipients < len(ZONES):
        parser.error(f"--recipients must be at least {len(ZONES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    window = allowed_window()
    env = {
        "MESSAGING_CAP_ENABLED": "false",
        "MESSAGING_SMS_ALLOWED_HOURS": window,
        # the fake provider takes what it is given; the bench measures the dispatcher
        "MESSAGING_SMS_OVH_RATE_PER_SECOND": "1000",
        "MESSAGING_SMS_OVH_BURST": "1000",
        "MESSAGING_SMS_TWILIO_RATE_PER_SECOND": "1000",
        "MESSAGING_SMS_TWILIO_BURST": "1000",
        "FAKE_SMS_MAX_MESSAGES": str(args.recipients + 1000),
    }
    print(f"allowed hours for the run: {window}", flush=True)
    with platform("bench-campaign-sms", env) as stack:
        rows = asyncio.run(run(stack, args, window))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
