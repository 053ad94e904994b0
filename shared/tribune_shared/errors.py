"""Errors a service raises from its rules; the app turns them into clear HTTP answers."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    code = "error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        if self.field is not None:
            detail: Any = [{"field": self.field, "reason": self.message}]
        else:
            detail = self.message
        return {"error": self.code, "detail": detail, **self.extra}


#: OpenAPI schemas of the error body every Tribune process answers with (DomainError.body,
#: and the kernel's handler of validation errors: tribune_shared.app), under the names
#: FastAPI gives its own 422 body, which they replace (tribune_shared.app.document_errors)
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ValidationError": {
        "title": "ErrorDetail",
        "type": "object",
        "properties": {
            "field": {"type": "string", "description": "dotted path of the bad value"},
            "location": {"type": "string", "description": "body, query, path, header..."},
            "reason": {"type": "string"},
        },
        "required": ["field", "reason"],
    },
    "HTTPValidationError": {
        "title": "Error",
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "validation_error, not_found..."},
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                ]
            },
        },
        "required": ["error", "detail"],
    },
}


class InvalidField(DomainError):
    """422: a value is well-formed JSON but breaks a rule; nothing was changed."""

    status_code = 422
    code = "validation_error"


class InvalidFields(InvalidField):
    """422 listing every field that breaks a rule (not only the first one)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        first_field, first_reason = problems[0]
        super().__init__(first_reason, field=first_field)
        self.problems = problems

    def body(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "detail": [{"field": f, "reason": r} for f, r in self.problems],
        }


class NotFound(DomainError):
    """404, whatever the reason (never leak that an object exists elsewhere)."""

    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Refused(DomainError):
    """409: the request is valid but a rule (consent, standing...) refuses it."""

    status_code = 409
    code = "refused"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DomainError):
    """403: authenticated, but the role may not do this."""

    status_code = 403
    code = "forbidden"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(DomainError):
    """429 with Retry-After."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(
            message, headers={"Retry-After": str(retry_after)}, retry_after=retry_after, **extra
        )
        self.retry_after = retry_after


class BadGateway(DomainError):
    """502: a downstream provider (SMTP server, SMS gateway) did not take the request."""

    status_code = 502
    code = "bad_gateway"


class ServiceUnavailable(DomainError):
    """503: a dependency could not be reached; nothing was sent to it. Always with
    Retry-After (``retry_after`` seconds, 5 unless named), however it is answered."""

    status_code = 503
    code = "service_unavailable"
    default_retry_after = 5

    def __init__(self, message: str, *, retry_after: int | None = None, **kw: Any) -> None:
        headers = dict(kw.pop("headers", None) or {})
        seconds = self.default_retry_after if retry_after is None else retry_after
        headers.setdefault("Retry-After", str(seconds))
        # said in the body too (a client reading JSON only), as TooManyRequests does
        super().__init__(message, headers=headers, retry_after=seconds, **kw)


class GatewayTimeout(DomainError):
    """504: a dependency was reached but did not answer in time."""

    status_code = 504
    code = "service_timeout"
