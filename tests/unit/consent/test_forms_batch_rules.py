"""Consent's form handler, its pure steps (consent.forms.service): which text a box is
checked against, and how one submission's changes are planned from what the batch has
seen so far (a person signing twice in one batch is asked to confirm once)."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest.mock import MagicMock

from consent.domain import ConsentStatus, text_sha256
from consent.forms.service import FormConsents, nearest_text
from consent.service import ConsentService
from consent.settings import ConsentSettings
from tribune_shared.events.contracts import Channel, FormSubmissionAppliedV1

BODY = "J'accepte de recevoir les actualités."
TEXTS = [
    {"_id": "t-root", "version": "v1", "federation_path": "/root/", "body": BODY,
     "sha256": text_sha256(BODY)},
    {"_id": "t-paris", "version": "v1", "federation_path": "/root/paris/", "body": BODY,
     "sha256": text_sha256(BODY)},
    {"_id": "t-lyon", "version": "v1", "federation_path": "/root/lyon/", "body": BODY,
     "sha256": text_sha256(BODY)},
]  # fmt: skip
PARIS = ["/root/", "/root/paris/", "/root/paris/xv/"]


def test_a_box_is_checked_against_the_text_nearest_the_person():
    assert nearest_text(TEXTS, "v1", PARIS)["_id"] == "t-paris"
    assert nearest_text(TEXTS, "v1", ["/root/", "/root/nice/"])["_id"] == "t-root"
    assert nearest_text(TEXTS, "v2", PARIS) is None
    assert nearest_text(TEXTS, "v1", ["/other/"]) is None


def event(submission_id: str, *boxes: tuple[str, str]) -> FormSubmissionAppliedV1:
    return FormSubmissionAppliedV1(
        submission_id=submission_id,
        form_id="f1",
        form_kind="petition",
        contact_id="ana",
        contact_version=1,
        created=True,
        consents=[
            {"channel": ch, "purpose": p, "text_version": "v1", "text_sha256": text_sha256(BODY)}
            for ch, p in boxes
        ],
        proof={"ip": "203.0.113.0/24", "user_agent": "Mozilla/5.0", "page": "fr"},
        submitted_at=datetime(2026, 12, 3, 9, tzinfo=UTC),
    )


def forms() -> FormConsents:
    return FormConsents(ConsentService(ConsentSettings(), MagicMock()))


def plan(svc, ev, statuses, done=frozenset()):
    contact = {"_id": "ana", "federation_path": "/root/paris/"}
    return svc._plan(ev, contact, set(done), statuses, lambda v: nearest_text(TEXTS, v, PARIS))


def test_a_person_signing_twice_in_one_batch_is_asked_to_confirm_once():
    svc, statuses = forms(), {}
    first, _ = plan(svc, event("s1", ("email", "news"), ("sms", "news")), statuses)
    assert [(c.channel, c.status) for c in first] == [
        (Channel.email, ConsentStatus.pending),
        (Channel.sms, ConsentStatus.granted),
    ]
    assert first[0].proof["text_hash"] == text_sha256(BODY)
    assert first[0].pending is not None and first[0].events  # the confirmation request
    second, refused = plan(svc, event("s2", ("email", "news"), ("sms", "news")), statuses)
    assert second == [] and refused == []


def test_boxes_the_submission_already_produced_are_not_planned_again():
    svc = forms()
    done = {("ana", "s1", "email", "news")}
    changes, _ = plan(svc, event("s1", ("email", "news"), ("sms", "news")), {}, done)
    assert [c.channel for c in changes] == [Channel.sms]


def test_a_box_with_an_unknown_purpose_or_text_is_refused_with_its_reason():
    svc = forms()
    ev = event("s1", ("sms", "no-such-purpose"))
    changes, refused = plan(svc, ev, {})
    assert changes == [] and "purpose" in refused[0]["reason"]
    other = ev.model_copy(
        update={
            "consents": [
                ev.consents[0].model_copy(update={"purpose": "news", "text_version": "v9"})
            ]
        }
    )
    changes, refused = plan(svc, other, {})
    assert changes == [] and refused[0]["text_version"] == "v9"
