"""The service as a process manager runs it: started from elsewhere, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(workdir: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "HYPERVISOR_PORT": str(port),
        "HYPERVISOR_RATE_LIMIT": "0",
        "HYPERVISOR_BCRYPT_ROUNDS": "4",
        "HYPERVISOR_DATABASE_URL": "sqlite:///./hypervisor.db",
    }
    env.pop("HYPERVISOR_SECRET_KEY", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py")],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Bounded wait for the process to come up: poll its readiness probe, and give up at
    # once if it exits instead.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not start: {process.communicate()[0]}")


def test_started_from_another_directory_it_keeps_its_data_there_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    port = _free_port()
    process = _start(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        client.post("/user/register", json={"username": "ops", "password": PASSWORD})
        token = client.post("/user/login", data={"username": "ops", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        client.post("/organization/create", json={"name": "ops-org"}, headers=headers)
        cluster = {"name": "gpu-1", "organization_name": "ops-org", "total_cpu": 4, "total_ram": 4}
        client.post("/cluster/create", json={**cluster, "total_gpu": 2}, headers=headers)
    body = {
        "cluster_name": "gpu-1",
        "organization_name": "ops-org",
        "docker_image": "nginx",
        "required_cpu": 1,
        "required_ram": 1,
        "required_gpu": 1,
    }
    answers: list[int] = []
    mid_stream = threading.Event()

    def submit() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for _ in range(30):
                try:
                    answers.append(client.post("/deployment/create", json=body).status_code)
                except httpx.HTTPError:
                    return  # the server has stopped accepting connections
                if len(answers) == 3:
                    mid_stream.set()

    worker = threading.Thread(target=submit)
    worker.start()
    assert mid_stream.wait(timeout=20), f"only {len(answers)} creates answered"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    worker.join(timeout=30)

    # uvicorn finishes in-flight requests and the lifespan, then re-raises the signal so
    # the exit status says why it stopped.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "hypervisor stopped" in output
    assert "Traceback" not in output
    assert len(answers) >= 3 and set(answers) == {201}
    assert (tmp_path / "hypervisor.db").exists()
    assert (tmp_path / ".secret_key").stat().st_mode & 0o777 == 0o600

    # A restart in the same place finds everything and honours the old token.
    process = _start(tmp_path, port)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            listed = client.get("/deployment/list/gpu-1")
            assert listed.status_code == 200
            deployments = listed.json()["deployments"]
            assert len(deployments) == len(answers)
            statuses = [(d["id"], d["status"], d["reason"]) for d in deployments]
            assert sum(d["status"] == "running" for d in deployments) == 2, statuses
    finally:
        process.terminate()
        process.communicate(timeout=30)
