"""Campaign rules, free of I/O: states and their transitions, identities, the breaker."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tribune_shared.errors import Conflict, InvalidField
from tribune_shared.events.contracts import Channel
from tribune_shared.store import ID_RANGES, next_boundary

#: channels a campaign may use
CAMPAIGN_CHANNELS = frozenset({Channel.email, Channel.sms})


class CampaignStatus(StrEnum):
    draft = "draft"  # being prepared; nothing sent
    scheduled = "scheduled"  # launches by itself at scheduled_at
    sending = "sending"  # launched: the audience streams in, workers send
    paused = "paused"  # launched, held: nothing is sent until resumed
    completed = "completed"  # every recipient was sent, refused or failed
    cancelled = "cancelled"  # stopped for good; what was not sent never will be
    failed = "failed"  # the audience could not be resolved (the reason is kept)


class Action(StrEnum):
    schedule = "schedule"
    launch = "launch"
    pause = "pause"
    resume = "resume"
    cancel = "cancel"


_S = CampaignStatus
#: action -> (the states it applies to, the state it leads to)
TRANSITIONS: Mapping[Action, tuple[frozenset[CampaignStatus], CampaignStatus]] = {
    Action.schedule: (frozenset({_S.draft, _S.scheduled}), _S.scheduled),
    Action.launch: (frozenset({_S.draft, _S.scheduled}), _S.sending),
    Action.pause: (frozenset({_S.sending}), _S.paused),
    Action.resume: (frozenset({_S.paused}), _S.sending),
    Action.cancel: (frozenset({_S.draft, _S.scheduled, _S.sending, _S.paused}), _S.cancelled),
}

#: states in which the template version is in use (frozen) and the settings fixed
LAUNCHED = frozenset({_S.sending, _S.paused, _S.completed, _S.cancelled, _S.failed})


def add_stats(into: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Add one shard of a campaign's statistics to ``into`` (nested counters, as ``$inc``
    on dotted names makes them: ``{"refused_by": {"no_consent": 2}}``)."""
    for key, value in more.items():
        if isinstance(value, Mapping):
            held = into.get(key)
            into[key] = add_stats(dict(held) if isinstance(held, Mapping) else {}, value)
        else:
            into[key] = into.get(key, 0) + value
    return into


def transition(current: CampaignStatus, action: Action) -> CampaignStatus:
    """The state ``action`` leads to from ``current``, or 409 saying why not."""
    sources, target = TRANSITIONS[action]
    if current not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise Conflict(
            f"a {current.value} campaign cannot be {action.value}d "
            f"(only a campaign that is {allowed})",
            status=current.value,
        )
    return target


@dataclass(frozen=True)
class ClaimCursor:
    """Where a dispatcher reads a campaign's queue next: the message ids from ``key`` (after
    it when ``strict``) up to ``span`` of the kernel's 256 id ranges further.

    Why windows: the local store answers an equality query with a limit by reading every
    document of the equality first, so a claim of 200 read the whole queue (100,000 queued:
    about a second of the store's time per claim, which stalled everything else). A window
    bounded on both sides costs what it holds. Message ids are sha256 hex, so each range
    holds 1/256 of the queue; the span doubles after a window that had too few (a small
    queue is read in a few wider windows) and halves after a full one. After the last range
    the reading starts again from the first: messages put back in the queue behind the
    cursor are found on the next turn."""

    key: str = ""
    strict: bool = False
    span: int = 1

    def upper(self) -> str | None:
        """The window's upper bound (None: it reaches the end of the id space)."""
        return next_boundary(self.key, self.span)

    def ids(self) -> dict[str, str]:
        """The window's ``_id`` condition."""
        condition = {"$gt" if self.strict else "$gte": self.key}
        if (upper := self.upper()) is not None:
            condition["$lt"] = upper
        return condition

    def after(self, read: Sequence[str], wanted: int) -> ClaimCursor:
        """Where the next read goes after this window gave ``read`` (ids in order) of the
        ``wanted``: on after the last id read if it was full, else the next window (from the
        first range again after the last one)."""
        if read and len(read) >= wanted:
            return ClaimCursor(read[-1], True, max(1, self.span // 2))
        return ClaimCursor(self.upper() or "", False, min(ID_RANGES, self.span * 2))


@dataclass
class QueuePosition:
    """Where a dispatcher reads one campaign's queue next: its messages to send as soon as
    possible (``now``, not deferred), and its messages deferred to a time that has come
    (``due``: one cursor per such time, learnt when the dispatcher defers a message, or from
    the store, forgotten once a turn of the id space finds none left).

    Why a cursor per time: SMS deferred by quiet hours wait for a handful of times (each
    zone's next allowed hour), thousands of messages each, and the morning's first claims
    would otherwise ask for "deferred to any time up to now": a range the local store reads
    whole before the limit applies (20,000 due messages: ~0.4 s per claim of 200, every
    claim, on a scratch store). An equality on one time and a window of ids is a range of
    the queue's index bounded on both sides, like the messages not deferred. ``start``:
    the id range where each of its cursors begins (the dispatcher draws it at random, so
    that workers seldom race for the same messages)."""

    start: str = ""
    now: ClaimCursor = dataclass_field(default_factory=ClaimCursor)
    due: dict[datetime, ClaimCursor] = dataclass_field(default_factory=dict)

    @classmethod
    def starting_at(cls, start: str) -> QueuePosition:
        return cls(start, ClaimCursor(start))

    def learn(self, times: Iterable[datetime]) -> None:
        """Times some of the queue's messages are deferred to (read from the store, or
        decided by this dispatcher): a cursor for each one not followed yet. Each is kept as
        the store keeps it (UTC, to the millisecond), so that it matches as an equality."""
        for at in times:
            at = at.astimezone(UTC)
            self.due.setdefault(
                at.replace(microsecond=at.microsecond // 1000 * 1000), ClaimCursor(self.start)
            )

    def come(self, now: datetime) -> list[datetime]:
        """The followed times that have come, the earliest first."""
        return sorted(at for at in self.due if at <= now)


@dataclass
class UnsentSweep:
    """Where a dispatcher got to in cancelling a cancelled campaign's messages not handed
    over: its held ones (an A/B test's rest) and its queued ones, deferred or not, each read
    in windows like a claim's. Why a sweep: the cancel itself changes only the campaign; one
    statement over 100,000 messages took 45 s on the local store, in a transaction whose
    commit then held the store for minutes (the store aborts a transaction after 60 s)."""

    held: ClaimCursor = dataclass_field(default_factory=ClaimCursor)
    queued: QueuePosition = dataclass_field(default_factory=QueuePosition)

    @classmethod
    def starting_at(cls, start: str) -> UnsentSweep:
        """A sweep from the id range ``start`` (drawn at random by each dispatcher, so that
        two workers sweeping one campaign cancel different batches, not the same ones)."""
        return cls(ClaimCursor(start), QueuePosition.starting_at(start))


def message_id(campaign_id: str, contact_id: str) -> str:
    """The id of a campaign's message to a contact: one per pair, whatever is redelivered
    or replayed (the intent's unique key is what makes "at most once" hold)."""
    return hashlib.sha256(f"campaign:{campaign_id}:{contact_id}".encode()).hexdigest()[:32]


def check_channel(channel: Channel) -> None:
    if channel not in CAMPAIGN_CHANNELS:
        raise InvalidField("a campaign is sent by email or sms", field="channel")


def check_schedule(at: datetime, now: datetime, horizon: timedelta) -> None:
    """A launch time is in the future, and not absurdly far."""
    if at.tzinfo is None:
        raise InvalidField("must carry a time zone (e.g. 2027-03-01T09:00:00+01:00)", field="at")
    if at <= now:
        raise InvalidField("must be in the future", field="at")
    if at > now + horizon:
        raise InvalidField(f"must be within {horizon.days} days", field="at")


# ---------------------------------------------------------------- A/B subject test


class AbMetric(StrEnum):
    opened = "opened"
    clicked = "clicked"


@dataclass(frozen=True)
class AbTest:
    """Two subjects tried on a share of the audience (half each); after ``decide_after``
    the one with the better ``metric`` rate goes to everyone else."""

    version_b: int
    share: float
    decide_after: timedelta
    metric: AbMetric


#: the variants of an A/B test; "held" waits for the winner
VARIANT_A, VARIANT_B = "a", "b"


def ab_variant(campaign_id: str, contact_id: str, share: float) -> str | None:
    """Which test group a contact falls in (``None``: held for the winner). Drawn from a
    hash of campaign and contact, so the draw is fixed whatever the arrival order, and
    uniform over the audience."""
    digest = hashlib.sha256(f"ab:{campaign_id}:{contact_id}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw >= share:
        return None
    return VARIANT_A if draw < share / 2 else VARIANT_B


def ab_winner(stats: Mapping[str, Any], metric: AbMetric) -> tuple[str, str]:
    """The variant with the better rate of ``metric`` per message sent (A on a tie), and
    why, for the campaign's record."""
    rates = {}
    for variant in (VARIANT_A, VARIANT_B):
        counts = (stats.get("ab") or {}).get(variant) or {}
        sent = counts.get("sent", 0)
        rates[variant] = counts.get(metric.value, 0) / sent if sent else 0.0
    winner = VARIANT_B if rates[VARIANT_B] > rates[VARIANT_A] else VARIANT_A
    why = (
        f"{metric.value} rate A {rates[VARIANT_A]:.1%}, B {rates[VARIANT_B]:.1%}: "
        f"{winner.upper()} goes to the rest of the audience"
    )
    return winner, why


def check_ab_versions(a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    """An A/B subject test compares subjects: the two versions' bodies are the same."""
    if a["version"] == b["version"]:
        raise InvalidField(
            "must be another version than template_version", field="ab_test.template_version_b"
        )
    parts_a, parts_b = a.get("parts") or {}, b.get("parts") or {}
    if (parts_a.get("html"), parts_a.get("text")) != (parts_b.get("html"), parts_b.get("text")):
        raise InvalidField(
            "an A/B subject test needs two versions that differ only in their subject",
            field="ab_test.template_version_b",
        )
    if parts_a.get("subject") == parts_b.get("subject"):
        raise InvalidField(
            "the two versions have the same subject", field="ab_test.template_version_b"
        )


# ---------------------------------------------------------------- why the person receives it

#: the line every campaign message carries saying why the person receives it, by where
#: their data came from (French first, like the product; ``{detail}`` is the origin's
#: detail, e.g. the form or the petition's name)
ORIGIN_LINES: Mapping[str, str] = {
    "web_form": "Vous recevez ce message car vous avez rempli notre formulaire{detail}.",
    "event": "Vous recevez ce message car vous avez participé à l'un de nos événements{detail}.",
    "membership": "Vous recevez ce message en tant qu'adhérent·e{detail}.",
    "petition": "Vous recevez ce message car vous avez signé notre pétition{detail}.",
    "electoral_list": "Vous recevez ce message car vous figurez sur la liste électorale{detail}.",
    "rented_file": "Vous recevez ce message car vos coordonnées figurent dans un fichier loué"
    "{detail} : nous vous demandons votre accord avant tout autre envoi.",
    "import": "Vous recevez ce message car vous nous avez donné vos coordonnées{detail}.",
    "manual": "Vous recevez ce message car vous nous avez donné vos coordonnées{detail}.",
}
DEFAULT_ORIGIN_LINE = "Vous recevez ce message car vous nous avez donné votre accord."


def origin_line(kind: str | None, detail: str = "") -> str:
    """Why this person receives the message, from the origin of their data."""
    line = ORIGIN_LINES.get(kind or "")
    if line is None:
        return DEFAULT_ORIGIN_LINE
    return line.format(detail=f" ({detail.strip()})" if detail.strip() else "")


# ---------------------------------------------------------------- circuit breaker


@dataclass(frozen=True)
class BreakerPolicy:
    """Rates (0-1) above which a campaign pauses itself, once ``min_sent`` were sent."""

    min_sent: int
    max_bounce_rate: float
    max_complaint_rate: float
    max_unsubscribe_rate: float


def breaker_reason(stats: Mapping[str, int], policy: BreakerPolicy) -> str | None:
    """Why the campaign must pause now (its bounce, complaint or unsubscribe rate is above
    its threshold), or None. Below ``min_sent`` a few early bounces say nothing."""
    sent = stats.get("sent", 0)
    if sent < policy.min_sent or sent == 0:
        return None
    for name, field, limit in (
        ("bounce", "bounced", policy.max_bounce_rate),
        ("complaint", "complained", policy.max_complaint_rate),
        ("unsubscribe", "unsubscribed", policy.max_unsubscribe_rate),
    ):
        rate = stats.get(field, 0) / sent
        if rate > limit:
            return (
                f"{name} rate {rate:.1%} above the {limit:.1%} threshold "
                f"({stats.get(field, 0)} of {sent} sent): paused by the circuit breaker"
            )
    return None
