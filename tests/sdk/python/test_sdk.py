"""The generated Python SDK against a live gateway: calls, a 10,000-key stream, typed errors, idempotent
replays, retries after 429, the workspace header and the environment."""

from __future__ import annotations

import inspect
import json
import time

import httpx
import pytest

import opgate
from opgate import (
    Client,
    InvalidArgumentError,
    NotFoundError,
    OpgateError,
    PermissionDeniedError,
    RateLimitedError,
    Stream,
    UnauthenticatedError,
    UnavailableError,
)

from conftest import ROOT, SEEDED

MISSING_KEY = "key_01jf3m8v6k2x9q4w7e5r1t0y8z"


def recording_client(gateway, token=None, **kwargs):
    """A client whose responses (time, status, headers) are recorded through an httpx event hook."""
    seen = []

    def hook(response: httpx.Response) -> None:
        seen.append((time.monotonic(), response.status_code, dict(response.headers)))

    http = httpx.Client(event_hooks={"response": [hook]}, timeout=30)
    return Client(base_url=gateway.url, token=token or gateway.token, http_client=http, **kwargs), seen


def test_every_operation_of_the_spec_has_a_method(client):
    spec = json.loads((ROOT / "spec" / "openapi.json").read_text())
    ids = [p.removeprefix("/v1/op/") for p in spec["paths"] if p.startswith("/v1/op/")]
    assert len(ids) > 20
    for op in ids:
        resource, action = op.split(".")
        method = getattr(getattr(client, resource), action)
        assert callable(method), op
        assert method.__doc__, op
    # Export operations refuse Idempotency-Key: their methods do not take one; writes do.
    assert "idempotency_key" not in inspect.signature(client.api_keys.create).parameters
    assert "idempotency_key" in inspect.signature(client.workspaces.create).parameters


def test_create_then_get(client):
    created = client.api_keys.create(name="sdk-py", permissions=["api_keys:read"])
    assert created["key"].startswith("opg_")
    details = created["key_details"]
    assert details["name"] == "sdk-py"
    assert details["permissions"] == ["api_keys:read"]
    assert details["org_id"] == "sdk"
    got = client.api_keys.get(key_id=details["id"])
    assert got == details
    whoami = client.auth.whoami()
    assert whoami["org"] == "sdk"


def test_a_stream_of_ten_thousand_keys_arrives_line_by_line(client):
    stream = client.api_keys.list()
    assert isinstance(stream, Stream)
    first = next(stream)
    # Decoded as it arrives: the first item comes before the body (megabytes) has been read.
    assert stream.response.num_bytes_downloaded < 1_000_000
    ids = {first["id"]}
    for key in stream:
        ids.add(key["id"])
    assert len(ids) >= SEEDED + 1
    assert [k["name"] for k in client.api_keys.list(limit=3)] == ["seed-0", "seed-1", "seed-2"]


def test_a_stream_left_early_closes(client):
    with client.api_keys.list() as stream:
        for i, _ in enumerate(stream):
            if i == 10:
                break
    assert stream.response.is_closed
    # The connection pool is still usable.
    assert client.auth.whoami()["org"] == "sdk"


def test_not_found_is_its_own_class(client):
    with pytest.raises(NotFoundError) as caught:
        client.api_keys.get(key_id=MISSING_KEY)
    e = caught.value
    assert type(e) is NotFoundError
    assert isinstance(e, OpgateError)
    assert (e.status, e.code) == (404, "not_found")
    assert e.message == f"key_id: no API key `{MISSING_KEY}` in this organization"
    assert e.request_id and e.request_id.startswith("req_")
    assert e.details == {"code": "not_found", "message": e.message, "request_id": e.request_id}
    assert not e.streamed


def test_a_bad_token_is_unauthenticated(gateway):
    with Client(base_url=gateway.url, token="opg_not_a_real_key") as bad:
        with pytest.raises(UnauthenticatedError) as caught:
            bad.auth.whoami()
    assert (caught.value.status, caught.value.code) == (401, "unauthenticated")
    assert type(caught.value) is UnauthenticatedError


def test_invalid_input_is_invalid_argument(client):
    with pytest.raises(InvalidArgumentError) as caught:
        client.api_keys.create(name="")
    e = caught.value
    assert (type(e), e.status, e.code) == (InvalidArgumentError, 400, "invalid_argument")
    assert e.message.startswith("name:"), e.message


def test_a_missing_scope_is_permission_denied(gateway, client):
    reader = client.api_keys.create(name="py-reader", permissions=["api_keys:read"])
    with Client(base_url=gateway.url, token=reader["key"]) as limited:
        with pytest.raises(PermissionDeniedError) as caught:
            limited.workspaces.create(name="py-nope")
    assert (caught.value.status, caught.value.code) == (403, "permission_denied")


def test_an_idempotency_key_replays_the_first_answer(gateway):
    client, seen = recording_client(gateway)
    with client:
        first = client.workspaces.create(name="py-idem", idempotency_key="py-idem-1")
        again = client.workspaces.create(name="py-idem", idempotency_key="py-idem-1")
    assert again == first
    assert first["id"].startswith("ws_")
    assert "idempotent-replayed" not in seen[0][2]
    assert seen[1][2]["idempotent-replayed"] == "true"
    assert [s[1] for s in seen] == [200, 200]


def test_retried_writes_carry_a_generated_idempotency_key(gateway):
    client, seen = recording_client(gateway)
    sent = []
    client._http.event_hooks["request"] = [lambda r: sent.append(dict(r.headers))]
    with client:
        client.workspaces.create(name="py-auto-key")
        client.api_keys.create(name="py-export")
    assert sent[0]["idempotency-key"].startswith("opgate-py-")
    # An export operation refuses the header: none is sent.
    assert "idempotency-key" not in sent[1]


def test_a_429_is_retried_after_retry_after(gateway, client):
    limited_key = client.api_keys.create(name="py-limited", rate_limit=60)["key"]
    limited, seen = recording_client(gateway, token=limited_key, max_retries=5)
    with limited:
        # A burst of 60, then one a second: call until the SDK had to wait once.
        for _ in range(200):
            assert limited.auth.whoami()["org"] == "sdk"
            if any(s[1] == 429 for s in seen):
                break
    refused = [i for i, s in enumerate(seen) if s[1] == 429]
    assert refused, "the rate limit was never reached"
    i = refused[0]
    wait = float(seen[i][2]["retry-after"])
    assert wait >= 1
    # The next attempt came no sooner than the gateway asked.
    assert seen[i + 1][0] - seen[i][0] >= wait * 0.95
    assert seen[-1][1] == 200


def test_without_retries_a_429_raises(gateway, client):
    limited_key = client.api_keys.create(name="py-limited-2", rate_limit=1)["key"]
    with Client(base_url=gateway.url, token=limited_key, max_retries=0) as limited:
        limited.auth.whoami()
        with pytest.raises(RateLimitedError) as caught:
            limited.auth.whoami()
    e = caught.value
    assert (e.status, e.code) == (429, "rate_limited")
    assert e.retry_after is not None and e.retry_after >= 1


def test_the_workspace_header_scopes_calls(gateway, client):
    ws = client.workspaces.create(name="py-scoped")["id"]
    with Client(base_url=gateway.url, token=gateway.token, workspace=ws) as scoped:
        key = scoped.api_keys.create(name="py-in-ws")["key_details"]
        assert key["workspace_id"] == ws
        assert [k["id"] for k in scoped.api_keys.list()] == [key["id"]]


def test_the_environment_configures_the_client(gateway, monkeypatch):
    monkeypatch.setenv("OPGATE_URL", gateway.url)
    monkeypatch.setenv("OPGATE_TOKEN", gateway.token)
    monkeypatch.delenv("OPGATE_WORKSPACE", raising=False)
    with Client.from_env() as c:
        assert c.auth.whoami()["org"] == "sdk"
        assert gateway.token not in repr(c)


def test_an_error_line_ends_a_stream_with_its_class():
    # The gateway's own format for a stream that fails after its first line (contract: one error line).
    body = (
        b'{"id":"key_1","name":"a"}\n'
        b'{"error":{"code":"unavailable","message":"storage is unavailable","request_id":"req_9"}}\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "application/x-ndjson"}, content=body
        )

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with Client(base_url="http://127.0.0.1:9", token="t", http_client=http) as c:
        stream = c.api_keys.list()
        assert next(stream)["id"] == "key_1"
        with pytest.raises(UnavailableError) as caught:
            next(stream)
    e = caught.value
    assert (e.status, e.code, e.request_id, e.streamed) == (503, "unavailable", "req_9", True)
    assert e.message == "storage is unavailable"


def test_error_classes_cover_every_code_of_the_spec():
    spec = json.loads((ROOT / "spec" / "openapi.json").read_text())
    codes = [v["const"] for v in spec["components"]["schemas"]["Code"]["oneOf"]]
    assert sorted(opgate.errors.ERROR_CLASSES) == sorted(codes)
    for code, cls in opgate.errors.ERROR_CLASSES.items():
        assert cls.code == code and issubclass(cls, OpgateError)
