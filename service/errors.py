"""Every error the service answers with, as one table: exception -> HTTP status + stable ``code``.

Responses are JSON ``{"error": "<what happened and what to do>", "code": "<stable identifier>"}``. Codes are part
of the API contract (clients branch on them); messages are for people and may change.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from model_store import errors as core
from model_store.cancellation import Cancelled
from model_store.rate_control import RateControlUnsupportedError, TargetUnreachableError


class ServiceError(Exception):
    """An error with an HTTP status and a stable code (raise it anywhere under a route)."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadParameter(ServiceError):
    status, code = 400, "bad_parameter"


class MissingToken(ServiceError):
    status, code = 401, "auth_required"

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="lic"'})


class InvalidToken(ServiceError):
    status, code = 401, "invalid_token"

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="lic", error="invalid_token"'})


class DigestMismatch(ServiceError):
    """The body's ``Content-Digest`` does not match the bytes that arrived (damaged in transit)."""

    status, code = 400, "digest_mismatch"


class UnknownModel(ServiceError):
    status, code = 404, "unknown_model"


class NotAcceptable(ServiceError):
    status, code = 406, "not_acceptable"


class UnknownWeights(ServiceError):
    """A stream whose model/quality this server does not serve (the digest case is ``weights_mismatch``)."""

    status, code = 409, "unknown_weights"


class WeightsMismatch(ServiceError):
    """The stream names a served model and quality but weights that are not installed here."""

    status, code = 409, core.WeightsMismatchError.code


class BodyTooLarge(ServiceError):
    status, code = 413, "body_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class BodyTimeout(ServiceError):
    """The body did not arrive within the request's deadline (a stalled or deliberately slow client)."""

    status, code = 408, "body_timeout"


class QueueFull(ServiceError):
    status, code = 429, "queue_full"


class ClientBusy(ServiceError):
    """One client holds its whole share of the server (``max_in_flight_per_client``)."""

    status, code = 429, "client_busy"


class NotReady(ServiceError):
    status, code = 503, "not_ready"


class Draining(ServiceError):
    status, code = 503, "draining"


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"


class DeadlineTooShort(ServiceError):
    """The server's own estimate of the work (service/cost.py) does not fit in the request's deadline: refused
    before anything is decoded, instead of a 504 after the time and memory were spent."""

    status, code = 422, "deadline_too_short"


class ClientGone(ServiceError):
    """The client disconnected before its result was ready (nobody reads the response; counted in metrics)."""

    status, code = 499, "client_disconnected"


#: model_store's typed errors (matched most specific first) -> (status, code). The codec's own codes are kept
#: where they exist, so a client sees the same identifiers from the library and the service.
_CORE: Tuple[Tuple[type, int, str], ...] = (
    (Cancelled, 504, DeadlineExceeded.code),
    (TargetUnreachableError, 422, TargetUnreachableError.code),
    (RateControlUnsupportedError, 422, RateControlUnsupportedError.code),
    (core.CoderMismatchError, 422, core.CoderMismatchError.code),
    (core.TruncatedStreamError, 422, core.TruncatedStreamError.code),
    (core.UnsupportedVersionError, 422, core.UnsupportedVersionError.code),
    (core.BitstreamError, 422, core.BitstreamError.code),
    (core.LimitExceededError, 422, "too_many_pixels"),
    (core.ImageInputError, 422, "bad_image"),
    (core.WeightsMismatchError, 409, core.WeightsMismatchError.code),
    (core.WeightsRetiredError, 410, core.WeightsRetiredError.code),
    (core.UnknownModelError, 404, core.UnknownModelError.code),
)


def describe(exc: BaseException) -> Tuple[int, str, str, Dict[str, str]]:
    """(status, code, message, extra headers) of any exception; unknown ones are a 500 without internals."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, exc.message, exc.headers
    for cls, status, code in _CORE:
        if isinstance(exc, cls):
            return status, code, str(exc), {}
    return 500, ServiceError.code, "internal error; the server log has details", {}


#: Every code the API can answer with (documented in the OpenAPI description and the README).
ERROR_CODES: Dict[str, int] = {
    **{cls.code: cls.status for cls in ServiceError.__subclasses__() if cls is not ClientGone},
    **{code: status for _, status, code in _CORE},
    "not_found": 404,  # routing: no such path
    "method_not_allowed": 405,
    ServiceError.code: 500,
}
