#!/usr/bin/env python3
"""Streams `api_keys.list` line by line with nothing but `requests`.

    OPGATE_URL=http://127.0.0.1:8080 OPGATE_TOKEN=opg_... python3 examples/stream_keys.py [--limit N]

Each key is printed as it arrives (id, status, name), so memory stays flat however many keys there are.
The gateway answers NDJSON: one JSON object per line. A stream that fails midway ends with one line
`{"error": {...}}`; that, like an error response, is printed on stderr and makes the script exit 1.
"""

import argparse
import json
import os
import sys

import requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="stop after this many keys")
    parser.add_argument("--include-revoked", action="store_true", help="list revoked keys too")
    args = parser.parse_args()

    url = os.environ.get("OPGATE_URL", "http://127.0.0.1:8080").rstrip("/")
    token = os.environ.get("OPGATE_TOKEN")
    if not token:
        print("set OPGATE_TOKEN to an API key holding api_keys:read", file=sys.stderr)
        return 2

    body = {"include_revoked": args.include_revoked}
    if args.limit is not None:
        body["limit"] = args.limit

    try:
        return stream(url, token, body)
    except requests.RequestException as e:
        print(f"cannot reach {url}: {e}", file=sys.stderr)
        return 1


def stream(url: str, token: str, body: dict) -> int:
    """Prints each key of the stream as it arrives; returns the exit status."""
    with requests.post(
        f"{url}/v1/op/api_keys.list",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        stream=True,
        timeout=(10, 300),
    ) as response:
        if response.status_code != 200:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"message": response.text.strip() or response.reason}
            print(
                f"{error.get('code')} ({response.status_code}): {error.get('message')}"
                f" [request {error.get('request_id')}]",
                file=sys.stderr,
            )
            return 1
        count = 0
        for line in response.iter_lines():
            if not line:
                continue
            item = json.loads(line)
            if set(item) == {"error"}:
                error = item["error"]
                print(
                    f"the stream failed after {count} keys: {error['code']}: {error['message']}",
                    file=sys.stderr,
                )
                return 1
            count += 1
            print(f"{item['id']}  {item['status']:<8}  {item['name']}")
    print(f"{count} keys", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
