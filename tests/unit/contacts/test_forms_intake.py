"""The public forms' intake under a burst (contacts.forms.service.PublicForms): the
admission bound sheds what this process cannot take in time, on purpose (429 'busy' with
the configured Retry-After), before any client's or form's tokens are spent; what was
admitted is counted until it is answered, whatever the answer."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from contacts.forms.service import PublicForms, RateLimited
from contacts.settings import ContactsSettings


def intake(**overrides) -> PublicForms:
    settings = ContactsSettings(
        forms_intake_max_in_flight=2, forms_intake_retry_after_seconds=7, **overrides
    )
    clock = iter(range(1_000_000))
    # a frozen monotonic clock: no token bucket refills during the test
    return PublicForms(
        settings, MagicMock(), MagicMock(), monotonic=lambda: 0.0, clock=lambda: float(next(clock))
    )


def test_beyond_the_bound_a_submission_is_shed_at_once_with_the_chosen_retry_after():
    svc = intake()
    with svc.admitted("form", "10.0.0.1"), svc.admitted("form", "10.0.0.2"):
        assert svc.in_flight == 2
        with pytest.raises(RateLimited) as shed, svc.admitted("form", "10.0.0.3"):
            pass
        assert (shed.value.scope, shed.value.retry_after) == ("busy", 7)
    assert svc.in_flight == 0
    # once the others are answered, the same client passes
    with svc.admitted("form", "10.0.0.3"):
        assert svc.in_flight == 1


def test_a_shed_submission_costs_the_client_none_of_its_tokens():
    svc = intake(forms_ip_burst=1)
    with svc.admitted("form", "10.0.0.1"), svc.admitted("form", "10.0.0.2"):
        with pytest.raises(RateLimited, match="busy"), svc.admitted("form", "10.0.0.3"):
            pass
    # its one token is still there: it passes once; a second try is the client's limit
    with svc.admitted("form", "10.0.0.3"):
        pass
    with pytest.raises(RateLimited) as limited, svc.admitted("form", "10.0.0.3"):
        pass
    assert limited.value.scope == "client"


def test_an_admitted_submission_is_released_whatever_its_answer():
    svc = intake()
    with pytest.raises(ValueError), svc.admitted("form", "10.0.0.1"):
        raise ValueError("a field to fix")
    assert svc.in_flight == 0


def test_the_bound_and_its_retry_after_are_bounded_settings():
    with pytest.raises(ValueError):
        ContactsSettings(forms_intake_max_in_flight=0)
    with pytest.raises(ValueError):
        ContactsSettings(forms_intake_retry_after_seconds=0)
