"""Gateway answers the kernel's errors do not cover (429, 403, 413, 503, 504)."""

from __future__ import annotations

import math

from tribune_shared.errors import DomainError


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class TooManyAttempts(DomainError):
    status_code = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many failed logins for this email; retry in {seconds} s", retry_after=seconds
        )
        self.retry_after = seconds


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(DomainError):
    """503: the owning service could not be reached (nothing was sent to it)."""

    status_code = 503
    code = "service_unavailable"


class ServiceTimeout(DomainError):
    """504: the owning service was reached but did not answer in time."""

    status_code = 504
    code = "service_timeout"
