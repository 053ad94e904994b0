"""Send-time rules of campaigns, free of I/O.

The dispatcher calls :func:`send_decision` for every recipient of a batch right before
handing the message to a provider, with what it read from messaging's own views
(:class:`RecipientView`, :class:`CampaignView`). The answer is one of:

- :class:`Send`: go ahead;
- :class:`~messaging.domain.Refusal` (the *Refuse* case): never for this campaign, with the
  rule to count in the campaign's statistics;
- :class:`Defer`: not now, try again at ``until`` (SMS quiet hours only).

The rules apply in this order (the first that objects answers, so the statistics count
the most lasting reason, and a deferral is only given to a message that may be sent):

1. ``erased``: the person asked for erasure (their data is going or gone);
2. :func:`messaging.domain.refusal`: ``no_address``, ``suppressed``, ``no_consent``,
   ``consent_revoked`` (for SMS, a contact without a phone number is ``no_address``);
   the consent request itself (purpose :data:`CONSENT_REQUEST_PURPOSE`) is the message
   that asks for consent, so a missing consent does not hold it back, a revocation does;
3. ``standing``: the campaign targets some membership standings and the person's
   projected standing is not one of them;
4. ``rented_file``: :func:`rented_file_refusal`;
5. ``frequency_cap``: :func:`cap_refusal` (transactional messages are exempt);
6. quiet hours (SMS, not transactional): :class:`Defer` until :func:`next_allowed`.

Local time: quiet hours are read on the recipient's wall clock. Their time zone is, in
this order, the contact's own zone, the zone of their overseas department or
collectivity, the zone of their phone number's overseas prefix (+262, +590...), else
the configured default (Europe/Paris). Their public holidays are those of the configured
country; for France, the subdivision (Alsace-Moselle keeps Good Friday and 26 December,
each overseas department has its own abolition day...) comes from the department, else
from the phone prefix, else metropolitan France.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from tribune_shared.events.contracts import Channel, OriginKind

from messaging.domain import ConsentState, ConsentStatus, Recipient, Refusal, Standing, refusal

if TYPE_CHECKING:
    from messaging.settings import MessagingSettings

#: The purpose of the one message a contact from a rented file may get before consenting:
#: the consent request. Its template and campaign use this purpose; the rented-file rule
#: lets exactly one message with it through, and only to someone without consent yet.
CONSENT_REQUEST_PURPOSE = "consent_request"

#: rule names, as counted in the campaign's statistics ("refused by rule")
RULE_ERASED = "erased"
RULE_STANDING = "standing"
RULE_RENTED_FILE = "rented_file"
RULE_FREQUENCY_CAP = "frequency_cap"
RULE_QUIET_HOURS = "quiet_hours"

#: a search for the next allowed instant looks this far ahead at most: any non-empty
#: weekly schedule opens within a week, save for holidays, which never fill a year
_SEARCH_DAYS = 366
_DAY = timedelta(days=1)


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Send:
    """The message may go now."""


@dataclass(frozen=True)
class Defer:
    """The message may not go now; it waits until ``until`` (an aware instant)."""

    rule: str
    reason: str
    until: datetime


#: the result of :func:`send_decision`; the refusal case is :class:`messaging.domain.Refusal`
Decision = Send | Refusal | Defer

SEND = Send()


# ---------------------------------------------------------------- quiet hours


@dataclass(frozen=True, order=True)
class Window:
    """Allowed local times of a day: from ``start`` (included) to ``end`` (excluded),
    both measured from midnight; ``end`` may be 24:00."""

    start: timedelta
    end: timedelta

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class WeeklyWindows:
    """Allowed windows for each weekday (index 0 is Monday), sorted, not overlapping."""

    days: tuple[tuple[Window, ...], ...]

    def __post_init__(self) -> None:
        if len(self.days) != 7:
            raise ValueError("needs the windows of 7 weekdays")

    def __str__(self) -> str:
        parts = [
            f"{_WEEKDAYS[i]} {','.join(str(w) for w in windows)}"
            for i, windows in enumerate(self.days)
            if windows
        ]
        return "; ".join(parts)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def _hhmm(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _parse_time(text: str, *, entry: str) -> timedelta:
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{entry!r}: {text!r} is not a time (HH:MM)")
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{entry!r}: {text!r} is not a time of day (00:00 to 24:00)")
    return timedelta(hours=hours, minutes=minutes)


def _parse_day(text: str, *, entry: str) -> int:
    try:
        return _WEEKDAYS.index(text)
    except ValueError:
        raise ValueError(
            f"{entry!r}: {text!r} is not a weekday (one of {', '.join(_WEEKDAYS)})"
        ) from None


def _parse_days(text: str, *, entry: str) -> list[int]:
    days: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        start = _parse_day(first.strip(), entry=entry)
        if not dash:
            days.append(start)
            continue
        stop = _parse_day(last.strip(), entry=entry)
        # "fri-mon" wraps over the week end
        days.extend((start + i) % 7 for i in range((stop - start) % 7 + 1))
    return days


def _merge(windows: Iterable[Window]) -> tuple[Window, ...]:
    """Overlapping or touching windows of one day as one (allowed if any allows)."""
    merged: list[Window] = []
    for window in sorted(windows):
        if merged and window.start <= merged[-1].end:
            last = merged.pop()
            window = Window(last.start, max(last.end, window.end))
        merged.append(window)
    return tuple(merged)


def parse_windows(spec: str) -> WeeklyWindows:
    """Parse allowed sending hours, e.g. ``"mon-fri 08:00-20:00; sat 09:00-12:00,14:00-18:00"``.

    Entries are separated by ``;``; each is weekdays (``mon``..``sun``, ranges ``mon-sat``,
    lists ``mon,wed``) then time ranges ``HH:MM-HH:MM`` (end after start, at most 24:00;
    for a night window, write one range up to 24:00 and one from 00:00 the next day).
    Days not named are quiet all day. Raises ValueError naming the faulty entry.
    """
    per_day: list[list[Window]] = [[] for _ in _WEEKDAYS]
    entries = [e.strip() for e in spec.strip().lower().split(";") if e.strip()]
    if not entries:
        raise ValueError("needs at least one window, e.g. 'mon-sat 08:00-20:00'")
    for entry in entries:
        days_text, _, ranges_text = entry.partition(" ")
        if not ranges_text.strip():
            raise ValueError(f"{entry!r}: expected weekdays then HH:MM-HH:MM")
        days = _parse_days(days_text, entry=entry)
        for range_text in ranges_text.split(","):
            start_text, dash, end_text = range_text.strip().partition("-")
            if not dash:
                raise ValueError(f"{entry!r}: {range_text.strip()!r} is not HH:MM-HH:MM")
            start = _parse_time(start_text.strip(), entry=entry)
            end = _parse_time(end_text.strip(), entry=entry)
            if end <= start:
                raise ValueError(
                    f"{entry!r}: {range_text.strip()!r} ends before it starts "
                    "(split a night window at 24:00)"
                )
            for day in days:
                per_day[day].append(Window(start, end))
    return WeeklyWindows(tuple(_merge(windows) for windows in per_day))


@dataclass(frozen=True)
class QuietHoursPolicy:
    """When marketing SMS may reach a person, on their own wall clock.

    ``holiday_country``: whose public holidays are quiet all day (an ISO country code the
    ``holidays`` library knows; None: holidays are ordinary days).
    """

    allowed: WeeklyWindows = field(default_factory=lambda: parse_windows("mon-sat 08:00-20:00"))
    enabled: bool = True
    holiday_country: str | None = "FR"
    default_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Paris"))


@lru_cache(maxsize=64)
def _calendar(country: str, subdiv: str | None) -> holidays.HolidayBase:
    # built once per calendar; it computes each year's dates the first time it is asked
    return holidays.country_holidays(country, subdiv=subdiv)


def is_holiday(day: date, policy: QuietHoursPolicy, subdiv: str | None = None) -> bool:
    """Is ``day`` a public holiday in the policy's country (and subdivision)?"""
    if policy.holiday_country is None:
        return False
    return day in _calendar(policy.holiday_country, subdiv)


