"""The transport under every generated method: one ``POST /v1/op/<operation_id>`` per call, with the
token, the workspace, retries with backoff for 429 and 503 (honouring ``Retry-After``), timeouts, an
``Idempotency-Key`` for retried writes, and NDJSON streams decoded a line at a time as they arrive."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any, Callable, Generic, TypeVar
from urllib.parse import urlsplit

import httpx

from .errors import (
    OpgateConnectionError,
    OpgateProtocolError,
    OpgateTimeoutError,
    error_from_line,
    error_from_response,
)

__all__ = ["BaseClient", "NOT_GIVEN", "NotGiven", "Stream", "DEFAULT_URL"]

#: Where a gateway listens unless told otherwise (``opgate serve``'s default).
DEFAULT_URL = "http://127.0.0.1:8080"
#: The header that selects the workspace a call works in.
WORKSPACE_HEADER = "X-Workspace-ID"
#: Statuses worth another attempt: the rate limit is spent, or the gateway is briefly unavailable.
RETRY_STATUSES = (429, 503)

T = TypeVar("T")


class NotGiven:
    """The default of every optional argument: the field is left out of the request body (``None`` sends
    ``null``, which some update operations read as "clear it")."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN = NotGiven()


class Stream(Generic[T]):
    """The items of a streaming operation, decoded one NDJSON line at a time as they arrive: memory stays
    flat over any number of items. An error line that ends a failed stream is raised as its
    :class:`~opgate.errors.OpgateError` subclass (with ``streamed`` set). Iterate it once; it closes its
    connection when exhausted, on an error, or on :meth:`close` (or at the end of a ``with`` block).
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._lines = response.iter_lines()
        #: The request id of the response (``X-Request-Id``).
        self.request_id: str | None = response.headers.get("x-request-id")
        #: The HTTP response (status, headers), whose body is being read.
        self.response = response

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                line = next(self._lines)
            except StopIteration:
                self.close()
                raise
            except httpx.TimeoutException as e:
                self.close()
                raise OpgateTimeoutError(f"the stream stalled: {e}") from e
            except httpx.HTTPError as e:
                self.close()
                raise OpgateConnectionError(f"the stream broke off: {e}") from e
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as e:
                self.close()
                raise OpgateProtocolError(
                    f"a stream line is not JSON: {line[:200]!r}",
                    status=self._response.status_code,
                    request_id=self.request_id,
                ) from e
            error = error_from_line(item, self.request_id)
            if error is not None:
                self.close()
                raise error
            return item

    def close(self) -> None:
        """Stops reading and releases the connection."""
        self._response.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BaseClient:
    """A connection to one gateway with one bearer token and optionally one workspace.

    Every argument falls back to the environment, as the ``opgate`` CLI does: ``base_url`` to
    ``OPGATE_URL`` (else ``http://127.0.0.1:8080``), ``token`` to ``OPGATE_TOKEN``, ``workspace`` to
    ``OPGATE_WORKSPACE`` (sent as ``X-Workspace-ID``). ``max_retries`` bounds the extra attempts after a
    429 or 503 (or a connection that could not be made), waiting ``Retry-After`` when the gateway sends it
    (never longer than ``max_retry_delay`` seconds; a longer wait raises instead) and an exponential
    backoff otherwise. ``timeout`` is httpx's (seconds to connect, and between two reads). Pass
    ``http_client`` to bring an ``httpx.Client`` of your own (proxies, TLS, event hooks).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        workspace: str | None = None,
        timeout: float | httpx.Timeout | None = 30.0,
        max_retries: int = 2,
        max_retry_delay: float = 60.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("OPGATE_URL") or DEFAULT_URL
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"`{base_url}` is not an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError(
                f"`{base_url}` has a query or fragment; give the gateway's base URL"
            )
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.base_url = base_url.rstrip("/")
        self._token = token if token is not None else os.environ.get("OPGATE_TOKEN")
        self.workspace = workspace or os.environ.get("OPGATE_WORKSPACE") or None
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self._timeout = timeout
        self._sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, **kwargs: Any) -> Any:
        """A client configured from ``OPGATE_URL``, ``OPGATE_TOKEN`` and ``OPGATE_WORKSPACE`` (keyword
        arguments override them)."""
        return cls(**kwargs)

    def __repr__(self) -> str:
        # Never the token.
        token = "<redacted>" if self._token else None
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, token={token!r}, "
            f"workspace={self.workspace!r})"
        )

    def close(self) -> None:
        """Closes the connection pool (unless the ``httpx.Client`` was passed in)."""
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        operation: str,
        body: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        retry: bool = True,
    ) -> Any:
        """Calls any operation by id with a JSON object: the output object, or a :class:`Stream` of items
        when the gateway answers NDJSON. ``retry`` allows the retries of 503s (429s are always retried:
        the gateway refuses them before the operation runs); pass ``False`` for an operation whose second
        run would do harm."""
        return self._call(
            operation,
            body or {},
            side_effect="read" if retry else "export",
            streaming=None,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )

    def _call(
        self,
        operation: str,
        body: dict[str, Any],
        *,
        side_effect: str,
        streaming: bool | None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        timeout: float | httpx.Timeout | None | NotGiven = NOT_GIVEN,
    ) -> Any:
        payload = {k: v for k, v in body.items() if not isinstance(v, NotGiven)}
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self.workspace:
            headers[WORKSPACE_HEADER] = self.workspace
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        # A write or destructive call may be retried after a 503 only under one Idempotency-Key (the
        # gateway then runs it at most once); export calls refuse the header, so a 503 is not retried.
        idempotent = side_effect in ("write", "destructive")
        if idempotency_key is None and idempotent and self.max_retries > 0:
            idempotency_key = f"opgate-py-{uuid.uuid4()}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        retry_statuses = RETRY_STATUSES if side_effect != "export" else (429,)
        content = json.dumps(payload, separators=(",", ":")).encode()
        response = self._send(operation, content, headers, retry_statuses, timeout)
        content_type = response.headers.get("content-type", "")
        is_stream = content_type.strip().startswith("application/x-ndjson")
        if is_stream:
            if streaming is False:
                response.close()
                raise OpgateProtocolError(
                    f"`{operation}` answered a stream where one object was expected",
                    status=response.status_code,
                    request_id=response.headers.get("x-request-id"),
                )
            return Stream(response)
        try:
            raw = response.read()
        except httpx.HTTPError as e:
            raise OpgateConnectionError(f"the response broke off: {e}") from e
        finally:
            response.close()
        request_id = response.headers.get("x-request-id")
        if streaming:
            raise OpgateProtocolError(
                f"`{operation}` answered one object where a stream was expected",
                status=response.status_code,
                request_id=request_id,
            )
        try:
            return json.loads(raw)
        except ValueError as e:
            raise OpgateProtocolError(
                f"the response is not JSON: {raw[:200]!r}",
                status=response.status_code,
                request_id=request_id,
            ) from e

    def _send(
        self,
        operation: str,
        content: bytes,
        headers: dict[str, str],
        retry_statuses: tuple[int, ...],
        timeout: float | httpx.Timeout | None | NotGiven,
    ) -> httpx.Response:
        url = f"{self.base_url}/v1/op/{operation}"
        attempt = 0
        while True:
            extra = {} if isinstance(timeout, NotGiven) else {"timeout": timeout}
            request = self._http.build_request(
                "POST", url, content=content, headers=headers, **extra
            )
            try:
                response = self._http.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                # Nothing reached the gateway: always safe to try again.
                if attempt < self.max_retries:
                    self._sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise OpgateConnectionError(f"cannot reach {self.base_url}: {e}") from e
            except httpx.TimeoutException as e:
                raise OpgateTimeoutError(f"{operation} timed out: {e}") from e
            except httpx.HTTPError as e:
                raise OpgateConnectionError(f"cannot reach {self.base_url}: {e}") from e
            status = response.status_code
            if 200 <= status < 300:
                return response
            try:
                raw = response.read()
            except httpx.HTTPError as e:
                raise OpgateConnectionError(f"the response broke off: {e}") from e
            finally:
                response.close()
            if status in retry_statuses and attempt < self.max_retries:
                delay = _retry_after(response)
                if delay is None:
                    delay = self._backoff(attempt)
                if delay <= self.max_retry_delay:
                    self._sleep(delay)
                    attempt += 1
                    continue
            raise error_from_response(
                status, raw, response.headers.get("x-request-id"), response.headers
            )

    @staticmethod
    def _backoff(attempt: int) -> float:
        """0.5 s, 1 s, 2 s, ... up to 8 s, each with up to half of it taken off at random."""
        base = min(0.5 * 2**attempt, 8.0)
        return base * (0.5 + random.random() / 2)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
