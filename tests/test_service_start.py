"""The README's first command: a fresh SQLite file, a migrated schema, a printed token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "VOICECRM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/fresh.db",
        "VOICECRM_PORT": str(port),
        "VOICECRM_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "voicecrm", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until_ready(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if "ready at" in line:
            return lines
    pytest.fail("the service exited before it was ready:\n" + "\n".join(lines))


def _get(port: int, path: str, token: str | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def service(tmp_path: Path, port: int) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = _start(tmp_path, port)
    try:
        yield process, _read_until_ready(process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


def test_first_start_prints_a_token_that_opens_the_api(
    service: tuple[subprocess.Popen[str], list[str]], port: int
) -> None:
    _, lines = service
    token = next(line.strip() for line in lines if line.strip().startswith("vcrm_"))
    status, me = _get(port, "/me", token)
    assert status == 200 and me["role"] == "admin" and me["email"] == "admin@localhost"
    status, contacts = _get(port, "/contacts", token)
    assert status == 200 and contacts == {"items": [], "next_cursor": None}
    status, problem = _get(port, "/contacts", None)
    assert status == 401 and problem["status"] == 401


def test_the_token_is_printed_only_on_the_first_start(tmp_path: Path) -> None:
    for start, expect_token in ((1, True), (2, False)):
        port = _free_port()
        process = _start(tmp_path, port)
        try:
            lines = _read_until_ready(process)
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=20) == 0
            if process.stdout:
                process.stdout.close()
        has_token = any(line.strip().startswith("vcrm_") for line in lines)
        assert has_token is expect_token, f"start {start}: {lines}"
