"""SPEC §2 "no client may take the service down for others", against the server as it is
deployed: `python main.py` in a process of its own, spoken to over real sockets.

Stalled bodies, a 200 MB body, a 100 KB header, forged `X-Forwarded-For`. Every wait is
bounded; the server is stopped with SIGTERM at the end of each test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
MiB = 1024 * 1024


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(tmp_path: Path, **env: str) -> Iterator[Server]:
    """`python main.py` on a free port with a SQLite file of its own; SIGTERM at the end."""
    port = _free_port()
    log = tmp_path / "server.log"
    environment = {
        **os.environ,
        "HYPERVISOR_PORT": str(port),
        "HYPERVISOR_DATABASE_URL": f"sqlite:///{tmp_path}/hypervisor.db",
        "HYPERVISOR_SECRET_KEY": "a-test-signing-key-that-is-long-enough-for-hs256",
        "HYPERVISOR_BCRYPT_ROUNDS": "4",
        "HYPERVISOR_RATE_LIMIT": "0",
        "HYPERVISOR_LOG_LEVEL": "warning",
        **env,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py")],
            cwd=tmp_path,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            server = Server(process, port, log)
            _wait_until_ready(server)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"the server did not start: {server.log.read_text()}")


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or `timeout` passes)."""
    sock.settimeout(max(timeout, 0.1))
    received = b""
    with suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])


def _stall(server: Server) -> socket.socket:
    """A connection that sent a create's headers and 1 byte of its 1,000-byte body."""
    sock = server.connect()
    sock.sendall(
        b"POST /deployment/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    return sock


def _tenant_creates_a_deployment(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        registered = client.post("/user/register", json={"username": "bob", "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = client.post("/user/login", data={"username": "bob", "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        org = client.post("/organization/create", json={"name": "bobs-org"})
        assert org.status_code == 201, org.text
        cluster = client.post(
            "/cluster/create",
            json={
                "name": "gpu-1",
                "organization_name": "bobs-org",
                "total_cpu": 8,
                "total_ram": 32,
                "total_gpu": 2,
            },
        )
        assert cluster.status_code == 201, cluster.text
        created = client.post(
            "/deployment/create",
            json={
                "cluster_name": "gpu-1",
                "organization_name": "bobs-org",
                "docker_image": "nginx",
                "required_cpu": 1,
                "required_ram": 1,
                "required_gpu": 1,
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "running"


def test_64_stalled_bodies_leave_health_and_other_tenants_answering(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        opened = time.monotonic()
        stalled = [_stall(server) for _ in range(64)]
        try:
            started = time.monotonic()
            health = httpx.get(f"{server.url}/healthz", timeout=5)
            answered_in = time.monotonic() - started
            ready = httpx.get(f"{server.url}/readyz", timeout=5)
            _tenant_creates_a_deployment(server)

            # The stalled ones are answered 408 once their bodies are overdue, and closed.
            answers = [_answer(sock, opened + 25 - time.monotonic()) for sock in stalled]
        finally:
            for sock in stalled:
                sock.close()

    assert health.status_code == 200
    assert answered_in < 1.0
    assert ready.status_code == 200
    assert {_status(answer) for answer in answers} == {408}


def test_a_200_mb_chunked_body_is_refused_without_being_buffered(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        memory = psutil.Process(server.process.pid)
        before = peak = memory.memory_info().rss
        chunk = b"a" * MiB
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        sent = 0
        with server.connect() as sock:
            sock.sendall(
                b"POST /user/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            with suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
                while sent < 200 * MiB:
                    sock.sendall(frame)
                    sent += len(chunk)
                    peak = max(peak, memory.memory_info().rss)
            answer = _answer(sock, 10)
        peak = max(peak, memory.memory_info().rss)
        health = httpx.get(f"{server.url}/healthz", timeout=5)

    assert peak - before < 50 * MiB, f"the server grew by {(peak - before) / MiB:.0f} MiB"
    assert sent < 200 * MiB or _status(answer) == 413, "closed early, or refused"
    assert _status(answer) in (413, None)
    assert health.status_code == 200


def test_a_declared_200_mb_body_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    with serving(tmp_path) as server, server.connect() as sock:
        sock.sendall(
            b"POST /user/register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (200 * MiB)
        )
        answer = _answer(sock, 10)

    assert _status(answer) == 413
    assert b'"detail"' in answer


def test_a_100_kb_header_is_refused(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        with server.connect() as sock:
            with suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
                    + b"a" * 100_000
                    + b"\r\n\r\n"
                )
            answer = _answer(sock, 10)
        health = httpx.get(f"{server.url}/healthz", timeout=5)

    status = _status(answer)
    assert status is None or 400 <= status < 500, answer[:200]
    assert health.status_code == 200


def test_forged_forwarded_for_headers_do_not_escape_the_address_limit(tmp_path: Path) -> None:
    with serving(tmp_path, HYPERVISOR_RATE_LIMIT="5/minute") as server:
        statuses = [
            httpx.get(
                f"{server.url}/user/me",
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
                timeout=5,
            ).status_code
            for i in range(10)
        ]

    assert statuses == [401] * 5 + [429] * 5
