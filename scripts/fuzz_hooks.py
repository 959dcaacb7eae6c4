"""Schemathesis hooks for opgate (loaded by scripts/fuzz-api through SCHEMATHESIS_HOOKS).

- NDJSON: a deserializer for `application/x-ndjson`, so that every line of a stream is checked against the item
  schema (the spec describes a stream as the array of its lines) and a final `{"error": ...}` line against the
  contract's error shape.
- Depth: every answer is counted per operation, generation mode and status; at exit the counts are written to
  $OPGATE_FUZZ_SUMMARY (JSON) for scripts/fuzz-api to print and judge (no operation mostly 404 or mostly 400).
- Its own key: calls that would lock the fuzzer out halfway are made harmless: a revoke of its key
  (OPGATE_FUZZ_KEY_ID) names an absent key, a rotation of it keeps the old key for 30 days, an update of it
  leaves its permissions alone.
- Idempotency keys: the generator draws the same few short strings again and again, so most calls under a key
  would meet an earlier call's different body (422) and never reach the handler. A generated key is made unique
  per call; replays, mismatches and concurrent retries are covered by the test suite.
"""

import atexit
import collections
import json
import os
import uuid

import schemathesis

CODES = {
    "invalid_argument", "unauthenticated", "permission_denied", "not_found", "method_not_allowed", "conflict",
    "payload_too_large", "unsupported_media_type", "idempotency_mismatch", "rate_limited", "internal",
    "bad_gateway", "unavailable", "gateway_timeout",
}


def check_error(error):
    """The contract's error object: exactly code, message and request_id, with a known code."""
    if not isinstance(error, dict) or set(error) != {"code", "message", "request_id"}:
        raise ValueError(f"an error line must hold exactly code, message and request_id: {error!r}")
    if error["code"] not in CODES:
        raise ValueError(f"unknown error code {error['code']!r}")
    if not isinstance(error["message"], str) or not error["message"]:
        raise ValueError("an error line needs a message")
    if not isinstance(error["request_id"], str) or not error["request_id"]:
        raise ValueError("an error line needs a request id")


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    """The lines of an NDJSON stream as a list (validated against the schema's items by schemathesis); a final
    error line is checked here and left out."""
    text = response.content.decode("utf-8")
    if text and not text.endswith("\n"):
        raise ValueError("an NDJSON stream ends with a newline")
    lines = text.split("\n")[:-1] if text else []
    items = []
    for number, line in enumerate(lines, start=1):
        value = json.loads(line)
        if isinstance(value, dict) and set(value) == {"error"}:
            if number != len(lines):
                raise ValueError(f"line {number}: an error line can only be the last")
            check_error(value["error"])
            continue
        items.append(value)
    return items


OWN_KEY = os.environ.get("OPGATE_FUZZ_KEY_ID")
# The workspace made for the run. (schemathesis's coverage phase sends "0" as a "valid" X-Workspace-ID: it cannot
# build values for a pattern with `_`, see schemathesis PR #4205; schema-valid calls go without the header.)
FUZZ_WORKSPACE = os.environ.get("OPGATE_FUZZ_WORKSPACE_ID")
# The run's own objects, kept as its own key is: a delete aimed at one is aimed at an absent object instead, so
# reads and updates of them keep reaching their handlers (like `api_keys.get` of the fuzzer's key).
KEPT = {
    "workspace_id": (FUZZ_WORKSPACE, "ws_00000000000000000000000000", "workspaces"),
    "environment_id": (os.environ.get("OPGATE_FUZZ_ENVIRONMENT_ID"), "env_00000000000000000000000000", "environments"),
    "service_account_id": (
        os.environ.get("OPGATE_FUZZ_ACCOUNT_ID"),
        "sa_00000000000000000000000000",
        "service_accounts",
    ),
}
WORKSPACE_FIELDS = ("workspace_id", "environment_id", "service_account_id")
# Webhook URLs in schema-valid calls are pointed at a closed loopback port: the dispatcher's attempts stay on
# this machine (the server runs with --allow-private-webhooks), and a made-up host is never looked up.
FUZZ_WEBHOOK_URL = "http://127.0.0.1:9/fuzz"
ABSENT_KEY = "key_00000000000000000000000000"


@schemathesis.hook
def before_call(context, case, **kwargs):
    headers = case.headers or {}
    meta = _meta(case)
    positive = meta is None or "positive" in str(meta.generation.mode).lower()
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str):
            headers[name] = f"{headers[name][:200]}-{uuid.uuid4().hex}"
        if name.lower() == "x-workspace-id" and positive:
            # Confined to one workspace, most ids the fuzzer has collected are of other workspaces (404): schema-
            # valid calls go organization-wide instead. The header's own rules are tested in tests/it/tenancy.rs;
            # its malformed values are fuzzed in negative cases.
            del headers[name]
    body = case.body
    label = case.operation.label
    if positive and isinstance(body, dict):
        # Rules across fields that a schema cannot state: an admin key belongs to no workspace.
        admin_key = body.get("key_type") == "admin"
        if admin_key:
            for field in WORKSPACE_FIELDS:
                body.pop(field, None)
        if "url" in body and label.endswith(("webhooks/create", "webhooks.create", "webhooks/update", "webhooks.update")):
            body["url"] = FUZZ_WEBHOOK_URL
        # The same for rotation webhooks, which a rotation schedule needs.
        if body.get("rotation_webhook_url") or body.get("rotation_interval_days"):
            body["rotation_webhook_url"] = FUZZ_WEBHOOK_URL
    if isinstance(body, dict):
        for field, (kept, absent, resource) in KEPT.items():
            if kept and body.get(field) == kept and label.endswith((f"{resource}/delete", f"{resource}.delete")):
                body[field] = absent
    # The fuzzer would revoke, rotate or narrow its own key (it finds the id in lists) and lock itself out:
    # such calls still reach the handler, made harmless.
    if OWN_KEY and isinstance(body, dict) and body.get("key_id") == OWN_KEY:
        if label.endswith(("api_keys/revoke", "api_keys.revoke")):
            body["key_id"] = ABSENT_KEY
        elif label.endswith(("api_keys/rotate", "api_keys.rotate")):
            body["grace_period_seconds"] = 2_592_000
        elif label.endswith(("api_keys/update", "api_keys.update")):
            body.pop("permissions", None)


COUNTS = collections.defaultdict(collections.Counter)


def _meta(case):
    return getattr(case, "meta", None) or getattr(case, "_meta", None)


@schemathesis.hook
def after_call(context, case, response):
    meta = _meta(case)
    mode = str(meta.generation.mode) if meta is not None else "positive"
    phase = str(getattr(getattr(meta, "phase", None), "name", "")).lower() if meta is not None else ""
    phase = phase.rsplit(".", 1)[-1] or "unknown"
    COUNTS[case.operation.label][f"{phase}:{mode}:{response.status_code}"] += 1
    if "stateful" in phase:
        COUNTS["(stateful)"]["calls"] += 1


def _write_summary():
    path = os.environ.get("OPGATE_FUZZ_SUMMARY")
    if path:
        with open(path, "w") as out:
            json.dump({op: dict(c) for op, c in COUNTS.items()}, out, indent=1, sort_keys=True)


atexit.register(_write_summary)
