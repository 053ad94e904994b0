import pytest
from pydantic import ValidationError
from tribune_shared.events import Envelope, decode, new_envelope
from tribune_shared.events.contracts import ConsentRevokedV1, ContactCreatedV1, ContactState
from tribune_shared.logging import bind_correlation_id


def _created(contact_id="c1"):
    return ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=ContactState())


def test_envelope_carries_key_tenant_and_correlation():
    bind_correlation_id("corr-1")
    env = new_envelope(
        _created("c42"), producer="contacts", federation_id="f", federation_path="/f/"
    )
    assert env.key == "c42"
    assert (env.type, env.version) == ("contact-created", 1)
    assert env.correlation_id == "corr-1"
    assert Envelope.from_bytes(env.to_bytes()) == env


def test_causation_links_to_the_cause():
    cause = new_envelope(_created(), producer="contacts", federation_id="f", federation_path="/f/")
    effect = new_envelope(
        _created(), producer="consent", federation_id="f", federation_path="/f/", causation=cause
    )
    assert effect.causation_id == cause.event_id
    assert effect.correlation_id == cause.correlation_id


def test_consumers_ignore_fields_added_later_in_the_same_version():
    env = new_envelope(_created(), producer="contacts", federation_id="f", federation_path="/f/")
    data = {**env.data, "added_in_a_later_release": True}
    event = decode(env.model_copy(update={"data": data}))
    assert isinstance(event, ContactCreatedV1)


def test_invalid_payload_is_refused():
    env = new_envelope(_created(), producer="contacts", federation_id="f", federation_path="/f/")
    with pytest.raises(ValidationError):
        decode(env.model_copy(update={"data": {"contact_id": "x"}}))
    with pytest.raises(LookupError):
        decode(env.model_copy(update={"version": 99}))


def test_channel_is_an_enum():
    with pytest.raises(ValidationError):
        ConsentRevokedV1(
            contact_id="c",
            channel="pigeon",
            purpose="news",
            source="x",
            revoked_at="2026-01-01T00:00:00Z",
        )
