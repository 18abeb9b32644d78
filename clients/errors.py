"""What a call to an Arbiter server can fail with, the same whichever transport carried it."""

from __future__ import annotations

# Codes worth another try later: the server was busy or not up yet, or the connection failed.
RETRYABLE_CODES = frozenset({"queue_full", "rate_limited", "not_ready", "unavailable", "store_unavailable"})


class RewardServerError(Exception):
    """An error answer (or no answer) from the server.

    `status` is the HTTP status (gRPC statuses are mapped to the HTTP one with the same meaning, None when no
    answer came); `code` is the server's error code (`invalid_input`, `model_not_found`, `too_large`,
    `queue_full`, `not_ready`, ...) or `unavailable` / `deadline_exceeded` for transport failures. `request_id`
    names the request in the server's log (quote it when reporting a 5xx).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: object | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details, self.retry_after, self.request_id = details, retry_after, request_id

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES
