def _class_for(code: str | None, status: int) -> type[OpgateError]:
    if code is not None and code in ERROR_CLASSES:
        return ERROR_CLASSES[code]
    # A code this package does not know (a newer gateway): the class of the status, if one has it.
    for cls in ERROR_CLASSES.values():
        if cls.status == status:
            return cls
    return OpgateError


def error_from_response(
    status: int,
    body: bytes,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
) -> OpgateError:
    """The error a non-2xx response stands for: its contract body when it has one, else the status."""
    retry_after = None
    if headers is not None and headers.get("retry-after") is not None:
        try:
            retry_after = float(headers["retry-after"])
        except ValueError:
            retry_after = None
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
        if not isinstance(code, str) or not isinstance(message, str):
            raise TypeError("not the contract's error")
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()[:200]
        cls = _class_for(None, status)
        return cls(
            (
                f"the gateway answered HTTP {status}: {text}"
                if text
                else f"the gateway answered HTTP {status} without an error body"
            ),
            status=status,
            code=cls.code,
            request_id=request_id,
            retry_after=retry_after,
        )
    return _class_for(code, status)(
        message,
        status=status,
        code=code,
        request_id=error.get("request_id") or request_id,
        details=error,
        retry_after=retry_after,
    )


def error_from_line(item: Any, request_id: str | None) -> OpgateError | None:
    """The error an NDJSON line stands for, when it is exactly the contract's ``{"error": {...}}`` line
    (an item that merely has an ``error`` field is not one)."""
    if not isinstance(item, dict) or list(item) != ["error"]:
        return None
    error = item["error"]
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    status = STATUS_OF_CODE.get(code, 500)
    return _class_for(code, status)(
        message,
        status=status,
        code=code,
        request_id=error.get("request_id") or request_id,
        details=error,
        streamed=True,
    )
