"""The two kinds of failure the journey tells apart, whatever layer raised them.

Every error a worker may meet derives from one of these, so that the journey's retry policy is
decided where the error is defined (a new error cannot be forgotten in a list of types).
"""

from __future__ import annotations


class PermanentError(Exception):
    """Waiting cannot fix it: the job falls back to the classical answer or fails at once."""


class TransientError(Exception):
    """Worth another try after a backoff: network errors, timeouts, throttling, 5xx answers.

    Attributes:
        retry_after: Seconds the other side asked us to wait, when it said so.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