def _time_of_day(local: datetime) -> timedelta:
    return timedelta(
        hours=local.hour,
        minutes=local.minute,
        seconds=local.second,
        microseconds=local.microsecond,
    )


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("needs an aware datetime (an instant), not a naive one")


def is_quiet(
    at: datetime, tz: ZoneInfo, policy: QuietHoursPolicy, subdiv: str | None = None
) -> bool:
    """Is ``at`` within quiet hours for a person living in ``tz`` (holidays of ``subdiv``)?"""
    _require_aware(at)
    if not policy.enabled:
        return False
    local = at.astimezone(tz)
    if is_holiday(local.date(), policy, subdiv):
        return True
    now = _time_of_day(local)
    return not any(w.start <= now < w.end for w in policy.allowed.days[local.weekday()])


def _first_instant_at_or_after_wall(day: date, wall: timedelta, tz: ZoneInfo) -> datetime:
    """The first instant whose wall clock in ``tz`` reads ``day`` + ``wall`` or later.

    Usually the wall time itself; when the clocks jump forward over it (a DST gap), the
    instant of the jump, found by bisection since zoneinfo does not expose transitions.
    """
    naive = datetime.combine(day, datetime.min.time()) + wall
    before = naive.replace(tzinfo=tz, fold=0)  # in a gap: read with the old offset (late)
    if before.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return before
    # the other reading lands before the gap: the jump lies between the two
    low, high = sorted((before.astimezone(UTC), naive.replace(tzinfo=tz, fold=1).astimezone(UTC)))
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    # transitions fall on whole seconds
    return high.replace(microsecond=0).astimezone(tz)


