"""Starts the real `opgate` binary once for the session: a data directory seeded with 10,000 keys in
organization `sdk`, an admin key minted offline, the gateway on 127.0.0.1:0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "sdks" / "python"))

ORG = "sdk"
SEEDED = 10_000


def binary() -> str:
    explicit = os.environ.get("OPGATE_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "opgate")


class Gateway:
    def __init__(self, url: str, token: str, data_dir: str) -> None:
        self.url = url
        self.token = token
        self.data_dir = data_dir


@pytest.fixture(scope="session")
def gateway():
    opgate = binary()
    with tempfile.TemporaryDirectory(prefix="opgate-sdk-py-") as data_dir:
        subprocess.run(
            [opgate, "admin", "seed-keys", "--data-dir", data_dir, "--org", ORG]
            + ["--count", str(SEEDED)],
            check=True,
            capture_output=True,
        )
        token = subprocess.run(
            [opgate, "admin", "create-key", "--data-dir", data_dir, "--org", ORG]
            + ["--name", "t", "--permissions", "*"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        server = subprocess.Popen(
            [opgate, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        url = None
        for line in server.stderr:
            match = re.search(r"opgate listening on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None, "the gateway did not start"
        # Keep reading its log so that it never blocks on a full pipe.
        threading.Thread(target=server.stderr.read, daemon=True).start()
        try:
            yield Gateway(url, token, data_dir)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


@pytest.fixture
def client(gateway):
    from opgate import Client

    with Client(base_url=gateway.url, token=gateway.token) as c:
        yield c
