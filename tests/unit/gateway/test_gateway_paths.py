"""The request path, normalised once: decoded once, refused when it reads two ways, and
encoded back for the service so that it decodes into the very same path."""

from __future__ import annotations

import pytest
from gateway.paths import InvalidPath, normalise, wire


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/api/v1/contacts/c1", "/api/v1/contacts/c1"),
        (b"/api/v1/contacts/c%31", "/api/v1/contacts/c1"),
        (b"/api/v1/contacts/%C3%A9t%C3%A9", "/api/v1/contacts/\u00e9t\u00e9"),
        (b"/api/v1/contacts/a%2fb", "/api/v1/contacts/a/b"),  # decoded once: a real slash
        (b"/api/v1/contacts/", "/api/v1/contacts/"),
        (b"/", "/"),
        (b"/api/v1/contacts/...", "/api/v1/contacts/..."),  # three dots are a name
        (b"/api/v1/contacts/.hidden", "/api/v1/contacts/.hidden"),
    ],
)
def test_a_plain_path_is_decoded_once(raw, path):
    assert normalise(raw) == path
    assert normalise(wire(path).encode()) == path  # what the service decodes: the same


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/v1/segments/../contacts/c1",
        b"/api/v1/segments/%2e%2e/contacts/c1",
        b"/api/v1/segments/%2E./contacts/c1",
        b"/api/v1/segments/..%2Fcontacts",
        b"/api/v1/contacts/./c1",
        b"/api/v1/contacts/%2e/c1",
        b"/api/v1/contacts/c1/..",
        b"/api/v1/contacts/c1/.",
        b"/api/v1/contacts//c1",
        b"//api/v1/contacts",
        b"/api/v1/contacts/%2F/c1",  # an empty segment once decoded
        b"/api/v1/contacts/..\\..\\x",
        b"/api/v1/contacts/%5c..",
        b"/api/v1/contacts/%252e%252e",  # double-encoded: whoever decodes again sees ..
        b"/api/v1/contacts/c1%00",
        b"/api/v1/contacts/c1%0d%0aX-Injected:1",
        b"/api/v1/contacts/%ff",
        b"api/v1/contacts",
        b"*",
    ],
)
def test_a_path_that_reads_two_ways_is_refused(raw):
    with pytest.raises(InvalidPath) as refused:
        normalise(raw)
    assert refused.value.status_code == 400


def test_the_wire_form_keeps_what_a_segment_allows_and_encodes_the_rest():
    assert wire("/api/v1/contacts/c1") == "/api/v1/contacts/c1"
    assert wire("/api/v1/x/a b?c#d") == "/api/v1/x/a%20b%3Fc%23d"
    assert wire("/api/v1/x/\u00e9") == "/api/v1/x/%C3%A9"
    assert wire("/api/v1/x/a:b@c;d=e") == "/api/v1/x/a:b@c;d=e"