def next_allowed(
    at: datetime, tz: ZoneInfo, policy: QuietHoursPolicy, subdiv: str | None = None
) -> datetime:
    """The first instant at or after ``at`` outside quiet hours (``at`` itself if allowed),
    in ``tz``. Raises ValueError if nothing is allowed within a year (cannot happen with a
    schedule :func:`parse_windows` accepted)."""
    _require_aware(at)
    if not is_quiet(at, tz, policy, subdiv):
        return at
    start_day = at.astimezone(tz).date()
    for offset in range(_SEARCH_DAYS):
        day = start_day + offset * _DAY
        if is_holiday(day, policy, subdiv):
            continue
        for window in policy.allowed.days[day.weekday()]:
            candidate = _first_instant_at_or_after_wall(day, window.start, tz)
            if candidate.astimezone(UTC) < at.astimezone(UTC):
                # clocks were set back and ``at`` is in the repeated hour: the start's
                # second pass (aware times of one zone compare by wall clock: use UTC)
                second = (datetime.combine(day, datetime.min.time()) + window.start).replace(
                    tzinfo=tz, fold=1
                )
                candidate = max(at.astimezone(UTC), second.astimezone(UTC)).astimezone(tz)
            local = candidate.astimezone(tz)
            if local.date() == day and _time_of_day(local) < window.end:
                return candidate
    raise ValueError(f"no allowed time within {_SEARCH_DAYS} days of {at.isoformat()}")


# ---------------------------------------------------------------- where the person lives

#: France: departments with their own public holidays (``holidays`` subdivision codes);
#: Bas-Rhin and Haut-Rhin share the Alsace calendar, Moselle has its own
_FR_SUBDIV_OF_DEPARTMENT = {
    "57": "57",
    "67": "6AE",
    "68": "6AE",
    "971": "971",
    "972": "972",
    "973": "973",
    "974": "974",
    "976": "976",
    # overseas collectivities (INSEE codes), should a view carry one
    "975": "PM",
    "977": "BL",
    "978": "MF",
    "986": "WF",
    "987": "PF",
    "988": "NC",
}

_ZONE_OF_DEPARTMENT = {
    "971": "America/Guadeloupe",
    "972": "America/Martinique",
    "973": "America/Cayenne",
    "974": "Indian/Reunion",
    "976": "Indian/Mayotte",
    "975": "America/Miquelon",
    "977": "America/St_Barthelemy",
    "978": "America/Marigot",
    "986": "Pacific/Wallis",
    "987": "Pacific/Tahiti",
    "988": "Pacific/Noumea",
}

#: overseas E.164 prefixes -> (time zone, department or collectivity), longest first.
#: Mayotte numbers are in Réunion's +262 plan (0269 fixed, 0639 mobile); +269, Mayotte's
#: code until 2007 (now the Comoros, same time), is still found in old files.
_PHONE_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("+262269", "Indian/Mayotte", "976"),
    ("+262639", "Indian/Mayotte", "976"),
    ("+262", "Indian/Reunion", "974"),
    ("+269", "Indian/Mayotte", "976"),
    ("+508", "America/Miquelon", "975"),
    ("+590", "America/Guadeloupe", "971"),
    ("+594", "America/Cayenne", "973"),
    ("+596", "America/Martinique", "972"),
    ("+681", "Pacific/Wallis", "986"),
    ("+687", "Pacific/Noumea", "988"),
    ("+689", "Pacific/Tahiti", "987"),
)


def _department_of_phone(phone: str | None) -> str | None:
    if not phone:
        return None
    number = phone.replace(" ", "")
    for prefix, _, department in _PHONE_PREFIXES:
        if number.startswith(prefix):
            return department
    return None


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None  # not a zone we know: fall back on the next clue


def recipient_zone(
    time_zone: str | None, department: str | None, phone: str | None, default: ZoneInfo
) -> ZoneInfo:
    """The person's time zone: their own, else their (overseas) department's, else their
    phone number's overseas prefix's, else ``default``."""
    for name in (
        time_zone,
        _ZONE_OF_DEPARTMENT.get((department or "").upper()),
        _ZONE_OF_DEPARTMENT.get(_department_of_phone(phone) or ""),
    ):
        if (zone := _zone(name)) is not None:
            return zone
    return default


def holiday_subdivision(
    country: str | None, department: str | None, phone: str | None
) -> str | None:
    """The ``holidays`` subdivision whose calendar applies to the person (None: the
    country's common one). Only France is mapped (departments, overseas prefixes)."""
    if country != "FR":
        return None
    if department:
        return _FR_SUBDIV_OF_DEPARTMENT.get(department.upper())
    return _FR_SUBDIV_OF_DEPARTMENT.get(_department_of_phone(phone) or "")


# ---------------------------------------------------------------- frequency cap


@dataclass(frozen=True)
class CapPolicy:
    """At most ``messages`` marketing messages per person in any rolling ``window``;
    ``per_channel``: counted per channel (else all channels together)."""

    messages: int = 3
    window: timedelta = timedelta(days=7)
    per_channel: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.messages < 1:
            raise ValueError("messages must be at least 1")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")


@dataclass(frozen=True)
class PastSend:
    """A marketing message already sent (or handed to a provider) to the person."""

    at: datetime
    channel: Channel


def cap_refusal(sent_times: Sequence[datetime], now: datetime, policy: CapPolicy) -> Refusal | None:
    """Refuse when the person already had ``policy.messages`` messages within the window
    ending at ``now``. A send exactly one window ago no longer counts; one stamped after
    ``now`` (another worker's clock) does: when in doubt, do not message."""
    _require_aware(now)
    if not policy.enabled:
        return None
    since = now - policy.window
    recent = sorted(t for t in sent_times if t > since)
    if len(recent) < policy.messages:
        return None
    # the send that must leave the window before another one fits
    frees_at = recent[-policy.messages] + policy.window
    return Refusal(
        RULE_FREQUENCY_CAP,
        f"already {len(recent)} marketing messages in the last {_duration(policy.window)} "
        f"(at most {policy.messages}); next possible after {frees_at.isoformat()}",
    )


def _duration(window: timedelta) -> str:
    if window % _DAY == timedelta(0):
        days = window // _DAY
        return f"{days} day{'s' if days != 1 else ''}"
    return str(window)


def cap_history(sends: Iterable[PastSend], channel: Channel, policy: CapPolicy) -> list[datetime]:
    """The send times that count against the cap of a message on ``channel``."""
    return [s.at for s in sends if not policy.per_channel or s.channel is channel]


# ---------------------------------------------------------------- rented files


def rented_file_refusal(
    origin: OriginKind | None,
    has_consent: bool,
    already_sent_consent_request: bool,
    message_is_consent_request: bool,
) -> Refusal | None:
    """Contacts from a rented file get one message, the consent request, until they
    consent: before, anything else is refused; the consent request goes once, and never
    to someone who already consented (it would be a second message for nothing)."""
    if origin is not OriginKind.rented_file:
        return None
    if message_is_consent_request:
        if already_sent_consent_request:
            return Refusal(
                RULE_RENTED_FILE,
                "contact from a rented file: the consent request was already sent",
            )
        if has_consent:
            return Refusal(
                RULE_RENTED_FILE, "contact from a rented file already consented: no request"
            )
        return None
    if not has_consent:
        return Refusal(
            RULE_RENTED_FILE,
            "contact from a rented file: only the consent request until they consent",
        )
    return None


# ---------------------------------------------------------------- the combined check


