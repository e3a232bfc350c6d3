"""Server processes on free 127.0.0.1 ports: Hypervisor (`python main.py`) and the original
seed service (`uvicorn main:app` from a checkout and virtualenv the caller provides), each
with a database of its own; their set-up through the API; fresh PostgreSQL databases."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent.parent
HOST = "127.0.0.1"
PASSWORD = "benchmark password"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROOMY = {"total_cpu": 1_000_000, "total_ram": 1_000_000, "total_gpu": 1_000_000}

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Process:
    """A server process, ready once `ready_path` answers 200; CPU and memory readable."""

    def __init__(
        self, command: list[str], env: dict[str, str], cwd: Path, port: int, ready_path: str
    ) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.handle = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{command[:3]} did not become ready")

    def cpu_seconds(self) -> float:
        times = self.handle.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return float(self.handle.memory_info().rss / 2**20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_hypervisor(
    database_url: str, workdir: Path, root: Path | None = None, **settings: str
) -> Process:
    """`python main.py` of this checkout (or of the one at `root`) on the URL: no rate limit,
    cheap bcrypt, a pending limit and starvation age out of the way of the fills (these are
    not what is measured)."""
    port = free_port()
    env = {
        **os.environ,
        "HYPERVISOR_DATABASE_URL": database_url,
        "HYPERVISOR_PORT": str(port),
        "HYPERVISOR_RATE_LIMIT": "0",
        "HYPERVISOR_SECRET_KEY": secrets.token_urlsafe(32),
        "HYPERVISOR_LOG_LEVEL": "warning",
        "HYPERVISOR_BCRYPT_ROUNDS": "4",
        "HYPERVISOR_MAX_PENDING_PER_ORGANIZATION": "1000000",
        "HYPERVISOR_STARVATION_SECONDS": "10000000",
        **{f"HYPERVISOR_{key.upper()}": value for key, value in settings.items()},
    }
    command = [sys.executable, str((root or ROOT) / "main.py")]
    return Process(command, env, workdir, port, "/readyz")


def start_seed(seed_dir: Path, seed_python: Path, workdir: Path) -> Process:
    """The seed as its README runs it, but on 127.0.0.1 and a free port, without the access
    log (Hypervisor logs no access lines either). Its SQLite file is `./mlops_platform.db`,
    so `workdir` gives it a fresh one; its queue is the local Redis on 6379 (hard-coded)."""
    port = free_port()
    command = [
        str(seed_python),
        "-m",
        "uvicorn",
        "main:app",
        "--app-dir",
        str(seed_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return Process(command, env, workdir, port, "/openapi.json")


@dataclass
class Tenant:
    """Who creates, in which organization and cluster, with which headers."""

    headers: dict[str, str]
    organization: str
    cluster: str


def _expect(response: httpx.Response, *codes: int) -> Any:
    if response.status_code not in codes:
        raise RuntimeError(
            f"setup: {response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
    return response.json()


def create_body(tenant: Tenant) -> dict[str, Any]:
    """The create every throughput measure sends: 1 CPU, 1 RAM, 1 GPU at priority 1, in the
    tenant's cluster (both services accept it)."""
    return {
        "cluster_name": tenant.cluster,
        "organization_name": tenant.organization,
        "docker_image": "ghcr.io/acme/train:1.0",
        "required_cpu": 1,
        "required_ram": 1,
        "required_gpu": 1,
        "priority": 1,
    }


def hypervisor_tenant(server: Process, clusters: dict[str, dict[str, int]]) -> Tenant:
    """Register, log in, create an organization and these clusters; the first is the
    tenant's."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        user = {"username": "bench", "password": PASSWORD}
        _expect(client.post("/user/register", json=user), 201)
        token = _expect(client.post("/user/login", data=user), 200)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        org = "bench-org"
        _expect(client.post("/organization/create", json={"name": org}, headers=headers), 201)
        for name, shape in clusters.items():
            body = {"name": name, "organization_name": org, **shape}
            _expect(client.post("/cluster/create", json=body, headers=headers), 201)
    return Tenant(headers, org, next(iter(clusters)))


def add_cluster(
    server: Process, tenant: Tenant, name: str, shape: dict[str, int], created: int
) -> None:
    """One more cluster in the tenant's organization (`created`: the status that says so)."""
    body = {"name": name, "organization_name": tenant.organization, **shape}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        _expect(client.post("/cluster/create", json=body, headers=tenant.headers), created)


def seed_tenant(server: Process, run_id: str) -> Tenant:
    """The seed's flow, read from its routes: register (no login exists: no endpoint asks
    for a token), create an organization, create a cluster. Cluster names are global keys
    of its Redis queue, hence the run id."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        _expect(
            client.post("/user/register", json={"username": "bench", "password": PASSWORD}), 200
        )
        org, cluster = f"speed-org-{run_id}", f"speed-{run_id}"
        _expect(client.post("/organization/create", json={"name": org}), 200)
        body = {"name": cluster, "organization_name": org, **ROOMY}
        _expect(client.post("/cluster/create", json=body), 200)
    return Tenant({}, org, cluster)


def forget_seed_queue(seed_python: Path, cluster: str) -> None:
    """Delete the run's key from the local Redis (it should be empty already)."""
    code = "import sys, redis; redis.StrictRedis(host='127.0.0.1').delete(sys.argv[1])"
    subprocess.run([str(seed_python), "-c", code, cluster], check=False, timeout=30)


@contextmanager
def postgres_databases(prefix: str) -> Iterator[Any]:
    """A factory of fresh databases on the local PostgreSQL, all dropped at the end; None
    when PostgreSQL does not answer."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - no PostgreSQL here: the caller skips it
        log.warning("PostgreSQL unavailable, skipping it: %s", error)
        admin.dispose()
        yield None
        return
    made: list[str] = []

    def new_database() -> str:
        name = f"{prefix}_{os.getpid()}_{len(made)}"
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        made.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    try:
        yield new_database
    finally:
        with admin.connect() as connection:
            for name in made:
                connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
