"""Send-time rules of campaigns: quiet hours, frequency caps, rented files, and the combined
check the dispatcher runs right before each hand-off. Every instant is explicit."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from messaging.campaigns.rules import (
    CONSENT_REQUEST_PURPOSE,
    SEND,
    CampaignView,
    CapPolicy,
    Defer,
    PastSend,
    QuietHoursPolicy,
    RecipientView,
    SendPolicies,
    Standing,
    cap_history,
    cap_refusal,
    holiday_subdivision,
    is_holiday,
    is_quiet,
    next_allowed,
    parse_windows,
    recipient_zone,
    rented_file_refusal,
    send_decision,
)
from messaging.domain import ConsentState, ConsentStatus, Recipient, Refusal
from messaging.settings import MessagingSettings
from pydantic import ValidationError
from tribune_shared.events.contracts import Channel, OriginKind

PARIS = ZoneInfo("Europe/Paris")
REUNION = ZoneInfo("Indian/Reunion")
GUADELOUPE = ZoneInfo("America/Guadeloupe")
NOUMEA = ZoneInfo("Pacific/Noumea")
DEFAULT = QuietHoursPolicy()


def paris(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=PARIS)


def at_8(day: date, tz: ZoneInfo = PARIS) -> datetime:
    return datetime.combine(day, time(8), tzinfo=tz)


# ---------------------------------------------------------------- quiet hours: the week


@pytest.mark.parametrize(
    ("at", "quiet"),
    [
        (paris(2026, 3, 2, 7, 59, 59), True),  # Monday, before 08:00
        (paris(2026, 3, 2, 8, 0), False),  # 08:00 exact opens
        (paris(2026, 3, 2, 12, 0), False),
        (paris(2026, 3, 2, 19, 59, 59, 999999), False),
        (paris(2026, 3, 2, 20, 0), True),  # 20:00 exact is closed
        (paris(2026, 3, 2, 23, 30), True),
        (paris(2026, 3, 7, 12, 0), False),  # Saturday
        (paris(2026, 3, 7, 20, 0), True),
        (paris(2026, 3, 8, 12, 0), True),  # Sunday, all day
        (paris(2026, 3, 8, 8, 0), True),
        (paris(2026, 3, 9, 0, 0), True),  # Monday midnight
    ],
)
def test_default_hours_are_8_to_20_monday_to_saturday(at, quiet):
    assert is_quiet(at, PARIS, DEFAULT) is quiet
    assert (next_allowed(at, PARIS, DEFAULT) == at) is not quiet


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (paris(2026, 3, 2, 6, 15), paris(2026, 3, 2, 8, 0)),  # same morning
        (paris(2026, 3, 2, 20, 0), paris(2026, 3, 3, 8, 0)),  # evening -> next morning
        (paris(2026, 3, 7, 20, 0), paris(2026, 3, 9, 8, 0)),  # Saturday night -> Monday
        (paris(2026, 3, 8, 12, 0), paris(2026, 3, 9, 8, 0)),  # Sunday -> Monday
        (paris(2026, 3, 2, 12, 0), paris(2026, 3, 2, 12, 0)),  # allowed: itself
    ],
)
def test_next_allowed_is_the_next_opening(at, expected):
    assert next_allowed(at, PARIS, DEFAULT) == expected


def test_next_allowed_keeps_the_instant_whatever_zone_it_is_given_in():
    at = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # 12:00 in Paris
    assert next_allowed(at, PARIS, DEFAULT) is at
    night = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)  # 23:00 in Paris
    assert next_allowed(night, PARIS, DEFAULT) == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)


def test_a_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="aware"):
        is_quiet(datetime(2026, 3, 2, 12, 0), PARIS, DEFAULT)
    with pytest.raises(ValueError, match="aware"):
        next_allowed(datetime(2026, 3, 2, 12, 0), PARIS, DEFAULT)


def test_disabled_quiet_hours_allow_any_time():
    off = QuietHoursPolicy(enabled=False)
    sunday_night = paris(2026, 7, 14, 3, 0)  # 14 July, 03:00
    assert not is_quiet(sunday_night, PARIS, off)
    assert next_allowed(sunday_night, PARIS, off) == sunday_night


# ---------------------------------------------------------------- quiet hours: holidays

#: French public holidays 2026-2027 (metropolitan) falling Monday to Saturday, and the
#: next opening: holidays are quiet all day, like Sundays
HOLIDAYS_METROPOLITAN = [
    ("New Year 2026", date(2026, 1, 1), date(2026, 1, 2)),
    ("Easter Monday 2026", date(2026, 4, 6), date(2026, 4, 7)),
    ("Labour Day 2026", date(2026, 5, 1), date(2026, 5, 2)),
    ("Victory Day 2026", date(2026, 5, 8), date(2026, 5, 9)),
    ("Ascension 2026", date(2026, 5, 14), date(2026, 5, 15)),
    ("Whit Monday 2026", date(2026, 5, 25), date(2026, 5, 26)),
    ("14 July 2026", date(2026, 7, 14), date(2026, 7, 15)),
    ("15 August 2026 (Saturday)", date(2026, 8, 15), date(2026, 8, 17)),
    ("11 November 2026", date(2026, 11, 11), date(2026, 11, 12)),
    ("Christmas 2026", date(2026, 12, 25), date(2026, 12, 26)),
    ("New Year 2027", date(2027, 1, 1), date(2027, 1, 2)),
    ("Easter Monday 2027", date(2027, 3, 29), date(2027, 3, 30)),
    ("Ascension 2027", date(2027, 5, 6), date(2027, 5, 7)),
    ("Whit Monday 2027", date(2027, 5, 17), date(2027, 5, 18)),
    ("14 July 2027", date(2027, 7, 14), date(2027, 7, 15)),
    ("1 November 2027", date(2027, 11, 1), date(2027, 11, 2)),
    ("11 November 2027", date(2027, 11, 11), date(2027, 11, 12)),
    ("Christmas 2027 (Saturday)", date(2027, 12, 25), date(2027, 12, 27)),
]


@pytest.mark.parametrize(
    ("day", "next_open"),
    [pytest.param(day, nxt, id=name) for name, day, nxt in HOLIDAYS_METROPOLITAN],
)
def test_public_holidays_are_quiet_all_day(day, next_open):
    assert day.weekday() < 6  # a weekday: quiet because of the holiday, not a Sunday
    assert is_holiday(day, DEFAULT)
    noon = datetime.combine(day, time(12), tzinfo=PARIS)
    assert is_quiet(noon, PARIS, DEFAULT)
    assert next_allowed(noon, PARIS, DEFAULT) == at_8(next_open)
    # the evening before a holiday closes at 20:00 and opens only after it
    eve = datetime.combine(day - timedelta(days=1), time(20), tzinfo=PARIS)
    if (day - timedelta(days=1)).weekday() < 6 and not is_holiday(eve.date(), DEFAULT):
        assert next_allowed(eve, PARIS, DEFAULT) == at_8(next_open)


@pytest.mark.parametrize(
    "day",
    [date(2026, 8, 15), date(2026, 11, 1), date(2027, 8, 15), date(2027, 12, 25)],
    ids=["15 August 2026", "1 November 2026 (Sunday)", "15 August 2027 (Sunday)", "Xmas 2027"],
)
def test_holidays_on_any_day_of_the_week_are_known(day):
    assert is_holiday(day, DEFAULT)


@pytest.mark.parametrize(
    "day",
    [date(2026, 3, 2), date(2026, 7, 13), date(2026, 12, 24), date(2026, 12, 31)],
)
def test_ordinary_days_are_not_holidays(day):
    assert not is_holiday(day, DEFAULT)
    assert not is_quiet(datetime.combine(day, time(12), tzinfo=PARIS), PARIS, DEFAULT)


ALSACE_MOSELLE_ONLY = [
    ("Good Friday 2026", date(2026, 4, 3), date(2026, 4, 4)),
    ("26 December 2026 (Saturday)", date(2026, 12, 26), date(2026, 12, 28)),
    ("Good Friday 2027", date(2027, 3, 26), date(2027, 3, 27)),
]


@pytest.mark.parametrize(
    ("day", "next_open"),
    [pytest.param(day, nxt, id=name) for name, day, nxt in ALSACE_MOSELLE_ONLY],
)
@pytest.mark.parametrize("department", ["57", "67", "68"])
def test_good_friday_and_26_december_are_quiet_only_in_alsace_moselle(day, next_open, department):
    noon = datetime.combine(day, time(12), tzinfo=PARIS)
    local = holiday_subdivision("FR", department, None)
    assert is_quiet(noon, PARIS, DEFAULT, local)
    assert next_allowed(noon, PARIS, DEFAULT, local) == at_8(next_open)
    for elsewhere in ("75", "69", "2A", None):
        metropolitan = holiday_subdivision("FR", elsewhere, "+33612345678")
        assert not is_quiet(noon, PARIS, DEFAULT, metropolitan)


@pytest.mark.parametrize(
    ("department", "phone", "day"),
    [
        ("974", None, date(2027, 12, 20)),  # Réunion: abolition of slavery (a Monday)
        (None, "+262692123456", date(2027, 12, 20)),  # same, told by the phone number
        ("971", None, date(2026, 5, 27)),  # Guadeloupe
        (None, "+590690123456", date(2026, 5, 27)),
        ("972", None, date(2026, 5, 22)),  # Martinique
        ("973", None, date(2026, 6, 10)),  # French Guiana
        ("976", None, date(2026, 4, 27)),  # Mayotte
        (None, "+262639123456", date(2026, 4, 27)),  # a Mayotte mobile, in +262
    ],
)
def test_overseas_departments_keep_their_own_holidays(department, phone, day):
    subdiv = holiday_subdivision("FR", department, phone)
    zone = recipient_zone(None, department, phone, PARIS)
    noon = datetime.combine(day, time(12), tzinfo=zone)
    assert is_quiet(noon, zone, DEFAULT, subdiv)
    # the same day is an ordinary one in Paris
    assert not is_quiet(datetime.combine(day, time(12), tzinfo=PARIS), PARIS, DEFAULT)


def test_no_holiday_calendar_makes_holidays_ordinary_days():
    no_calendar = QuietHoursPolicy(holiday_country=None)
    bastille = paris(2026, 7, 14, 12, 0)
    assert not is_holiday(bastille.date(), no_calendar)
    assert not is_quiet(bastille, PARIS, no_calendar)


def test_another_country_uses_its_own_calendar_without_french_subdivisions():
    belgium = QuietHoursPolicy(holiday_country="BE", default_zone=ZoneInfo("Europe/Brussels"))
    assert holiday_subdivision("BE", "57", "+33612345678") is None
    assert is_holiday(date(2026, 7, 21), belgium)  # Belgian national day
    assert not is_holiday(date(2026, 7, 14), belgium)


@pytest.mark.parametrize(
    ("department", "phone", "expected"),
    [
        ("57", None, "57"),
        ("67", None, "6AE"),
        ("68", "+262692123456", "6AE"),  # the department wins over the phone
        ("75", "+262692123456", None),  # metropolitan department: common calendar
        ("2a", None, None),
        ("974", None, "974"),
        ("976", None, "976"),
        (None, "+590690000000", "971"),
        (None, "+594694000000", "973"),
        (None, "+596696000000", "972"),
        (None, "+262262000000", "974"),
        (None, "+262269000000", "976"),
        (None, "+687750000", "NC"),
        (None, "+68987000000", "PF"),
        (None, "+33612345678", None),
        (None, None, None),
    ],
)
def test_holiday_subdivision_from_department_else_phone(department, phone, expected):
    assert holiday_subdivision("FR", department, phone) == expected


# ---------------------------------------------------------------- quiet hours: time zones


def test_a_reunion_recipient_at_0730_local_waits_for_0800_local():
    at = datetime(2026, 1, 14, 3, 30, tzinfo=UTC)  # Wednesday
    assert at.astimezone(PARIS).time() == time(4, 30)
    assert at.astimezone(REUNION).time() == time(7, 30)
    assert is_quiet(at, REUNION, DEFAULT)
    until = next_allowed(at, REUNION, DEFAULT)
    assert until == datetime(2026, 1, 14, 8, 0, tzinfo=REUNION)
    assert until.astimezone(UTC) == datetime(2026, 1, 14, 4, 0, tzinfo=UTC)  # 05:00 in Paris


def test_a_reunion_recipient_is_closed_while_paris_is_open():
    at = datetime(2026, 1, 14, 16, 30, tzinfo=UTC)  # 17:30 Paris, 20:30 Réunion
    assert not is_quiet(at, PARIS, DEFAULT)
    assert is_quiet(at, REUNION, DEFAULT)
    assert next_allowed(at, REUNION, DEFAULT) == datetime(2026, 1, 15, 8, 0, tzinfo=REUNION)


def test_a_guadeloupe_recipient_opens_hours_after_paris():
    at = datetime(2026, 1, 14, 11, 30, tzinfo=UTC)  # 12:30 Paris, 07:30 Guadeloupe
    assert not is_quiet(at, PARIS, DEFAULT)
    assert is_quiet(at, GUADELOUPE, DEFAULT)
    assert next_allowed(at, GUADELOUPE, DEFAULT) == datetime(2026, 1, 14, 12, 0, tzinfo=UTC)


def test_saturday_evening_in_paris_is_sunday_morning_in_noumea():
    at = datetime(2026, 1, 17, 18, 0, tzinfo=UTC)  # Saturday 19:00 Paris
    assert not is_quiet(at, PARIS, DEFAULT)
    assert at.astimezone(NOUMEA).weekday() == 6  # Sunday 05:00 in Nouméa
    assert is_quiet(at, NOUMEA, DEFAULT)
    until = next_allowed(at, NOUMEA, DEFAULT)
    assert until == datetime(2026, 1, 19, 8, 0, tzinfo=NOUMEA)
    assert until.astimezone(UTC) == datetime(2026, 1, 18, 21, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("phone", "zone"),
    [
        ("+262692123456", "Indian/Reunion"),
        ("+262262123456", "Indian/Reunion"),
        ("+262639123456", "Indian/Mayotte"),
        ("+262269123456", "Indian/Mayotte"),
        ("+269639123456", "Indian/Mayotte"),
        ("+590690123456", "America/Guadeloupe"),
        ("+594694123456", "America/Cayenne"),
        ("+596696123456", "America/Martinique"),
        ("+508551234", "America/Miquelon"),
        ("+681721234", "Pacific/Wallis"),
        ("+687751234", "Pacific/Noumea"),
        ("+68987123456", "Pacific/Tahiti"),
        ("+33612345678", "Europe/Paris"),
        ("+32470123456", "Europe/Paris"),  # not an overseas prefix: the default
        (None, "Europe/Paris"),
        ("", "Europe/Paris"),
    ],
)
def test_zone_from_the_phone_prefix_when_nothing_else_tells(phone, zone):
    assert recipient_zone(None, None, phone, PARIS).key == zone


@pytest.mark.parametrize(
    ("time_zone", "department", "phone", "zone"),
    [
        ("America/Montreal", "974", "+590690123456", "America/Montreal"),  # own zone first
        (None, "974", "+590690123456", "Indian/Reunion"),  # then the department
        (None, "75", "+590690123456", "America/Guadeloupe"),  # metropolitan: the phone
        ("Mars/Olympus_Mons", "972", None, "America/Martinique"),  # unknown zone: skipped
        (None, "988", None, "Pacific/Noumea"),
        (None, None, None, "Europe/Brussels"),  # the configured default
    ],
)
def test_zone_precedence(time_zone, department, phone, zone):
    default = ZoneInfo("Europe/Brussels")
    assert recipient_zone(time_zone, department, phone, default).key == zone


# ---------------------------------------------------------------- quiet hours: DST


def test_closing_before_the_spring_change_reopens_on_summer_time():
    # Saturday 28 March 2026, 20:30 CET; clocks go forward on Sunday 29 at 02:00
    at = datetime(2026, 3, 28, 19, 30, tzinfo=UTC)
    until = next_allowed(at, PARIS, DEFAULT)
    assert until == paris(2026, 3, 30, 8, 0)
    assert until.astimezone(UTC) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)  # UTC+2 now


def test_closing_before_the_autumn_change_reopens_on_winter_time():
    # Saturday 24 October 2026, 20:00 CEST; clocks go back on Sunday 25 at 03:00
    at = datetime(2026, 10, 24, 18, 0, tzinfo=UTC)
    assert is_quiet(at, PARIS, DEFAULT)
    until = next_allowed(at, PARIS, DEFAULT)
    assert until.astimezone(UTC) == datetime(2026, 10, 26, 7, 0, tzinfo=UTC)  # UTC+1 now


EVERY_NIGHT = QuietHoursPolicy(allowed=parse_windows("mon-sun 02:30-04:00"), holiday_country=None)


def test_a_window_opening_inside_the_spring_gap_opens_when_the_clocks_jump():
    # 29 March 2026: 02:00 CET becomes 03:00 CEST, so 02:30 never happens
    at = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    until = next_allowed(at, PARIS, EVERY_NIGHT)
    assert until.astimezone(UTC) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert not is_quiet(until, PARIS, EVERY_NIGHT)
    # a second earlier, 01:59:59 CET (UTC arithmetic: within one zone it is wall-clock)
    assert is_quiet(until.astimezone(UTC) - timedelta(seconds=1), PARIS, EVERY_NIGHT)


def test_the_repeated_autumn_hour_is_allowed_on_both_passes():
    # 25 October 2026: 03:00 CEST becomes 02:00 CET, so 02:00-03:00 happens twice
    first_pass = datetime(2026, 10, 25, 0, 45, tzinfo=UTC)  # 02:45 CEST
    second_pass = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET
    assert not is_quiet(first_pass, PARIS, EVERY_NIGHT)
    assert not is_quiet(second_pass, PARIS, EVERY_NIGHT)


def test_in_the_second_pass_before_the_start_the_window_opens_on_that_pass():
    at = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 02:00 CET (02:30 CEST was before)
    assert is_quiet(at, PARIS, EVERY_NIGHT)
    until = next_allowed(at, PARIS, EVERY_NIGHT)
    assert until.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert until.astimezone(UTC) > at


# ---------------------------------------------------------------- allowed hours: configuration


SPLIT = QuietHoursPolicy(
    allowed=parse_windows("mon-fri 09:00-12:00,14:00-18:00; sat 10:00-12:00"),
    holiday_country=None,
)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (paris(2026, 3, 2, 12, 30), paris(2026, 3, 2, 14, 0)),  # lunch break
        (paris(2026, 3, 2, 11, 59), paris(2026, 3, 2, 11, 59)),
        (paris(2026, 3, 2, 18, 0), paris(2026, 3, 3, 9, 0)),
        (paris(2026, 3, 6, 18, 0), paris(2026, 3, 7, 10, 0)),  # Friday -> Saturday
        (paris(2026, 3, 7, 12, 0), paris(2026, 3, 9, 9, 0)),  # Saturday noon -> Monday
    ],
)
def test_configured_windows_are_followed(at, expected):
    assert next_allowed(at, PARIS, SPLIT) == expected


@pytest.mark.parametrize(
    ("spec", "normalised"),
    [
        (
            "mon-sat 08:00-20:00",
            "mon 08:00-20:00; tue 08:00-20:00; wed 08:00-20:00; "
            "thu 08:00-20:00; fri 08:00-20:00; sat 08:00-20:00",
        ),
        ("  SUN 00:00-24:00 ", "sun 00:00-24:00"),
        (
            "fri-mon 9:00-10:00",
            "mon 09:00-10:00; fri 09:00-10:00; sat 09:00-10:00; sun 09:00-10:00",
        ),  # wraps over the week end
        ("mon,wed 08:00-10:00", "mon 08:00-10:00; wed 08:00-10:00"),
        # overlapping or touching windows merge; entries add up
        (
            "mon 08:00-12:00,11:00-13:00; mon 13:00-14:00; mon 18:00-19:00",
            "mon 08:00-14:00,18:00-19:00",
        ),
    ],
)
def test_allowed_hours_are_parsed(spec, normalised):
    assert str(parse_windows(spec)) == normalised


def test_a_full_day_window_allows_until_midnight():
    always = QuietHoursPolicy(allowed=parse_windows("mon-sun 00:00-24:00"), holiday_country=None)
    assert not is_quiet(paris(2026, 3, 8, 23, 59, 59), PARIS, always)
    assert not is_quiet(paris(2026, 3, 9, 0, 0), PARIS, always)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "at least one window"),
        (" ; ", "at least one window"),
        ("mon-sat", "expected weekdays then HH:MM-HH:MM"),
        ("mon-sat 08:00", "is not HH:MM-HH:MM"),
        ("mon-sat 8h-20h", "'8h' is not a time"),
        ("mon-sat 08:00-25:00", "'25:00' is not a time of day"),
        ("mon-sat 08:60-20:00", "'08:60' is not a time of day"),
        ("mon-sat 08:00-24:30", "'24:30' is not a time of day"),
        ("mon-sat 20:00-08:00", "ends before it starts"),
        ("mon-sat 08:00-08:00", "ends before it starts"),
        ("monday 08:00-20:00", "'monday' is not a weekday"),
        ("mon-sam 08:00-20:00", "'sam' is not a weekday"),
    ],
)
def test_bad_allowed_hours_say_what_is_wrong(spec, reason):
    with pytest.raises(ValueError, match=reason):
        parse_windows(spec)


# ---------------------------------------------------------------- frequency cap

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CAP = CapPolicy(messages=3, window=timedelta(days=7))


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


@pytest.mark.parametrize(
    ("sent", "refused"),
    [
        ([], False),
        ([ago(days=1), ago(days=2)], False),
        ([ago(days=1), ago(days=2), ago(days=3)], True),
        ([ago(hours=1)] * 5, True),
        # exactly one window ago has left the window; a microsecond later has not
        ([ago(days=1), ago(days=2), ago(days=7)], False),
        ([ago(days=1), ago(days=2), ago(days=7) + timedelta(microseconds=1)], True),
        ([ago(days=1), ago(days=2), ago(days=30), ago(days=8)], False),
        # a send stamped after now (another worker's clock) counts
        ([ago(days=1), ago(days=2), NOW + timedelta(seconds=2)], True),
    ],
)
def test_at_most_3_marketing_messages_per_rolling_7_days(sent, refused):
    found = cap_refusal(sent, NOW, CAP)
    assert (found is not None) is refused
    if found is not None:
        assert found.rule == "frequency_cap"
        assert "(at most 3)" in found.reason
        assert "last 7 days" in found.reason


def test_the_cap_refusal_says_when_the_person_can_be_reached_again():
    sent = [ago(days=6), ago(days=2), ago(days=1), ago(days=5)]
    found = cap_refusal(sent, NOW, CAP)
    assert found is not None
    assert found.reason.startswith("already 4 marketing messages in the last 7 days")
    # the third most recent (5 days ago) must leave the window before a 4th fits
    assert (ago(days=5) + timedelta(days=7)).isoformat() in found.reason


@pytest.mark.parametrize(
    ("messages", "days", "sent_days_ago", "refused"),
    [
        (1, 1, [0.5], True),
        (1, 1, [1.0], False),
        (5, 30, [1, 5, 10, 20], False),
        (5, 30, [1, 5, 10, 20, 29], True),
        (5, 30, [1, 5, 10, 20, 31], False),
    ],
)
def test_configured_caps(messages, days, sent_days_ago, refused):
    policy = CapPolicy(messages=messages, window=timedelta(days=days))
    sent = [ago(days=d) for d in sent_days_ago]
    assert (cap_refusal(sent, NOW, policy) is not None) is refused


def test_a_disabled_cap_never_refuses():
    off = CapPolicy(enabled=False)
    assert cap_refusal([ago(hours=1)] * 50, NOW, off) is None


@pytest.mark.parametrize(("messages", "window"), [(0, timedelta(days=7)), (3, timedelta(0))])
def test_a_cap_policy_must_make_sense(messages, window):
    with pytest.raises(ValueError):
        CapPolicy(messages=messages, window=window)


def test_cap_history_per_channel_or_all():
    sends = [PastSend(ago(days=1), Channel.email), PastSend(ago(days=2), Channel.sms)]
    together = CapPolicy(per_channel=False)
    apart = CapPolicy(per_channel=True)
    assert cap_history(sends, Channel.sms, together) == [ago(days=1), ago(days=2)]
    assert cap_history(sends, Channel.sms, apart) == [ago(days=2)]
    assert cap_history(sends, Channel.email, apart) == [ago(days=1)]


# ---------------------------------------------------------------- rented files


def expected_rented_file_rule(rented: bool, consent: bool, sent: bool, is_request: bool) -> bool:
    """The rule in words: a rented-file contact gets the consent request once, only before
    consenting, and nothing else until consenting."""
    if not rented:
        return False
    if is_request:
        return sent or consent
    return not consent


@pytest.mark.parametrize(
    ("rented", "consent", "sent", "is_request"),
    list(itertools.product([True, False], repeat=4)),
)
def test_rented_file_rule_truth_table(rented, consent, sent, is_request):
    origin = OriginKind.rented_file if rented else OriginKind.web_form
    found = rented_file_refusal(origin, consent, sent, is_request)
    assert (found is not None) is expected_rented_file_rule(rented, consent, sent, is_request)
    if found is not None:
        assert found.rule == "rented_file"


@pytest.mark.parametrize(
    "origin", [None, *[o for o in OriginKind if o is not OriginKind.rented_file]]
)
def test_other_origins_are_not_concerned(origin):
    assert rented_file_refusal(origin, False, True, False) is None


def test_rented_file_refusals_say_why():
    first = rented_file_refusal(OriginKind.rented_file, False, False, False)
    again = rented_file_refusal(OriginKind.rented_file, False, True, True)
    assert first is not None
    assert first.reason == (
        "contact from a rented file: only the consent request until they consent"
    )
    assert again is not None
    assert again.reason == "contact from a rented file: the consent request was already sent"


# ---------------------------------------------------------------- the combined check

MONDAY_NOON = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # 12:00 in Paris
MONDAY_NIGHT = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)  # 22:30 in Paris
POLICIES = SendPolicies()


def person(
    *,
    email: str | None = "ana@example.org",
    consent: ConsentStatus | None = ConsentStatus.granted,
    **fields: object,
) -> RecipientView:
    state = ConsentState(consent, MONDAY_NOON - timedelta(days=30)) if consent else None
    recipient = Recipient("c1", "paris", "/root/paris/", email=email)
    fields.setdefault("phone", "+33612345678")
    return RecipientView(recipient=recipient, consent=state, **fields)  # type: ignore[arg-type]


EMAIL = CampaignView(channel=Channel.email, purpose="news")
SMS = CampaignView(channel=Channel.sms, purpose="news")
CONSENT_REQUEST = CampaignView(channel=Channel.email, purpose=CONSENT_REQUEST_PURPOSE)


def rule_of(decision: object) -> str | None:
    assert isinstance(decision, Refusal), decision
    return decision.rule


def test_a_reachable_person_is_sent():
    assert send_decision(person(), EMAIL, MONDAY_NOON, POLICIES) == SEND
    assert send_decision(person(), SMS, MONDAY_NOON, POLICIES) == SEND


THREE_RECENT = tuple(PastSend(MONDAY_NOON - timedelta(days=d), Channel.email) for d in (1, 2, 3))


@pytest.mark.parametrize(
    ("view", "campaign", "rule"),
    [
        # each row breaks every rule from its own down: the first in the order answers
        (
            person(erased=True, email=None, suppressed=True, consent=None, standing=None),
            CampaignView(Channel.email, "news", frozenset({Standing.up_to_date})),
            "erased",
        ),
        (person(email=None, suppressed=True, consent=None), EMAIL, "no_address"),
        (person(phone=None, suppressed=True, consent=None), SMS, "no_address"),
        (person(suppressed=True, consent=None), EMAIL, "suppressed"),
        (
            person(consent=None, origin=OriginKind.rented_file, recent_sends=THREE_RECENT),
            EMAIL,
            "no_consent",
        ),
        (
            person(consent=ConsentStatus.revoked, origin=OriginKind.rented_file),
            CONSENT_REQUEST,
            "consent_revoked",
        ),
        (
            person(standing=Standing.lapsed, recent_sends=THREE_RECENT),
            CampaignView(Channel.email, "news", frozenset({Standing.up_to_date})),
            "standing",
        ),
        (
            person(
                consent=None,
                origin=OriginKind.rented_file,
                consent_request_sent=True,
                recent_sends=THREE_RECENT,
            ),
            CONSENT_REQUEST,
            "rented_file",
        ),
        (person(recent_sends=THREE_RECENT), EMAIL, "frequency_cap"),
    ],
)
def test_rules_apply_in_the_documented_order(view, campaign, rule):
    assert rule_of(send_decision(view, campaign, MONDAY_NIGHT, POLICIES)) == rule


def test_a_refusal_wins_over_quiet_hours():
    decision = send_decision(person(consent=ConsentStatus.revoked), SMS, MONDAY_NIGHT, POLICIES)
    assert rule_of(decision) == "consent_revoked"


@pytest.mark.parametrize(
    ("standing", "targets", "sent"),
    [
        (Standing.up_to_date, None, True),
        (None, None, True),
        (Standing.up_to_date, {Standing.up_to_date}, True),
        (Standing.grace, {Standing.up_to_date, Standing.grace}, True),
        (Standing.lapsed, {Standing.lapsed}, True),
        (Standing.grace, {Standing.up_to_date}, False),
        (Standing.up_to_date, {Standing.lapsed}, False),
        (None, {Standing.up_to_date, Standing.grace, Standing.lapsed}, False),
    ],
)
def test_membership_standing_filter(standing, targets, sent):
    campaign = CampaignView(Channel.email, "news", frozenset(targets) if targets else None)
    decision = send_decision(person(standing=standing), campaign, MONDAY_NOON, POLICIES)
    assert (decision == SEND) is sent
    if not sent:
        assert rule_of(decision) == "standing"


def test_a_non_member_is_told_apart_in_the_standing_refusal():
    campaign = CampaignView(Channel.email, "news", frozenset({Standing.grace, Standing.lapsed}))
    decision = send_decision(person(), campaign, MONDAY_NOON, POLICIES)
    assert decision == Refusal(
        "standing", "membership standing is not a member; the campaign targets grace, lapsed"
    )


def test_a_rented_file_contact_gets_the_consent_request_once_then_nothing_until_consent():
    newcomer = person(consent=None, origin=OriginKind.rented_file)
    assert send_decision(newcomer, CONSENT_REQUEST, MONDAY_NOON, POLICIES) == SEND
    asked = person(consent=None, origin=OriginKind.rented_file, consent_request_sent=True)
    assert rule_of(send_decision(asked, CONSENT_REQUEST, MONDAY_NOON, POLICIES)) == "rented_file"
    assert rule_of(send_decision(asked, EMAIL, MONDAY_NOON, POLICIES)) == "no_consent"
    consented = person(origin=OriginKind.rented_file, consent_request_sent=True)
    assert send_decision(consented, EMAIL, MONDAY_NOON, POLICIES) == SEND


def test_the_consent_request_needs_no_consent_but_respects_the_suppression_list():
    assert send_decision(person(consent=None), CONSENT_REQUEST, MONDAY_NOON, POLICIES) == SEND
    suppressed = person(consent=None, suppressed=True)
    assert rule_of(send_decision(suppressed, CONSENT_REQUEST, MONDAY_NOON, POLICIES)) == (
        "suppressed"
    )


def test_the_cap_counts_sends_on_every_channel_unless_per_channel():
    emails = tuple(PastSend(MONDAY_NOON - timedelta(days=d), Channel.email) for d in (1, 2, 3))
    view = person(recent_sends=emails)
    assert rule_of(send_decision(view, SMS, MONDAY_NOON, POLICIES)) == "frequency_cap"
    per_channel = SendPolicies(cap=CapPolicy(per_channel=True))
    assert send_decision(view, SMS, MONDAY_NOON, per_channel) == SEND
    assert rule_of(send_decision(view, EMAIL, MONDAY_NOON, per_channel)) == "frequency_cap"


def test_transactional_messages_skip_the_cap_and_quiet_hours():
    receipt = CampaignView(Channel.sms, "receipts", transactional=True)
    view = person(recent_sends=THREE_RECENT)
    assert send_decision(view, receipt, MONDAY_NIGHT, POLICIES) == SEND
    # but never the consent nor the suppression list
    assert rule_of(send_decision(person(consent=None), receipt, MONDAY_NIGHT, POLICIES)) == (
        "no_consent"
    )


def test_sms_at_night_is_deferred_to_the_next_morning():
    decision = send_decision(person(), SMS, MONDAY_NIGHT, POLICIES)
    assert isinstance(decision, Defer)
    assert decision.rule == "quiet_hours"
    assert decision.until == paris(2026, 3, 3, 8, 0)
    assert "Europe/Paris" in decision.reason


def test_email_at_night_is_not_deferred():
    assert send_decision(person(), EMAIL, MONDAY_NIGHT, POLICIES) == SEND


def test_quiet_hours_use_the_recipients_zone_from_their_phone():
    at = datetime(2026, 1, 14, 3, 30, tzinfo=UTC)  # 07:30 in Réunion, 04:30 in Paris
    decision = send_decision(person(phone="+262692123456"), SMS, at, POLICIES)
    assert decision == Defer(
        "quiet_hours",
        "quiet hours for SMS in Indian/Reunion; allowed from 2026-01-14T08:00:00+04:00",
        datetime(2026, 1, 14, 4, 0, tzinfo=UTC),
    )
    # at 08:00 local it goes, while Paris sleeps
    assert send_decision(person(phone="+262692123456"), SMS, decision.until, POLICIES) == SEND


def test_quiet_hours_use_the_contacts_own_zone_first():
    at = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)  # 13:00 Paris, 07:00 in Montréal
    view = person(time_zone="America/Montreal")
    decision = send_decision(view, SMS, at, POLICIES)
    assert isinstance(decision, Defer)
    assert decision.until == datetime(2026, 1, 14, 13, 0, tzinfo=UTC)


def test_good_friday_defers_sms_only_in_alsace_moselle():
    good_friday = datetime(2026, 4, 3, 10, 0, tzinfo=UTC)
    assert send_decision(person(department="75"), SMS, good_friday, POLICIES) == SEND
    decision = send_decision(person(department="67"), SMS, good_friday, POLICIES)
    assert isinstance(decision, Defer)
    assert decision.until == paris(2026, 4, 4, 8, 0)


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware"):
        send_decision(person(), EMAIL, datetime(2026, 3, 2, 12, 0), POLICIES)


# ---------------------------------------------------------------- settings


def test_policies_from_default_settings():
    policies = SendPolicies.from_settings(MessagingSettings())
    assert policies == SendPolicies()
    assert str(policies.quiet_hours.allowed).startswith("mon 08:00-20:00; tue 08:00-20:00")
    assert policies.cap == CapPolicy(messages=3, window=timedelta(days=7), per_channel=False)


def test_policies_follow_the_settings():
    settings = MessagingSettings(
        sms_quiet_hours_enabled=False,
        sms_allowed_hours="mon-fri 09:00-18:00",
        sms_holiday_country="",
        sms_default_timezone="America/Martinique",
        cap_enabled=False,
        cap_messages=10,
        cap_window_days=30,
        cap_per_channel=True,
    )
    policies = SendPolicies.from_settings(settings)
    assert policies.quiet_hours == QuietHoursPolicy(
        allowed=parse_windows("mon-fri 09:00-18:00"),
        enabled=False,
        holiday_country=None,
        default_zone=ZoneInfo("America/Martinique"),
    )
    assert policies.cap == CapPolicy(
        messages=10, window=timedelta(days=30), per_channel=True, enabled=False
    )


def test_holiday_country_is_normalised():
    assert MessagingSettings(sms_holiday_country="be").sms_holiday_country == "BE"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("sms_allowed_hours", "mon-sat 20:00-08:00", "ends before it starts"),
        ("sms_allowed_hours", "weekdays 08:00-20:00", "is not a weekday"),
        ("sms_holiday_country", "XX", "not a country the holidays library knows"),
        ("sms_default_timezone", "Europe/Atlantis", "unknown time zone"),
        ("cap_messages", 0, "greater than or equal to 1"),
        ("cap_window_days", 0, "greater than or equal to 1"),
        ("cap_window_days", 400, "less than or equal to 366"),
    ],
)
def test_bad_settings_fail_at_startup_naming_the_setting(field, value, reason):
    with pytest.raises(ValidationError) as exc:
        MessagingSettings(**{field: value})
    errors = exc.value.errors()
    assert errors[0]["loc"] == (field,)
    assert reason in errors[0]["msg"]