@dataclass(frozen=True)
class RecipientView:
    """What the dispatcher loads about one recipient, from messaging's own views.

    ``consent``: the latest consent fact for the campaign's channel and purpose.
    ``recent_sends``: marketing messages sent to the person (across federations) within
    the cap window, this campaign's batch included as it goes. ``time_zone`` (IANA),
    ``department`` (INSEE code: "75", "2A", "974"): where the person lives, if known.
    """

    recipient: Recipient
    consent: ConsentState | None
    suppressed: bool = False
    erased: bool = False
    phone: str | None = None
    origin: OriginKind | None = None
    consent_request_sent: bool = False
    standing: Standing | None = None
    recent_sends: tuple[PastSend, ...] = ()
    time_zone: str | None = None
    department: str | None = None


@dataclass(frozen=True)
class CampaignView:
    """What the rules need of the campaign being sent.

    ``standings``: the membership standings it targets (None: anyone, members or not).
    ``transactional``: not marketing (exempt from the frequency cap and quiet hours).
    """

    channel: Channel
    purpose: str
    standings: frozenset[Standing] | None = None
    transactional: bool = False

    @property
    def is_consent_request(self) -> bool:
        return self.purpose == CONSENT_REQUEST_PURPOSE


@dataclass(frozen=True)
class SendPolicies:
    quiet_hours: QuietHoursPolicy = field(default_factory=QuietHoursPolicy)
    cap: CapPolicy = field(default_factory=CapPolicy)

    @classmethod
    def from_settings(cls, settings: MessagingSettings) -> SendPolicies:
        return cls(
            quiet_hours=QuietHoursPolicy(
                allowed=parse_windows(settings.sms_allowed_hours),
                enabled=settings.sms_quiet_hours_enabled,
                holiday_country=settings.sms_holiday_country or None,
                default_zone=ZoneInfo(settings.sms_default_timezone),
            ),
            cap=CapPolicy(
                messages=settings.cap_messages,
                window=timedelta(days=settings.cap_window_days),
                per_channel=settings.cap_per_channel,
                enabled=settings.cap_enabled,
            ),
        )


def _address_refusal(view: RecipientView, campaign: CampaignView) -> Refusal | None:
    if campaign.channel is Channel.sms and not view.phone:
        return Refusal("no_address", "contact has no phone number")
    found = refusal(
        view.recipient, view.consent, campaign.channel, campaign.purpose, suppressed=view.suppressed
    )
    if found is not None and found.rule == "no_consent" and campaign.is_consent_request:
        return None  # the consent request is how consent is asked for
    return found


def _standing_refusal(view: RecipientView, campaign: CampaignView) -> Refusal | None:
    if campaign.standings is None or view.standing in campaign.standings:
        return None
    targeted = ", ".join(sorted(campaign.standings))
    held = view.standing.value if view.standing else "not a member"
    return Refusal(RULE_STANDING, f"membership standing is {held}; the campaign targets {targeted}")


def send_decision(
    view: RecipientView, campaign: CampaignView, now: datetime, policies: SendPolicies
) -> Decision:
    """Send, refuse (with the rule) or defer one message, applying the rules in the order
    the module's docstring gives."""
    _require_aware(now)
    if view.erased:
        return Refusal(RULE_ERASED, "the person asked for erasure")
    has_consent = view.consent is not None and view.consent.status is ConsentStatus.granted
    found = (
        _address_refusal(view, campaign)
        or _standing_refusal(view, campaign)
        or rented_file_refusal(
            view.origin, has_consent, view.consent_request_sent, campaign.is_consent_request
        )
    )
    if found is not None:
        return found
    if campaign.transactional:
        return SEND
    history = cap_history(view.recent_sends, campaign.channel, policies.cap)
    if (capped := cap_refusal(history, now, policies.cap)) is not None:
        return capped
    if campaign.channel is Channel.sms:
        quiet = policies.quiet_hours
        zone = recipient_zone(view.time_zone, view.department, view.phone, quiet.default_zone)
        subdiv = holiday_subdivision(quiet.holiday_country, view.department, view.phone)
        if is_quiet(now, zone, quiet, subdiv):
            until = next_allowed(now, zone, quiet, subdiv)
            return Defer(
                RULE_QUIET_HOURS,
                f"quiet hours for SMS in {zone.key}; allowed from {until.isoformat()}",
                until,
            )
    return SEND
