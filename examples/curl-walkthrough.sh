#!/usr/bin/env bash
# A key's life cycle with nothing but curl: create → list → get → update → rotate → revoke.
#
#   OPGATE_URL=http://127.0.0.1:8080 OPGATE_TOKEN=opg_... examples/curl-walkthrough.sh
#
# OPGATE_TOKEN is an admin key (the one `opgate serve` prints on first start, or
# `opgate admin create-key --name admin --permissions '*'`). Each step prints the call and the answer, and
# the script stops at the first answer that is not the expected one. It cleans up after itself: both keys it
# makes end up revoked.
set -euo pipefail

URL="${OPGATE_URL:-http://127.0.0.1:8080}"
ADMIN="${OPGATE_TOKEN:?set OPGATE_TOKEN to an admin key}"

# call TOKEN OPERATION JSON [EXPECTED_STATUS]: POST /v1/op/OPERATION, print the answer, check the status.
# The answer is left in $BODY.
call() {
  local token="$1" op="$2" json="$3" want="${4:-200}" out status
  echo "+ POST /v1/op/$op $json" >&2
  out="$(curl -sS -X POST "$URL/v1/op/$op" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$json" -w '\n%{http_code}')"
  status="${out##*$'\n'}"
  BODY="${out%$'\n'*}"
  echo "$BODY" >&2
  if [ "$status" != "$want" ]; then
    echo "expected HTTP $want from $op, got $status" >&2
    exit 1
  fi
}

# field NAME: the first string value of "NAME" in $BODY (compact JSON, as the gateway sends it).
field() {
  grep -o "\"$1\":\"[^\"]*\"" <<<"$BODY" | head -n 1 | cut -d '"' -f 4
}

echo "== who am I"
call "$ADMIN" auth.whoami '{}'

echo "== create a key that may only read keys; the secret is in this answer and nowhere else"
call "$ADMIN" api_keys.create '{"name": "walkthrough-reader", "permissions": ["api_keys:read"], "expires_in_days": 1}'
KEY="$(field key)"
ID="$(field id)"
[ -n "$KEY" ] && [ -n "$ID" ] || { echo "no key or id in the answer" >&2; exit 1; }

echo "== list the organization's keys with the new key: NDJSON, one key per line, never a secret"
call "$KEY" api_keys.list '{"limit": 1000}'
grep -q "\"id\":\"$ID\"" <<<"$BODY" || { echo "$ID is not listed" >&2; exit 1; }
echo "listed $(grep -c . <<<"$BODY") key(s)"

echo "== one key's metadata"
call "$ADMIN" api_keys.get "{\"key_id\": \"$ID\"}"

echo "== rename it and fence it to loopback addresses"
call "$ADMIN" api_keys.update "{\"key_id\": \"$ID\", \"name\": \"walkthrough-reader-2\", \"allowed_ips\": [\"127.0.0.0/8\", \"::1\"]}"
[ "$(field name)" = "walkthrough-reader-2" ] || { echo "the name did not change" >&2; exit 1; }

echo "== rotate it: a new secret now; the old one keeps working for an hour"
call "$ADMIN" api_keys.rotate "{\"key_id\": \"$ID\", \"grace_period_seconds\": 3600}"
NEW_KEY="$(field key)"
NEW_ID="$(field id)"
call "$KEY" api_keys.get "{\"key_id\": \"$NEW_ID\"}"
call "$NEW_KEY" api_keys.get "{\"key_id\": \"$ID\"}"

echo "== revoke the new key: its very next request gets 401"
call "$ADMIN" api_keys.revoke "{\"key_id\": \"$NEW_ID\"}"
call "$NEW_KEY" api_keys.list '{}' 401
[ "$(field code)" = "unauthenticated" ] || { echo "expected the unauthenticated error" >&2; exit 1; }

echo "== and the old one, without waiting for its grace period"
call "$ADMIN" api_keys.revoke "{\"key_id\": \"$ID\"}"
call "$KEY" api_keys.list '{}' 401

echo "walk-through complete: created $ID, rotated to $NEW_ID, revoked both"
