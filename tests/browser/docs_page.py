"""The reference page in a real browser (Debian's chromium, driven by Python playwright).

Starts the real `opgate serve` on 127.0.0.1:0 over a temporary data directory, loads `/docs`, authorizes with
the admin key, calls `auth.whoami` and `api_keys.list` from the page and checks the answers it shows, follows a
response link to `api_keys.get`, and asserts that the page made no request to any other origin. Saves a
screenshot in the test's temporary directory (kept, and printed). Run by scripts/test-browser.

Usage: python docs_page.py <path to the opgate binary>
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("OPGATE_CHROMIUM", "/usr/bin/chromium")
KEYS = 24  # created besides the admin key, so the list streams several lines


def start(binary, data_dir):
    """Starts the gateway; returns (process, base URL, admin key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPGATE_")}
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    admin, deadline = None, time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("admin key: "):
            admin = line.split(": ", 1)[1].strip()
        m = re.search(r"opgate listening on (http://\S+)", line)
        if m:
            return proc, m.group(1), admin
    proc.kill()
    raise SystemExit("opgate did not start")


def call(base, token, op, body):
    req = urllib.request.Request(
        f"{base}/v1/op/{op}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp(prefix="opgate-browser-")
    proc, base, admin = start(binary, os.path.join(work, "data"))
    try:
        me = call(base, admin, "auth.whoami", {})
        for i in range(KEYS):
            call(base, admin, "api_keys.create", {"name": f"browser {i}", "permissions": ["api_keys:read"]})

        requests = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            problems = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))

            page.goto(f"{base}/docs")
            page.wait_for_selector("body[data-ready=true]", timeout=15000)
            expect(page.locator("nav a[data-operation='api_keys.list']")).to_be_visible()

            # Authorize: the token is kept for the tab, the field is emptied.
            page.fill("#token", admin)
            page.click("#authorize")
            expect(page.locator("#auth-state")).to_have_text(re.compile(r"^authorized \(…"))
            assert page.input_value("#token") == ""

            # auth.whoami from the page: the answer names the admin key.
            whoami = page.locator("section[data-operation='auth.whoami']")
            whoami.locator("button.send").click()
            answer = whoami.locator(".answer")
            expect(answer).to_have_attribute("data-status", "200", timeout=10000)
            shown = json.loads(answer.locator("pre").inner_text())
            assert shown["id"] == me["id"], shown
            expect(whoami.locator(".status")).to_have_text(re.compile(r"^200 OK · req_"))

            # api_keys.list from the page, with its example as is: one line per key, as they arrive.
            listing = page.locator("section[data-operation='api_keys.list']")
            listing.locator("button.send").click()
            answer = listing.locator(".answer")
            expect(answer).to_have_attribute("data-status", "200", timeout=10000)
            lines = answer.locator(".line")
            expect(lines).to_have_count(KEYS + 1)
            first = json.loads(lines.nth(0).inner_text())
            assert first["id"] == me["id"], first
            assert "key" not in first, "a list never shows a secret"
            expect(listing.locator(".status")).to_have_text(re.compile(rf"{KEYS + 1} lines"))

            # A response link fills api_keys.get with an id from the list; sending it answers that key.
            listing.locator(".links button", has_text="api_keys.get with key_id").click()
            get = page.locator("section[data-operation='api_keys.get']")
            assert json.loads(get.locator("textarea").input_value()) == {"key_id": me["id"]}
            get.locator("button.send").click()
            expect(get.locator(".answer")).to_have_attribute("data-status", "200", timeout=10000)

            # A call the gateway refuses shows the contract's error.
            revoke = page.locator("section[data-operation='api_keys.revoke']")
            revoke.locator("button.send").click()
            expect(revoke.locator(".answer")).to_have_attribute("data-status", "404", timeout=10000)
            assert json.loads(revoke.locator(".answer pre").inner_text())["error"]["code"] == "not_found"

            listing.scroll_into_view_if_needed()
            shot = os.path.join(work, "docs.png")
            page.screenshot(path=shot, full_page=False)
            browser.close()

        foreign = [u for u in requests if not u.startswith(base + "/")]
        assert not foreign, f"requests to other origins: {foreign}"
        # The browser reports the refused revoke's 404 on its console; nothing else may go wrong.
        assert problems == ["Failed to load resource: the server responded with a status of 404 (Not Found)"], \
            f"errors in the page: {problems}"
        print(f"browser test: ok ({len(requests)} requests, all to {base}); screenshot: {shot}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
