"""Errors of the broker and its clients, each with the HTTP status the service answers with.

They are `M2KTError`s like every other error: the CLI prints message and hint, and the exit code
follows the usual rule (2 bad input or refused request, 1 a packet that failed verification).
"""

from __future__ import annotations

from m2kt.errors import M2KTError, VerificationError


class BrokerError(M2KTError):
    """A request the broker refused; `status` is the HTTP status it answers with."""

    status = 400
    default_hint = "check the request; `m2kt serve --help` describes the broker"


class AuthenticationError(BrokerError):
    status = 401
    default_hint = "set M2KT_TOKEN (or --token-file) to a token the broker's operator gave you"


class ScopeError(BrokerError):
    status = 403
    default_hint = "ask the broker's operator for a token with this scope"


class NotFoundError(BrokerError):
    status = 404
    default_hint = "search the store (`m2kt search`) for the digests it holds"


class ConflictError(BrokerError):
    status = 409
    default_hint = "the store already holds this packet with other signature bytes; pull that one"


class RateLimitedError(BrokerError):
    """Too many requests with one token; `retry_after` is how many seconds to wait."""

    status = 429
    default_hint = "wait as long as the Retry-After header says, then repeat the request"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLargeError(BrokerError):
    status = 413
    default_hint = "the broker's operator sets the limit with `m2kt serve --max-upload-bytes`"


class RefusedPacketError(VerificationError):
    """An upload that is not provably its publisher's, or that the safety screen refused."""

    status = 422
    default_hint = (
        "sign the packet with a key registered for your publisher, and fix what the screen names"
    )
