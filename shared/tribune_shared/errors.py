"""Errors a service raises from its rules; the app turns them into clear HTTP answers."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    code = "error"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        if self.field is not None:
            detail: Any = [{"field": self.field, "reason": self.message}]
        else:
            detail = self.message
        return {"error": self.code, "detail": detail, **self.extra}


class InvalidField(DomainError):
    """422: a value is well-formed JSON but breaks a rule; nothing was changed."""

    status_code = 422
    code = "validation_error"


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
