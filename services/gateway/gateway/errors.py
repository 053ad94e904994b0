"""The gateway's own refusal: too many failed logins (429 with Retry-After)."""

from __future__ import annotations

import math

from tribune_shared.errors import TooManyRequests


class TooManyAttempts(TooManyRequests):
    code = "too_many_attempts"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many login attempts for this email or from this network; retry in {seconds} s",
            retry_after=seconds,
        )
