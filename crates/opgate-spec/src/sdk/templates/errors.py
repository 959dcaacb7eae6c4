"""Every error a call raises is an :class:`OpgateError`. The gateway's refusals are one subclass per
error code of the contract (``except NotFoundError:``), each carrying the HTTP status, the code, the
gateway's message, the request id and the error object as sent (``details``); an error line that ends a
failed stream raises the same classes with ``streamed`` set. :class:`OpgateConnectionError` and
:class:`OpgateProtocolError` are failures to get such an answer at all."""

from __future__ import annotations

import json
from typing import Any, Mapping


class OpgateError(Exception):
    """Base of every error of this package: ``status``, ``code``, ``message``, ``request_id`` and
    ``details`` (the error object as the gateway sent it)."""

    #: The contract's error code, e.g. ``"not_found"``; ``None`` when no answer came.
    code: str | None = None
    #: The HTTP status; for an error line of a stream, the status of its code.
    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        streamed: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        #: The gateway's sentence naming the field or the cause.
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        #: The request id the gateway assigned (``X-Request-Id``), to find the call in its log.
        self.request_id = request_id
        #: The error object as sent (``code``, ``message``, ``request_id`` and any other field).
        self.details: dict[str, Any] = dict(details or {})
        #: Whether the error arrived as the last line of an NDJSON stream.
        self.streamed = streamed
        #: Seconds the gateway asked to wait (``Retry-After``), if it said.
        self.retry_after = retry_after

    def __str__(self) -> str:
        head = f"{self.code} ({self.status}): " if self.code else ""
        tail = f" [request {self.request_id}]" if self.request_id else ""
        return f"{head}{self.message}{tail}"


class OpgateConnectionError(OpgateError):
    """The gateway could not be reached, or the connection broke off mid-response."""


class OpgateTimeoutError(OpgateConnectionError):
    """The gateway did not answer (or the stream stalled) within the timeout."""


class OpgateProtocolError(OpgateError):
    """The gateway answered something the contract does not allow (a body that is not JSON, a stream
    where one object was expected)."""
