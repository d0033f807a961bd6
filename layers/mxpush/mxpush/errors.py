"""Typed errors. HTTP answers are chosen by exception type (see `ApiError.status`), never by text.

Messages of these exceptions may be shown to API callers and logged, so they must never carry
message content, full pushkeys or backend tokens.
"""

from __future__ import annotations


class MxpushError(Exception):
    """Base class of every error mxpush raises on purpose."""


# --- Errors answered to HTTP callers ------------------------------------------------------------


class ApiError(MxpushError):
    """An error with a Matrix-style answer: `{"errcode": ..., "error": ...}`."""

    status: int = 400
    errcode: str = "M_UNKNOWN"

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class NotJson(ApiError):
    errcode = "M_NOT_JSON"


class BadJson(ApiError):
    errcode = "M_BAD_JSON"


class InvalidParam(ApiError):
    errcode = "M_INVALID_PARAM"


class MissingParam(ApiError):
    errcode = "M_MISSING_PARAM"


class TooLarge(ApiError):
    status = 413
    errcode = "M_TOO_LARGE"


class Unrecognized(ApiError):
    status = 404
    errcode = "M_UNRECOGNIZED"


class MethodNotAllowed(Unrecognized):
    status = 405

    def __init__(self, error: str, *, allow: str = "") -> None:
        super().__init__(error)
        self.allow = allow


class MissingToken(ApiError):
    status = 401
    errcode = "M_MISSING_TOKEN"


class UnknownToken(ApiError):
    status = 401
    errcode = "M_UNKNOWN_TOKEN"


class Forbidden(ApiError):
    status = 403
    errcode = "M_FORBIDDEN"


class NotFound(ApiError):
    status = 404
    errcode = "M_NOT_FOUND"


class UpstreamFailed(ApiError):
    """A system we called on the caller's behalf (homeserver, push backend) failed."""

    status = 502
    errcode = "M_UNKNOWN"


class ServiceUnavailable(ApiError):
    """We could not durably accept the work; the caller should retry."""

    status = 503
    errcode = "M_UNKNOWN"


# --- Infrastructure failures (answered 503 on every API path: the caller retries) ----------------


class InfrastructureUnavailable(MxpushError):
    """An AWS service we depend on failed: HTTP callers get 503 and should retry."""


class StoreUnavailable(InfrastructureUnavailable):
    """DynamoDB did not accept or answer a request."""


class SchedulerUnavailable(InfrastructureUnavailable):
    """Step Functions did not accept a request."""


class ConfigError(MxpushError):
    """The deployment is misconfigured (bad environment variable)."""


# --- Outbound HTTP ------------------------------------------------------------------------------


class OutboundError(MxpushError):
    """A request to a URL we were given could not be made or completed."""


class UnsafeTarget(OutboundError):
    """The URL is not allowed: bad scheme, or it resolves to a forbidden address."""


class TargetUnreachable(OutboundError):
    """DNS failure, connection failure or timeout: worth retrying later."""


# --- Delivery (names matter: the state machine retries on `TransientDeliveryError`) -------------


class DeliveryError(MxpushError):
    """A push backend did not take the push.

    `detail` is what the receiver answered: shown to the registration's owner in the delivery
    log (`reason`), never logged or put in the exception message, since an arbitrary receiver
    (a webhook) may echo what we sent.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self}: {self.detail}" if self.detail else str(self)


class TransientDeliveryError(DeliveryError):
    """Timeout, connection failure, 429 or 5xx: the state machine retries with backoff."""


class PermanentDeliveryError(DeliveryError):
    """The backend refused the push for a reason retrying will not fix (not a bad token)."""
