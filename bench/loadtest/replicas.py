"""Server replicas: `python main.py` processes on free ports, started, killed, restarted, logs."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx2 as httpx

APP_DIR = Path(__file__).resolve().parent.parent.parent
HOST = "127.0.0.1"
LOCKED_MARKER = "database is locked"

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Replica:
    """One `python main.py` process; restartable on the same port."""

    index: int
    port: int
    workdir: Path
    env: dict[str, str]
    python: str
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log: TextIO | None = None
    usage: list[dict[str, float]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Spawn the process (it migrates the database, then serves)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.log is None:
            self.log = self.log_path.open("a")
        self.log.write(f"--- start {self.starts + 1} at {datetime.now(UTC).isoformat()}\n")
        self.log.flush()
        self.process = subprocess.Popen(
            [self.python, str(APP_DIR / "main.py")],
            cwd=self.workdir,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.starts += 1

    def wait_ready(self, timeout: float) -> float:
        """Poll /readyz until it answers 200; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(
                        f"replica {self.index} exited during startup:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.base_url}/readyz").status_code == 200:
                        return time.monotonic() - started
                time.sleep(0.1)
        raise RuntimeError(f"replica {self.index} not ready after {timeout}s:\n{self.log_tail()}")

    def sample_usage(self) -> None:
        """Remember the process's CPU time and memory (psutil), before it goes away."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            import psutil

            proc = psutil.Process(self.process.pid)
            cpu = proc.cpu_times()
            self.usage.append(
                {
                    "cpu_seconds": round(cpu.user + cpu.system, 2),
                    "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                }
            )
        except Exception:  # noqa: BLE001 - usage numbers are a nicety, never a failure
            logger.debug("no usage for replica %s", self.index, exc_info=True)

    def kill(self) -> None:
        """SIGKILL the process (no shutdown at all) and reap it."""
        assert self.process is not None
        self.sample_usage()
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.sample_usage()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            logger.warning("replica %s ignored SIGTERM; killing pid %s", self.index, self.pid)
            self.process.kill()
            self.process.wait(timeout=15)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def log_tail(self, lines: int = 40) -> str:
        if self.log is not None:
            self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_problems(self) -> dict[str, Any]:
        """Error lines the replica logged, and the exceptions its tracebacks end with."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line for line in lines if "level=ERROR" in line or "level=CRITICAL" in line]
        exceptions: Counter[str] = Counter()
        for i, line in enumerate(lines):
            if not line.startswith("Traceback"):
                continue
            # The exception is the first unindented line after the frames.
            for following in lines[i + 1 : i + 400]:
                if following and not following.startswith((" ", "\t", "Traceback")):
                    exceptions[following[:200]] += 1
                    break
        return {
            "tracebacks": sum(exceptions.values()),
            "error_lines": len(errors),
            "database_locked_lines": sum(1 for line in lines if LOCKED_MARKER in line),
            "error_samples": [e[:300] for e in errors[:5]],
            "exceptions": dict(exceptions.most_common(8)),
        }


def server_env(
    args: argparse.Namespace, database_url: str, secret: str, port: int
) -> dict[str, str]:
    """The environment of one replica: this database, this port, the shared JWT key."""
    env = dict(os.environ)
    env.update(
        {
            "HYPERVISOR_DATABASE_URL": database_url,
            "HYPERVISOR_PORT": str(port),
            "HYPERVISOR_HOST": HOST,
            "HYPERVISOR_RATE_LIMIT": "0",
            "HYPERVISOR_SECRET_KEY": secret,
            "HYPERVISOR_LOG_LEVEL": "warning",
            "HYPERVISOR_STARVATION_SECONDS": str(args.starvation_seconds),
            "HYPERVISOR_PREEMPTION_GRACE_SECONDS": "0",
            "HYPERVISOR_SCHEDULER_INTERVAL_SECONDS": str(args.scheduler_interval),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("HYPERVISOR_METRICS_TOKEN", None)
    return env


def _start_all(replicas: list[Replica]) -> None:
    """Spawn the processes together, then wait until each is ready."""
    for replica in replicas:
        replica.start()
    for replica in replicas:
        logger.info(
            "replica %s ready on port %s in %.1fs (pid %s)",
            replica.index,
            replica.port,
            replica.wait_ready(90),
            replica.pid,
        )


@contextlib.contextmanager
def running_replicas(
    args: argparse.Namespace, database_url: str, tmp: Path
) -> Iterator[list[Replica]]:
    """--replicas ready processes on one database, stopped (and their logs closed) on exit."""
    secret = secrets.token_urlsafe(48)
    replicas = []
    for index in range(args.replicas):
        port = free_port()
        replicas.append(
            Replica(
                index,
                port,
                tmp / f"replica{index}",
                server_env(args, database_url, secret, port),
                args.python,
            )
        )
    try:
        # PostgreSQL replicas may start together (migrations take an advisory lock);
        # SQLite gets its schema from the first one before the others start.
        first = len(replicas) if database_url.startswith("postgresql") else 1
        _start_all(replicas[:first])
        _start_all(replicas[first:])
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()
            replica.close()
